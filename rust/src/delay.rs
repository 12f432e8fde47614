//! The delayed-request heap: run-at times, extended delays and retry back-off.
//!
//! Entries are slab indices ordered by due time; ties break on insertion order so
//! requests delayed together rejoin the queue in the order they left it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::clock::Nanos;

#[derive(Debug, Default)]
pub(crate) struct DelayHeap {
    heap: BinaryHeap<Reverse<(Nanos, u64, u32)>>,
    next_order: u64,
}

impl DelayHeap {
    /// Holds `slot` until `due`.
    pub fn push(&mut self, due: Nanos, slot: u32) {
        self.heap.push(Reverse((due, self.next_order, slot)));
        self.next_order += 1;
    }

    /// The earliest due time held (possibly of an entry the caller will discard).
    pub fn next_due(&self) -> Option<Nanos> {
        self.heap.peek().map(|Reverse((due, _, _))| *due)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Nanos) -> Option<u32> {
        match self.heap.peek() {
            Some(Reverse((due, _, _))) if *due <= now => self.heap.pop().map(|Reverse((_, _, slot))| slot),
            _ => None,
        }
    }

    /// Every held slab index, in no particular order.
    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.heap.iter().map(|Reverse((_, _, slot))| *slot)
    }
}
