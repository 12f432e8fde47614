//! `fair_share`: hierarchical start-time fair queuing charged by measured run time.
//!
//! The tree has three levels: orgs; within an org its (org, kind) pairs; within a
//! pair its lines, one per concurrency key (requests that name no key share the
//! org's default key). Every node carries a virtual time `tag` = slot-time
//! consumed / weight, and every dispatch charges the node at each level, so:
//!
//! - a free slot goes to the org with the smallest tag (after orgs or pairs still
//!   below a reserved minimum), within it to the pair with the smallest tag, within
//!   that to the line with the smallest tag — an org's share is its own, however many
//!   kinds and keys it uses;
//! - a node that becomes backlogged starts at its parent's virtual time (the largest
//!   tag its parent served among its children; the system virtual time for orgs), so
//!   idleness earns no credit and an idle child's share goes to its siblings;
//! - a node that is capped, throttled or idle is simply not a candidate, so every level
//!   is work-conserving.
//!
//! Weights: an org's charge is divided by `org weight × pair weight`, a pair's by its
//! pair weight, a line's by its key weight. The pair weight thus keeps the meaning it
//! has without a hierarchy (an (org, kind)'s share against other orgs) and also splits
//! the org's share among its kinds.
//!
//! A dispatch charges the pair's estimated run time up front (so a node cannot grab
//! many slots before its first job finishes) and the release corrects the charge to
//! the measured time at every level.

use crate::limits::Shares;
use crate::request::KINDS;

use super::{Key, Tier};

/// Weight of a new run-time sample in the moving estimate.
const ESTIMATE_ALPHA: f64 = 0.2;

#[derive(Debug)]
pub(crate) struct FairShare {
    /// Orgs, or (by [`Shares::PerPair`]) pairs, share slot-time at the top.
    per_org: bool,
    /// System virtual time: the largest top-level tag (org's, or pair's) served so far.
    vtime: f64,
    /// Moving run-time estimate per kind, for pairs with no history of their own.
    kind_estimate: [Option<f64>; KINDS],
}

/// Fair-share state of one node of the tree (org, pair or line).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Flow {
    pub tag: f64,
    /// The largest tag served among this node's children: where a child that becomes
    /// backlogged starts.
    pub child_vtime: f64,
    /// Moving run-time estimate (kept on pairs only).
    estimate: Option<f64>,
}

/// The weights along one path of the tree.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Weights {
    pub org: f64,
    pub pair: f64,
    pub key: f64,
}

/// One path of the tree: an org, one of its pairs, and the tag of one of that pair's
/// lines (a line has no children, so its tag is all it keeps: there may be many).
pub(crate) struct Path<'a> {
    pub org: &'a mut Flow,
    pub pair: &'a mut Flow,
    pub line: &'a mut f64,
}

impl FairShare {
    pub fn new(shares: Shares) -> Self {
        FairShare { per_org: shares == Shares::PerOrg, vtime: 0.0, kind_estimate: [None; KINDS] }
    }

    /// The system virtual time, where an org that becomes backlogged starts.
    pub fn vtime(&self) -> f64 {
        self.vtime
    }

    /// Where a pair that becomes backlogged starts: its org's virtual time, or by shares
    /// per pair (pairs are the top level) the system's.
    pub fn pair_start(&self, org: &Flow) -> f64 {
        if self.per_org {
            org.child_vtime
        } else {
            self.vtime
        }
    }

    /// Charges the estimated run time at dispatch on every level; returns the charge
    /// for the lease.
    pub fn on_dispatch(&mut self, path: Path<'_>, kind: usize, w: Weights) -> f64 {
        self.vtime = self.vtime.max(if self.per_org { path.org.tag } else { path.pair.tag });
        path.org.child_vtime = path.org.child_vtime.max(path.pair.tag);
        path.pair.child_vtime = path.pair.child_vtime.max(*path.line);
        let charge = path.pair.estimate.or(self.kind_estimate[kind]).unwrap_or(0.0);
        path.org.tag += charge / (w.org * w.pair);
        path.pair.tag += charge / w.pair;
        *path.line += charge / w.key;
        charge
    }

    /// Corrects the up-front charge to the measured run time on every level; a grant
    /// that never ran (`run` is `None`) is refunded and is no run-time sample.
    pub fn on_release(&mut self, path: Path<'_>, kind: usize, w: Weights, charged: f64, run: Option<f64>) {
        let extra = run.unwrap_or(0.0) - charged;
        path.org.tag = (path.org.tag + extra / (w.org * w.pair)).max(0.0);
        path.pair.tag = (path.pair.tag + extra / w.pair).max(0.0);
        *path.line = (*path.line + extra / w.key).max(0.0);
        if let Some(run) = run {
            path.pair.estimate = Some(blend(path.pair.estimate, run));
            self.kind_estimate[kind] = Some(blend(self.kind_estimate[kind], run));
        }
    }
}

/// A node that had no ready request now has one (or its limits changed): restart it
/// at its parent's virtual time, so idleness earns no credit and a raised cap does not
/// turn past under-service into a burst.
pub(crate) fn restart(tag: &mut f64, parent_vtime: f64) {
    *tag = tag.max(parent_vtime);
}

fn blend(estimate: Option<f64>, sample: f64) -> f64 {
    match estimate {
        Some(e) => e + ESTIMATE_ALPHA * (sample - e),
        None => sample,
    }
}

/// The tier of a candidate holding `running` slots with a reserved minimum `min`.
pub(crate) fn tier(running: u32, min: u32) -> Tier {
    if running < min {
        Tier::Reserved
    } else {
        Tier::Open
    }
}

/// The sort key of a node: its tag, then the order of the request it would serve.
pub(crate) fn key(tag: f64, head_order: u64, index: u32) -> Key {
    // -0.0 has its sign bit set and would sort after every positive tag.
    let bits = if tag > 0.0 { tag.to_bits() } else { 0 };
    (bits, head_order, index)
}
