//! What may name a tenant, and the other short names users give (concurrency keys,
//! schedule names, duplicate signatures): one rule, checked by the core and, through
//! the binding, by every Python entry point before anything is stored.

use crate::error::{CoreError, CoreResult};

/// The most UTF-8 bytes a name may have (what the stores index and the core keeps).
pub const MAX_NAME_BYTES: usize = 255;

/// What the rule says, in the words an error message uses.
pub const NAME_RULE: &str = "1 to 255 bytes of UTF-8 with no control characters and no leading or trailing whitespace";

/// Checks `value` against the name rule; `what` names it in the error ("org", …).
///
/// Control characters (Unicode category Cc: C0, DEL and C1) would corrupt logs and
/// terminals; leading or trailing whitespace would make two tenants that print alike.
pub fn check_name(what: &'static str, value: &str) -> CoreResult<()> {
    let padded = value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace);
    if value.is_empty() || value.len() > MAX_NAME_BYTES || padded || value.chars().any(char::is_control) {
        return Err(CoreError::invalid(what, shown(value), NAME_RULE));
    }
    Ok(())
}

/// A value as an error shows it: at most 80 characters, the rest elided.
fn shown(value: &str) -> String {
    const MOST: usize = 80;
    match value.char_indices().nth(MOST) {
        Some((cut, _)) => format!("{}… ({} bytes)", &value[..cut], value.len()),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_within_the_rule_pass() {
        for ok in ["acme", "org-1", "é", "a b", "客户", &"x".repeat(255), &"é".repeat(127)] {
            assert!(check_name("org", ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn names_outside_the_rule_are_refused_with_the_rule() {
        let too_long = "é".repeat(128); // 256 bytes, 128 characters
        for bad in ["", " ", " acme", "acme\u{a0}", "a\tb", "a\u{85}b", "a\u{7f}", &too_long] {
            let err = check_name("org", bad).unwrap_err();
            assert!(err.to_string().contains(NAME_RULE), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_long_value_is_shown_elided() {
        let err = check_name("key", &"\t".repeat(1000)).unwrap_err().to_string();
        assert!(err.len() < 400 && err.contains("(1000 bytes)"), "{err}");
    }
}
