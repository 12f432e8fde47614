//! The dispatcher: requests, slot accounting per org, (org, kind) and concurrency key,
//! rate limits, the delay heap and leases, with a policy choosing which request a free
//! slot takes.
//!
//! Requests stand in *lines*, one per (org, kind, key); a line is ordered by
//! priority with aging (`fair_share`) or is a FIFO (`peek_set`, where every request has
//! the default key and priority). Under `fair_share` the lines form a tree — org,
//! (org, kind) pair, line — served by hierarchical fair queuing (see
//! [`crate::policy::fair_share`]); under `peek_set` each pair has exactly one line and
//! the pairs are served as the reference platform does.
//!
//! Every operation is O(log n) in the backlog, the orgs and the keys, except the rare
//! ones that say otherwise (changing a default limit touches every pair of that kind;
//! changing an org's per-key limits touches every key of that org; renumbering the
//! peek-set order is amortised over the sequence numbers that made it necessary). No
//! dispatch walks the queue.
//!
//! **Rate limits.** A scope (an org, an (org, kind) or an (org, key)) may carry a
//! [`RateLimit`]. When the line the policy picks next has a head request whose cost
//! does not fit one of its scopes' limits, that scope waits until the instant it will
//! have room for that request (computed, see [`crate::rate`]), and the slot goes to
//! other work meanwhile; the instant is part of [`Dispatcher::next_wakeup`]. Requests
//! under the same limit are not reordered by cost, so a costly one cannot starve
//! behind cheap ones. The cost is charged when a request starts and never refunded
//! (a retried or expired request had its chance to spend it).
//!
//! **Priorities.** Within a line, a request of priority `p` (0 to
//! [`MAX_PRIORITY`], default [`DEFAULT_PRIORITY`]) that became ready at `t` is
//! ordered by `t − p × aging`: waiting `aging` ([`Config::aging`]) raises its effective
//! priority by one level. Priorities never reorder lines, pairs or orgs, so they never
//! let an org beat another org's share.
//!
//! **`peek_set`** keeps the reference platform's semantics exactly: keys, priorities
//! other than the default, costs other than 1, org limits, key limits and rate limits
//! are refused there with [`CoreError::InvalidArgument`] naming the value, because
//! the reference has none of them and ignoring one silently would break a limit the
//! caller relies on (a per-key cap, an API's quota).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::Arc;

use crate::clock::{Clock, Nanos};
use crate::delay::DelayHeap;
use crate::error::{CoreError, CoreResult};
use crate::lease::{LeaseId, Leases};
use crate::limits::{
    check_cost, check_priority, Config, KeyLimits, OrgLimits, PairLimits, PolicyKind, RateLimit, Shares,
    DEFAULT_PRIORITY, MAX_PRIORITY,
};
use crate::policy::fair_share::{self, Flow, Path, Weights};
use crate::policy::{peek_set, Decision, Key, Lines, Policy, Tier};
use crate::rate::Limiter;
use crate::request::{IdIndex, KeyId, Kind, OrgId, Request, RequestId, State, KINDS};

/// Marks "none yet" in per-kind tables of pair and line indices.
const NONE: u32 = u32::MAX;

/// Why `peek_set` refuses a `fair_share` feature, in the words of the error.
pub const PEEK_SET_REFUSAL: &str =
    "the default under peek_set, which keeps the reference platform's semantics (keys, priorities, costs, org and key limits and rate limits are fair_share features)";

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

/// What a request may carry beyond its org, kind and run-at time: `fair_share`
/// features (under `peek_set` only the defaults are accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestOptions {
    /// Its concurrency key, from [`Dispatcher::key`]; `None` is the org's default key.
    pub key: Option<KeyId>,
    /// 0 to [`MAX_PRIORITY`]; higher starts sooner within its line.
    pub priority: u8,
    /// Units its rate limits are charged when it starts, 1 to [`crate::limits::MAX_COST`].
    pub cost: u32,
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions { key: None, priority: DEFAULT_PRIORITY, cost: 1 }
    }
}

/// [`RequestOptions`] with the key named, for [`Dispatcher::enqueue_named_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamedOptions<'a> {
    /// Its concurrency key (a name by [`crate::name`]'s rule); `None` is the org's default key.
    pub key: Option<&'a str>,
    pub priority: u8,
    pub cost: u32,
}

impl Default for NamedOptions<'_> {
    fn default() -> Self {
        NamedOptions { key: None, priority: DEFAULT_PRIORITY, cost: 1 }
    }
}

/// What a rate limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateScope {
    /// Everything the org starts.
    Org(OrgId),
    /// What the org starts of one kind.
    Pair(OrgId, Kind),
    /// What one key starts (over all kinds).
    Key(KeyId),
    /// Each of the org's named keys on its own, unless the key has a limit of its own.
    EveryKey(OrgId),
}

/// Figures of one org.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrgStats {
    pub queued: u32,
    pub running: u32,
    pub limits: OrgLimits,
    /// Slot-time consumed / weight, in nanoseconds (`fair_share`).
    pub virtual_time: f64,
    pub rate: Option<RateLimit>,
    /// While the org waits for room under its rate limit: when it will have it
    /// (`Nanos::MAX`: not before the limit changes).
    pub throttled_until: Option<Nanos>,
    /// Named keys registered for the org.
    pub keys: usize,
}

/// Figures of one concurrency key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyStats {
    pub org: OrgId,
    /// `None` for the org's default key.
    pub name: Option<String>,
    pub queued: u32,
    pub running: u32,
    pub limits: KeyLimits,
    pub rate: Option<RateLimit>,
    /// While the key waits for room under its rate limit: when it will have it.
    pub throttled_until: Option<Nanos>,
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
    /// Never ran under this lease: its store gave the job to another worker, or it
    /// was aborted or paused, before this slot could claim it. The request leaves the
    /// dispatcher and nothing is charged for the slot: the worker that runs the job
    /// charges it, and a grant lost in a race is no run-time sample.
    Gone,
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
    /// Waiting for a slot: `ahead_in_pair` requests of its own line — its (org, kind)
    /// and concurrency key — go first (aborted ones not yet swept from the line
    /// included); under `peek_set`, `ahead_in_queue` requests of any org stand before it.
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
    /// Releases with [`Outcome::Gone`].
    pub gone: u64,
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

/// One org: the root of its subtree.
#[derive(Debug)]
struct OrgNode {
    limits: OrgLimits,
    /// The rate limit each named key without one of its own gets.
    per_key_rate: Option<RateLimit>,
    /// Pair index per kind, [`NONE`] until used.
    pairs: [u32; KINDS],
    /// The key of requests that name none.
    default_key: u32,
    /// Named keys by name.
    keys: HashMap<Box<str>, u32>,
    queued: u32,
    running: u32,
    flow: Flow,
    rate: Option<Box<Limiter>>,
    throttled: Option<Nanos>,
    /// Under `fair_share`, the line and key the org is filed under per kind.
    filed: [Option<(Tier, Key)>; KINDS],
}

/// One (org, kind) pair.
#[derive(Debug)]
struct Pair {
    org: OrgId,
    kind: Kind,
    /// The first line made for the pair: under `peek_set` its only one.
    first_leaf: u32,
    queued: u32,
    delayed: u32,
    running: u32,
    limits: PairLimits,
    /// Set when the pair's limits were given explicitly, so default changes skip it.
    overridden: bool,
    flow: Flow,
    /// Under `fair_share`, the pair's runnable lines by (tag, head order, line).
    leaves: BTreeSet<Key>,
    /// `peek_set`: the line and key the pair is filed under, if backlogged.
    /// `fair_share`: the pair's tier and key within its org, while it is runnable.
    filed: Option<(Tier, Key)>,
    rate: Option<Box<Limiter>>,
    throttled: Option<Nanos>,
}

/// One concurrency key of an org (its default key included).
#[derive(Debug)]
struct KeyNode {
    org: OrgId,
    /// `None` for the default key.
    name: Option<Box<str>>,
    limits: KeyLimits,
    /// Limits given for this key, so org per-key changes skip it.
    overridden: bool,
    /// A rate limit given for this key, so org per-key rate changes skip it.
    rate_overridden: bool,
    running: u32,
    queued: u32,
    /// Line index per kind, [`NONE`] until used.
    leaves: [u32; KINDS],
    rate: Option<Box<Limiter>>,
    throttled: Option<Nanos>,
}

/// One line: the requests of one (org, kind, key).
///
/// Slab indices of ready requests per priority level, each level in sequence order
/// (so in aging order too); aborted entries are swept when they reach a front. One
/// level is kept inline (it takes the priority of a request that finds it empty), the
/// others (if the line mixes priorities) in `others`: most lines have one level, and
/// a million-request backlog over 100,000 keys then costs one allocation fewer per
/// line to reach.
#[derive(Debug)]
struct Leaf {
    pair: u32,
    key: u32,
    priority: u8,
    level: VecDeque<u32>,
    others: Vec<(u8, VecDeque<u32>)>,
    queued: u32,
    /// `(order, slot)` of the line's first request, kept current by every change to
    /// the levels so that a line mixing priorities is not scanned on every look.
    head: Option<(u64, u32)>,
    /// Virtual time (`fair_share`).
    tag: f64,
    /// Under `fair_share`, the key the line is filed under in its pair, while runnable.
    filed: Option<Key>,
}

impl Leaf {
    fn levels(&self) -> impl Iterator<Item = (u8, &VecDeque<u32>)> {
        std::iter::once((self.priority, &self.level)).chain(self.others.iter().map(|(p, l)| (*p, l)))
    }

    fn levels_mut(&mut self) -> impl Iterator<Item = &mut VecDeque<u32>> {
        std::iter::once(&mut self.level).chain(self.others.iter_mut().map(|(_, l)| l))
    }

    /// The level of `priority`, made on first use.
    fn level_mut(&mut self, priority: u8) -> &mut VecDeque<u32> {
        if priority == self.priority {
            return &mut self.level;
        }
        let at = match self.others.iter().position(|(p, _)| *p == priority) {
            Some(at) => at,
            None if self.level.is_empty() => {
                self.priority = priority;
                return &mut self.level;
            }
            None => {
                self.others.push((priority, VecDeque::new()));
                self.others.len() - 1
            }
        };
        &mut self.others[at].1
    }
}

/// A scope that may wait for room under its rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Org(u32),
    Pair(u32),
    Key(u32),
}

/// The fair multi-tenant dispatcher. Single-threaded; callers wrap it in a lock.
pub struct Dispatcher {
    config: Config,
    clock: Arc<dyn Clock>,
    org_names: Vec<String>,
    org_ids: HashMap<String, OrgId>,
    orgs: Vec<OrgNode>,
    pairs: Vec<Pair>,
    keys: Vec<KeyNode>,
    leaves: Vec<Leaf>,
    lines: Lines,
    policy: Policy,
    /// [`Config::aging`] under `fair_share`, 0 under `peek_set` (whose order is the FIFO).
    aging: Nanos,
    requests: Vec<Request>,
    free: Vec<u32>,
    by_id: IdIndex,
    delays: DelayHeap,
    leases: Leases,
    /// Scopes waiting for room, by the instant they have it; stale entries (the scope
    /// was released early) are recognised by the scope's own `throttled` and dropped.
    throttles: BinaryHeap<Reverse<(Nanos, Scope)>>,
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

/// Frees the aborted entries at the fronts of a line's levels; true if any was.
fn sweep(leaf: &mut Leaf, requests: &mut [Request], free: &mut Vec<u32>) -> bool {
    let mut swept = false;
    for level in leaf.levels_mut() {
        while let Some(&slot) = level.front() {
            if requests[slot as usize].state != State::Aborted {
                break;
            }
            level.pop_front();
            requests[slot as usize].state = State::Free;
            free.push(slot);
            swept = true;
        }
    }
    swept
}

impl Dispatcher {
    /// A dispatcher with `config`, reading time from `clock`.
    pub fn new(config: Config, clock: Arc<dyn Clock>) -> CoreResult<Self> {
        config.validate()?;
        let policy = Policy::new(&config);
        let aging = if config.policy == PolicyKind::FairShare { config.aging } else { 0 };
        Ok(Dispatcher {
            config,
            clock,
            org_names: Vec::new(),
            org_ids: HashMap::default(),
            orgs: Vec::new(),
            pairs: Vec::new(),
            keys: Vec::new(),
            leaves: Vec::new(),
            lines: Lines::default(),
            policy,
            aging,
            requests: Vec::new(),
            free: Vec::new(),
            by_id: IdIndex::default(),
            delays: DelayHeap::default(),
            leases: Leases::default(),
            throttles: BinaryHeap::new(),
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

    fn fair_share(&self) -> bool {
        self.config.policy == PolicyKind::FairShare
    }

    /// Refuses a `fair_share` feature under `peek_set`.
    fn fair_only(&self, name: &'static str, value: impl std::fmt::Display) -> CoreResult<()> {
        if self.fair_share() {
            Ok(())
        } else {
            Err(CoreError::invalid(name, value, PEEK_SET_REFUSAL))
        }
    }

    // ----- orgs, keys and limits ---------------------------------------------------

    /// The handle of org `name`, registering it on first use.
    pub fn org(&mut self, name: &str) -> CoreResult<OrgId> {
        if let Some(&id) = self.org_ids.get(name) {
            return Ok(id);
        }
        Self::check_org_name(name)?;
        let id = OrgId(self.org_names.len() as u32);
        self.org_names.push(name.to_string());
        self.org_ids.insert(name.to_string(), id);
        let default_key = self.new_key(id, None, KeyLimits::default(), None);
        self.orgs.push(OrgNode {
            limits: OrgLimits::default(),
            per_key_rate: None,
            pairs: [NONE; KINDS],
            default_key,
            keys: HashMap::default(),
            queued: 0,
            running: 0,
            flow: Flow::default(),
            rate: None,
            throttled: None,
            filed: [None; KINDS],
        });
        Ok(id)
    }

    fn new_key(&mut self, org: OrgId, name: Option<Box<str>>, limits: KeyLimits, rate: Option<RateLimit>) -> u32 {
        self.keys.push(KeyNode {
            org,
            name,
            limits,
            overridden: false,
            rate_overridden: false,
            running: 0,
            queued: 0,
            leaves: [NONE; KINDS],
            rate: rate.map(|r| Box::new(Limiter::new(r))),
            throttled: None,
        });
        (self.keys.len() - 1) as u32
    }

    /// Checks that `name` can name an org (see [`crate::name`]).
    pub fn check_org_name(name: &str) -> CoreResult<()> {
        crate::name::check_name("org", name)
    }

    /// Checks that `name` can name a concurrency key (see [`crate::name`]).
    pub fn check_key_name(name: &str) -> CoreResult<()> {
        crate::name::check_name("key", name)
    }

    /// The name org `id` was registered with.
    pub fn org_name(&self, id: OrgId) -> CoreResult<&str> {
        self.org_names.get(id.0 as usize).map(String::as_str).ok_or_else(|| Self::unknown_org(id))
    }

    /// The handle of an already registered org.
    pub fn find_org(&self, name: &str) -> Option<OrgId> {
        self.org_ids.get(name).copied()
    }

    /// The handle of `org`'s concurrency key `name`, registering it on first use with
    /// the org's per-key limits. Keys are kept for the dispatcher's life, as orgs are.
    pub fn key(&mut self, org: OrgId, name: &str) -> CoreResult<KeyId> {
        self.org_name(org)?;
        if let Some(&k) = self.orgs[org.0 as usize].keys.get(name) {
            return Ok(KeyId(k));
        }
        Self::check_key_name(name)?;
        let node = &self.orgs[org.0 as usize];
        let (limits, rate) = (node.limits.per_key, node.per_key_rate);
        let k = self.new_key(org, Some(name.into()), limits, rate);
        self.orgs[org.0 as usize].keys.insert(name.into(), k);
        Ok(KeyId(k))
    }

    /// The handle of an already registered key of `org`.
    pub fn find_key(&self, org: OrgId, name: &str) -> Option<KeyId> {
        self.orgs.get(org.0 as usize)?.keys.get(name).map(|&k| KeyId(k))
    }

    /// The key of `org`'s requests that name none.
    pub fn default_key(&self, org: OrgId) -> CoreResult<KeyId> {
        self.org_name(org)?;
        Ok(KeyId(self.orgs[org.0 as usize].default_key))
    }

    fn key_node(&self, key: KeyId) -> CoreResult<&KeyNode> {
        self.keys
            .get(key.0 as usize)
            .ok_or_else(|| CoreError::invalid("key id", key.0, "an id returned by Dispatcher::key"))
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
        self.on_pair_limits_changed(p);
        Ok(())
    }

    /// Restarts a pair whose limits changed at its org's virtual time (so a raised cap
    /// does not turn past under-service into a burst) and refiles it.
    fn on_pair_limits_changed(&mut self, p: u32) {
        let pair = &mut self.pairs[p as usize];
        if let Some(fair) = self.policy.fair() {
            fair_share::restart(&mut pair.flow.tag, fair.pair_start(&self.orgs[pair.org.0 as usize].flow));
            self.refile_pair(p);
        } else {
            self.refile_peek(p);
        }
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
                self.on_pair_limits_changed(p);
            }
        }
        Ok(())
    }

    /// Sets an org's own limits (`fair_share` only), live; its named keys without
    /// limits of their own take `limits.per_key`. O(keys of the org).
    pub fn set_org_limits(&mut self, org: OrgId, limits: OrgLimits) -> CoreResult<()> {
        limits.validate()?;
        self.org_name(org)?;
        if limits != OrgLimits::default() {
            self.fair_only("org limits", limits)?;
        }
        let vtime = self.policy.fair().map_or(0.0, |f| f.vtime());
        let node = &mut self.orgs[org.0 as usize];
        node.limits = limits;
        fair_share::restart(&mut node.flow.tag, vtime);
        let keys: Vec<u32> = node.keys.values().copied().collect();
        for k in keys {
            if !self.keys[k as usize].overridden {
                self.keys[k as usize].limits = limits.per_key;
                self.on_key_limits_changed(k);
            }
        }
        self.refile_org_all(org.0);
        Ok(())
    }

    /// An org's own limits.
    pub fn org_limits(&self, org: OrgId) -> CoreResult<OrgLimits> {
        self.org_name(org)?;
        Ok(self.orgs[org.0 as usize].limits)
    }

    /// Sets one key's limits (`fair_share` only), live; `None` returns a named key to
    /// its org's per-key limits (and the default key to no key limits).
    pub fn set_key_limits(&mut self, key: KeyId, limits: Option<KeyLimits>) -> CoreResult<()> {
        let node = self.key_node(key)?;
        if let Some(l) = limits {
            l.validate()?;
            self.fair_only("key limits", l)?;
        }
        let inherited =
            if node.name.is_some() { self.orgs[node.org.0 as usize].limits.per_key } else { KeyLimits::default() };
        let node = &mut self.keys[key.0 as usize];
        node.overridden = limits.is_some();
        node.limits = limits.unwrap_or(inherited);
        self.on_key_limits_changed(key.0);
        Ok(())
    }

    /// Restarts a key's lines at their pairs' virtual times and refiles them.
    fn on_key_limits_changed(&mut self, k: u32) {
        for l in self.keys[k as usize].leaves {
            if l != NONE {
                let pair_vtime = self.pairs[self.leaves[l as usize].pair as usize].flow.child_vtime;
                fair_share::restart(&mut self.leaves[l as usize].tag, pair_vtime);
            }
        }
        self.refile_key(k);
    }

    /// One key's limits.
    pub fn key_limits(&self, key: KeyId) -> CoreResult<KeyLimits> {
        Ok(self.key_node(key)?.limits)
    }

    /// Sets or removes (`None`) the rate limit of `scope`, live (`fair_share` only). A
    /// changed limit keeps the debt its scope has run up; a scope waiting for room
    /// looks again at once. `RateScope::Key` with `None` returns a named key to its
    /// org's per-key rate limit. `RateScope::EveryKey` is O(keys of the org).
    pub fn set_rate_limit(&mut self, scope: RateScope, limit: Option<RateLimit>) -> CoreResult<()> {
        if let Some(l) = limit {
            l.validate()?;
            self.fair_only("rate limit", l)?;
        }
        match scope {
            RateScope::Org(org) => {
                self.org_name(org)?;
                let node = &mut self.orgs[org.0 as usize];
                node.rate = update(node.rate.take(), limit);
                node.throttled = None;
                self.refile_org_all(org.0);
            }
            RateScope::Pair(org, kind) => {
                let p = self.pair(org, kind)?;
                let pair = &mut self.pairs[p as usize];
                pair.rate = update(pair.rate.take(), limit);
                pair.throttled = None;
                if self.fair_share() {
                    self.refile_pair(p);
                }
            }
            RateScope::Key(key) => {
                let node = self.key_node(key)?;
                let inherited = if node.name.is_some() { self.orgs[node.org.0 as usize].per_key_rate } else { None };
                let node = &mut self.keys[key.0 as usize];
                node.rate_overridden = limit.is_some();
                node.rate = update(node.rate.take(), limit.or(inherited));
                node.throttled = None;
                self.refile_key(key.0);
            }
            RateScope::EveryKey(org) => {
                self.org_name(org)?;
                let node = &mut self.orgs[org.0 as usize];
                node.per_key_rate = limit;
                let keys: Vec<u32> = node.keys.values().copied().collect();
                for k in keys {
                    let node = &mut self.keys[k as usize];
                    if !node.rate_overridden {
                        node.rate = update(node.rate.take(), limit);
                        node.throttled = None;
                        self.refile_key(k);
                    }
                }
            }
        }
        Ok(())
    }

    /// The rate limit of `scope`, if any.
    pub fn rate_limit(&self, scope: RateScope) -> CoreResult<Option<RateLimit>> {
        Ok(match scope {
            RateScope::Org(org) => {
                self.org_name(org)?;
                self.orgs[org.0 as usize].rate.as_ref().map(|r| r.limit)
            }
            RateScope::Pair(org, kind) => {
                self.org_name(org)?;
                self.find_pair(org, kind).and_then(|p| self.pairs[p as usize].rate.as_ref()).map(|r| r.limit)
            }
            RateScope::Key(key) => self.key_node(key)?.rate.as_ref().map(|r| r.limit),
            RateScope::EveryKey(org) => {
                self.org_name(org)?;
                self.orgs[org.0 as usize].per_key_rate
            }
        })
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
        self.enqueue_all(requests.iter().map(|r| (*r, RequestOptions::default())))
    }

    /// Enqueues requests with keys, priorities and costs, in order, all or none.
    pub fn enqueue_with(&mut self, requests: &[(NewRequest, RequestOptions)]) -> CoreResult<()> {
        self.enqueue_all(requests.iter().copied())
    }

    fn enqueue_all<I>(&mut self, requests: I) -> CoreResult<()>
    where
        I: ExactSizeIterator<Item = (NewRequest, RequestOptions)> + Clone,
    {
        for (r, options) in requests.clone() {
            self.org_name(r.org)?;
            self.check_options(r.org, r.kind, &options)?;
        }
        self.check_fresh(requests.clone().map(|(r, _)| r.id))?;
        let now = self.clock.now();
        for (r, options) in requests {
            let key = options.key.map_or(self.orgs[r.org.0 as usize].default_key, |k| k.0);
            let leaf = self.leaf(r.org, r.kind, key)?;
            let slot = self.alloc(Request {
                id: r.id,
                key: 0,
                leaf,
                cost: options.cost,
                attempts: 0,
                priority: options.priority,
                state: State::Free,
            });
            self.by_id.insert(slot, &self.requests);
            self.counters.enqueued += 1;
            match r.run_at {
                Some(due) if due > now => self.delay(slot, due),
                _ => self.make_ready(slot, now),
            }
        }
        Ok(())
    }

    /// Checks a request's options: in range, its key of its org, and under `peek_set`
    /// the defaults. A cost above the burst of a rate limit it falls under could never
    /// start, so it is refused too.
    fn check_options(&self, org: OrgId, kind: Kind, options: &RequestOptions) -> CoreResult<()> {
        self.check_levels(options.priority, options.cost)?;
        let key = match options.key {
            Some(k) => {
                let key = self.key_node(k)?;
                if key.org != org {
                    let org_name = &self.org_names[org.0 as usize];
                    return Err(CoreError::invalid("key id", k.0, format!("a key of org {org_name:?}")));
                }
                if let Some(name) = &key.name {
                    self.fair_only("key", name)?;
                }
                key
            }
            None => &self.keys[self.orgs[org.0 as usize].default_key as usize],
        };
        self.check_fits(org, kind, key.rate.as_ref().map(|r| r.limit), options.cost)
    }

    /// Checks a priority and a cost on their own.
    fn check_levels(&self, priority: u8, cost: u32) -> CoreResult<()> {
        check_priority(priority)?;
        check_cost(cost)?;
        if priority != DEFAULT_PRIORITY {
            self.fair_only("priority", priority)?;
        }
        if cost != 1 {
            self.fair_only("cost", cost)?;
        }
        Ok(())
    }

    /// Refuses a cost above the burst of the org's, the pair's or `key_rate`.
    fn check_fits(&self, org: OrgId, kind: Kind, key_rate: Option<RateLimit>, cost: u32) -> CoreResult<()> {
        let org_rate = self.orgs[org.0 as usize].rate.as_ref().map(|r| r.limit);
        let pair_rate = self.find_pair(org, kind).and_then(|p| self.pairs[p as usize].rate.as_ref()).map(|r| r.limit);
        for rate in [org_rate, pair_rate, key_rate].into_iter().flatten() {
            if cost > rate.burst {
                return Err(CoreError::invalid(
                    "cost",
                    cost,
                    format!("at most the burst ({}) of every rate limit it falls under", rate.burst),
                ));
            }
        }
        Ok(())
    }

    /// Enqueues requests that name their org, registering new orgs only once the whole
    /// batch is known to be accepted: all or none, and a refusal leaves no trace.
    pub fn enqueue_named(&mut self, requests: &[NamedRequest<'_>]) -> CoreResult<()> {
        let with: Vec<(NamedRequest<'_>, NamedOptions<'_>)> =
            requests.iter().map(|r| (*r, NamedOptions::default())).collect();
        self.enqueue_named_with(&with)
    }

    /// Enqueues requests that name their org and key, registering new orgs and keys
    /// only once the whole batch is known to be accepted: all or none, and a refusal
    /// leaves no trace.
    pub fn enqueue_named_with(&mut self, requests: &[(NamedRequest<'_>, NamedOptions<'_>)]) -> CoreResult<()> {
        for (r, options) in requests {
            self.check_levels(options.priority, options.cost)?;
            let Some(org) = self.find_org(r.org) else {
                Self::check_org_name(r.org)?;
                if let Some(key) = options.key {
                    Self::check_key_name(key)?;
                    self.fair_only("key", key)?;
                }
                continue;
            };
            match options.key.map(|name| (name, self.find_key(org, name))) {
                Some((_, Some(key))) => self.check_options(
                    org,
                    r.kind,
                    &RequestOptions { key: Some(key), priority: options.priority, cost: options.cost },
                )?,
                Some((name, None)) => {
                    Self::check_key_name(name)?;
                    self.fair_only("key", name)?;
                    // A new key takes its org's per-key rate limit.
                    self.check_fits(org, r.kind, self.orgs[org.0 as usize].per_key_rate, options.cost)?;
                }
                None => self.check_options(
                    org,
                    r.kind,
                    &RequestOptions { key: None, priority: options.priority, cost: options.cost },
                )?,
            }
        }
        self.check_fresh(requests.iter().map(|(r, _)| r.id))?;
        let mut resolved = Vec::with_capacity(requests.len());
        for (r, options) in requests {
            let org = self.org(r.org)?;
            let key = options.key.map(|k| self.key(org, k)).transpose()?;
            let options = RequestOptions { key, priority: options.priority, cost: options.cost };
            resolved.push((NewRequest { id: r.id, org, kind: r.kind, run_at: r.run_at }, options));
        }
        self.enqueue_with(&resolved)
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

    /// Fills up to `max` free slots. Expired leases are re-queued, due delayed
    /// requests join the queue and scopes whose rate limit has room again are
    /// released, first.
    pub fn dispatch(&mut self, max: usize) -> Vec<Grant> {
        let now = self.clock.now();
        self.advance(now);
        let mut grants = Vec::new();
        while grants.len() < max && self.running < self.effective_slots() {
            match self.select(now) {
                Some(l) => grants.push(self.start(l, now)),
                None => break,
            }
        }
        grants
    }

    /// Re-queues requests whose lease expired, moves due delayed requests to the
    /// back of the queue and releases scopes whose rate limit has room again, as of
    /// `now` on the dispatcher's clock. [`Self::dispatch`] does this itself; call it
    /// to observe expiries without dispatching.
    pub fn tick(&mut self) {
        let now = self.clock.now();
        self.advance(now);
    }

    /// The earliest time at which a delayed request becomes due, a lease expires or a
    /// scope waiting under its rate limit has room: when a worker with nothing to do
    /// should look again.
    pub fn next_wakeup(&mut self) -> Option<Nanos> {
        while let Some(&Reverse((at, scope))) = self.throttles.peek() {
            if self.throttled(scope) == Some(at) {
                break;
            }
            self.throttles.pop();
        }
        let throttle = self.throttles.peek().map(|Reverse((at, _))| *at);
        [self.delays.next_due(), self.leases.next_expiry(), throttle].into_iter().flatten().min()
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

    /// The line a free slot serves, carrying out extended delays (`peek_set`) and
    /// rate-limit waits (`fair_share`) on the way.
    fn select(&mut self, now: Nanos) -> Option<u32> {
        let open = self.kinds_open();
        loop {
            match self.policy.decide(&self.lines, open) {
                Decision::Serve(p) => return Some(self.pairs[p as usize].first_leaf),
                Decision::Wait => return None,
                Decision::ExtendedDelay { boundary } => {
                    // One move per free slot: look once more at the new front, then
                    // leave the slot free if it is still blocked.
                    if self.extend_delay(boundary, now) == 0 {
                        return None;
                    }
                    return match self.policy.decide(&self.lines, open) {
                        Decision::Serve(p) => Some(self.pairs[p as usize].first_leaf),
                        _ => None,
                    };
                }
                Decision::ServeOrg { org, tier, kind } => {
                    let l = self.descend(org, tier, kind, open);
                    match self.scope_without_room(l, now) {
                        None => return Some(l),
                        Some((scope, at)) => self.throttle(scope, at),
                    }
                }
            }
        }
    }

    /// Under `fair_share`, the line of org `o` a slot serves: among its pairs filed in
    /// `tier` whose kind is open, the one with the smallest key (by shares per pair: its
    /// pair of `kind`, which the slot found), then that pair's first line.
    fn descend(&self, o: u32, tier: Tier, kind: usize, open: [bool; KINDS]) -> u32 {
        let org = &self.orgs[o as usize];
        if self.config.shares == Shares::PerPair {
            let p = org.pairs[kind];
            return self.pairs[p as usize].leaves.first().expect("a filed pair has a runnable line").2;
        }
        let p = (0..KINDS)
            .filter(|&k| open[k] && org.filed[k].is_some_and(|(t, _)| t == tier))
            .map(|k| org.pairs[k])
            .min_by_key(|&p| self.pairs[p as usize].filed.map(|(_, key)| key))
            .expect("an org filed in an open kind has a filed pair there");
        self.pairs[p as usize].leaves.first().expect("a filed pair has a runnable line").2
    }

    /// The first scope of line `l`'s head request (org, then pair, then key) whose
    /// rate limit has no room for it now, with the instant it will have room.
    fn scope_without_room(&self, l: u32, now: Nanos) -> Option<(Scope, Nanos)> {
        let leaf = &self.leaves[l as usize];
        let pair = &self.pairs[leaf.pair as usize];
        let org = pair.org.0;
        if self.orgs[org as usize].rate.is_none() && pair.rate.is_none() && self.keys[leaf.key as usize].rate.is_none()
        {
            return None;
        }
        let cost = self.requests[self.head(l).expect("a filed line has a head").1 as usize].cost;
        let scopes = [
            (Scope::Org(org), self.orgs[org as usize].rate.as_deref()),
            (Scope::Pair(leaf.pair), pair.rate.as_deref()),
            (Scope::Key(leaf.key), self.keys[leaf.key as usize].rate.as_deref()),
        ];
        scopes.into_iter().find_map(|(scope, rate)| {
            let at = rate?.room_at(cost, now).unwrap_or(Nanos::MAX);
            (at > now).then_some((scope, at))
        })
    }

    fn throttled(&self, scope: Scope) -> Option<Nanos> {
        match scope {
            Scope::Org(o) => self.orgs[o as usize].throttled,
            Scope::Pair(p) => self.pairs[p as usize].throttled,
            Scope::Key(k) => self.keys[k as usize].throttled,
        }
    }

    /// Takes `scope` out of the candidates until `until` (`Nanos::MAX`: until its limit
    /// changes or the request it waits for leaves).
    fn throttle(&mut self, scope: Scope, until: Nanos) {
        self.set_throttled(scope, Some(until));
        if until != Nanos::MAX {
            self.throttles.push(Reverse((until, scope)));
        }
    }

    fn set_throttled(&mut self, scope: Scope, until: Option<Nanos>) {
        match scope {
            Scope::Org(o) => {
                self.orgs[o as usize].throttled = until;
                self.refile_org_all(o);
            }
            Scope::Pair(p) => {
                self.pairs[p as usize].throttled = until;
                self.refile_pair(p);
            }
            Scope::Key(k) => {
                self.keys[k as usize].throttled = until;
                self.refile_key(k);
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
                let l = self.pairs[p as usize].first_leaf;
                while let Some(slot) = self.pop_head_if(l, |seq| seq <= boundary) {
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
            let kind = self.pairs[self.leaves[self.requests[slot as usize].leaf as usize].pair as usize].kind;
            let delay = self.config.extended_delay[kind.index()].unwrap_or(0);
            self.delay(slot, now.saturating_add(delay));
        }
        for p in touched {
            self.refile_peek(p);
        }
        self.counters.extended_delays += moved.len() as u64;
        moved.len()
    }

    /// Hands line `l`'s head request to a slot.
    fn start(&mut self, l: u32, now: Nanos) -> Grant {
        let slot = self.pop_head_if(l, |_| true).expect("a filed line has a ready request");
        let (p, k) = (self.leaves[l as usize].pair, self.leaves[l as usize].key);
        let cost = self.requests[slot as usize].cost;
        let pair = &mut self.pairs[p as usize];
        pair.running += 1;
        let (org, kind) = (pair.org, pair.kind);
        let node = &mut self.orgs[org.0 as usize];
        node.running += 1;
        let key = &mut self.keys[k as usize];
        key.running += 1;
        let weights = Weights { org: node.limits.weight, pair: pair.limits.weight, key: key.limits.weight };
        let charged = match self.policy.fair() {
            Some(fair) => {
                let path = Path { org: &mut node.flow, pair: &mut pair.flow, line: &mut self.leaves[l as usize].tag };
                fair.on_dispatch(path, kind.index(), weights)
            }
            None => 0.0,
        };
        for limiter in [&mut node.rate, &mut pair.rate, &mut key.rate].into_iter().flatten() {
            limiter.charge(cost, now);
        }
        self.running += 1;
        self.kind_running[kind.index()] += 1;
        self.counters.dispatched += 1;
        let request = &mut self.requests[slot as usize];
        request.state = State::Running;
        request.attempts = request.attempts.saturating_add(1);
        let (id, attempt) = (request.id, u32::from(request.attempts));
        let (lease, expires_at) = self.leases.grant(slot, now, self.config.lease, charged);
        self.refile_around(l);
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
        let (id, l) = (self.requests[slot as usize].id, self.requests[slot as usize].leaf);
        let ran = if outcome == Outcome::Gone { None } else { Some(run_time) };
        self.free_slot_of(l, active.charged, ran);
        match outcome {
            Outcome::Ack | Outcome::Fail | Outcome::Gone => {
                match outcome {
                    Outcome::Ack => self.counters.acked += 1,
                    Outcome::Fail => self.counters.failed += 1,
                    _ => self.counters.gone += 1,
                }
                self.by_id.remove(id, &self.requests);
                self.dealloc(slot);
            }
            Outcome::Retry(at) => {
                self.counters.retried += 1;
                if at > now {
                    self.delay(slot, at);
                } else {
                    self.make_ready(slot, now);
                }
            }
        }
        self.refile_around(l);
        let pair = &self.pairs[self.leaves[l as usize].pair as usize];
        Ok(Release { id, org: pair.org, kind: pair.kind, run_time })
    }

    /// True while request `id` is queued, delayed or running.
    pub fn holds(&self, id: RequestId) -> bool {
        self.by_id.get(id, &self.requests).is_some()
    }

    /// True while `lease` holds a slot.
    /// How many slots are leased now.
    pub fn leased(&self) -> u32 {
        self.running
    }

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
        let l = request.leaf;
        let p = self.leaves[l as usize].pair;
        match request.state {
            State::Running => {
                let lease = self.leases.iter().find(|(_, l)| l.slot == slot).map(|(id, _)| id);
                return Ok(Abort::Running(lease.expect("a running request holds a lease")));
            }
            State::Ready => {
                self.count_queued(l, false);
                self.policy.on_unqueued(request.key);
            }
            State::Delayed => self.pairs[p as usize].delayed -= 1,
            State::Aborted | State::Free => unreachable!("aborted and free entries are not indexed by id"),
        }
        // The line or the delay heap still refers to the entry; it is freed when reached.
        self.requests[slot as usize].state = State::Aborted;
        self.by_id.remove(id, &self.requests);
        self.counters.aborted += 1;
        if self.fair_share() {
            // A scope waiting for room it can never have (a cost above a lowered burst)
            // may have waited for this very request: let it look again.
            let org = self.pairs[p as usize].org.0;
            for scope in [Scope::Org(org), Scope::Pair(p), Scope::Key(self.leaves[l as usize].key)] {
                if self.throttled(scope) == Some(Nanos::MAX) {
                    self.set_throttled(scope, None);
                }
            }
            self.refile_leaf(l);
        } else {
            self.refile_peek(p);
        }
        Ok(Abort::Removed)
    }

    // ----- inspection ---------------------------------------------------------------

    /// Where request `id` is.
    pub fn locate(&self, id: RequestId) -> CoreResult<Location> {
        let slot = self.by_id.get(id, &self.requests).ok_or(CoreError::UnknownRequest(id))?;
        let request = &self.requests[slot as usize];
        Ok(match request.state {
            State::Ready => {
                let order = self.order(slot);
                let ahead_in_pair = self.leaves[request.leaf as usize]
                    .levels()
                    .map(|(_, level)| {
                        level
                            .partition_point(|&s| (self.order(s), self.requests[s as usize].key) < (order, request.key))
                    })
                    .sum();
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

    /// The concurrency key and priority request `id` was enqueued with.
    pub fn options_of(&self, id: RequestId) -> CoreResult<RequestOptions> {
        let slot = self.by_id.get(id, &self.requests).ok_or(CoreError::UnknownRequest(id))?;
        let request = &self.requests[slot as usize];
        let key = self.leaves[request.leaf as usize].key;
        let named = self.keys[key as usize].name.is_some();
        Ok(RequestOptions { key: named.then_some(KeyId(key)), priority: request.priority, cost: request.cost })
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

    /// Figures of one org.
    pub fn org_stats(&self, org: OrgId) -> CoreResult<OrgStats> {
        self.org_name(org)?;
        let node = &self.orgs[org.0 as usize];
        Ok(OrgStats {
            queued: node.queued,
            running: node.running,
            limits: node.limits,
            virtual_time: node.flow.tag,
            rate: node.rate.as_ref().map(|r| r.limit),
            throttled_until: node.throttled,
            keys: node.keys.len(),
        })
    }

    /// Figures of one concurrency key.
    pub fn key_stats(&self, key: KeyId) -> CoreResult<KeyStats> {
        let node = self.key_node(key)?;
        Ok(KeyStats {
            org: node.org,
            name: node.name.as_deref().map(str::to_string),
            queued: node.queued,
            running: node.running,
            limits: node.limits,
            rate: node.rate.as_ref().map(|r| r.limit),
            throttled_until: node.throttled,
        })
    }

    /// While `scope` waits for room under its rate limit: when it will have it.
    /// `RateScope::EveryKey` is always `None`: each key waits on its own (`RateScope::Key`).
    pub fn throttled_until(&self, scope: RateScope) -> CoreResult<Option<Nanos>> {
        Ok(match scope {
            RateScope::Org(org) => self.org_stats(org)?.throttled_until,
            RateScope::Pair(org, kind) => {
                self.org_name(org)?;
                self.find_pair(org, kind).and_then(|p| self.pairs[p as usize].throttled)
            }
            RateScope::Key(key) => self.key_node(key)?.throttled,
            RateScope::EveryKey(_) => None,
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
        self.orgs.get(org.0 as usize).map(|o| o.pairs[kind.index()]).filter(|&p| p != NONE)
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
            first_leaf: NONE,
            queued: 0,
            delayed: 0,
            running: 0,
            limits: self.config.default_limits[kind.index()],
            overridden: false,
            flow: Flow::default(),
            leaves: BTreeSet::new(),
            filed: None,
            rate: None,
            throttled: None,
        });
        self.orgs[org.0 as usize].pairs[kind.index()] = p;
        Ok(p)
    }

    /// The line of (org, kind, key), created on first use.
    fn leaf(&mut self, org: OrgId, kind: Kind, key: u32) -> CoreResult<u32> {
        let p = self.pair(org, kind)?;
        let l = self.keys[key as usize].leaves[kind.index()];
        if l != NONE {
            return Ok(l);
        }
        let l = self.leaves.len() as u32;
        self.leaves.push(Leaf {
            pair: p,
            key,
            priority: DEFAULT_PRIORITY,
            level: VecDeque::new(),
            others: Vec::new(),
            queued: 0,
            head: None,
            tag: 0.0,
            filed: None,
        });
        self.keys[key as usize].leaves[kind.index()] = l;
        let pair = &mut self.pairs[p as usize];
        if pair.first_leaf == NONE {
            pair.first_leaf = l;
        }
        Ok(l)
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

    /// Where a ready request stands in its line: its sequence number, moved ahead by
    /// its priority's aging offset (`fair_share`; 0 under `peek_set`).
    #[inline]
    fn order(&self, slot: u32) -> u64 {
        let r = &self.requests[slot as usize];
        r.key.saturating_add(u64::from(MAX_PRIORITY - r.priority) * self.aging)
    }

    /// The head of line `l` — `(order, slot)` of its first request — assuming its
    /// fronts were swept.
    #[inline]
    fn head(&self, l: u32) -> Option<(u64, u32)> {
        self.leaves[l as usize].head
    }

    /// Sweeps line `l`'s fronts, and recomputes its head if anything was swept.
    fn sweep_line(&mut self, l: u32) {
        if sweep(&mut self.leaves[l as usize], &mut self.requests, &mut self.free) {
            self.recompute_head(l);
        }
    }

    fn recompute_head(&mut self, l: u32) {
        self.leaves[l as usize].head = self.scan_head(l);
    }

    /// The head of line `l` found by looking at every level's front.
    fn scan_head(&self, l: u32) -> Option<(u64, u32)> {
        let leaf = &self.leaves[l as usize];
        if leaf.others.is_empty() {
            // One level: its front is the head (the common case, kept off the iterator).
            return leaf.level.front().map(|&slot| (self.order(slot), slot));
        }
        leaf.levels()
            .filter_map(|(_, level)| level.front().map(|&slot| (self.order(slot), slot)))
            .min_by_key(|&(order, slot)| (order, self.requests[slot as usize].key))
    }

    /// Counts a request into (`true`) or out of its line, pair, key and org.
    fn count_queued(&mut self, l: u32, joined: bool) {
        let leaf = &mut self.leaves[l as usize];
        let pair = &mut self.pairs[leaf.pair as usize];
        let key = &mut self.keys[leaf.key as usize];
        let org = &mut self.orgs[pair.org.0 as usize];
        if joined {
            leaf.queued += 1;
            pair.queued += 1;
            key.queued += 1;
            org.queued += 1;
        } else {
            leaf.queued -= 1;
            pair.queued -= 1;
            key.queued -= 1;
            org.queued -= 1;
        }
    }

    /// Puts a request at the back of its line's priority level with a fresh sequence
    /// number.
    fn make_ready(&mut self, slot: u32, now: Nanos) {
        let seq = self.policy.stamp(self.next_seq, now);
        self.next_seq = seq + 1;
        let request = &mut self.requests[slot as usize];
        request.key = seq;
        request.state = State::Ready;
        let (l, priority) = (request.leaf, request.priority);
        self.leaves[l as usize].level_mut(priority).push_back(slot);
        // Sequence numbers only grow, so on an equal order the old head stays first.
        let order = self.order(slot);
        let leaf = &mut self.leaves[l as usize];
        if leaf.head.is_none_or(|(head, _)| order < head) {
            leaf.head = Some((order, slot));
        }
        self.count_queued(l, true);
        self.policy.on_queued(seq);
        if let Some(fair) = self.policy.fair() {
            // Each node that had no ready request starts at its parent's virtual time.
            let leaf = &mut self.leaves[l as usize];
            let pair = &mut self.pairs[leaf.pair as usize];
            let org = &mut self.orgs[pair.org.0 as usize];
            if org.queued == 1 {
                fair_share::restart(&mut org.flow.tag, fair.vtime());
            }
            if pair.queued == 1 {
                fair_share::restart(&mut pair.flow.tag, fair.pair_start(&org.flow));
            }
            if leaf.queued == 1 {
                fair_share::restart(&mut leaf.tag, pair.flow.child_vtime);
            }
            // Refile only when the line was not filed or the request is its new head.
            if leaf.filed.is_none_or(|key| self.order(slot) < key.1) {
                self.refile_leaf(l);
            }
        } else {
            let p = self.leaves[l as usize].pair;
            if self.pairs[p as usize].filed.is_none() {
                self.refile_peek(p);
            }
            if self.policy.wants_renumber() {
                self.renumber();
            }
        }
    }

    fn delay(&mut self, slot: u32, due: Nanos) {
        let request = &mut self.requests[slot as usize];
        request.key = due;
        request.state = State::Delayed;
        self.pairs[self.leaves[request.leaf as usize].pair as usize].delayed += 1;
        self.delays.push(due, slot);
    }

    /// Removes line `l`'s head request if its sequence number passes `accept`.
    /// Aborted entries met on the way are freed. Does not refile the line.
    fn pop_head_if(&mut self, l: u32, accept: impl Fn(u64) -> bool) -> Option<u32> {
        self.sweep_line(l);
        let (_, slot) = self.head(l)?;
        let request = self.requests[slot as usize];
        if !accept(request.key) {
            return None;
        }
        self.leaves[l as usize].level_mut(request.priority).pop_front();
        self.recompute_head(l);
        self.count_queued(l, false);
        self.policy.on_unqueued(request.key);
        Some(slot)
    }

    /// Accounts a released slot of line `l`.
    /// Accounts a freed slot; `run_time` is `None` for a grant that never ran (refunded).
    fn free_slot_of(&mut self, l: u32, charged: f64, run_time: Option<Nanos>) {
        let leaf = &mut self.leaves[l as usize];
        let pair = &mut self.pairs[leaf.pair as usize];
        let key = &mut self.keys[leaf.key as usize];
        let org = &mut self.orgs[pair.org.0 as usize];
        pair.running -= 1;
        key.running -= 1;
        org.running -= 1;
        if let Some(fair) = self.policy.fair() {
            let weights = Weights { org: org.limits.weight, pair: pair.limits.weight, key: key.limits.weight };
            let path = Path { org: &mut org.flow, pair: &mut pair.flow, line: &mut leaf.tag };
            fair.on_release(path, pair.kind.index(), weights, charged, run_time.map(|t| t as f64));
        }
        self.running -= 1;
        self.kind_running[pair.kind.index()] -= 1;
        self.counters.released += 1;
    }

    /// Re-queues expired leases, moves due delayed requests to the back, then lets
    /// scopes whose rate limit has room again look for work.
    fn advance(&mut self, now: Nanos) {
        while let Some((_, active)) = self.leases.pop_expired(now) {
            let slot = active.slot;
            let request = self.requests[slot as usize];
            let held = now.saturating_sub(active.dispatched_at);
            self.free_slot_of(request.leaf, active.charged, Some(held));
            self.counters.expired += 1;
            let pair = &self.pairs[self.leaves[request.leaf as usize].pair as usize];
            self.push_event(Event::LeaseExpired {
                id: request.id,
                org: pair.org,
                kind: pair.kind,
                attempt: u32::from(request.attempts),
            });
            self.make_ready(slot, now);
            self.refile_around(request.leaf);
        }
        while let Some(slot) = self.delays.pop_due(now) {
            match self.requests[slot as usize].state {
                State::Delayed => {
                    let p = self.leaves[self.requests[slot as usize].leaf as usize].pair;
                    self.pairs[p as usize].delayed -= 1;
                    self.make_ready(slot, now);
                }
                State::Aborted => self.dealloc(slot),
                other => unreachable!("delay heap held a {other:?} request"),
            }
        }
        while let Some(&Reverse((at, scope))) = self.throttles.peek() {
            if at > now {
                break;
            }
            self.throttles.pop();
            if self.throttled(scope) == Some(at) {
                self.set_throttled(scope, None);
            }
        }
    }

    /// Refiles everything a start or a release of line `l` changed: under
    /// `fair_share`, every line of its key (the key's count may have crossed its cap)
    /// and its org in every kind (the org's tag and count changed).
    fn refile_around(&mut self, l: u32) {
        let leaf = &self.leaves[l as usize];
        if self.fair_share() {
            let org = self.pairs[leaf.pair as usize].org.0;
            self.refile_key(leaf.key);
            self.refile_org_all(org);
        } else {
            self.refile_peek(leaf.pair);
        }
    }

    /// Under `peek_set`, files pair `p` under the line and key its state calls for.
    fn refile_peek(&mut self, p: u32) {
        let l = self.pairs[p as usize].first_leaf;
        let head = if l == NONE {
            None
        } else {
            self.sweep_line(l);
            self.head(l)
        };
        let pair = &self.pairs[p as usize];
        let kind = pair.kind.index();
        let filed = head.map(|(_, slot)| {
            let seq = self.requests[slot as usize].key;
            (peek_set::tier(pair.running, &pair.limits), peek_set::key(seq, p))
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

    /// Under `fair_share`, files line `l` in its pair while it is runnable (it has a
    /// ready request and its key is neither at its cap nor waiting for room), then
    /// refiles the pair. Under `peek_set`, refiles the line's pair.
    fn refile_leaf(&mut self, l: u32) {
        self.sweep_line(l);
        let leaf = &self.leaves[l as usize];
        let p = leaf.pair;
        if !self.fair_share() {
            self.refile_peek(p);
            return;
        }
        let key = &self.keys[leaf.key as usize];
        let runnable = key.throttled.is_none() && key.limits.cap.is_none_or(|cap| key.running < cap);
        let filed = if runnable { self.head(l).map(|(order, _)| fair_share::key(leaf.tag, order, l)) } else { None };
        if filed != leaf.filed {
            let pair = &mut self.pairs[p as usize];
            if let Some(old) = leaf.filed {
                pair.leaves.remove(&old);
            }
            if let Some(new) = filed {
                pair.leaves.insert(new);
            }
            self.leaves[l as usize].filed = filed;
        }
        self.refile_pair(p);
    }

    /// Under `fair_share`, records pair `p`'s tier and key while it is runnable (a
    /// runnable line, under its cap, not waiting for room), then refiles its org.
    fn refile_pair(&mut self, p: u32) {
        if !self.fair_share() {
            return;
        }
        let pair = &self.pairs[p as usize];
        let runnable = pair.throttled.is_none() && pair.running < pair.limits.cap;
        let filed =
            pair.leaves.first().filter(|_| runnable).map(|line| {
                (fair_share::tier(pair.running, pair.limits.min), fair_share::key(pair.flow.tag, line.1, p))
            });
        let (org, kind) = (pair.org.0, pair.kind.index());
        self.pairs[p as usize].filed = filed;
        self.refile_org(org, kind);
    }

    /// Under `fair_share`, files org `o` in the lines of `kind` while its pair of that
    /// kind is runnable and the org is under its cap and not waiting for room.
    fn refile_org(&mut self, o: u32, kind: usize) {
        let org = &self.orgs[o as usize];
        let p = org.pairs[kind];
        if p == NONE {
            return;
        }
        let runnable = org.throttled.is_none() && org.limits.cap.is_none_or(|cap| org.running < cap);
        let per_org = self.config.shares == Shares::PerOrg;
        let filed = self.pairs[p as usize].filed.filter(|_| runnable).map(|(tier, key)| {
            let tier = if org.running < org.limits.min { Tier::Reserved } else { tier };
            // By shares per pair the pair's own tag orders it among every org's pairs.
            (tier, if per_org { fair_share::key(org.flow.tag, key.1, o) } else { (key.0, key.1, o) })
        });
        if filed == org.filed[kind] {
            return;
        }
        if let Some((tier, key)) = org.filed[kind] {
            self.lines.remove(tier, kind, key);
        }
        if let Some((tier, key)) = filed {
            self.lines.insert(tier, kind, key);
        }
        self.orgs[o as usize].filed[kind] = filed;
    }

    fn refile_org_all(&mut self, o: u32) {
        if self.fair_share() {
            for kind in 0..KINDS {
                self.refile_org(o, kind);
            }
        }
    }

    /// Refiles every line of key `k`.
    fn refile_key(&mut self, k: u32) {
        for l in self.keys[k as usize].leaves {
            if l != NONE {
                self.refile_leaf(l);
            }
        }
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
        for leaf in &mut self.leaves {
            for level in leaf.levels_mut() {
                level.retain(|&slot| {
                    let live = self.requests[slot as usize].state != State::Aborted;
                    if !live {
                        aborted.push(slot);
                    }
                    live
                });
            }
        }
        for slot in aborted {
            self.dealloc(slot);
        }
        let mut ready: Vec<(u64, u32)> = self
            .leaves
            .iter()
            .flat_map(|leaf| leaf.levels().flat_map(|(_, level)| level.iter()))
            .filter(|&&slot| self.requests[slot as usize].state == State::Ready)
            .map(|&slot| (self.requests[slot as usize].key, slot))
            .collect();
        ready.sort_unstable();
        for (seq, &(_, slot)) in ready.iter().enumerate() {
            self.requests[slot as usize].key = seq as u64;
        }
        for l in 0..self.leaves.len() as u32 {
            self.recompute_head(l);
        }
        self.next_seq = ready.len() as u64;
        self.policy.on_renumbered(self.next_seq);
        self.lines.clear();
        for pair in &mut self.pairs {
            pair.filed = None;
        }
        for p in 0..self.pairs.len() as u32 {
            self.refile_peek(p);
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
        let (mut org_queued, mut org_running) = (vec![0u32; self.orgs.len()], vec![0u32; self.orgs.len()]);
        let mut key_queued = vec![0u32; self.keys.len()];
        for (p, pair) in self.pairs.iter().enumerate() {
            running += pair.running;
            kind_running[pair.kind.index()] += pair.running;
            org_running[pair.org.0 as usize] += pair.running;
            org_queued[pair.org.0 as usize] += pair.queued;
            let in_leaves: u32 = self.leaves.iter().filter(|l| l.pair as usize == p).map(|l| l.queued).sum();
            assert_eq!(in_leaves, pair.queued, "pair {p} queued count");
            if self.fair_share() {
                assert_eq!(
                    pair.filed.is_some(),
                    pair.leaves.first().is_some() && pair.throttled.is_none() && pair.running < pair.limits.cap,
                    "pair {p} filed iff runnable"
                );
            } else {
                assert_eq!(pair.filed.is_some(), pair.queued > 0, "pair {p} filed iff backlogged");
            }
        }
        for (l, leaf) in self.leaves.iter().enumerate() {
            let live: Vec<u32> = leaf
                .levels()
                .flat_map(|(_, level)| level.iter().copied())
                .filter(|&s| self.requests[s as usize].state == State::Ready)
                .collect();
            assert_eq!(live.len() as u32, leaf.queued, "line {l} queued count");
            for (priority, level) in leaf.levels() {
                let seqs: Vec<u64> = level
                    .iter()
                    .filter(|&&s| self.requests[s as usize].state == State::Ready)
                    .map(|&s| self.requests[s as usize].key)
                    .collect();
                assert!(seqs.windows(2).all(|w| w[0] < w[1]), "line {l} level {priority} out of order");
                assert!(level.iter().all(|&s| self.requests[s as usize].priority == priority));
            }
            key_queued[leaf.key as usize] += leaf.queued;
            let fronts_live = leaf
                .levels()
                .all(|(_, level)| level.front().is_none_or(|&s| self.requests[s as usize].state != State::Aborted));
            if fronts_live {
                assert_eq!(leaf.head, self.scan_head(l as u32), "line {l} head");
            }
            if self.fair_share() {
                let key = &self.keys[leaf.key as usize];
                let runnable = key.throttled.is_none() && key.limits.cap.is_none_or(|cap| key.running < cap);
                assert_eq!(leaf.filed.is_some(), leaf.queued > 0 && runnable, "line {l} filed iff runnable");
            }
        }
        for (k, key) in self.keys.iter().enumerate() {
            assert_eq!(key.queued, key_queued[k], "key {k} queued count");
        }
        for (o, org) in self.orgs.iter().enumerate() {
            assert_eq!(org.queued, org_queued[o], "org {o} queued count");
            assert_eq!(org.running, org_running[o], "org {o} running count");
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

/// A scope's limiter after its limit changed to `limit`: the debt run up is kept.
fn update(limiter: Option<Box<Limiter>>, limit: Option<RateLimit>) -> Option<Box<Limiter>> {
    match (limiter, limit) {
        (Some(mut limiter), Some(limit)) => {
            limiter.set(limit);
            Some(limiter)
        }
        (None, Some(limit)) => Some(Box::new(Limiter::new(limit))),
        (_, None) => None,
    }
}
