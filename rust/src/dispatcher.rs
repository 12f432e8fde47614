//! The dispatcher: requests, per-(org, kind) slot accounting, the delay heap and
//! leases, with a policy choosing which request a free slot takes.
//!
//! Every operation is O(log n) in the backlog and the number of pairs, except the
//! rare ones that say otherwise (changing a default limit touches every pair of that
//! kind; renumbering the peek-set order is amortised over the sequence numbers that
//! made it necessary). No dispatch walks the queue.

use std::collections::VecDeque;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::Arc;

use crate::clock::{Clock, Nanos};
use crate::delay::DelayHeap;
use crate::error::{CoreError, CoreResult};
use crate::lease::{LeaseId, Leases};
use crate::limits::{Config, PairLimits};
use crate::policy::fair_share::Flow;
use crate::policy::{Decision, Key, Lines, Policy, Tier};
use crate::request::{IdIndex, Kind, OrgId, Request, RequestId, State, KINDS};

/// Marks "no pair yet" in an org's per-kind pair table.
const NO_PAIR: u32 = u32::MAX;

/// Events kept for the caller between two [`Dispatcher::take_events`] calls; older ones
/// are counted in [`Counters::events_dropped`] rather than kept without bound.
const EVENT_BUFFER: usize = 1 << 16;

/// A request to enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewRequest {
    pub id: RequestId,
    pub org: OrgId,
    pub kind: Kind,
    /// Not before this time; `None` (or a time already past) means now.
    pub run_at: Option<Nanos>,
}

/// A request that names its org, for [`Dispatcher::enqueue_named`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamedRequest<'a> {
    pub id: RequestId,
    pub org: &'a str,
    pub kind: Kind,
    /// Not before this time; `None` (or a time already past) means now.
    pub run_at: Option<Nanos>,
}

/// A request handed to a free slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub lease: LeaseId,
    pub id: RequestId,
    pub org: OrgId,
    pub kind: Kind,
    /// 1 for the first delivery, 2 for the first re-delivery, …
    pub attempt: u32,
    pub expires_at: Nanos,
}

/// A released slot: what ran and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    pub id: RequestId,
    pub org: OrgId,
    pub kind: Kind,
    pub run_time: Nanos,
}

/// What the worker reports when it gives a slot back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done; the request leaves the dispatcher.
    Ack,
    /// Failed for good; the request leaves the dispatcher.
    Fail,
    /// Failed; deliver again, not before this time.
    Retry(Nanos),
}

/// What [`Dispatcher::abort`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// The request was queued or delayed and will never run.
    Removed,
    /// The request is running; the caller must cancel it cooperatively and then ack or fail it.
    Running(LeaseId),
}

/// Where a request is, for explanations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// Waiting for a slot: `ahead_in_pair` requests of its own (org, kind) go first
    /// (aborted ones not yet swept from the line included); under `peek_set`,
    /// `ahead_in_queue` requests of any org stand before it.
    Queued { ahead_in_pair: usize, ahead_in_queue: Option<usize> },
    /// In the delay heap until `due`.
    Delayed { due: Nanos },
    /// Holding a slot.
    Running { lease: LeaseId, dispatched_at: Nanos, expires_at: Nanos },
}

/// Something the caller may want to record or alert on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Under `peek_set`, `count` requests of this pair were moved to the back until `until`.
    ExtendedDelay { org: OrgId, kind: Kind, count: u32, until: Nanos },
    /// A lease expired; the request is queued again for delivery `attempt + 1`.
    LeaseExpired { id: RequestId, org: OrgId, kind: Kind, attempt: u32 },
}

/// Lifetime totals. `dispatched == released + running` at all times.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub enqueued: u64,
    pub dispatched: u64,
    pub released: u64,
    pub acked: u64,
    pub failed: u64,
    pub retried: u64,
    pub expired: u64,
    pub aborted: u64,
    pub extended_delays: u64,
    pub events_dropped: u64,
}

/// Queue-wide figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub queued: usize,
    pub delayed: usize,
    pub running: u32,
    pub slots: u32,
    /// Slots that may be filled now: `floor(slots × capacity)`.
    pub effective_slots: u32,
    pub capacity: f64,
    pub counters: Counters,
}

/// Figures of one (org, kind) pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairStats {
    pub queued: u32,
    pub delayed: u32,
    pub running: u32,
    pub limits: PairLimits,
    /// Slot-time consumed / weight, in nanoseconds (`fair_share`).
    pub virtual_time: f64,
}

#[derive(Debug)]
struct Pair {
    org: OrgId,
    kind: Kind,
    /// Slab indices of ready requests in sequence order; aborted entries are swept
    /// when they reach the front.
    line: VecDeque<u32>,
    queued: u32,
    delayed: u32,
    running: u32,
    limits: PairLimits,
    /// Set when the pair's limits were given explicitly, so default changes skip it.
    overridden: bool,
    flow: Flow,
    /// The line and key the pair is filed under, if backlogged.
    filed: Option<(Tier, Key)>,
}

/// The fair multi-tenant dispatcher. Single-threaded; callers wrap it in a lock.
pub struct Dispatcher {
    config: Config,
    clock: Arc<dyn Clock>,
    org_names: Vec<String>,
    org_ids: HashMap<String, OrgId>,
    org_pairs: Vec<[u32; KINDS]>,
    pairs: Vec<Pair>,
    lines: Lines,
    policy: Policy,
    requests: Vec<Request>,
    free: Vec<u32>,
    by_id: IdIndex,
    delays: DelayHeap,
    leases: Leases,
    next_seq: u64,
    running: u32,
    kind_running: [u32; KINDS],
    capacity: f64,
    counters: Counters,
    events: VecDeque<Event>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").field("config", &self.config).field("stats", &self.stats()).finish()
    }
}

impl Dispatcher {
    /// A dispatcher with `config`, reading time from `clock`.
    pub fn new(config: Config, clock: Arc<dyn Clock>) -> CoreResult<Self> {
        config.validate()?;
        let policy = Policy::new(&config);
        Ok(Dispatcher {
            config,
            clock,
            org_names: Vec::new(),
            org_ids: HashMap::default(),
            org_pairs: Vec::new(),
            pairs: Vec::new(),
            lines: Lines::default(),
            policy,
            requests: Vec::new(),
            free: Vec::new(),
            by_id: IdIndex::default(),
            delays: DelayHeap::default(),
            leases: Leases::default(),
            next_seq: 0,
            running: 0,
            kind_running: [0; KINDS],
            capacity: 1.0,
            counters: Counters::default(),
            events: VecDeque::new(),
        })
    }

    /// The queue's settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current time on the dispatcher's clock.
    pub fn now(&self) -> Nanos {
        self.clock.now()
    }

    // ----- orgs and limits -------------------------------------------------------

    /// The handle of org `name`, registering it on first use.
    pub fn org(&mut self, name: &str) -> CoreResult<OrgId> {
        if let Some(&id) = self.org_ids.get(name) {
            return Ok(id);
        }
        Self::check_org_name(name)?;
        let id = OrgId(self.org_names.len() as u32);
        self.org_names.push(name.to_string());
        self.org_ids.insert(name.to_string(), id);
        self.org_pairs.push([NO_PAIR; KINDS]);
        Ok(id)
    }

    /// Checks that `name` can name an org (see [`crate::name`]).
    pub fn check_org_name(name: &str) -> CoreResult<()> {
        crate::name::check_name("org", name)
    }

    /// The name org `id` was registered with.
    pub fn org_name(&self, id: OrgId) -> CoreResult<&str> {
        self.org_names.get(id.0 as usize).map(String::as_str).ok_or_else(|| Self::unknown_org(id))
    }

    /// The handle of an already registered org.
    pub fn find_org(&self, name: &str) -> Option<OrgId> {
        self.org_ids.get(name).copied()
    }

    /// Sets the limits of one (org, kind) pair, live. Running requests are never
    /// preempted: a cap lowered below the running count stops new dispatches for the
    /// pair until it drains below the new cap.
    pub fn set_limits(&mut self, org: OrgId, kind: Kind, limits: PairLimits) -> CoreResult<()> {
        limits.validate()?;
        let p = self.pair(org, kind)?;
        let pair = &mut self.pairs[p as usize];
        pair.limits = limits;
        pair.overridden = true;
        self.policy.on_limits_changed(&mut pair.flow);
        self.refile(p);
        Ok(())
    }

    /// Limits of the (org, kind) pair.
    pub fn limits(&self, org: OrgId, kind: Kind) -> CoreResult<PairLimits> {
        self.org_name(org)?;
        Ok(self
            .find_pair(org, kind)
            .map_or(self.config.default_limits[kind.index()], |p| self.pairs[p as usize].limits))
    }

    /// Sets the limits of every pair of `kind` that has no override. O(pairs of the kind).
    pub fn set_default_limits(&mut self, kind: Kind, limits: PairLimits) -> CoreResult<()> {
        limits.validate()?;
        self.config.default_limits[kind.index()] = limits;
        for p in 0..self.pairs.len() as u32 {
            let pair = &mut self.pairs[p as usize];
            if pair.kind == kind && !pair.overridden {
                pair.limits = limits;
                self.policy.on_limits_changed(&mut pair.flow);
                self.refile(p);
            }
        }
        Ok(())
    }

    /// Sets the number of worker slots.
    pub fn set_slots(&mut self, slots: u32) -> CoreResult<()> {
        if slots == 0 {
            return Err(CoreError::invalid("slots", slots, "at least 1"));
        }
        self.config.slots = slots;
        Ok(())
    }

    /// Sets the global slot limit of `kind` (`None`: only the node's slots bound it;
    /// `Some(0)` pauses the kind).
    pub fn set_kind_slots(&mut self, kind: Kind, slots: Option<u32>) {
        self.config.kind_slots[kind.index()] = slots;
    }

    /// Sets the capacity factor from resource conservation: only
    /// `floor(slots × capacity)` slots are filled. `capacity` is in [0, 1].
    pub fn set_capacity(&mut self, capacity: f64) -> CoreResult<()> {
        if !(0.0..=1.0).contains(&capacity) {
            return Err(CoreError::invalid("capacity", capacity, "a number from 0 to 1"));
        }
        self.capacity = capacity;
        Ok(())
    }

    // ----- enqueue -----------------------------------------------------------------

    /// Enqueues one request.
    pub fn enqueue(&mut self, request: NewRequest) -> CoreResult<()> {
        self.enqueue_many(std::slice::from_ref(&request))
    }

    /// Enqueues requests in order, all or none: if any is refused, none is queued.
    pub fn enqueue_many(&mut self, requests: &[NewRequest]) -> CoreResult<()> {
        for r in requests {
            self.org_name(r.org)?;
        }
        self.check_fresh(requests.iter().map(|r| r.id))?;
        let now = self.clock.now();
        for r in requests {
            let p = self.pair(r.org, r.kind)?;
            let slot = self.alloc(Request { id: r.id, key: 0, pair: p, attempts: 0, state: State::Free });
            self.by_id.insert(slot, &self.requests);
            self.counters.enqueued += 1;
            match r.run_at {
                Some(due) if due > now => self.delay(slot, due),
                _ => self.make_ready(slot),
            }
        }
        Ok(())
    }

    /// Enqueues requests that name their org, registering new orgs only once the whole
    /// batch is known to be accepted: all or none, and a refusal leaves no trace.
    pub fn enqueue_named(&mut self, requests: &[NamedRequest<'_>]) -> CoreResult<()> {
        for r in requests {
            if self.find_org(r.org).is_none() {
                Self::check_org_name(r.org)?;
            }
        }
        self.check_fresh(requests.iter().map(|r| r.id))?;
        let resolved = requests
            .iter()
            .map(|r| Ok(NewRequest { id: r.id, org: self.org(r.org)?, kind: r.kind, run_at: r.run_at }))
            .collect::<CoreResult<Vec<_>>>()?;
        self.enqueue_many(&resolved)
    }

    /// Refuses an id the dispatcher holds or one repeated among `ids`.
    fn check_fresh(&self, ids: impl ExactSizeIterator<Item = RequestId>) -> CoreResult<()> {
        let mut seen = HashSet::with_capacity_and_hasher(ids.len(), Default::default());
        for id in ids {
            if !seen.insert(id) || self.by_id.get(id, &self.requests).is_some() {
                return Err(CoreError::DuplicateRequest(id));
            }
        }
        Ok(())
    }

    // ----- dispatch ----------------------------------------------------------------

    /// Fills up to `max` free slots. Expired leases are re-queued and due delayed
    /// requests join the queue first.
    pub fn dispatch(&mut self, max: usize) -> Vec<Grant> {
        let now = self.clock.now();
        self.advance(now);
        let mut grants = Vec::new();
        while grants.len() < max && self.running < self.effective_slots() {
            match self.select(now) {
                Some(p) => grants.push(self.start(p, now)),
                None => break,
            }
        }
        grants
    }

    /// Re-queues requests whose lease expired and moves due delayed requests to the
    /// back of the queue, as of `now` on the dispatcher's clock. [`Self::dispatch`]
    /// does this itself; call it to observe expiries without dispatching.
    pub fn tick(&mut self) {
        let now = self.clock.now();
        self.advance(now);
    }

    /// The earliest time at which a delayed request becomes due or a lease expires:
    /// when a worker with nothing to do should look again.
    pub fn next_wakeup(&mut self) -> Option<Nanos> {
        match (self.delays.next_due(), self.leases.next_expiry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn effective_slots(&self) -> u32 {
        (f64::from(self.config.slots) * self.capacity).floor() as u32
    }

    fn kinds_open(&self) -> [bool; KINDS] {
        let mut open = [true; KINDS];
        for (k, flag) in open.iter_mut().enumerate() {
            *flag = self.config.kind_slots[k].is_none_or(|limit| self.kind_running[k] < limit);
        }
        open
    }

    /// The pair a free slot serves, carrying out extended delays on the way.
    fn select(&mut self, now: Nanos) -> Option<u32> {
        let open = self.kinds_open();
        match self.policy.decide(&self.lines, open) {
            Decision::Serve(p) => Some(p),
            Decision::Wait => None,
            Decision::ExtendedDelay { boundary } => {
                // One move per free slot: look once more at the new front, then
                // leave the slot free if it is still blocked.
                if self.extend_delay(boundary, now) == 0 {
                    return None;
                }
                match self.policy.decide(&self.lines, open) {
                    Decision::Serve(p) => Some(p),
                    _ => None,
                }
            }
        }
    }

    /// Moves every non-exempt ready request with sequence number ≤ `boundary` to the
    /// back with its kind's extended delay, in queue order. Returns how many moved.
    /// Only capped pairs can hold such requests (the policy checked), and there are
    /// at most `slots` of those, so this costs O(moved · log n).
    fn extend_delay(&mut self, boundary: u64, now: Nanos) -> usize {
        let mut moved: Vec<(u64, u32)> = Vec::new();
        let mut touched = Vec::new();
        for kind in Kind::ALL {
            let Some(delay) = self.config.extended_delay[kind.index()] else { continue };
            let capped: Vec<u32> = self
                .lines
                .iter(Tier::Capped, kind.index())
                .take_while(|key| key.1 <= boundary)
                .map(|key| key.2)
                .collect();
            for p in capped {
                let before = moved.len();
                while let Some(slot) = self.pop_head_if(p, |seq| seq <= boundary) {
                    moved.push((self.requests[slot as usize].key, slot));
                }
                let pair = &self.pairs[p as usize];
                let until = now.saturating_add(delay);
                self.push_event(Event::ExtendedDelay {
                    org: pair.org,
                    kind,
                    count: (moved.len() - before) as u32,
                    until,
                });
                touched.push(p);
            }
        }
        moved.sort_unstable();
        for &(_, slot) in &moved {
            let kind = self.pairs[self.requests[slot as usize].pair as usize].kind;
            let delay = self.config.extended_delay[kind.index()].unwrap_or(0);
            self.delay(slot, now.saturating_add(delay));
        }
        for p in touched {
            self.refile(p);
        }
        self.counters.extended_delays += moved.len() as u64;
        moved.len()
    }

    /// Hands pair `p`'s head request to a slot.
    fn start(&mut self, p: u32, now: Nanos) -> Grant {
        let slot = self.pop_head_if(p, |_| true).expect("a filed pair has a ready request");
        let pair = &mut self.pairs[p as usize];
        pair.running += 1;
        let (org, kind, weight) = (pair.org, pair.kind, pair.limits.weight);
        let charged = self.policy.on_dispatch(&mut pair.flow, kind.index(), weight);
        self.running += 1;
        self.kind_running[kind.index()] += 1;
        self.counters.dispatched += 1;
        let request = &mut self.requests[slot as usize];
        request.state = State::Running;
        request.attempts = request.attempts.saturating_add(1);
        let (id, attempt) = (request.id, u32::from(request.attempts));
        let (lease, expires_at) = self.leases.grant(slot, now, self.config.lease, charged);
        self.refile(p);
        Grant { lease, id, org, kind, attempt, expires_at }
    }

    // ----- completion ---------------------------------------------------------------

    /// The request under `lease` is done.
    pub fn ack(&mut self, lease: LeaseId) -> CoreResult<Release> {
        self.release(lease, Outcome::Ack)
    }

    /// Gives the slot under `lease` back with `outcome`.
    pub fn release(&mut self, lease: LeaseId, outcome: Outcome) -> CoreResult<Release> {
        let active = self.leases.get(lease).ok_or(CoreError::UnknownLease(lease))?;
        let now = self.clock.now();
        let run_time = now.saturating_sub(active.dispatched_at);
        let active = self.leases.release(lease).expect("checked above");
        let slot = active.slot;
        let (id, p) = (self.requests[slot as usize].id, self.requests[slot as usize].pair);
        self.free_slot_of(p, active.charged, run_time);
        match outcome {
            Outcome::Ack | Outcome::Fail => {
                if outcome == Outcome::Ack {
                    self.counters.acked += 1;
                } else {
                    self.counters.failed += 1;
                }
                self.by_id.remove(id, &self.requests);
                self.dealloc(slot);
            }
            Outcome::Retry(at) => {
                self.counters.retried += 1;
                if at > now {
                    self.delay(slot, at);
                } else {
                    self.make_ready(slot);
                }
            }
        }
        self.refile(p);
        let pair = &self.pairs[p as usize];
        Ok(Release { id, org: pair.org, kind: pair.kind, run_time })
    }

    /// True while request `id` is queued, delayed or running.
    pub fn holds(&self, id: RequestId) -> bool {
        self.by_id.get(id, &self.requests).is_some()
    }

    /// True while `lease` holds a slot.
    pub fn is_active(&self, lease: LeaseId) -> bool {
        self.leases.get(lease).is_some()
    }

    /// Extends `lease` by the configured lease duration from now; returns the new expiry.
    pub fn heartbeat(&mut self, lease: LeaseId) -> CoreResult<Nanos> {
        let now = self.clock.now();
        self.leases.extend(lease, now, self.config.lease).ok_or(CoreError::UnknownLease(lease))
    }

    /// Removes a queued or delayed request so it never runs; reports a running one.
    pub fn abort(&mut self, id: RequestId) -> CoreResult<Abort> {
        let slot = self.by_id.get(id, &self.requests).ok_or(CoreError::UnknownRequest(id))?;
        let request = self.requests[slot as usize];
        let p = request.pair;
        match request.state {
            State::Running => {
                let lease = self.leases.iter().find(|(_, l)| l.slot == slot).map(|(id, _)| id);
                return Ok(Abort::Running(lease.expect("a running request holds a lease")));
            }
            State::Ready => {
                self.pairs[p as usize].queued -= 1;
                self.policy.on_unqueued(request.key);
            }
            State::Delayed => self.pairs[p as usize].delayed -= 1,
            State::Aborted | State::Free => unreachable!("aborted and free entries are not indexed by id"),
        }
        // The line or the delay heap still refers to the entry; it is freed when reached.
        self.requests[slot as usize].state = State::Aborted;
        self.by_id.remove(id, &self.requests);
        self.counters.aborted += 1;
        self.refile(p);
        Ok(Abort::Removed)
    }

    // ----- inspection ---------------------------------------------------------------

    /// Where request `id` is.
    pub fn locate(&self, id: RequestId) -> CoreResult<Location> {
        let slot = self.by_id.get(id, &self.requests).ok_or(CoreError::UnknownRequest(id))?;
        let request = &self.requests[slot as usize];
        Ok(match request.state {
            State::Ready => {
                let line = &self.pairs[request.pair as usize].line;
                let ahead_in_pair = line.partition_point(|&s| self.requests[s as usize].key < request.key);
                let ahead_in_queue = self.policy.ahead_in_queue(request.key);
                Location::Queued { ahead_in_pair, ahead_in_queue }
            }
            State::Delayed => Location::Delayed { due: request.key },
            State::Running => {
                let (lease, active) =
                    self.leases.iter().find(|(_, l)| l.slot == slot).expect("a running request holds a lease");
                Location::Running { lease, dispatched_at: active.dispatched_at, expires_at: active.expires_at }
            }
            State::Aborted | State::Free => unreachable!("aborted and free entries are not indexed by id"),
        })
    }

    /// Queue-wide figures.
    pub fn stats(&self) -> Stats {
        Stats {
            queued: self.pairs.iter().map(|p| p.queued as usize).sum(),
            delayed: self.pairs.iter().map(|p| p.delayed as usize).sum(),
            running: self.running,
            slots: self.config.slots,
            effective_slots: self.effective_slots(),
            capacity: self.capacity,
            counters: self.counters,
        }
    }

    /// Figures of one (org, kind) pair.
    pub fn pair_stats(&self, org: OrgId, kind: Kind) -> CoreResult<PairStats> {
        let limits = self.limits(org, kind)?;
        Ok(match self.find_pair(org, kind) {
            Some(p) => {
                let pair = &self.pairs[p as usize];
                PairStats {
                    queued: pair.queued,
                    delayed: pair.delayed,
                    running: pair.running,
                    limits,
                    virtual_time: pair.flow.tag,
                }
            }
            None => PairStats { queued: 0, delayed: 0, running: 0, limits, virtual_time: 0.0 },
        })
    }

    /// Every (org, kind) pair the dispatcher has seen.
    pub fn pairs(&self) -> impl Iterator<Item = (OrgId, Kind)> + '_ {
        self.pairs.iter().map(|p| (p.org, p.kind))
    }

    /// Leases currently held: `(lease, request id)`.
    pub fn running(&self) -> Vec<(LeaseId, RequestId)> {
        self.leases.iter().map(|(lease, l)| (lease, self.requests[l.slot as usize].id)).collect()
    }

    /// Events since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    // ----- internals ----------------------------------------------------------------

    fn unknown_org(id: OrgId) -> CoreError {
        CoreError::invalid("org id", id.0, "an id returned by Dispatcher::org")
    }

    fn find_pair(&self, org: OrgId, kind: Kind) -> Option<u32> {
        self.org_pairs.get(org.0 as usize).map(|t| t[kind.index()]).filter(|&p| p != NO_PAIR)
    }

    /// The pair index of (org, kind), created on first use.
    fn pair(&mut self, org: OrgId, kind: Kind) -> CoreResult<u32> {
        self.org_name(org)?;
        if let Some(p) = self.find_pair(org, kind) {
            return Ok(p);
        }
        let p = self.pairs.len() as u32;
        self.pairs.push(Pair {
            org,
            kind,
            line: VecDeque::new(),
            queued: 0,
            delayed: 0,
            running: 0,
            limits: self.config.default_limits[kind.index()],
            overridden: false,
            flow: Flow::default(),
            filed: None,
        });
        self.org_pairs[org.0 as usize][kind.index()] = p;
        Ok(p)
    }

    fn alloc(&mut self, request: Request) -> u32 {
        match self.free.pop() {
            Some(slot) => {
                self.requests[slot as usize] = request;
                slot
            }
            None => {
                self.requests.push(request);
                (self.requests.len() - 1) as u32
            }
        }
    }

    fn dealloc(&mut self, slot: u32) {
        self.requests[slot as usize].state = State::Free;
        self.free.push(slot);
    }

    /// Puts a request at the back of the queue with a fresh sequence number.
    fn make_ready(&mut self, slot: u32) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let request = &mut self.requests[slot as usize];
        request.key = seq;
        request.state = State::Ready;
        let p = request.pair;
        let pair = &mut self.pairs[p as usize];
        pair.line.push_back(slot);
        pair.queued += 1;
        self.policy.on_queued(&mut pair.flow, seq, pair.queued == 1);
        if pair.filed.is_none() {
            self.refile(p);
        }
        if self.policy.wants_renumber() {
            self.renumber();
        }
    }

    fn delay(&mut self, slot: u32, due: Nanos) {
        let request = &mut self.requests[slot as usize];
        request.key = due;
        request.state = State::Delayed;
        self.pairs[request.pair as usize].delayed += 1;
        self.delays.push(due, slot);
    }

    /// Removes pair `p`'s head request if its sequence number passes `accept`.
    /// Aborted entries met on the way are freed. Does not refile the pair.
    fn pop_head_if(&mut self, p: u32, accept: impl Fn(u64) -> bool) -> Option<u32> {
        loop {
            let slot = *self.pairs[p as usize].line.front()?;
            let request = self.requests[slot as usize];
            if request.state == State::Aborted {
                self.pairs[p as usize].line.pop_front();
                self.dealloc(slot);
                continue;
            }
            if !accept(request.key) {
                return None;
            }
            let pair = &mut self.pairs[p as usize];
            pair.line.pop_front();
            pair.queued -= 1;
            self.policy.on_unqueued(request.key);
            return Some(slot);
        }
    }

    /// Accounts a released slot of pair `p`.
    fn free_slot_of(&mut self, p: u32, charged: f64, run_time: Nanos) {
        let pair = &mut self.pairs[p as usize];
        pair.running -= 1;
        self.policy.on_release(&mut pair.flow, pair.kind.index(), pair.limits.weight, charged, run_time as f64);
        self.running -= 1;
        self.kind_running[pair.kind.index()] -= 1;
        self.counters.released += 1;
    }

    /// Re-queues expired leases, then moves due delayed requests to the back.
    fn advance(&mut self, now: Nanos) {
        while let Some((_, active)) = self.leases.pop_expired(now) {
            let slot = active.slot;
            let request = self.requests[slot as usize];
            let held = now.saturating_sub(active.dispatched_at);
            self.free_slot_of(request.pair, active.charged, held);
            self.counters.expired += 1;
            let pair = &self.pairs[request.pair as usize];
            self.push_event(Event::LeaseExpired {
                id: request.id,
                org: pair.org,
                kind: pair.kind,
                attempt: u32::from(request.attempts),
            });
            self.make_ready(slot);
            self.refile(request.pair);
        }
        while let Some(slot) = self.delays.pop_due(now) {
            match self.requests[slot as usize].state {
                State::Delayed => {
                    self.pairs[self.requests[slot as usize].pair as usize].delayed -= 1;
                    self.make_ready(slot);
                }
                State::Aborted => self.dealloc(slot),
                other => unreachable!("delay heap held a {other:?} request"),
            }
        }
    }

    /// Files pair `p` under the line and key its state calls for.
    fn refile(&mut self, p: u32) {
        // Sweep aborted entries off the front so the head is a live request.
        while let Some(&slot) = self.pairs[p as usize].line.front() {
            if self.requests[slot as usize].state != State::Aborted {
                break;
            }
            self.pairs[p as usize].line.pop_front();
            self.dealloc(slot);
        }
        let pair = &self.pairs[p as usize];
        let kind = pair.kind.index();
        let filed = pair.line.front().map(|&head| {
            let seq = self.requests[head as usize].key;
            self.policy.place(pair.running, &pair.limits, &pair.flow, seq, p)
        });
        if filed == pair.filed {
            return;
        }
        if let Some((tier, key)) = pair.filed {
            self.lines.remove(tier, kind, key);
        }
        if let Some((tier, key)) = filed {
            self.lines.insert(tier, kind, key);
        }
        self.pairs[p as usize].filed = filed;
    }

    /// Gives the ready requests dense sequence numbers again, keeping their order, so
    /// the peek-set index stays proportional to the backlog. Runs only after the index
    /// has grown to four times the backlog plus 65,536 sequence numbers, so its
    /// O(n log n) cost is amortised to O(log n) per request. Kept out of line
    /// (`#[cold]`) so that its code does not crowd the registers of `make_ready`.
    #[cold]
    fn renumber(&mut self) {
        // Aborted entries keep their old sequence numbers, which would break the order
        // of the renumbered lines (and `locate`'s count of requests ahead): free them now.
        let mut aborted = Vec::new();
        for pair in &mut self.pairs {
            pair.line.retain(|&slot| {
                let live = self.requests[slot as usize].state != State::Aborted;
                if !live {
                    aborted.push(slot);
                }
                live
            });
        }
        for slot in aborted {
            self.dealloc(slot);
        }
        let mut ready: Vec<(u64, u32)> = self
            .pairs
            .iter()
            .flat_map(|pair| pair.line.iter())
            .filter(|&&slot| self.requests[slot as usize].state == State::Ready)
            .map(|&slot| (self.requests[slot as usize].key, slot))
            .collect();
        ready.sort_unstable();
        for (seq, &(_, slot)) in ready.iter().enumerate() {
            self.requests[slot as usize].key = seq as u64;
        }
        self.next_seq = ready.len() as u64;
        self.policy.on_renumbered(self.next_seq);
        self.lines.clear();
        for pair in &mut self.pairs {
            pair.filed = None;
        }
        for p in 0..self.pairs.len() as u32 {
            self.refile(p);
        }
    }

    fn push_event(&mut self, event: Event) {
        if self.events.len() == EVENT_BUFFER {
            self.events.pop_front();
            self.counters.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    /// Checks the internal bookkeeping against a recount; for tests.
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        let mut running = 0;
        let mut kind_running = [0u32; KINDS];
        for (p, pair) in self.pairs.iter().enumerate() {
            let live = pair.line.iter().filter(|&&s| self.requests[s as usize].state == State::Ready).count();
            assert_eq!(live as u32, pair.queued, "pair {p} queued count");
            let seqs: Vec<u64> = pair
                .line
                .iter()
                .filter(|&&s| self.requests[s as usize].state == State::Ready)
                .map(|&s| self.requests[s as usize].key)
                .collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "pair {p} line out of order");
            running += pair.running;
            kind_running[pair.kind.index()] += pair.running;
            assert_eq!(pair.filed.is_some(), pair.queued > 0, "pair {p} filed iff backlogged");
        }
        assert_eq!(running, self.running);
        assert_eq!(kind_running, self.kind_running);
        assert_eq!(self.leases.len() as u32, self.running);
        assert_eq!(self.counters.dispatched, self.counters.released + u64::from(self.running));
        let delayed = self.delays.slots().filter(|&s| self.requests[s as usize].state == State::Delayed).count();
        assert_eq!(delayed, self.pairs.iter().map(|p| p.delayed as usize).sum::<usize>());
        self.policy.check_invariants(self.pairs.iter().map(|p| p.queued as usize).sum::<usize>());
    }
}
