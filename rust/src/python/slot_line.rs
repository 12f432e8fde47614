//! `SlotLine`: the hand-off between a worker's loop and its handler slots, both ways.
//!
//! Jobs go to the slots as Python objects the worker builds, or as claimed rows a
//! turn run in Rust put in without the interpreter (`EmbeddedTurns.worker_turns`);
//! plain completions come back as `(lease, job id)` pairs, which such a turn stores
//! without building a Python object per job. A slot takes an item only while it
//! holds the interpreter (so the slot that just finished a job takes the next before
//! one that woke up and waits for the interpreter); only an idle slot sleeps, on a
//! condition variable, with the interpreter released. New items wake one sleeping
//! slot, and a slot that takes an item while more wait wakes the next — one slot on
//! its way at a time; while rows wait, the loop (which holds no interpreter) also
//! wakes one more each time no slot has taken an item for `NUDGE`. So slots wake as
//! fast as the awake ones fall behind, not all at once to fight for the interpreter:
//! handlers that hold it (short jobs) are run one after the other by the slots
//! already awake, and each handler that releases it (I/O, sleeps) lets the next
//! slot in.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use pyo3::prelude::*;
use pyo3::types::PyTuple;
use rusqlite::types::Value;

use super::embedded::{to_python, wall_clock};

/// How long rows may wait with no slot taking any before the loop wakes one more slot.
const NUDGE: std::time::Duration = std::time::Duration::from_micros(100);

/// What waits in the line for a slot.
pub(crate) enum Item {
    /// A job claimed by a turn run in Rust: its slot's lease and its row (the store's columns).
    Row { lease: u64, row: Vec<Value> },
    /// Whatever the worker put in (a task, or None: the slot exits).
    Object(Py<PyAny>),
}

#[derive(Default)]
pub(crate) struct Line {
    items: VecDeque<Item>,
    rows: usize,
    done: Vec<(u64, i64)>,
    /// Slots asleep waiting for an item.
    sleeping: usize,
    /// Slots woken and not yet back at the line.
    waking: usize,
    /// Items taken so far (the loop sees whether slots keep up).
    taken: u64,
    /// The loop is asleep waiting for a completion.
    loop_sleeping: bool,
    /// The worker's Python wants its loop back (`SlotLine.attend`).
    attention: bool,
}

impl Line {
    /// Puts claimed rows in for the slots (the caller wakes them).
    pub(crate) fn push_rows(&mut self, rows: impl IntoIterator<Item = (u64, Vec<Value>)>) -> usize {
        let before = self.items.len();
        self.items.extend(rows.into_iter().map(|(lease, row)| Item::Row { lease, row }));
        let added = self.items.len() - before;
        self.rows += added;
        added
    }

    /// The plain completions delivered so far, taken out.
    pub(crate) fn take_done(&mut self) -> Vec<(u64, i64)> {
        std::mem::take(&mut self.done)
    }

    /// Puts back completions a turn took but could not store, ahead of newer ones.
    pub(crate) fn give_back_done(&mut self, mut done: Vec<(u64, i64)>) {
        done.append(&mut self.done);
        self.done = done;
    }

    fn pop(&mut self) -> Option<Item> {
        let item = self.items.pop_front();
        match item {
            Some(Item::Row { .. }) => {
                self.rows -= 1;
                self.taken += 1;
            }
            Some(Item::Object(_)) => self.taken += 1,
            None => {}
        }
        item
    }

    /// Whether items wait while some slot sleeps.
    fn behind(&self) -> bool {
        !self.items.is_empty() && self.sleeping > 0
    }

    /// Whether to wake a sleeping slot for the items waiting: none is on its way yet.
    fn wake_one(&mut self) -> bool {
        let wake = !self.items.is_empty() && self.sleeping > 0 && self.waking == 0;
        if wake {
            self.waking += 1;
        }
        wake
    }
}

/// A worker's hand-off to its handler slots and back.
#[pyclass(name = "SlotLine", module = "fairqueue._core", frozen)]
#[derive(Default)]
pub struct SlotLinePy {
    line: Mutex<Line>,
    /// Wakes sleeping slots.
    ready: Condvar,
    /// Wakes the loop.
    completed: Condvar,
}

impl SlotLinePy {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Line> {
        self.line.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes a sleeping slot for items just put in, unless one is on its way (it wakes the next).
    pub(crate) fn wake(&self, mut line: MutexGuard<'_, Line>) {
        let wake = line.wake_one();
        drop(line);
        if wake {
            self.ready.notify_one();
        }
    }

    /// Sleeps (the caller has released the interpreter) until a completion comes in
    /// or `until` (UNIX seconds) passes: true, or false at once if the worker's
    /// Python asked for its loop back (the request is taken). Meanwhile wakes one more
    /// slot whenever rows wait and no slot took an item for `NUDGE`.
    pub(crate) fn sleep_until_done(&self, until: f64) -> bool {
        let mut line = self.lock();
        loop {
            if line.attention {
                line.attention = false;
                return false;
            }
            let left = until - wall_clock();
            if !line.done.is_empty() || left <= 0.0 {
                return true;
            }
            let mut wait = std::time::Duration::from_secs_f64(left.min(60.0));
            let taken = line.taken;
            let behind = line.behind();
            if behind {
                wait = wait.min(NUDGE);
            }
            line.loop_sleeping = true;
            line = self.completed.wait_timeout(line, wait).unwrap_or_else(PoisonError::into_inner).0;
            line.loop_sleeping = false;
            if behind && line.taken == taken && line.behind() {
                line.waking += 1;
                self.ready.notify_one();
            }
        }
    }

    /// Wakes every sleeping slot if items wait (the loop is going back to Python, where
    /// it wakes none).
    pub(crate) fn wake_all_behind(&self) {
        let mut line = self.lock();
        if line.behind() {
            line.waking = line.sleeping;
            drop(line);
            self.ready.notify_all();
        }
    }

    fn python<'py>(py: Python<'py>, item: Item) -> PyResult<Bound<'py, PyAny>> {
        match item {
            Item::Object(object) => Ok(object.into_bound(py)),
            Item::Row { lease, row } => {
                let values = row.into_iter().map(|v| to_python(py, v)).collect::<PyResult<Vec<_>>>()?;
                Ok(PyTuple::new(py, [lease.into_pyobject(py)?.into_any(), PyTuple::new(py, values)?.into_any()])?
                    .into_any())
            }
        }
    }
}

#[pymethods]
impl SlotLinePy {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Puts ``item`` in for the next free slot.
    fn put(&self, item: Py<PyAny>) {
        let mut line = self.lock();
        line.items.push_back(Item::Object(item));
        self.wake(line);
    }

    /// The next item, waiting (the interpreter released) until there is one: an
    /// object put in, or a claimed row as ``(lease, row)``.
    fn take<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        // Taken only with the interpreter held: a slot that holds it (it just finished a
        // job) takes the next item before one that woke up and waits for it, so short
        // jobs run one after the other on the slots already running, with few hand-offs
        // of the interpreter (queue.SimpleQueue.get does the same).
        loop {
            let mut line = self.lock();
            if let Some(item) = line.pop() {
                let wake = line.wake_one();
                drop(line);
                if wake {
                    self.ready.notify_one();
                }
                return Self::python(py, item);
            }
            drop(line);
            py.detach(|| {
                let mut line = self.lock();
                while line.items.is_empty() {
                    line.sleeping += 1;
                    line = self.ready.wait(line).unwrap_or_else(PoisonError::into_inner);
                    line.sleeping -= 1;
                    line.waking = line.waking.saturating_sub(1);
                }
            });
        }
    }

    /// Everything waiting, taken out (claimed rows as ``(lease, row)``).
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let items: Vec<Item> = {
            let mut line = self.lock();
            line.rows = 0;
            line.items.drain(..).collect()
        };
        items.into_iter().map(|item| Self::python(py, item)).collect()
    }

    /// How many claimed rows wait for a slot.
    fn rows_waiting(&self) -> usize {
        self.lock().rows
    }

    /// A slot's job under ``lease`` completed with nothing to store but its end.
    fn done(&self, lease: u64, job_id: i64) {
        let mut line = self.lock();
        line.done.push((lease, job_id));
        let sleeping = line.loop_sleeping;
        drop(line);
        if sleeping {
            self.completed.notify_one();
        }
    }

    /// The worker's Python wants its loop back: turns in Rust return now, or after
    /// their next turn.
    fn attend(&self) {
        let mut line = self.lock();
        line.attention = true;
        let sleeping = line.loop_sleeping;
        drop(line);
        if sleeping {
            self.completed.notify_one();
        }
    }

    /// How many plain completions wait to be taken.
    fn completions(&self) -> usize {
        self.lock().done.len()
    }

    /// The plain completions delivered so far, as ``(lease, job id)``, taken out.
    #[pyo3(name = "take_done")]
    fn take_done_py(&self) -> Vec<(u64, i64)> {
        self.lock().take_done()
    }
}
