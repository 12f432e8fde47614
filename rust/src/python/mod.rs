//! The PyO3 binding: `fairqueue._core`. Thin by design — it converts arguments,
//! releases the interpreter around core work, and maps [`CoreError`] to the
//! exceptions defined in `fairqueue/errors.py`. No queue logic lives here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyString, PyTuple};

use crate::clock::{Clock, Nanos, SystemClock, VirtualClock, NANOS_PER_SEC};
use crate::dispatcher::{
    Abort, Dispatcher, Event, Grant, Location, NamedOptions, NamedRequest, Outcome, RateScope, Release,
    PEEK_SET_REFUSAL,
};
use crate::error::CoreError;
use crate::lease::LeaseId;
use crate::limits::{Config, KeyLimits, OrgLimits, PairLimits, RateLimit, DEFAULT_PRIORITY};
use crate::name;
use crate::request::{KeyId, Kind, OrgId, KINDS};
use crate::sim::{self, Baseline, KeyRow, OrgRow, ScenarioOptions};

mod embedded;
mod payload;
mod slot_line;

pyo3::import_exception!(fairqueue.errors, InvalidArgument);
pyo3::import_exception!(fairqueue.errors, UnknownKind);
pyo3::import_exception!(fairqueue.errors, UnknownPolicy);
pyo3::import_exception!(fairqueue.errors, DuplicateRequest);
pyo3::import_exception!(fairqueue.errors, UnknownRequest);
pyo3::import_exception!(fairqueue.errors, UnknownLease);
// The embedded store's failures reach `fairqueue.storage.sqlite` as sqlite3's own, with
// (message, extended result code) as arguments, for its one translation (`storage_error`).
pyo3::import_exception!(sqlite3, OperationalError);

impl From<CoreError> for PyErr {
    fn from(err: CoreError) -> PyErr {
        let message = err.to_string();
        match err {
            CoreError::InvalidArgument { .. } => InvalidArgument::new_err(message),
            CoreError::UnknownKind(_) => UnknownKind::new_err(message),
            CoreError::UnknownPolicy(_) => UnknownPolicy::new_err(message),
            CoreError::DuplicateRequest(_) => DuplicateRequest::new_err(message),
            CoreError::UnknownRequest(_) => UnknownRequest::new_err(message),
            CoreError::UnknownLease(_) => UnknownLease::new_err(message),
            CoreError::Storage { code, message } => OperationalError::new_err((message, code)),
        }
    }
}

/// Seconds (a float, as Python gives them) to nanoseconds, refusing NaN, infinities
/// and negative values.
/// A value as an error message shows it: its repr, at most 80 characters, and never
/// an error of its own (a user's `__repr__` may raise; an int past 4,300 digits cannot print).
pub(crate) fn shown(value: &Bound<'_, PyAny>) -> String {
    const MOST: usize = 80;
    match value.repr() {
        Ok(text) => {
            let text = text.to_string();
            match text.char_indices().nth(MOST) {
                Some((cut, _)) => format!("{}… ({} characters)", &text[..cut], text.chars().count()),
                None => text,
            }
        }
        Err(_) => match value.call_method0("bit_length").and_then(|bits| bits.extract::<u64>()) {
            Ok(bits) if value.is_instance_of::<PyInt>() => format!("an integer of {bits} bits"),
            _ => format!("a {} (its repr raised)", value.get_type().name().map(|n| n.to_string()).unwrap_or_default()),
        },
    }
}

fn nanos(name: &'static str, seconds: f64) -> Result<Nanos, CoreError> {
    if !seconds.is_finite() || seconds < 0.0 || seconds * 1e9 >= u64::MAX as f64 {
        return Err(CoreError::invalid(name, seconds, "a finite, non-negative number of seconds"));
    }
    Ok((seconds * 1e9).round() as Nanos)
}

fn seconds(t: Nanos) -> f64 {
    t as f64 / NANOS_PER_SEC as f64
}

/// A non-negative Python int that fits in 64 bits.
fn id64(name: &'static str, value: &Bound<'_, PyAny>) -> Result<u64, CoreError> {
    value.extract::<u64>().map_err(|_| CoreError::invalid(name, shown(value), "an integer from 0 to 2**64 - 1"))
}

fn count32(name: &'static str, value: i64, expected: &str) -> Result<u32, CoreError> {
    u32::try_from(value).map_err(|_| CoreError::invalid(name, value, format!("{expected}, at most {}", u32::MAX)))
}

fn kind(name: &str) -> Result<Kind, CoreError> {
    name.parse()
}

/// A priority as Python gives it (any int), checked against the core's range.
fn level(name: &'static str, value: i64) -> Result<u8, CoreError> {
    let priority = u8::try_from(value).map_err(|_| CoreError::invalid(name, value, "0 to 9 (higher starts sooner)"))?;
    crate::limits::check_priority(priority)?;
    Ok(priority)
}

const _: () = assert!(DEFAULT_PRIORITY == 5, "the binding's signatures write the default priority as 5");

/// A cost as Python gives it (any int), checked against the core's range.
fn cost(value: i64) -> Result<u32, CoreError> {
    let cost = u32::try_from(value).map_err(|_| CoreError::invalid("cost", value, "1 to 1000000 units"))?;
    crate::limits::check_cost(cost)?;
    Ok(cost)
}

fn named_options(key: Option<&str>, priority: i64, cost: i64) -> Result<NamedOptions<'_>, CoreError> {
    Ok(NamedOptions { key, priority: level("priority", priority)?, cost: self::cost(cost)? })
}

/// A rate limit as Python gives it: `rate` units per `per` seconds, bursts of `burst`
/// (default: one period's worth, at least 1).
fn rate_limit(rate: f64, per: f64, burst: Option<i64>) -> Result<RateLimit, CoreError> {
    let per = nanos("per", per)?;
    let burst = match burst {
        Some(b) => count32("burst", b, "1 to 1000000 units")?,
        None if rate.is_finite() && rate >= 1.0 => rate.min(1e6).floor() as u32,
        None => 1,
    };
    let limit = RateLimit { rate, per, burst };
    limit.validate()?;
    Ok(limit)
}

fn rate_dict(py: Python<'_>, limit: Option<RateLimit>, until: Option<Nanos>) -> PyResult<Option<Bound<'_, PyDict>>> {
    let Some(limit) = limit else { return Ok(None) };
    let d = PyDict::new(py);
    d.set_item("rate", limit.rate)?;
    d.set_item("per", seconds(limit.per))?;
    d.set_item("burst", limit.burst)?;
    d.set_item("waiting_until", until.map(|t| if t == Nanos::MAX { f64::INFINITY } else { seconds(t) }))?;
    Ok(Some(d))
}

fn key_limits_dict(py: Python<'_>, limits: KeyLimits) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("cap", limits.cap)?;
    d.set_item("weight", limits.weight)?;
    Ok(d)
}

/// A request handed to a free slot. Run it, then `ack`, `fail` or `retry` its lease.
#[pyclass(name = "Grant", module = "fairqueue._core", frozen, get_all)]
pub struct GrantPy {
    /// The lease to ack, fail, retry or heartbeat.
    lease: LeaseId,
    /// The caller's request id.
    id: u64,
    org: String,
    kind: &'static str,
    /// 1 for the first delivery, 2 for the first re-delivery, …
    attempt: u32,
    /// When the lease expires unless heartbeated (seconds on the dispatcher's clock).
    expires_at: f64,
}

#[pymethods]
impl GrantPy {
    fn __repr__(&self) -> String {
        format!(
            "Grant(lease={}, id={}, org={:?}, kind={:?}, attempt={}, expires_at={})",
            self.lease, self.id, self.org, self.kind, self.attempt, self.expires_at
        )
    }
}

/// A released slot: which request ran and for how long.
#[pyclass(name = "Release", module = "fairqueue._core", frozen, get_all)]
pub struct ReleasePy {
    id: u64,
    org: String,
    kind: &'static str,
    /// Seconds between dispatch and release.
    run_time: f64,
}

#[pymethods]
impl ReleasePy {
    fn __repr__(&self) -> String {
        format!("Release(id={}, org={:?}, kind={:?}, run_time={})", self.id, self.org, self.kind, self.run_time)
    }
}

/// The fair multi-tenant dispatcher of `fairqueue`, implemented in Rust.
#[pyclass(name = "Dispatcher", module = "fairqueue._core", frozen, subclass)]
pub struct DispatcherPy {
    core: Mutex<Dispatcher>,
    virtual_clock: Option<VirtualClock>,
}

impl DispatcherPy {
    /// Runs bulk core work (enqueueing a batch, filling slots) with the interpreter
    /// released; the one place that releases it.
    fn run<T: Send>(&self, py: Python<'_>, work: impl FnOnce(&mut Dispatcher) -> T + Send) -> T {
        py.detach(|| self.with_core(work))
    }

    /// Runs a small core call (one request, one lease, a lookup) holding the
    /// interpreter: these take well under a microsecond, less than releasing and
    /// re-taking the interpreter, and re-taking it under contention can hand a
    /// worker's dispatch loop to a handler thread for a whole switch interval.
    fn with_core<T>(&self, work: impl FnOnce(&mut Dispatcher) -> T) -> T {
        work(&mut self.core.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn virtual_clock(&self) -> PyResult<&VirtualClock> {
        self.virtual_clock.as_ref().ok_or_else(|| {
            PyRuntimeError::new_err(
                "this dispatcher reads the system clock; create it with virtual_time=… to move time by hand",
            )
        })
    }

    fn grant(core: &Dispatcher, g: Grant) -> GrantPy {
        GrantPy {
            lease: g.lease,
            id: g.id,
            org: core.org_name(g.org).unwrap_or_default().to_string(),
            kind: g.kind.name(),
            attempt: g.attempt,
            expires_at: seconds(g.expires_at),
        }
    }

    fn release_py(core: &Dispatcher, r: Release) -> ReleasePy {
        ReleasePy {
            id: r.id,
            org: core.org_name(r.org).unwrap_or_default().to_string(),
            kind: r.kind.name(),
            run_time: seconds(r.run_time),
        }
    }

    /// The key handle of `key` of `org` (`None`: its default key), if both are known.
    fn find_key(core: &Dispatcher, org: &str, key: Option<&str>) -> Result<Option<KeyId>, CoreError> {
        let Some(id) = core.find_org(org) else {
            Dispatcher::check_org_name(org)?;
            return Ok(None);
        };
        match key {
            Some(name) => {
                Dispatcher::check_key_name(name)?;
                Ok(core.find_key(id, name))
            }
            None => core.default_key(id).map(Some),
        }
    }

    /// The org and key handles of `key` of `org`, registering them; when `checked`
    /// (limits are being set) a `peek_set` dispatcher refuses before registering.
    fn resolve_key(core: &mut Dispatcher, org: &str, key: Option<&str>, checked: bool) -> Result<KeyId, CoreError> {
        Dispatcher::check_org_name(org)?;
        key.map(Dispatcher::check_key_name).transpose()?;
        if checked && core.config().policy != crate::limits::PolicyKind::FairShare {
            return Err(CoreError::invalid("key limits", key.unwrap_or("(default key)"), PEEK_SET_REFUSAL));
        }
        let id = core.org(org)?;
        match key {
            Some(name) => core.key(id, name),
            None => core.default_key(id),
        }
    }

    /// The rate scope `set_rate_limit` and `rate_limit` name, registering the org and key.
    fn scope(
        core: &mut Dispatcher,
        org: &str,
        kind: Option<Kind>,
        key: Option<&str>,
        every_key: bool,
        checked: bool,
    ) -> Result<RateScope, CoreError> {
        let several = usize::from(kind.is_some()) + usize::from(key.is_some()) + usize::from(every_key);
        if several > 1 {
            return Err(CoreError::invalid("rate scope", "several of kind, key, every_key", "at most one of them"));
        }
        Dispatcher::check_org_name(org)?;
        key.map(Dispatcher::check_key_name).transpose()?;
        if checked && core.config().policy != crate::limits::PolicyKind::FairShare {
            return Err(CoreError::invalid("rate limit", org, PEEK_SET_REFUSAL));
        }
        let id = core.org(org)?;
        Ok(match (kind, key, every_key) {
            (Some(kind), _, _) => RateScope::Pair(id, kind),
            (_, Some(name), _) => RateScope::Key(core.key(id, name)?),
            (_, _, true) => RateScope::EveryKey(id),
            _ => RateScope::Org(id),
        })
    }

    fn release_with(&self, lease: &Bound<'_, PyAny>, outcome: Outcome) -> PyResult<ReleasePy> {
        let lease = id64("lease", lease)?;
        Ok(self.with_core(|core| core.release(lease, outcome).map(|r| Self::release_py(core, r)))?)
    }
}

fn per_kind<T: Copy>(
    table: Option<HashMap<String, Option<T>>>,
    defaults: [Option<T>; KINDS],
) -> Result<[Option<T>; KINDS], CoreError> {
    let mut out = defaults;
    for (name, value) in table.unwrap_or_default() {
        out[kind(&name)?.index()] = value;
    }
    Ok(out)
}

#[pymethods]
impl DispatcherPy {
    /// Creates a dispatcher. See `fairqueue._core.pyi` for every argument.
    #[new]
    #[pyo3(signature = (*, policy = "fair_share", slots = 13, peek_set = 2000, cap = 12, min = 0,
                        weight = 1.0, extended_delay = None, kind_slots = None, lease = 60.0,
                        virtual_time = None, aging = 10.0, shares = "per_pair"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        policy: &str,
        slots: i64,
        peek_set: i64,
        cap: i64,
        min: i64,
        weight: f64,
        extended_delay: Option<HashMap<String, Option<f64>>>,
        kind_slots: Option<HashMap<String, Option<i64>>>,
        lease: f64,
        virtual_time: Option<f64>,
        aging: f64,
        shares: &str,
    ) -> PyResult<Self> {
        let defaults = Config::default();
        let limits = PairLimits {
            cap: count32("cap", cap, "at least 1 slot")?,
            min: count32("min", min, "from 0 to the cap")?,
            weight,
        };
        let extended_delay = per_kind(extended_delay, defaults.extended_delay.map(|d| d.map(seconds)))?
            .iter()
            .map(|d| d.map(|s| nanos("extended_delay", s)).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        let kind_slots = per_kind(kind_slots, [None; KINDS])?
            .iter()
            .map(|n| n.map(|n| count32("kind_slots", n, "0 or more slots")).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        let config = Config {
            policy: policy.parse()?,
            slots: count32("slots", slots, "at least 1")?,
            peek_set: count32("peek_set", peek_set, "at least 1 request")?,
            extended_delay: extended_delay.try_into().expect("one entry per kind"),
            kind_slots: kind_slots.try_into().expect("one entry per kind"),
            lease: nanos("lease", lease)?,
            default_limits: [limits; KINDS],
            aging: nanos("aging", aging)?,
            shares: shares.parse()?,
        };
        let virtual_clock = virtual_time.map(|t| nanos("virtual_time", t)).transpose()?.map(VirtualClock::new);
        let clock: Arc<dyn Clock> = match &virtual_clock {
            Some(v) => Arc::new(v.clone()),
            None => Arc::new(SystemClock),
        };
        Ok(DispatcherPy { core: Mutex::new(Dispatcher::new(config, clock)?), virtual_clock })
    }

    /// Enqueues one request; `key`, `priority` and `cost` are `fair_share` features.
    /// The priority's default is written out (5 = `DEFAULT_PRIORITY`) so that Python's
    /// signature shows it; a compile-time assertion pins the two together.
    #[pyo3(signature = (id, org, kind = "future", run_at = None, *, key = None, priority = 5, cost = 1))]
    #[allow(clippy::too_many_arguments)]
    fn enqueue(
        &self,
        id: &Bound<'_, PyAny>,
        org: &str,
        kind: &str,
        run_at: Option<f64>,
        key: Option<&str>,
        priority: i64,
        cost: i64,
    ) -> PyResult<()> {
        let id = id64("id", id)?;
        let kind = self::kind(kind)?;
        let run_at = run_at.map(|t| nanos("run_at", t)).transpose()?;
        let options = named_options(key, priority, cost)?;
        Ok(self.with_core(|core| core.enqueue_named_with(&[(NamedRequest { id, org, kind, run_at }, options)]))?)
    }

    /// Enqueues `(id, org, kind[, run_at[, key[, priority[, cost]]]])` tuples, all or
    /// none; with `skip_held`, ids the dispatcher already holds are passed over instead
    /// of refused. Returns how many were enqueued.
    #[pyo3(signature = (requests, *, skip_held = false))]
    fn enqueue_many(&self, py: Python<'_>, requests: Vec<Bound<'_, PyAny>>, skip_held: bool) -> PyResult<usize> {
        let mut parsed = Vec::with_capacity(requests.len());
        for item in &requests {
            let bad = || {
                InvalidArgument::new_err(format!(
                    "invalid request {}: expected a tuple (id, org, kind[, run_at[, key[, priority[, cost]]]]) \
                     with id an integer from 0 to 2**64 - 1",
                    shown(item)
                ))
            };
            let tuple = item.cast::<PyTuple>().map_err(|_| bad())?;
            let fields: Vec<Bound<'_, PyAny>> = tuple.iter().collect();
            if !(3..=7).contains(&fields.len()) {
                return Err(bad());
            }
            let id: u64 = fields[0].extract().map_err(|_| bad())?;
            let org: String = fields[1].extract().map_err(|_| bad())?;
            let kind: String = fields[2].extract().map_err(|_| bad())?;
            let field = |i: usize| fields.get(i).filter(|f| !f.is_none());
            let run_at: Option<f64> = field(3).map(|f| f.extract()).transpose().map_err(|_| bad())?;
            let key: Option<String> = field(4).map(|f| f.extract()).transpose().map_err(|_| bad())?;
            let priority: i64 =
                field(5).map(|f| f.extract()).transpose().map_err(|_| bad())?.unwrap_or(DEFAULT_PRIORITY.into());
            let cost: i64 = field(6).map(|f| f.extract()).transpose().map_err(|_| bad())?.unwrap_or(1);
            let (priority, cost) = (level("priority", priority)?, self::cost(cost)?);
            parsed.push((
                id,
                org,
                self::kind(&kind)?,
                run_at.map(|t| nanos("run_at", t)).transpose()?,
                key,
                priority,
                cost,
            ));
        }
        Ok(self.run(py, |core| {
            let batch: Vec<(NamedRequest<'_>, NamedOptions<'_>)> = parsed
                .iter()
                .filter(|(id, ..)| !(skip_held && core.holds(*id)))
                .map(|(id, org, kind, run_at, key, priority, cost)| {
                    (
                        NamedRequest { id: *id, org, kind: *kind, run_at: *run_at },
                        NamedOptions { key: key.as_deref(), priority: *priority, cost: *cost },
                    )
                })
                .collect();
            core.enqueue_named_with(&batch).map(|()| batch.len())
        })?)
    }

    /// The concurrency key, priority and cost request `id` carries.
    fn request_options<'py>(&self, py: Python<'py>, id: &Bound<'_, PyAny>) -> PyResult<Bound<'py, PyDict>> {
        let id = id64("id", id)?;
        let (key, priority, cost) = self.with_core(|core| {
            let options = core.options_of(id)?;
            let key = options.key.map(|k| core.key_stats(k).map(|s| s.name)).transpose()?.flatten();
            Ok::<_, CoreError>((key, options.priority, options.cost))
        })?;
        let d = PyDict::new(py);
        d.set_item("key", key)?;
        d.set_item("priority", priority)?;
        d.set_item("cost", cost)?;
        Ok(d)
    }

    /// True while request `id` is queued, delayed or running.
    fn holds(&self, id: &Bound<'_, PyAny>) -> PyResult<bool> {
        let id = id64("id", id)?;
        Ok(self.with_core(|core| core.holds(id)))
    }

    /// Fills up to `max` free slots (all free slots when `max` is None).
    #[pyo3(signature = (max = None))]
    fn dispatch(&self, py: Python<'_>, max: Option<i64>) -> PyResult<Vec<GrantPy>> {
        let max = match max {
            Some(n) => usize::try_from(n).map_err(|_| CoreError::invalid("max", n, "0 or more"))?,
            None => usize::MAX,
        };
        Ok(self.run(py, |core| {
            let grants = core.dispatch(max);
            grants.into_iter().map(|g| Self::grant(core, g)).collect()
        }))
    }

    /// The request under `lease` is done.
    fn ack(&self, lease: &Bound<'_, PyAny>) -> PyResult<ReleasePy> {
        self.release_with(lease, Outcome::Ack)
    }

    /// The request under `lease` never ran here (its store gave it to another worker,
    /// or it was aborted or paused meanwhile): it leaves, and its slot is not charged.
    fn gone(&self, lease: &Bound<'_, PyAny>) -> PyResult<ReleasePy> {
        self.release_with(lease, Outcome::Gone)
    }

    /// Acks many leases; all must be active or none is acked. Returns how many.
    fn ack_many(&self, leases: Vec<Bound<'_, PyAny>>) -> PyResult<usize> {
        let leases = leases.iter().map(|l| id64("lease", l)).collect::<Result<Vec<_>, _>>()?;
        Ok(self.with_core(|core| {
            if let Some(&bad) = leases.iter().find(|&&l| !core.is_active(l)) {
                return Err(CoreError::UnknownLease(bad));
            }
            for &lease in &leases {
                core.ack(lease)?;
            }
            Ok(leases.len())
        })?)
    }

    /// The request under `lease` failed for good.
    fn fail(&self, lease: &Bound<'_, PyAny>) -> PyResult<ReleasePy> {
        self.release_with(lease, Outcome::Fail)
    }

    /// The request under `lease` failed; deliver it again at `at` (seconds).
    fn retry(&self, lease: &Bound<'_, PyAny>, at: f64) -> PyResult<ReleasePy> {
        let at = nanos("at", at)?;
        self.release_with(lease, Outcome::Retry(at))
    }

    /// Extends `lease`; returns its new expiry (seconds).
    fn heartbeat(&self, lease: &Bound<'_, PyAny>) -> PyResult<f64> {
        let lease = id64("lease", lease)?;
        Ok(seconds(self.with_core(|core| core.heartbeat(lease))?))
    }

    /// Removes a queued or delayed request (returns None) or reports the lease of a
    /// running one, which the caller must cancel cooperatively.
    fn abort(&self, id: &Bound<'_, PyAny>) -> PyResult<Option<LeaseId>> {
        let id = id64("id", id)?;
        Ok(match self.with_core(|core| core.abort(id))? {
            Abort::Removed => None,
            Abort::Running(lease) => Some(lease),
        })
    }

    /// Where request `id` is: a dict with `state` and the figures of that state.
    fn locate<'py>(&self, py: Python<'py>, id: &Bound<'_, PyAny>) -> PyResult<Bound<'py, PyDict>> {
        let id = id64("id", id)?;
        let location = self.with_core(|core| core.locate(id))?;
        let d = PyDict::new(py);
        match location {
            Location::Queued { ahead_in_pair, ahead_in_queue } => {
                d.set_item("state", "queued")?;
                d.set_item("ahead_in_pair", ahead_in_pair)?;
                d.set_item("ahead_in_queue", ahead_in_queue)?;
            }
            Location::Delayed { due } => {
                d.set_item("state", "delayed")?;
                d.set_item("due", seconds(due))?;
            }
            Location::Running { lease, dispatched_at, expires_at } => {
                d.set_item("state", "running")?;
                d.set_item("lease", lease)?;
                d.set_item("dispatched_at", seconds(dispatched_at))?;
                d.set_item("expires_at", seconds(expires_at))?;
            }
        }
        Ok(d)
    }

    /// Sets the limits of one (org, kind) pair, live; omitted ones keep their value.
    #[pyo3(signature = (org, kind, *, cap = None, min = None, weight = None))]
    fn set_limits(
        &self,
        org: &str,
        kind: &str,
        cap: Option<i64>,
        min: Option<i64>,
        weight: Option<f64>,
    ) -> PyResult<()> {
        let kind = self::kind(kind)?;
        let cap = cap.map(|c| count32("cap", c, "at least 1 slot")).transpose()?;
        let min = min.map(|m| count32("min", m, "from 0 to the cap")).transpose()?;
        Ok(self.with_core(|core| {
            let current = match core.find_org(org) {
                Some(id) => core.limits(id, kind)?,
                None => Dispatcher::check_org_name(org).map(|()| core.config().default_limits[kind.index()])?,
            };
            let limits = PairLimits {
                cap: cap.unwrap_or(current.cap),
                min: min.unwrap_or(current.min),
                weight: weight.unwrap_or(current.weight),
            };
            // Register a new org only once its limits are known to be accepted.
            limits.validate()?;
            let org = core.org(org)?;
            core.set_limits(org, kind, limits)
        })?)
    }

    /// The limits of one (org, kind) pair as a dict `{cap, min, weight}`.
    fn limits<'py>(&self, py: Python<'py>, org: &str, kind: &str) -> PyResult<Bound<'py, PyDict>> {
        let kind = self::kind(kind)?;
        let limits = self.with_core(|core| match core.find_org(org) {
            Some(id) => core.limits(id, kind),
            None => Dispatcher::check_org_name(org).map(|()| core.config().default_limits[kind.index()]),
        })?;
        limits_dict(py, limits)
    }

    /// Sets the limits of every pair of `kind` without an override.
    #[pyo3(signature = (kind, *, cap, min = 0, weight = 1.0))]
    fn set_default_limits(&self, kind: &str, cap: i64, min: i64, weight: f64) -> PyResult<()> {
        let kind = self::kind(kind)?;
        let limits = PairLimits {
            cap: count32("cap", cap, "at least 1 slot")?,
            min: count32("min", min, "from 0 to the cap")?,
            weight,
        };
        Ok(self.with_core(|core| core.set_default_limits(kind, limits))?)
    }

    /// Sets the number of worker slots.
    fn set_slots(&self, slots: i64) -> PyResult<()> {
        let slots = count32("slots", slots, "at least 1")?;
        Ok(self.with_core(|core| core.set_slots(slots))?)
    }

    /// Sets a kind's global slot limit (None: no limit; 0 pauses the kind).
    fn set_kind_slots(&self, kind: &str, slots: Option<i64>) -> PyResult<()> {
        let kind = self::kind(kind)?;
        let slots = slots.map(|n| count32("kind_slots", n, "0 or more slots")).transpose()?;
        self.with_core(|core| core.set_kind_slots(kind, slots));
        Ok(())
    }

    /// Sets the capacity factor (0 to 1) from resource conservation.
    fn set_capacity(&self, capacity: f64) -> PyResult<()> {
        Ok(self.with_core(|core| core.set_capacity(capacity))?)
    }

    /// Queue-wide figures as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.with_core(|core| core.stats());
        let d = PyDict::new(py);
        d.set_item("queued", s.queued)?;
        d.set_item("delayed", s.delayed)?;
        d.set_item("running", s.running)?;
        d.set_item("slots", s.slots)?;
        d.set_item("effective_slots", s.effective_slots)?;
        d.set_item("capacity", s.capacity)?;
        let c = s.counters;
        for (name, value) in [
            ("enqueued", c.enqueued),
            ("dispatched", c.dispatched),
            ("released", c.released),
            ("acked", c.acked),
            ("failed", c.failed),
            ("retried", c.retried),
            ("expired", c.expired),
            ("aborted", c.aborted),
            ("gone", c.gone),
            ("extended_delays", c.extended_delays),
            ("events_dropped", c.events_dropped),
        ] {
            d.set_item(name, value)?;
        }
        Ok(d)
    }

    /// Figures of one (org, kind) pair as a dict.
    fn pair_stats<'py>(&self, py: Python<'py>, org: &str, kind: &str) -> PyResult<Bound<'py, PyDict>> {
        let kind = self::kind(kind)?;
        let stats = self.with_core(|core| {
            let org = core
                .find_org(org)
                .ok_or_else(|| CoreError::invalid("org", org, "an org that has enqueued or has limits"))?;
            core.pair_stats(org, kind)
        })?;
        let d = PyDict::new(py);
        d.set_item("queued", stats.queued)?;
        d.set_item("delayed", stats.delayed)?;
        d.set_item("running", stats.running)?;
        d.set_item("limits", limits_dict(py, stats.limits)?)?;
        d.set_item("virtual_time", stats.virtual_time / NANOS_PER_SEC as f64)?;
        Ok(d)
    }

    /// Events since the last call (extended delays, expired leases), oldest first.
    fn take_events<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let (events, names) = self.with_core(|core| {
            let events = core.take_events();
            let names: Vec<String> = events
                .iter()
                .map(|e| match e {
                    Event::ExtendedDelay { org, .. } | Event::LeaseExpired { org, .. } => *org,
                })
                .map(|org: OrgId| core.org_name(org).unwrap_or_default().to_string())
                .collect();
            (events, names)
        });
        events
            .into_iter()
            .zip(names)
            .map(|(event, org)| {
                let d = PyDict::new(py);
                d.set_item("org", org)?;
                match event {
                    Event::ExtendedDelay { kind, count, until, .. } => {
                        d.set_item("event", "extended_delay")?;
                        d.set_item("kind", kind.name())?;
                        d.set_item("count", count)?;
                        d.set_item("until", seconds(until))?;
                    }
                    Event::LeaseExpired { id, kind, attempt, .. } => {
                        d.set_item("event", "lease_expired")?;
                        d.set_item("kind", kind.name())?;
                        d.set_item("id", id)?;
                        d.set_item("attempt", attempt)?;
                    }
                }
                Ok(d)
            })
            .collect()
    }

    /// When a delayed request becomes due or a lease expires next (seconds), if ever.
    fn next_wakeup(&self) -> Option<f64> {
        self.with_core(|core| core.next_wakeup()).map(seconds)
    }

    /// The dispatcher's current time (seconds).
    fn now(&self) -> f64 {
        seconds(self.core.lock().unwrap_or_else(PoisonError::into_inner).now())
    }

    /// Moves a virtual clock forward by `seconds`.
    fn advance(&self, seconds: f64) -> PyResult<()> {
        let by = nanos("seconds", seconds)?;
        self.virtual_clock()?.advance(by);
        Ok(())
    }

    /// Sets a virtual clock to `t` seconds (never backwards).
    fn set_time(&self, t: f64) -> PyResult<()> {
        let t = nanos("t", t)?;
        self.virtual_clock()?.set(t);
        Ok(())
    }

    /// Sets an org's own limits (`fair_share`), live: the most slots it holds over all
    /// kinds (`cap`, None: no org cap), slots reserved for it (`min`), its share against
    /// other orgs (`weight`), and the limits each of its named keys gets unless set
    /// on its own (`per_key_cap`, None: no key cap; `per_key_weight`).
    #[pyo3(signature = (org, *, cap = None, min = 0, weight = 1.0, per_key_cap = None, per_key_weight = 1.0))]
    fn set_org_limits(
        &self,
        org: &str,
        cap: Option<i64>,
        min: i64,
        weight: f64,
        per_key_cap: Option<i64>,
        per_key_weight: f64,
    ) -> PyResult<()> {
        let limits = OrgLimits {
            cap: cap.map(|c| count32("org cap", c, "at least 1 slot")).transpose()?,
            min: count32("org min", min, "from 0 to the org cap")?,
            weight,
            per_key: KeyLimits {
                cap: per_key_cap.map(|c| count32("key cap", c, "at least 1 slot")).transpose()?,
                weight: per_key_weight,
            },
        };
        limits.validate()?;
        Ok(self.with_core(|core| {
            if core.find_org(org).is_none() {
                Dispatcher::check_org_name(org)?;
                if limits != OrgLimits::default() && core.config().policy != crate::limits::PolicyKind::FairShare {
                    // Refused before the org is registered, so a refusal leaves no trace.
                    return Err(CoreError::invalid("org limits", limits, PEEK_SET_REFUSAL));
                }
            }
            let id = core.org(org)?;
            core.set_org_limits(id, limits)
        })?)
    }

    /// An org's own limits: `{cap, min, weight, per_key: {cap, weight}}`.
    fn org_limits<'py>(&self, py: Python<'py>, org: &str) -> PyResult<Bound<'py, PyDict>> {
        let limits = self.with_core(|core| match core.find_org(org) {
            Some(id) => core.org_limits(id),
            None => Dispatcher::check_org_name(org).map(|()| OrgLimits::default()),
        })?;
        let d = PyDict::new(py);
        d.set_item("cap", limits.cap)?;
        d.set_item("min", limits.min)?;
        d.set_item("weight", limits.weight)?;
        d.set_item("per_key", key_limits_dict(py, limits.per_key)?)?;
        Ok(d)
    }

    /// Sets the limits of one concurrency key of `org` (`key=None`: the org's default
    /// key), live: `cap` (None: no key cap) and `weight` among the org's keys. With
    /// `inherit`, the key goes back to its org's per-key limits instead.
    #[pyo3(signature = (org, key, *, cap = None, weight = 1.0, inherit = false))]
    fn set_key_limits(
        &self,
        org: &str,
        key: Option<&str>,
        cap: Option<i64>,
        weight: f64,
        inherit: bool,
    ) -> PyResult<()> {
        let limits = KeyLimits { cap: cap.map(|c| count32("key cap", c, "at least 1 slot")).transpose()?, weight };
        limits.validate()?;
        let limits = (!inherit).then_some(limits);
        Ok(self.with_core(|core| {
            let key = Self::resolve_key(core, org, key, limits.is_some())?;
            core.set_key_limits(key, limits)
        })?)
    }

    /// The limits of one concurrency key (`key=None`: the org's default key): `{cap, weight}`.
    #[pyo3(signature = (org, key))]
    fn key_limits<'py>(&self, py: Python<'py>, org: &str, key: Option<&str>) -> PyResult<Bound<'py, PyDict>> {
        let limits = self.with_core(|core| match Self::find_key(core, org, key)? {
            Some(k) => core.key_limits(k),
            None => Ok(match core.find_org(org) {
                Some(id) if key.is_some() => core.org_limits(id)?.per_key,
                _ => KeyLimits::default(),
            }),
        })?;
        key_limits_dict(py, limits)
    }

    /// Sets (or with `rate=None` removes) a rate limit (`fair_share`), live: at most
    /// `rate` units of cost per `per` seconds, bursts of `burst` (default: one period's
    /// worth, at least 1). It applies to the whole org, or to one `kind` of it, or to one
    /// `key` of it, or with `every_key` to each of its named keys on its own.
    #[pyo3(signature = (org, rate, *, per = 1.0, burst = None, kind = None, key = None, every_key = false))]
    #[allow(clippy::too_many_arguments)]
    fn set_rate_limit(
        &self,
        org: &str,
        rate: Option<f64>,
        per: f64,
        burst: Option<i64>,
        kind: Option<&str>,
        key: Option<&str>,
        every_key: bool,
    ) -> PyResult<()> {
        let limit = rate.map(|r| rate_limit(r, per, burst)).transpose()?;
        let kind = kind.map(self::kind).transpose()?;
        Ok(self.with_core(|core| {
            let scope = Self::scope(core, org, kind, key, every_key, limit.is_some())?;
            core.set_rate_limit(scope, limit)
        })?)
    }

    /// The rate limit of a scope (as for `set_rate_limit`), if any:
    /// `{rate, per, burst, waiting_until}` — `waiting_until` is when the scope will
    /// have room for the job it waits for (None when it is not waiting).
    #[pyo3(signature = (org, *, kind = None, key = None, every_key = false))]
    fn rate_limit<'py>(
        &self,
        py: Python<'py>,
        org: &str,
        kind: Option<&str>,
        key: Option<&str>,
        every_key: bool,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let kind = kind.map(self::kind).transpose()?;
        let (limit, until) = self.with_core(|core| {
            if core.find_org(org).is_none() || (key.is_some() && Self::find_key(core, org, key)?.is_none()) {
                Dispatcher::check_org_name(org)?;
                key.map(Dispatcher::check_key_name).transpose()?;
                return Ok((None, None));
            }
            let scope = Self::scope(core, org, kind, key, every_key, false)?;
            Ok::<_, CoreError>((core.rate_limit(scope)?, core.throttled_until(scope)?))
        })?;
        rate_dict(py, limit, until)
    }

    /// Figures of one org as a dict: queued, running, limits, virtual_time, rate, keys.
    fn org_stats<'py>(&self, py: Python<'py>, org: &str) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.with_core(|core| {
            let id = core
                .find_org(org)
                .ok_or_else(|| CoreError::invalid("org", org, "an org that has enqueued or has limits"))?;
            core.org_stats(id)
        })?;
        let d = PyDict::new(py);
        d.set_item("queued", stats.queued)?;
        d.set_item("running", stats.running)?;
        d.set_item("virtual_time", stats.virtual_time / NANOS_PER_SEC as f64)?;
        d.set_item("rate", rate_dict(py, stats.rate, stats.throttled_until)?)?;
        d.set_item("keys", stats.keys)?;
        Ok(d)
    }

    /// Figures of one concurrency key (`key=None`: the org's default key) as a dict:
    /// queued, running, limits, rate.
    #[pyo3(signature = (org, key))]
    fn key_stats<'py>(&self, py: Python<'py>, org: &str, key: Option<&str>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.with_core(|core| {
            let k = Self::find_key(core, org, key)?.ok_or_else(|| {
                CoreError::invalid("key", key.unwrap_or_default(), "a key that has enqueued or has limits")
            })?;
            core.key_stats(k)
        })?;
        let d = PyDict::new(py);
        d.set_item("queued", stats.queued)?;
        d.set_item("running", stats.running)?;
        d.set_item("limits", key_limits_dict(py, stats.limits)?)?;
        d.set_item("rate", rate_dict(py, stats.rate, stats.throttled_until)?)?;
        Ok(d)
    }

    /// The policy's name.
    #[getter]
    fn policy(&self) -> &'static str {
        self.core.lock().unwrap_or_else(PoisonError::into_inner).config().policy.name()
    }
}

fn limits_dict(py: Python<'_>, limits: PairLimits) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("cap", limits.cap)?;
    d.set_item("min", limits.min)?;
    d.set_item("weight", limits.weight)?;
    Ok(d)
}

fn org_row<'py>(py: Python<'py>, row: &OrgRow) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("org", &row.org)?;
    d.set_item("orgs", row.orgs)?;
    d.set_item("n", row.requests)?;
    d.set_item("dispatched", row.dispatched)?;
    d.set_item("mean", row.wait_mean)?;
    d.set_item("p50", row.wait_p50)?;
    d.set_item("p95", row.wait_p95)?;
    d.set_item("p99", row.wait_p99)?;
    d.set_item("max", row.wait_max)?;
    d.set_item("done_at", row.done_at)?;
    d.set_item("slot_time", row.slot_time)?;
    d.set_item("extended_delays", row.extended_delays)?;
    Ok(d)
}

fn key_row<'py>(py: Python<'py>, row: &KeyRow) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("org", &row.org)?;
    d.set_item("key", &row.key)?;
    d.set_item("n", row.requests)?;
    d.set_item("dispatched", row.dispatched)?;
    d.set_item("p50", row.wait_p50)?;
    d.set_item("p99", row.wait_p99)?;
    d.set_item("max", row.wait_max)?;
    d.set_item("slot_time", row.slot_time)?;
    Ok(d)
}

/// Returns `value` if it can be a name of the kind `what` (`"org"`, `"key"`,
/// `"schedule name"` or `"duplicate signature"`): a str within [`name::NAME_RULE`].
/// Anything else raises InvalidArgument naming the value and the rule, never a
/// TypeError or a UnicodeEncodeError.
#[pyfunction]
#[pyo3(signature = (value, what = "org"))]
fn check_name(value: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    let what: &'static str = match what {
        "org" => "org",
        "key" => "key",
        "schedule name" => "schedule name",
        "duplicate signature" => "duplicate signature",
        other => {
            return Err(CoreError::invalid(
                "name kind",
                other,
                "'org', 'key', 'schedule name' or 'duplicate signature'",
            )
            .into())
        }
    };
    let Ok(text) = value.cast::<PyString>() else {
        let shown = value.repr().map(|r| r.to_string()).unwrap_or_else(|_| "<unprintable>".to_string());
        return Err(CoreError::invalid(what, shown, format!("a str: {}", name::NAME_RULE)).into());
    };
    let Ok(text) = text.to_str() else {
        return Err(
            CoreError::invalid(what, "with a lone surrogate", format!("valid Unicode: {}", name::NAME_RULE)).into()
        );
    };
    name::check_name(what, text)?;
    Ok(text.to_string())
}

/// Runs a built-in scenario on the dispatcher with a virtual clock; returns the report
/// as a dict (times in seconds). `policy` is `fair_share`, `peek_set`, `fifo` (one
/// queue with the same caps) or `fifo_uncapped`.
#[pyfunction]
#[pyo3(signature = (scenario, policy = "fair_share", *, flood = None, seed = 1, horizon = None))]
fn simulate<'py>(
    py: Python<'py>,
    scenario: &str,
    policy: &str,
    flood: Option<i64>,
    seed: u64,
    horizon: Option<f64>,
) -> PyResult<Bound<'py, PyDict>> {
    let flood = flood
        .map(|f| usize::try_from(f).map_err(|_| CoreError::invalid("flood", f, "1 or more requests")))
        .transpose()?;
    if flood == Some(0) {
        return Err(CoreError::invalid("flood", 0, "1 or more requests").into());
    }
    let options = ScenarioOptions { flood, seed, horizon, ..ScenarioOptions::default() };
    let report = py.detach(|| match policy {
        "fifo" => sim::run_scenario_fifo(scenario, Baseline::SameCaps, &options),
        "fifo_uncapped" => sim::run_scenario_fifo(scenario, Baseline::Uncapped, &options),
        other => other.parse().and_then(|policy| sim::run_scenario(scenario, policy, &options)),
    })?;
    let d = PyDict::new(py);
    d.set_item("scenario", &report.scenario)?;
    d.set_item("policy", &report.policy)?;
    d.set_item("slots", report.slots)?;
    d.set_item("requests", report.requests)?;
    d.set_item("completed", report.completed)?;
    d.set_item("makespan", report.makespan)?;
    d.set_item("cut_short", report.cut_short)?;
    d.set_item("utilisation", report.utilisation)?;
    d.set_item("extended_delays", report.extended_delayed_requests)?;
    d.set_item("extended_delay_events", report.extended_delay_events)?;
    d.set_item("orgs", report.orgs.iter().map(|r| org_row(py, r)).collect::<PyResult<Vec<_>>>()?)?;
    d.set_item("groups", report.groups.iter().map(|r| org_row(py, r)).collect::<PyResult<Vec<_>>>()?)?;
    d.set_item("keys", report.keys.iter().map(|r| key_row(py, r)).collect::<PyResult<Vec<_>>>()?)?;
    d.set_item("series", report.series.iter().map(|s| (s.at, s.pending.clone())).collect::<Vec<_>>())?;
    d.set_item("table", report.table())?;
    Ok(d)
}

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(simulate, m)?)?;
    m.add_function(wrap_pyfunction!(payload::encode_payload, m)?)?;
    m.add_function(wrap_pyfunction!(check_name, m)?)?;
    m.add("NAME_RULE", name::NAME_RULE)?;
    m.add_class::<DispatcherPy>()?;
    m.add_class::<GrantPy>()?;
    m.add_class::<ReleasePy>()?;
    m.add_class::<embedded::EmbeddedTurnsPy>()?;
    m.add_class::<slot_line::SlotLinePy>()?;
    Ok(())
}
