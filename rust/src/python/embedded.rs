//! `EmbeddedTurns`: the embedded store's hot statements (`crate::embedded`) for
//! `fairqueue.storage.sqlite`, run with the interpreter released — and a thread-mode
//! worker's whole usual turn, from its slots' plain completions to its next jobs in
//! their line, without a Python object per job.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use rusqlite::types::Value;

use super::slot_line::SlotLinePy;
use super::{nanos, DispatcherPy, GrantPy};
use crate::dispatcher::Outcome;
use crate::embedded::{Embedded, PlainFinish, Turn};
use crate::error::{CoreError, CoreResult};

type PendingRow = (i64, String, String, Option<f64>, Option<String>, i64, i64, i64, i64, String);

/// What a worker's turns did: see `EmbeddedTurns.worker_turns`.
type WorkerTurn<'py> =
    (Vec<(u64, i64)>, Vec<(u64, i64)>, usize, Vec<String>, Vec<GrantPy>, Vec<Bound<'py, PyTuple>>, bool);

/// Where a claimed row holds what decides whether it starts as it is.
struct RowShape {
    id: usize,
    attempts: usize,
    handler_attempts: usize,
    worker_deaths: usize,
}

impl RowShape {
    fn of(store: &Embedded) -> CoreResult<Self> {
        let at = |name: &'static str| {
            store.column(name).ok_or_else(|| CoreError::invalid("columns", name, "a claim returning this column"))
        };
        Ok(RowShape {
            id: at("id")?,
            attempts: at("attempts")?,
            handler_attempts: at("handler_attempts")?,
            worker_deaths: at("worker_deaths")?,
        })
    }

    fn int(row: &[Value], at: usize) -> i64 {
        match row.get(at) {
            Some(Value::Integer(n)) => *n,
            _ => 0,
        }
    }

    /// Whether the job starts as claimed: not a suspect of a worker's death, its
    /// deliveries without an outcome under the limit (the worker's Python decides those).
    fn usual(&self, row: &[Value], max_attempts: i64) -> bool {
        let lost = Self::int(row, self.attempts) - Self::int(row, self.handler_attempts) - 1;
        lost < max_attempts && Self::int(row, self.worker_deaths) == 0
    }
}

/// What the turn did without the interpreter; its rows become Python tuples after.
#[derive(Default)]
struct Done {
    applied: Vec<(u64, i64)>,
    not_applied: Vec<(u64, i64)>,
    started: usize,
    orgs: Vec<String>,
    grants: Vec<GrantPy>,
    rows: Vec<Vec<Value>>,
    stale: bool,
}

impl Done {
    fn did_something(&self) -> bool {
        self.started > 0 || !self.applied.is_empty() || !self.not_applied.is_empty()
    }
}

/// The embedded store's pick-up and turn statements on a connection of their own.
#[pyclass(name = "EmbeddedTurns", module = "fairqueue._core", frozen)]
pub struct EmbeddedTurnsPy {
    store: Mutex<Option<Embedded>>,
}

impl EmbeddedTurnsPy {
    /// Runs `work` on the open connection with the interpreter released.
    fn run<T: Send>(&self, py: Python<'_>, work: impl FnOnce(&mut Embedded) -> CoreResult<T> + Send) -> PyResult<T> {
        py.detach(|| {
            let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
            match store.as_mut() {
                Some(store) => work(store).map_err(PyErr::from),
                None => Err(PyRuntimeError::new_err("the embedded store's connection is closed")),
            }
        })
    }
}

pub(crate) fn to_python<'py>(py: Python<'py>, value: Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Integer(n) => n.into_pyobject(py)?.into_any(),
        Value::Real(x) => x.into_pyobject(py)?.into_any(),
        Value::Text(text) => text.into_pyobject(py)?.into_any(),
        Value::Blob(bytes) => PyBytes::new(py, &bytes).into_any(),
    })
}

#[pymethods]
impl EmbeddedTurnsPy {
    /// Opens the store at ``path``; a claim returns ``columns`` (comma-separated) of each job.
    #[new]
    fn new(py: Python<'_>, path: String, columns: String) -> PyResult<Self> {
        let store = py.detach(|| Embedded::open(&path, &columns))?;
        Ok(EmbeddedTurnsPy { store: Mutex::new(Some(store)) })
    }

    /// Queued jobs with ``ready_seq`` > ``after_seq`` in that order, ``limit`` at most
    /// (negative: all), of the queues in the JSON array ``queues`` (None: every queue):
    /// ``(id, org, kind, run_at, key, priority, cost, attempts, ready_seq, queue)``.
    #[pyo3(signature = (after_seq, limit, queues=None))]
    fn pending(&self, py: Python<'_>, after_seq: i64, limit: i64, queues: Option<String>) -> PyResult<Vec<PendingRow>> {
        let rows = self.run(py, |store| store.pending(after_seq, limit, queues.as_deref()))?;
        Ok(rows
            .into_iter()
            .map(|p| (p.id, p.org, p.kind, p.run_at, p.key, p.priority, p.cost, p.attempts, p.ready_seq, p.queue))
            .collect())
    }

    /// One turn in one transaction: stores the plain outcomes ``finishes`` (``(id,
    /// worker, at, ran)``; batch jobs are skipped) and claims ``asked`` (see
    /// ``Storage.job_claim``). Returns the applied outcomes' ids, the claimed rows (in
    /// the store's column order) and whether the settings ``version`` was stale.
    #[allow(clippy::too_many_arguments)]
    fn turn<'py>(
        &self,
        py: Python<'py>,
        finishes: Vec<(i64, String, f64, bool)>,
        asked: Vec<i64>,
        worker: String,
        lease_until: f64,
        now: f64,
        version: Option<i64>,
    ) -> PyResult<(Vec<i64>, Vec<Bound<'py, PyTuple>>, bool)> {
        let finishes: Vec<PlainFinish> =
            finishes.into_iter().map(|(id, worker, at, ran)| PlainFinish { id, worker, at, ran }).collect();
        let Turn { applied, claimed, stale } =
            self.run(py, |store| store.turn(&finishes, &asked, &worker, lease_until, now, version))?;
        let rows = claimed
            .into_iter()
            .map(|row| {
                let values = row.into_iter().map(|v| to_python(py, v)).collect::<PyResult<Vec<_>>>()?;
                PyTuple::new(py, values)
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok((applied, rows, stale))
    }

    /// A thread-mode worker's usual turns, with the interpreter released throughout,
    /// until ``until`` (UNIX seconds) or until the worker needs its Python: each turn
    /// takes the plain completions the slots put in ``line``, releases their slots in
    /// ``core``, fills the free slots, stores the completions and claims the granted
    /// jobs for ``worker`` (leases of ``lease`` seconds) in one transaction (as
    /// ``turn``), and puts the claimed rows in ``line`` for the slots; between turns it
    /// sleeps until a slot completes a job. It returns after a turn once ``until`` has
    /// passed, ``line.attend()`` was called, no slot is leased, a completion was not
    /// stored (the job is no longer this worker's, or is a batch's), or a claim did not
    /// take every grant as granted, in order and as a plain start (a stand-in, a job
    /// gone, a suspect of a worker's death, a job out of deliveries) or was stale —
    /// such a claim starts nothing: its grants and rows are returned for the worker to
    /// sort out. If the store fails, that turn's completions go back into the line and
    /// its grants are offered again ``retry_delay`` seconds later; the error is raised,
    /// or, if earlier turns did anything, their results are returned (the next call
    /// meets the error).
    ///
    /// Returns ``(applied, not_applied, started, orgs, grants, rows, stale)``: the
    /// completions stored and those that were not (``(lease, job id)``), how many jobs
    /// were put in the line and their distinct orgs, and the grants and rows left to
    /// the worker.
    #[allow(clippy::too_many_arguments)]
    fn worker_turns<'py>(
        &self,
        py: Python<'py>,
        line: &SlotLinePy,
        core: &DispatcherPy,
        worker: String,
        lease: f64,
        version: Option<i64>,
        max_attempts: i64,
        retry_delay: f64,
        until: f64,
    ) -> PyResult<WorkerTurn<'py>> {
        let retry_delay = nanos("retry_delay", retry_delay)?;
        let done = self.run(py, |store| {
            let turns =
                Turns { shape: RowShape::of(store)?, worker: &worker, lease, version, max_attempts, retry_delay };
            let mut done = Done::default();
            loop {
                let leased = match turns.once(store, line, core, &mut done) {
                    Ok(leased) => leased,
                    // What the earlier turns did goes back first; the next call meets the error.
                    Err(_) if done.did_something() => return Ok(done),
                    Err(error) => return Err(error),
                };
                let left = done.stale || !done.grants.is_empty() || !done.not_applied.is_empty();
                if left || leased == 0 || wall_clock() >= until || !line.sleep_until_done(until) {
                    line.wake_all_behind();
                    return Ok(done);
                }
            }
        })?;
        let rows = done
            .rows
            .into_iter()
            .map(|row| PyTuple::new(py, row.into_iter().map(|v| to_python(py, v)).collect::<PyResult<Vec<_>>>()?))
            .collect::<PyResult<Vec<_>>>()?;
        Ok((done.applied, done.not_applied, done.started, done.orgs, done.grants, rows, done.stale))
    }

    /// Closes the connection (later calls raise).
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.store.lock().unwrap_or_else(PoisonError::into_inner).take());
    }
}

/// Seconds since the UNIX epoch, as Python's ``time.time()``.
pub(crate) fn wall_clock() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// What every turn of one `EmbeddedTurns.worker_turns` call claims under.
struct Turns<'a> {
    shape: RowShape,
    worker: &'a str,
    /// Seconds a claim's lease lasts.
    lease: f64,
    /// The settings version the claims are made at.
    version: Option<i64>,
    max_attempts: i64,
    /// How long after a failed turn its grants are offered again.
    retry_delay: u64,
}

impl Turns<'_> {
    /// One turn, adding what it did to `done`; returns how many of the core's slots
    /// are leased after it.
    fn once(&self, store: &mut Embedded, line: &SlotLinePy, core: &DispatcherPy, done: &mut Done) -> CoreResult<u32> {
        let now = wall_clock();
        let completions = line.lock().take_done();
        let (grants, leased) = core.with_core(|core| {
            for &(lease, _) in &completions {
                // A lease the worker released meanwhile (the job timed out) is already free.
                if core.is_active(lease) {
                    core.ack(lease)?;
                }
            }
            let grants = core.dispatch(usize::MAX);
            Ok::<_, CoreError>((grants, core.leased()))
        })?;
        if completions.is_empty() && grants.is_empty() {
            return Ok(leased);
        }
        let finishes: Vec<PlainFinish> = completions
            .iter()
            .map(|&(_, id)| PlainFinish { id, worker: self.worker.to_owned(), at: now, ran: true })
            .collect();
        let asked: Vec<i64> = grants.iter().map(|g| g.id as i64).collect();
        let turn = match store.turn(&finishes, &asked, self.worker, now + self.lease, now, self.version) {
            Ok(turn) => turn,
            Err(error) => {
                line.lock().give_back_done(completions);
                core.with_core(|core| {
                    let at = core.now() + self.retry_delay;
                    for g in &grants {
                        core.release(g.lease, Outcome::Retry(at))?;
                    }
                    Ok::<_, CoreError>(())
                })?;
                return Err(error);
            }
        };
        let stored: HashSet<i64> = turn.applied.iter().copied().collect();
        for completion in completions {
            if stored.contains(&completion.1) {
                done.applied.push(completion);
            } else {
                done.not_applied.push(completion);
            }
        }
        done.stale = turn.stale;
        let usual = !turn.stale
            && turn.claimed.len() == grants.len()
            && turn.claimed.iter().zip(&grants).all(|(row, g)| {
                RowShape::int(row, self.shape.id) == g.id as i64 && self.shape.usual(row, self.max_attempts)
            });
        if usual {
            core.with_core(|core| {
                for g in &grants {
                    let org = core.org_name(g.org).unwrap_or_default();
                    if !done.orgs.iter().any(|o| o == org) {
                        done.orgs.push(org.to_string());
                    }
                }
            });
            let mut waiting = line.lock();
            done.started += waiting.push_rows(grants.iter().map(|g| g.lease).zip(turn.claimed));
            line.wake(waiting);
        } else {
            done.grants = core.with_core(|core| grants.into_iter().map(|g| DispatcherPy::grant(core, g)).collect());
            done.rows = turn.claimed;
        }
        Ok(leased)
    }
}
