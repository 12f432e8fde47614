//! `fair_share`: start-time fair queuing over (org, kind) pairs, charged by
//! measured run time.
//!
//! Each pair carries a virtual time `tag` = slot-time consumed / weight. A free slot
//! serves the backlogged, under-cap pair with the smallest tag, after any pair still
//! below its reserved minimum. A dispatch charges the pair's estimated run time up
//! front (so a pair cannot grab many slots before its first job finishes) and the
//! release corrects the charge to the measured time. A pair that becomes backlogged
//! starts at the system virtual time, so idleness earns no credit.

use crate::limits::PairLimits;
use crate::request::KINDS;

use super::{Key, Lines, Tier};

/// Weight of a new run-time sample in the moving estimate.
const ESTIMATE_ALPHA: f64 = 0.2;

#[derive(Debug, Default)]
pub(crate) struct FairShare {
    /// System virtual time: the largest tag served so far.
    vtime: f64,
    /// Moving run-time estimate per kind, for pairs with no history of their own.
    kind_estimate: [Option<f64>; KINDS],
}

/// Fair-share state of one pair.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Flow {
    pub tag: f64,
    estimate: Option<f64>,
}

impl FairShare {
    /// The pair to serve next: reserved line first, then the open line.
    pub fn select(&self, lines: &Lines, open: [bool; KINDS]) -> Option<Key> {
        lines.first(Tier::Reserved, open).or_else(|| lines.first(Tier::Open, open))
    }

    /// A pair that had no ready request now has one.
    pub fn on_backlogged(&self, flow: &mut Flow) {
        flow.tag = flow.tag.max(self.vtime);
    }

    /// Charges the estimated run time at dispatch; returns the charge for the lease.
    pub fn on_dispatch(&mut self, flow: &mut Flow, kind: usize, weight: f64) -> f64 {
        self.vtime = self.vtime.max(flow.tag);
        let charge = flow.estimate.or(self.kind_estimate[kind]).unwrap_or(0.0);
        flow.tag += charge / weight;
        charge
    }

    /// Corrects the up-front charge to the measured run time.
    pub fn on_release(&mut self, flow: &mut Flow, kind: usize, weight: f64, charged: f64, run: f64) {
        flow.tag = (flow.tag + (run - charged) / weight).max(0.0);
        flow.estimate = Some(blend(flow.estimate, run));
        self.kind_estimate[kind] = Some(blend(self.kind_estimate[kind], run));
    }

    /// A pair's limits changed: restart it at the system virtual time so a raised cap
    /// does not turn its past under-service into a burst.
    pub fn on_limits_changed(&self, flow: &mut Flow) {
        flow.tag = flow.tag.max(self.vtime);
    }
}

fn blend(estimate: Option<f64>, sample: f64) -> f64 {
    match estimate {
        Some(e) => e + ESTIMATE_ALPHA * (sample - e),
        None => sample,
    }
}

/// The line a pair stands in: below its reserved minimum, under its cap, or at it.
pub(crate) fn tier(running: u32, limits: &PairLimits) -> Tier {
    if running < limits.min {
        Tier::Reserved
    } else if running < limits.cap {
        Tier::Open
    } else {
        Tier::Capped
    }
}

/// The sort key of a pair under fair share.
pub(crate) fn key(flow: &Flow, head_seq: u64, pair: u32) -> Key {
    // -0.0 has its sign bit set and would sort after every positive tag.
    let tag = if flow.tag > 0.0 { flow.tag.to_bits() } else { 0 };
    (tag, head_seq, pair)
}
