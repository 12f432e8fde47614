//! The FIFO baseline: a plain first-come-first-served queue behind the same
//! [`Engine`] interface as the dispatcher, so a policy can be compared with the
//! simplest scheduler on the very same arrivals.

use std::collections::{BTreeSet, VecDeque};

use crate::clock::Nanos;
use crate::dispatcher::NewRequest;
use crate::error::CoreResult;
use crate::request::KINDS;

use super::engine::{Engine, Start};
use super::{Arrival, Workload};

/// Which plain first-come-first-served queue [`simulate_fifo`](super::simulate_fifo) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// One FIFO honouring the workload's per-(org, kind) caps and per-kind slot
    /// limits: a free slot takes the oldest request whose pair is under cap, however
    /// deep in the queue (no peek-set window, no extended delay, no weights). This is
    /// the fair comparison for work conservation: the same limits, no fairness.
    SameCaps,
    /// One FIFO with no caps at all: a free slot takes the oldest request.
    Uncapped,
}

impl Baseline {
    /// The name reports carry.
    pub fn name(self) -> &'static str {
        match self {
            Baseline::SameCaps => "fifo",
            Baseline::Uncapped => "fifo_uncapped",
        }
    }
}

/// One (org, kind) pair of the baseline: its requests in arrival order.
struct FifoPair {
    line: VecDeque<u64>,
    running: u32,
    cap: u32,
    kind: usize,
    /// Filed in `open[kind]` under its head id.
    filed: Option<u64>,
}

/// The baseline queue: per kind, the backlogged under-cap pairs ordered by head id.
pub(super) struct FifoEngine {
    slots: u32,
    kind_slots: [Option<u32>; KINDS],
    running: u32,
    kind_running: [u32; KINDS],
    pairs: Vec<FifoPair>,
    /// Pair index per (org, kind), `u32::MAX` until first used.
    org_pairs: Vec<[u32; KINDS]>,
    caps: Vec<[u32; KINDS]>,
    /// Per kind: backlogged pairs under cap, by head id (ids are arrival order).
    open: [BTreeSet<(u64, u32)>; KINDS],
}

impl FifoEngine {
    /// The `baseline` queue on the workload's slots (and, for [`Baseline::SameCaps`], its limits).
    pub fn new(w: &Workload, baseline: Baseline) -> Self {
        let caps = w
            .orgs
            .iter()
            .map(|spec| {
                let mut caps = [u32::MAX; KINDS];
                if baseline == Baseline::SameCaps {
                    caps = w.config.default_limits.map(|l| l.cap);
                    for (kind, l) in &spec.limits {
                        caps[kind.index()] = l.cap;
                    }
                }
                caps
            })
            .collect();
        FifoEngine {
            slots: w.config.slots,
            kind_slots: if baseline == Baseline::SameCaps { w.config.kind_slots } else { [None; KINDS] },
            running: 0,
            kind_running: [0; KINDS],
            pairs: Vec::new(),
            org_pairs: vec![[u32::MAX; KINDS]; w.orgs.len()],
            caps,
            open: Default::default(),
        }
    }

    fn refile(&mut self, p: u32) {
        let pair = &mut self.pairs[p as usize];
        let want = if pair.running < pair.cap { pair.line.front().copied() } else { None };
        if want == pair.filed {
            return;
        }
        if let Some(head) = pair.filed {
            self.open[pair.kind].remove(&(head, p));
        }
        if let Some(head) = want {
            self.open[pair.kind].insert((head, p));
        }
        pair.filed = want;
    }
}

impl Engine for FifoEngine {
    /// Keys, priorities and costs are `fair_share` features: the FIFO ignores them.
    fn enqueue(&mut self, batch: &[NewRequest], _arrivals: &[Arrival]) -> CoreResult<()> {
        for r in batch {
            let (org, kind) = (r.org.0 as usize, r.kind.index());
            let mut p = self.org_pairs[org][kind];
            if p == u32::MAX {
                p = self.pairs.len() as u32;
                self.pairs.push(FifoPair {
                    line: VecDeque::new(),
                    running: 0,
                    cap: self.caps[org][kind],
                    kind,
                    filed: None,
                });
                self.org_pairs[org][kind] = p;
            }
            self.pairs[p as usize].line.push_back(r.id);
            self.refile(p);
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<Start>) {
        while self.running < self.slots {
            let best = (0..KINDS)
                .filter(|&k| self.kind_slots[k].is_none_or(|limit| self.kind_running[k] < limit))
                .filter_map(|k| self.open[k].first().copied())
                .min();
            let Some((_, p)) = best else { break };
            let pair = &mut self.pairs[p as usize];
            let id = pair.line.pop_front().expect("an open pair has a request");
            pair.running += 1;
            self.running += 1;
            self.kind_running[pair.kind] += 1;
            self.refile(p);
            out.push(Start { handle: u64::from(p), id, attempt: 1 });
        }
    }

    fn complete(&mut self, handle: u64) -> CoreResult<()> {
        let p = handle as u32;
        let pair = &mut self.pairs[p as usize];
        pair.running -= 1;
        self.running -= 1;
        self.kind_running[pair.kind] -= 1;
        self.refile(p);
        Ok(())
    }

    fn next_wakeup(&mut self) -> Option<Nanos> {
        None
    }

    fn drain_delays(&mut self, _sink: &mut dyn FnMut(u32, u32)) {}
}
