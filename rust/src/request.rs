//! What the dispatcher queues: kinds, org handles and the per-request record.

use std::fmt;
use std::hash::BuildHasher;
use std::str::FromStr;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use crate::error::CoreError;

/// The handler type of a request. Limits are kept per org *and* per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A future call.
    Future = 0,
    /// A queueable job.
    Queueable = 1,
    /// One phase of a batch job (start, one execute chunk, finish).
    Batch = 2,
    /// The scheduler's own trigger firing.
    Scheduled = 3,
}

/// How many kinds there are; per-kind tables are arrays of this length.
pub const KINDS: usize = 4;

impl Kind {
    /// Every kind, in index order.
    pub const ALL: [Kind; KINDS] = [Kind::Future, Kind::Queueable, Kind::Batch, Kind::Scheduled];

    /// The kind's position in per-kind tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The kind's name as users write it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Future => "future",
            Kind::Queueable => "queueable",
            Kind::Batch => "batch",
            Kind::Scheduled => "scheduled",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| CoreError::UnknownKind(s.to_string()))
    }
}

/// A tenant, as an index handed out by [`crate::dispatcher::Dispatcher::org`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgId(pub u32);

/// A concurrency key of an org, as an index handed out by
/// [`crate::dispatcher::Dispatcher::key`]. Every org also has a default key that the
/// requests naming none share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u32);

/// The caller's id for a request. It is opaque to the core: callers use it to find
/// the payload (a store row, a map entry) when the request is dispatched.
pub type RequestId = u64;

/// Where a request is in its life inside the dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// In its pair's line, waiting for a slot.
    Ready,
    /// In the delay heap until its due time.
    Delayed,
    /// Holding a slot under a lease.
    Running,
    /// Aborted while queued or delayed; its container frees it when it reaches it.
    Aborted,
    /// An unused slab entry.
    Free,
}

/// One live request. Kept to 32 bytes: a million-request backlog is ordinary.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request {
    pub id: RequestId,
    /// The queue sequence number while `Ready`, the due time while `Delayed`.
    /// One field serves both because a request is never in both places at once.
    /// Under `fair_share` the sequence number is also a time stamp (never below the
    /// clock reading when the request became ready), which priority aging needs.
    pub key: u64,
    /// Index of the request's line: its (org, kind, concurrency key).
    pub leaf: u32,
    /// Units its rate limits are charged when it starts (1 unless given).
    pub cost: u32,
    /// Deliveries so far (0 until first dispatched).
    pub attempts: u16,
    /// 0 to [`crate::limits::MAX_PRIORITY`]; higher starts sooner within its line.
    pub priority: u8,
    pub state: State,
}

/// Finds a live request's slab slot by its id.
///
/// The table stores only the 4-byte slot and hashes through the slab to the id, so
/// the index costs about 5–10 bytes per request instead of the 17–34 of a map that
/// repeats the 8-byte id.
#[derive(Debug, Default)]
pub(crate) struct IdIndex {
    table: HashTable<u32>,
}

fn hash_id(id: RequestId) -> u64 {
    FxBuildHasher.hash_one(id)
}

impl IdIndex {
    pub fn get(&self, id: RequestId, requests: &[Request]) -> Option<u32> {
        self.table.find(hash_id(id), |&slot| requests[slot as usize].id == id).copied()
    }

    /// Indexes `slot`, whose request's id must not be indexed yet.
    pub fn insert(&mut self, slot: u32, requests: &[Request]) {
        let id = requests[slot as usize].id;
        self.table.insert_unique(hash_id(id), slot, |&s| hash_id(requests[s as usize].id));
    }

    /// Forgets `id`; call while its slab entry still holds the id.
    pub fn remove(&mut self, id: RequestId, requests: &[Request]) {
        if let Ok(entry) = self.table.find_entry(hash_id(id), |&slot| requests[slot as usize].id == id) {
            entry.remove();
        }
    }
}
