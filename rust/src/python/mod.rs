//! The PyO3 binding: `fairqueue._core`. Thin by design — it converts arguments,
//! releases the interpreter around core work, and maps [`CoreError`] to the
//! exceptions defined in `fairqueue/errors.py`. No queue logic lives here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyString};

use crate::clock::{Clock, Nanos, SystemClock, VirtualClock, NANOS_PER_SEC};
use crate::dispatcher::{Abort, Dispatcher, Event, Grant, Location, NamedRequest, Outcome, Release};
use crate::error::CoreError;
use crate::lease::LeaseId;
use crate::limits::{Config, PairLimits};
use crate::name;
use crate::request::{Kind, OrgId, KINDS};
use crate::sim::{self, Baseline, OrgRow, ScenarioOptions};

mod payload;

pyo3::import_exception!(fairqueue.errors, InvalidArgument);
pyo3::import_exception!(fairqueue.errors, UnknownKind);
pyo3::import_exception!(fairqueue.errors, UnknownPolicy);
pyo3::import_exception!(fairqueue.errors, DuplicateRequest);
pyo3::import_exception!(fairqueue.errors, UnknownRequest);
pyo3::import_exception!(fairqueue.errors, UnknownLease);

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
                        virtual_time = None))]
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
            aging: defaults.aging,
        };
        let virtual_clock = virtual_time.map(|t| nanos("virtual_time", t)).transpose()?.map(VirtualClock::new);
        let clock: Arc<dyn Clock> = match &virtual_clock {
            Some(v) => Arc::new(v.clone()),
            None => Arc::new(SystemClock),
        };
        Ok(DispatcherPy { core: Mutex::new(Dispatcher::new(config, clock)?), virtual_clock })
    }

    /// Enqueues one request.
    #[pyo3(signature = (id, org, kind = "future", run_at = None))]
    fn enqueue(&self, id: &Bound<'_, PyAny>, org: &str, kind: &str, run_at: Option<f64>) -> PyResult<()> {
        let id = id64("id", id)?;
        let kind = self::kind(kind)?;
        let run_at = run_at.map(|t| nanos("run_at", t)).transpose()?;
        Ok(self.with_core(|core| core.enqueue_named(&[NamedRequest { id, org, kind, run_at }]))?)
    }

    /// Enqueues `(id, org, kind[, run_at])` tuples, all or none; with `skip_held`, ids the
    /// dispatcher already holds are passed over instead of refused. Returns how many
    /// were enqueued.
    #[pyo3(signature = (requests, *, skip_held = false))]
    fn enqueue_many(&self, py: Python<'_>, requests: Vec<Bound<'_, PyAny>>, skip_held: bool) -> PyResult<usize> {
        let mut parsed = Vec::with_capacity(requests.len());
        for item in &requests {
            let (id, org, kind, run_at): (u64, String, String, Option<f64>) = match item.extract() {
                Ok(four) => four,
                Err(_) => {
                    let (id, org, kind): (u64, String, String) = item.extract().map_err(|_| {
                        InvalidArgument::new_err(format!(
                            "invalid request {}: expected a tuple (id, org, kind) or (id, org, kind, run_at) \
                             with id an integer from 0 to 2**64 - 1",
                            shown(item)
                        ))
                    })?;
                    (id, org, kind, None)
                }
            };
            parsed.push((id, org, self::kind(&kind)?, run_at.map(|t| nanos("run_at", t)).transpose()?));
        }
        Ok(self.run(py, |core| {
            let batch: Vec<NamedRequest<'_>> = parsed
                .iter()
                .filter(|(id, ..)| !(skip_held && core.holds(*id)))
                .map(|(id, org, kind, run_at)| NamedRequest { id: *id, org, kind: *kind, run_at: *run_at })
                .collect();
            core.enqueue_named(&batch).map(|()| batch.len())
        })?)
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
    Ok(())
}
