//! Flow-control policies. The dispatcher keeps every backlogged (org, kind) pair in
//! one of three ordered sets per kind — its *lines* — and a policy decides which
//! pair a free slot serves next and under which key pairs are ordered.
//!
//! - `peek_set` orders pairs by the sequence number of their head request, so the
//!   first pair of a set is the first such request in the global FIFO.
//! - `fair_share` orders pairs by virtual time (slot-time consumed / weight).

pub mod fair_share;
pub mod peek_set;

use std::collections::BTreeSet;

use crate::request::KINDS;

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
