//! Flow-control policies. The dispatcher keeps every backlogged (org, kind) pair in
//! one of three ordered sets per kind — its *lines* — and a policy decides which
//! pair a free slot serves next and under which key pairs are ordered.
//!
//! - `peek_set` orders pairs by the sequence number of their head request, so the
//!   first pair of a set is the first such request in the global FIFO.
//! - `fair_share` orders pairs by virtual time (slot-time consumed / weight).
//!
//! `Policy` is the one value the dispatcher holds: it is told what happens to
//! requests and pairs (`on_queued`, `on_dispatch`, `on_release`, …) and answers where a
//! pair is filed (`place`) and what a free slot does (`decide`). The dispatcher never
//! looks at which policy it runs.

pub mod fair_share;
pub mod peek_set;

use std::collections::BTreeSet;

use crate::limits::{Config, PairLimits, PolicyKind};
use crate::request::KINDS;

use fair_share::{FairShare, Flow};
use peek_set::PeekSet;

/// Where a pair sorts within its line: `(primary, head sequence, pair index)`.
/// `primary` is 0 under `peek_set` and the bit pattern of a non-negative virtual
/// time under `fair_share` (for non-negative floats bit order is numeric order).
pub(crate) type Key = (u64, u64, u32);

/// Which line a backlogged pair stands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    /// Holding fewer slots than its reserved minimum (`fair_share` only).
    Reserved,
    /// Under its cap: may be served.
    Open,
    /// At or over its cap: may not be served until a slot of its own is released.
    Capped,
}

/// The per-kind ordered sets of backlogged pairs.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    sets: [[BTreeSet<Key>; KINDS]; 3],
}

impl Lines {
    fn set(&mut self, tier: Tier, kind: usize) -> &mut BTreeSet<Key> {
        &mut self.sets[tier as usize][kind]
    }

    pub fn insert(&mut self, tier: Tier, kind: usize, key: Key) {
        self.set(tier, kind).insert(key);
    }

    pub fn remove(&mut self, tier: Tier, kind: usize, key: Key) {
        self.set(tier, kind).remove(&key);
    }

    /// The smallest key of `tier` over the kinds whose `open` flag is set.
    pub fn first(&self, tier: Tier, open: [bool; KINDS]) -> Option<Key> {
        (0..KINDS).filter(|&k| open[k]).filter_map(|k| self.sets[tier as usize][k].first().copied()).min()
    }

    /// The pairs of `tier` for `kind`, in key order.
    pub fn iter(&self, tier: Tier, kind: usize) -> impl Iterator<Item = &Key> {
        self.sets[tier as usize][kind].iter()
    }

    pub fn clear(&mut self) {
        self.sets.iter_mut().flatten().for_each(BTreeSet::clear);
    }
}

/// What a free slot should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Serve the head request of this pair (the pair index of its [`Key`]). Only the
    /// index, so that a decision fits in two registers.
    Serve(u32),
    /// Under `peek_set`, every request in the peek set belongs to a capped pair: move
    /// those up to and including sequence number `boundary` to the back with their
    /// extended delay.
    ExtendedDelay { boundary: u64 },
    /// Leave the slot free.
    Wait,
}

/// The queue's policy and the state it keeps across pairs.
///
/// An enum with inherent methods rather than a trait object: each call on the
/// dispatch path is one match with no indirect call. The methods only forward to the
/// policy in use, so they are marked `#[inline]`: without the hint LLVM kept `decide`
/// out of line, and a `fair_share` enqueue–dispatch–ack cycle ran about 1% more
/// instructions (callgrind).
#[derive(Debug)]
pub(crate) enum Policy {
    PeekSet(PeekSet),
    FairShare(FairShare),
}

impl Policy {
    /// The policy `config` names, with no requests seen yet.
    pub fn new(config: &Config) -> Self {
        match config.policy {
            PolicyKind::PeekSet => Policy::PeekSet(PeekSet::new(config.peek_set)),
            PolicyKind::FairShare => Policy::FairShare(FairShare::default()),
        }
    }

    /// The line and key of a backlogged pair holding `running` slots, whose head
    /// request has sequence number `head_seq`.
    #[inline]
    pub fn place(&self, running: u32, limits: &PairLimits, flow: &Flow, head_seq: u64, pair: u32) -> (Tier, Key) {
        match self {
            Policy::PeekSet(_) => (peek_set::tier(running, limits), peek_set::key(head_seq, pair)),
            Policy::FairShare(_) => (fair_share::tier(running, limits), fair_share::key(flow, head_seq, pair)),
        }
    }

    /// What a free slot should do, given which kinds are under their global slot limit.
    #[inline]
    pub fn decide(&self, lines: &Lines, open: [bool; KINDS]) -> Decision {
        match self {
            Policy::PeekSet(peek) => peek.decide(lines, open),
            Policy::FairShare(fair) => fair.select(lines, open).map_or(Decision::Wait, |key| Decision::Serve(key.2)),
        }
    }

    /// A request joined the back of the queue with sequence number `seq`; `first`
    /// when its pair had no other ready request.
    #[inline]
    pub fn on_queued(&mut self, flow: &mut Flow, seq: u64, first: bool) {
        match self {
            Policy::PeekSet(peek) => peek.on_queued(seq),
            Policy::FairShare(fair) => {
                if first {
                    fair.on_backlogged(flow);
                }
            }
        }
    }

    /// The ready request with sequence number `seq` left the queue (dispatched,
    /// moved to the delay heap or aborted).
    #[inline]
    pub fn on_unqueued(&mut self, seq: u64) {
        if let Policy::PeekSet(peek) = self {
            peek.on_unqueued(seq);
        }
    }

    /// A pair's head request takes a slot; returns the run time charged up front,
    /// which the lease keeps for [`Policy::on_release`].
    #[inline]
    pub fn on_dispatch(&mut self, flow: &mut Flow, kind: usize, weight: f64) -> f64 {
        match self {
            Policy::PeekSet(_) => 0.0,
            Policy::FairShare(fair) => fair.on_dispatch(flow, kind, weight),
        }
    }

    /// A slot charged `charged` at dispatch came back after running for `run`.
    #[inline]
    pub fn on_release(&mut self, flow: &mut Flow, kind: usize, weight: f64, charged: f64, run: f64) {
        if let Policy::FairShare(fair) = self {
            fair.on_release(flow, kind, weight, charged, run);
        }
    }

    /// A pair's limits changed.
    #[inline]
    pub fn on_limits_changed(&self, flow: &mut Flow) {
        if let Policy::FairShare(fair) = self {
            fair.on_limits_changed(flow);
        }
    }

    /// True when the ready requests should get dense sequence numbers again.
    #[inline]
    pub fn wants_renumber(&self) -> bool {
        match self {
            Policy::PeekSet(peek) => peek.wants_renumber(),
            Policy::FairShare(_) => false,
        }
    }

    /// The `count` ready requests now have sequence numbers `0..count`, in their old order.
    #[inline]
    pub fn on_renumbered(&mut self, count: u64) {
        if let Policy::PeekSet(peek) = self {
            peek.on_renumbered(count);
        }
    }

    /// How many ready requests of any org stand before sequence number `seq`, for a
    /// policy that keeps one global order (`peek_set`).
    #[inline]
    pub fn ahead_in_queue(&self, seq: u64) -> Option<usize> {
        match self {
            Policy::PeekSet(peek) => Some(peek.ahead(seq)),
            Policy::FairShare(_) => None,
        }
    }

    /// Checks the policy's own bookkeeping against `queued`, the dispatcher's count of
    /// ready requests; for tests.
    pub fn check_invariants(&self, queued: usize) {
        if let Policy::PeekSet(peek) = self {
            assert_eq!(peek.queued(), queued);
        }
    }
}
