//! A job's payload as JSON text, written straight from the caller's Python objects.
//!
//! Every enqueue validates and encodes its payload. Done in Python (a recursive type
//! check, then `json.dumps`) that was half the cost of a bulk enqueue; here it is one
//! pass. The rules are fairqueue's, not JSON's widest reading: plain data only (str,
//! int, float, bool, None, list, tuple, dict with str keys, and their subclasses),
//! finite floats, no containers nested past [`MAX_DEPTH`]; a refusal names where in
//! the payload the value sits. serde_json writes the strings and numbers.

use pyo3::prelude::*;

use super::shown;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

pyo3::import_exception!(fairqueue.errors, NotSerializable);
pyo3::import_exception!(fairqueue.errors, LimitExceeded);

/// Containers nested deeper than this are refused (a list that contains itself would
/// otherwise recurse until the stack ran out).
const MAX_DEPTH: usize = 200;

/// Where a refused value sits: the steps from the payload's top, innermost last.
enum Step<'py> {
    Index(usize),
    Key(Bound<'py, PyAny>),
}

enum Problem<'py> {
    NotFinite(Bound<'py, PyAny>),
    KeyNotStr(Bound<'py, PyAny>),
    LoneSurrogate(Bound<'py, PyAny>),
    NotPlain(Bound<'py, PyAny>),
    HugeInt(Bound<'py, PyAny>),
    TooDeep,
}

struct Refusal<'py> {
    /// Built while unwinding, so innermost first.
    steps: Vec<Step<'py>>,
    problem: Problem<'py>,
}

impl<'py> Refusal<'py> {
    fn new(problem: Problem<'py>) -> Self {
        Refusal { steps: Vec::new(), problem }
    }

    fn at(mut self, step: Step<'py>) -> Self {
        self.steps.push(step);
        self
    }

    fn into_err(self, place: &str) -> PyResult<PyErr> {
        let mut at = place.to_owned();
        for step in self.steps.iter().rev() {
            match step {
                Step::Index(i) => at.push_str(&format!("[{i}]")),
                Step::Key(key) => at.push_str(&format!("[{}]", shown(key))),
            }
        }
        let message = match &self.problem {
            Problem::NotFinite(value) => {
                format!("{at} is {}, which JSON cannot carry; use None or a finite number", shown(value))
            }
            Problem::KeyNotStr(key) => {
                format!("{at} has key {} of type {}; JSON keys must be str", shown(key), key.get_type().name()?)
            }
            Problem::LoneSurrogate(value) => format!(
                "{at} is {}, a str with a lone surrogate, which UTF-8 JSON cannot carry; decode bytes with \
                 errors='replace' or pass them as a list of ints",
                shown(value)
            ),
            Problem::NotPlain(value) => format!(
                "{at} is {} of type {}, which is not JSON-serialisable; pass plain data (str, int, float, bool, \
                 None, list, dict) and rebuild objects inside the job",
                shown(value),
                value.get_type().name()?
            ),
            Problem::HugeInt(value) => format!(
                "{at} is {}, too many digits for Python to write out (its limit is 4,300); pass it as a str",
                shown(value)
            ),
            Problem::TooDeep => format!(
                "{at} nests lists and dicts more than {MAX_DEPTH} deep (does a list or dict contain itself?); \
                 flatten the payload"
            ),
        };
        Ok(NotSerializable::new_err(message))
    }
}

fn write_str<'py>(out: &mut Vec<u8>, value: &Bound<'py, PyString>) -> Result<(), Refusal<'py>> {
    let text = value.to_str().map_err(|_| Refusal::new(Problem::LoneSurrogate(value.clone().into_any())))?;
    serde_json::to_writer(&mut *out, text).expect("writing JSON to memory cannot fail");
    Ok(())
}

fn write_int<'py>(out: &mut Vec<u8>, value: &Bound<'py, PyAny>) -> Result<(), Refusal<'py>> {
    if let Ok(small) = value.extract::<i64>() {
        serde_json::to_writer(&mut *out, &small).expect("writing JSON to memory cannot fail");
    } else if let Ok(large) = value.extract::<u64>() {
        serde_json::to_writer(&mut *out, &large).expect("writing JSON to memory cannot fail");
    } else {
        // Past 64 bits: the decimal digits (int's own, not a subclass's __repr__) are JSON.
        let digits = value
            .py()
            .get_type::<PyInt>()
            .call_method1("__repr__", (value,))
            .and_then(|text| text.extract::<String>())
            .map_err(|_| Refusal::new(Problem::HugeInt(value.clone())))?;
        out.extend_from_slice(digits.as_bytes());
    }
    Ok(())
}

fn write_value<'py>(out: &mut Vec<u8>, value: &Bound<'py, PyAny>, depth: usize) -> Result<(), Refusal<'py>> {
    if value.is_none() {
        out.extend_from_slice(b"null");
    } else if let Ok(text) = value.cast::<PyString>() {
        write_str(out, text)?;
    } else if let Ok(flag) = value.cast::<PyBool>() {
        out.extend_from_slice(if flag.is_true() { b"true" } else { b"false" });
    } else if value.is_instance_of::<PyInt>() {
        write_int(out, value)?;
    } else if let Ok(number) = value.cast::<PyFloat>() {
        let number = number.value();
        if !number.is_finite() {
            return Err(Refusal::new(Problem::NotFinite(value.clone())));
        }
        serde_json::to_writer(&mut *out, &number).expect("writing JSON to memory cannot fail");
    } else if let Ok(dict) = value.cast::<PyDict>() {
        if depth == MAX_DEPTH {
            return Err(Refusal::new(Problem::TooDeep));
        }
        out.push(b'{');
        for (n, (key, item)) in dict.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            let Ok(name) = key.cast::<PyString>() else {
                return Err(Refusal::new(Problem::KeyNotStr(key)));
            };
            write_str(out, name).map_err(|refusal| refusal.at(Step::Key(key.clone())))?;
            out.push(b':');
            write_value(out, &item, depth + 1).map_err(|refusal| refusal.at(Step::Key(key)))?;
        }
        out.push(b'}');
    } else if let Ok(list) = value.cast::<PyList>() {
        write_items(out, list.iter(), depth)?;
    } else if let Ok(tuple) = value.cast::<PyTuple>() {
        write_items(out, tuple.iter(), depth)?;
    } else {
        return Err(Refusal::new(Problem::NotPlain(value.clone())));
    }
    Ok(())
}

fn write_items<'py>(
    out: &mut Vec<u8>,
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    depth: usize,
) -> Result<(), Refusal<'py>> {
    if depth == MAX_DEPTH {
        return Err(Refusal::new(Problem::TooDeep));
    }
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_value(out, &item, depth + 1).map_err(|refusal| refusal.at(Step::Index(i)))?;
    }
    out.push(b']');
    Ok(())
}

/// The JSON text of ``payload`` (UTF-8, no spaces), refusing what JSON cannot carry
/// faithfully and payloads over ``max_bytes``.
///
/// Raises ``NotSerializable`` naming the first refused value, as ``place`` plus the
/// path to it (``the arguments of app:f['args'][1]['when'] is datetime…``), and
/// ``LimitExceeded`` naming the size and the limit.
#[pyfunction]
#[pyo3(signature = (payload, place, max_bytes, /))]
pub fn encode_payload<'py>(
    payload: &Bound<'py, PyAny>,
    place: &str,
    max_bytes: usize,
) -> PyResult<Bound<'py, PyString>> {
    let mut out = Vec::with_capacity(64);
    if let Err(refusal) = write_value(&mut out, payload, 0) {
        return Err(refusal.into_err(place)?);
    }
    if out.len() > max_bytes {
        return Err(LimitExceeded::new_err(format!(
            "{place} is {} bytes as JSON, over the limit of {max_bytes} bytes",
            out.len()
        )));
    }
    let text = String::from_utf8(out).expect("serde_json writes UTF-8");
    Ok(PyString::new(payload.py(), &text))
}
