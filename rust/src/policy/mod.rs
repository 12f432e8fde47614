//! Flow-control policies. The dispatcher keeps its candidates in three ordered sets
//! per kind — its *lines* — and a policy decides which candidate a free slot serves
//! next and under which key candidates are ordered.
//!
//! - `peek_set` files (org, kind) pairs, ordered by the sequence number of their head
//!   request, so the first pair of a set is the first such request in the global FIFO.
//! - `fair_share` files orgs (one entry per kind in which the org has runnable work),
//!   ordered by the org's virtual time; the dispatcher then descends the org's tree
//!   (see [`fair_share`]).
//!
//! `Policy` is the one value the dispatcher holds: it is told what happens to
//! requests (`on_queued`, `on_unqueued`, …), stamps requests that become ready, and
//! answers what a free slot does (`decide`).

pub mod fair_share;
pub mod peek_set;

use std::collections::BTreeSet;

use crate::clock::Nanos;
use crate::limits::{Config, PolicyKind};
use crate::request::KINDS;

use fair_share::FairShare;
use peek_set::PeekSet;

/// Where a candidate sorts within its line: `(primary, head order, index)`.
/// `primary` is 0 under `peek_set` and the bit pattern of a non-negative virtual
/// time under `fair_share` (for non-negative floats bit order is numeric order).
/// The head order is the head request's sequence number under `peek_set` and its
/// priority-aged order under `fair_share`; the index is a pair's (`peek_set`) or an
/// org's (`fair_share`).
pub(crate) type Key = (u64, u64, u32);

/// Which line a backlogged pair stands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    /// Holding fewer slots than its (or its org's) reserved minimum (`fair_share` only).
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
        self.first_with_kind(tier, open).map(|(key, _)| key)
    }

    /// The smallest key of `tier` over the open kinds, with the kind it is filed under.
    pub fn first_with_kind(&self, tier: Tier, open: [bool; KINDS]) -> Option<(Key, usize)> {
        (0..KINDS).filter(|&k| open[k]).filter_map(|k| self.sets[tier as usize][k].first().map(|&key| (key, k))).min()
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
    /// Under `peek_set`, serve the head request of this pair. Only the index, so that a
    /// decision fits in two registers.
    Serve(u32),
    /// Under `fair_share`, serve this org, choosing among its candidates filed in `tier`
    /// (by shares per pair: its pair of `kind`, the kind it was found under).
    ServeOrg { org: u32, tier: Tier, kind: usize },
    /// Under `peek_set`, every request in the peek set belongs to a capped pair: move
    /// those up to and including sequence number `boundary` to the back with their
    /// extended delay.
    ExtendedDelay { boundary: u64 },
    /// Leave the slot free.
    Wait,
}

/// The queue's policy and the state it keeps across candidates.
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
            PolicyKind::FairShare => Policy::FairShare(FairShare::new(config.shares)),
        }
    }

    /// The sequence number of a request that becomes ready at `now`, `next` being the
    /// smallest one not handed out yet. `peek_set` keeps them dense (its index is a bit
    /// per number); `fair_share` keeps them at or above the clock so that they double as
    /// the time stamps priority aging compares.
    #[inline]
    pub fn stamp(&self, next: u64, now: Nanos) -> u64 {
        match self {
            Policy::PeekSet(_) => next,
            Policy::FairShare(_) => next.max(now),
        }
    }

    /// What a free slot should do, given which kinds are under their global slot limit.
    #[inline]
    pub fn decide(&self, lines: &Lines, open: [bool; KINDS]) -> Decision {
        match self {
            Policy::PeekSet(peek) => peek.decide(lines, open),
            Policy::FairShare(_) => {
                let pick = |tier| {
                    lines.first_with_kind(tier, open).map(|(key, kind)| Decision::ServeOrg { org: key.2, tier, kind })
                };
                pick(Tier::Reserved).or_else(|| pick(Tier::Open)).unwrap_or(Decision::Wait)
            }
        }
    }

    /// The fair-share state, under `fair_share`.
    #[inline]
    pub fn fair(&mut self) -> Option<&mut FairShare> {
        match self {
            Policy::PeekSet(_) => None,
            Policy::FairShare(fair) => Some(fair),
        }
    }

    /// A request joined the back of the queue with sequence number `seq`.
    #[inline]
    pub fn on_queued(&mut self, seq: u64) {
        if let Policy::PeekSet(peek) = self {
            peek.on_queued(seq);
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
