//! `EmbeddedTurns`: the embedded store's hot statements (`crate::embedded`) for
//! `fairqueue.storage.sqlite`, run with the interpreter released.

use std::sync::{Mutex, PoisonError};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use rusqlite::types::Value;

use crate::embedded::{Embedded, PlainFinish, Turn};
use crate::error::CoreResult;

type PendingRow = (i64, String, String, Option<f64>, Option<String>, i64, i64, i64, i64, String);

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

fn to_python<'py>(py: Python<'py>, value: Value) -> PyResult<Bound<'py, PyAny>> {
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

    /// Closes the connection (later calls raise).
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.store.lock().unwrap_or_else(PoisonError::into_inner).take());
    }
}
