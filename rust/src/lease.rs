//! Leases: a dispatched request holds its slot until acked, nacked, or until its
//! lease expires (the worker died), after which it is re-delivered.
//!
//! Heartbeats push a new expiry entry instead of editing the heap; stale entries
//! are recognised by comparing with the lease's current expiry and dropped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap as HashMap;

use crate::clock::Nanos;

/// Identifies one delivery of one request. Never reused.
pub type LeaseId = u64;

/// A slot held by a dispatched request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ActiveLease {
    pub slot: u32,
    pub dispatched_at: Nanos,
    pub expires_at: Nanos,
    /// Slot-time charged to the pair up front (fair share); corrected on release.
    pub charged: f64,
}

#[derive(Debug)]
pub(crate) struct Leases {
    active: HashMap<LeaseId, ActiveLease>,
    expiry: BinaryHeap<Reverse<(Nanos, LeaseId)>>,
    next_id: LeaseId,
}

impl Default for Leases {
    fn default() -> Self {
        Leases { active: HashMap::default(), expiry: BinaryHeap::new(), next_id: 1 }
    }
}

impl Leases {
    pub fn grant(&mut self, slot: u32, now: Nanos, duration: Nanos, charged: f64) -> (LeaseId, Nanos) {
        let id = self.next_id;
        self.next_id += 1;
        let expires_at = now.saturating_add(duration);
        self.active.insert(id, ActiveLease { slot, dispatched_at: now, expires_at, charged });
        self.expiry.push(Reverse((expires_at, id)));
        (id, expires_at)
    }

    pub fn get(&self, id: LeaseId) -> Option<&ActiveLease> {
        self.active.get(&id)
    }

    pub fn release(&mut self, id: LeaseId) -> Option<ActiveLease> {
        self.active.remove(&id)
    }

    /// Pushes the expiry of an active lease to `now + duration`.
    pub fn extend(&mut self, id: LeaseId, now: Nanos, duration: Nanos) -> Option<Nanos> {
        let lease = self.active.get_mut(&id)?;
        lease.expires_at = lease.expires_at.max(now.saturating_add(duration));
        self.expiry.push(Reverse((lease.expires_at, id)));
        Some(lease.expires_at)
    }

    /// Removes and returns one lease that has expired at `now`, if any.
    pub fn pop_expired(&mut self, now: Nanos) -> Option<(LeaseId, ActiveLease)> {
        while let Some(&Reverse((at, id))) = self.expiry.peek() {
            if at > now {
                return None;
            }
            self.expiry.pop();
            if self.active.get(&id).is_some_and(|l| l.expires_at == at) {
                return self.active.remove(&id).map(|l| (id, l));
            }
        }
        None
    }

    /// The earliest expiry among active leases (stale heap entries are dropped first).
    pub fn next_expiry(&mut self) -> Option<Nanos> {
        while let Some(&Reverse((at, id))) = self.expiry.peek() {
            if self.active.get(&id).is_some_and(|l| l.expires_at == at) {
                return Some(at);
            }
            self.expiry.pop();
        }
        None
    }

    pub fn len(&self) -> usize {
        self.active.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (LeaseId, &ActiveLease)> {
        self.active.iter().map(|(id, l)| (*id, l))
    }
}
