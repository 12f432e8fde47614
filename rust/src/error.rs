//! The one error type of the core. Every variant names the offending value and,
//! where there is one, the limit it broke, so the message can reach a user as is.

use std::fmt;

/// Everything the core can refuse. The dispatcher's state is unchanged whenever
/// one of these is returned.
#[derive(Debug, Clone, PartialEq)]
pub enum CoreError {
    /// An argument is outside its allowed range or malformed.
    InvalidArgument { name: &'static str, value: String, expected: String },
    /// A kind name that is not one of `future`, `queueable`, `batch`, `scheduled`.
    UnknownKind(String),
    /// A policy name that is not `peek_set` or `fair_share`.
    UnknownPolicy(String),
    /// A request id that is already queued, delayed or running.
    DuplicateRequest(u64),
    /// A request id the dispatcher does not hold.
    UnknownRequest(u64),
    /// A lease that is not active: never issued, already acked or nacked, or expired.
    UnknownLease(u64),
    /// The embedded store's SQLite failed; `code` is SQLite's extended result code.
    Storage { code: i32, message: String },
}

/// Result alias used throughout the core.
pub type CoreResult<T> = Result<T, CoreError>;

impl CoreError {
    pub(crate) fn invalid(name: &'static str, value: impl fmt::Display, expected: impl Into<String>) -> Self {
        CoreError::InvalidArgument { name, value: value.to_string(), expected: expected.into() }
    }
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::InvalidArgument { name, value, expected } => {
                write!(f, "invalid {name} {value:?}: expected {expected}")
            }
            CoreError::UnknownKind(kind) => write!(
                f,
                "unknown kind {kind:?}: expected one of 'future', 'queueable', 'batch', 'scheduled'"
            ),
            CoreError::UnknownPolicy(policy) => {
                write!(f, "unknown policy {policy:?}: expected 'fair_share' or 'peek_set'")
            }
            CoreError::DuplicateRequest(id) => write!(
                f,
                "request {id} is already queued, delayed or running; ids must be unique among live requests"
            ),
            CoreError::UnknownRequest(id) => {
                write!(f, "request {id} is not held by the dispatcher (never enqueued, finished or aborted)")
            }
            CoreError::UnknownLease(lease) => write!(
                f,
                "lease {lease} is not active: it was never issued, was already acked or nacked, or expired and its request was re-delivered"
            ),
            CoreError::Storage { code, message } => write!(f, "{message} (SQLite result code {code})"),
        }
    }
}

impl std::error::Error for CoreError {}
