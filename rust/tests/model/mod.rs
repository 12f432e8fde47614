//! A deliberately simple reference model of the dispatcher, for property tests.
//!
//! Plain vectors and linear scans, no indexes: one `Vec` of ready requests in queue
//! order, one `Vec` of delayed requests, one `Vec` of active leases. Each policy is
//! written out the way the spec states it, so the real dispatcher (Fenwick tree,
//! per-kind ordered lines, heaps) can be checked decision by decision against it.
//!
//! `fair_share` is the hierarchy written out flat: every decision recomputes, from the
//! requests alone, which orgs, pairs and lines (org, kind, key) are runnable and picks
//! the smallest by (tier, org tag, head order, org), then the org's smallest pair by
//! (pair tag, head order, pair), then the pair's smallest line by (line tag, head order,
//! line). Rate limits are GCRA, kept as one theoretical arrival time per scope.

use std::collections::HashMap;

use _core::{
    Abort, CoreError, CoreResult, Counters, Event, Grant, KeyId, KeyLimits, Kind, LeaseId, Location, Nanos, NewRequest,
    OrgId, OrgLimits, Outcome, PairLimits, PolicyKind, RateLimit, RateScope, Release, RequestId, RequestOptions, KINDS,
    MAX_COST, MAX_PRIORITY,
};

/// Mirrors `fair_share::ESTIMATE_ALPHA`.
const ALPHA: f64 = 0.2;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MState {
    Ready,
    Delayed(Nanos),
    Running(LeaseId),
}

#[derive(Debug, Clone)]
pub struct MReq {
    pub org: OrgId,
    pub kind: Kind,
    pub pair: usize,
    /// Index into `Model::keys` (= the real `KeyId`).
    pub key: usize,
    /// Index into `Model::leaves`.
    pub leaf: usize,
    pub priority: u8,
    pub cost: u32,
    /// Sequence number while ready.
    pub seq: u64,
    pub attempts: u32,
    pub state: MState,
}

#[derive(Debug, Clone)]
pub struct MPair {
    pub org: OrgId,
    pub kind: Kind,
    pub limits: PairLimits,
    pub overridden: bool,
    pub tag: f64,
    pub child_vtime: f64,
    pub estimate: Option<f64>,
    pub rate: Option<MRate>,
    pub throttled: Option<Nanos>,
}

#[derive(Debug, Clone)]
pub struct MOrg {
    pub limits: OrgLimits,
    pub per_key_rate: Option<RateLimit>,
    pub tag: f64,
    pub child_vtime: f64,
    pub rate: Option<MRate>,
    pub throttled: Option<Nanos>,
}

#[derive(Debug, Clone)]
pub struct MKey {
    pub org: OrgId,
    pub named: bool,
    pub limits: KeyLimits,
    pub overridden: bool,
    pub rate_overridden: bool,
    pub rate: Option<MRate>,
    pub throttled: Option<Nanos>,
}

/// A line: (pair, key), in creation order.
#[derive(Debug, Clone)]
pub struct MLeaf {
    pub pair: usize,
    pub key: usize,
    pub tag: f64,
}

/// GCRA: `tat` is the theoretical arrival time, `interval` the nanoseconds per unit.
#[derive(Debug, Clone, Copy)]
pub struct MRate {
    pub limit: RateLimit,
    pub tat: Nanos,
}

impl MRate {
    fn interval(&self) -> Nanos {
        (self.limit.per as f64 / self.limit.rate).ceil().max(1.0) as Nanos
    }

    /// The earliest time >= now at which `cost` fits (`Nanos::MAX`: never).
    fn room_at(&self, cost: u32, now: Nanos) -> Nanos {
        if cost > self.limit.burst {
            return Nanos::MAX;
        }
        // max(tat, t) + cost·T − t <= burst·T
        let t = self.interval();
        let earliest = (self.tat + u64::from(cost) * t).saturating_sub(u64::from(self.limit.burst) * t);
        earliest.max(now)
    }
}

fn with_limit(old: Option<MRate>, limit: Option<RateLimit>) -> Option<MRate> {
    limit.map(|limit| MRate { limit, tat: old.map_or(0, |r| r.tat) })
}

#[derive(Debug, Clone)]
pub struct MLease {
    pub lease: LeaseId,
    pub id: RequestId,
    pub dispatched_at: Nanos,
    pub expires_at: Nanos,
    pub charged: f64,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub policy: PolicyKind,
    pub slots: u32,
    pub peek_set: usize,
    pub extended_delay: [Option<Nanos>; KINDS],
    pub kind_slots: [Option<u32>; KINDS],
    pub lease: Nanos,
    pub default_limits: [PairLimits; KINDS],
    pub capacity: f64,
    pub now: Nanos,
    pub orgs: u32,
    pub org_nodes: Vec<MOrg>,
    /// Keys by real `KeyId`: org `o`'s default key is `o`, named keys follow.
    pub keys: Vec<MKey>,
    pub leaves: Vec<MLeaf>,
    pub aging: Nanos,
    /// Orgs share slot-time at the top (else each (org, kind) pair does).
    pub per_org: bool,
    pub next_seq: u64,
    /// In creation order: the index is the pair index.
    pub pairs: Vec<MPair>,
    pub reqs: HashMap<RequestId, MReq>,
    /// Ready requests, front of the queue first.
    pub ready: Vec<RequestId>,
    /// `(due, insertion order, id)`, unsorted.
    pub delayed: Vec<(Nanos, u64, RequestId)>,
    pub delay_order: u64,
    pub leases: Vec<MLease>,
    pub next_lease: LeaseId,
    pub vtime: f64,
    pub kind_estimate: [Option<f64>; KINDS],
    pub counters: Counters,
    pub events: Vec<Event>,
}

/// The sort bits of a tag: -0.0 and 0.0 sort first.
fn bits(tag: f64) -> u64 {
    if tag > 0.0 {
        tag.to_bits()
    } else {
        0
    }
}

fn blend(estimate: Option<f64>, sample: f64) -> f64 {
    match estimate {
        Some(e) => e + ALPHA * (sample - e),
        None => sample,
    }
}

fn check_limits(l: &PairLimits) -> CoreResult<()> {
    let bad = |name: &'static str| CoreError::InvalidArgument { name, value: String::new(), expected: String::new() };
    if l.cap == 0 {
        return Err(bad("cap"));
    }
    if l.min > l.cap {
        return Err(bad("min"));
    }
    if !(l.weight.is_finite() && l.weight > 0.0) {
        return Err(bad("weight"));
    }
    Ok(())
}

fn check_key_limits(l: &KeyLimits) -> CoreResult<()> {
    if l.cap == Some(0) {
        return Err(bad("key cap"));
    }
    if !(l.weight.is_finite() && l.weight > 0.0) {
        return Err(bad("key weight"));
    }
    Ok(())
}

/// Errors compare by variant and, for invalid arguments, by the argument's name only.
pub fn same_error(a: &CoreError, b: &CoreError) -> bool {
    match (a, b) {
        (CoreError::InvalidArgument { name: x, .. }, CoreError::InvalidArgument { name: y, .. }) => x == y,
        _ => a == b,
    }
}

impl MKey {
    fn new(org: OrgId, named: bool, limits: KeyLimits, rate: Option<RateLimit>) -> Self {
        MKey {
            org,
            named,
            limits,
            overridden: false,
            rate_overridden: false,
            rate: rate.map(|limit| MRate { limit, tat: 0 }),
            throttled: None,
        }
    }
}

fn bad(name: &'static str) -> CoreError {
    CoreError::InvalidArgument { name, value: String::new(), expected: String::new() }
}

/// A scope of rate limits, as the model indexes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MScope {
    Org(usize),
    Pair(usize),
    Key(usize),
}

impl Model {
    pub fn new(config: &_core::Config, now: Nanos, orgs: u32) -> Self {
        Model {
            policy: config.policy,
            slots: config.slots,
            peek_set: config.peek_set as usize,
            extended_delay: config.extended_delay,
            kind_slots: config.kind_slots,
            lease: config.lease,
            default_limits: config.default_limits,
            capacity: 1.0,
            now,
            orgs,
            org_nodes: (0..orgs)
                .map(|_| MOrg {
                    limits: OrgLimits::default(),
                    per_key_rate: None,
                    tag: 0.0,
                    child_vtime: 0.0,
                    rate: None,
                    throttled: None,
                })
                .collect(),
            keys: (0..orgs).map(|o| MKey::new(OrgId(o), false, KeyLimits::default(), None)).collect(),
            leaves: Vec::new(),
            aging: if config.policy == PolicyKind::FairShare { config.aging } else { 0 },
            per_org: config.shares == _core::Shares::PerOrg,
            next_seq: 0,
            pairs: Vec::new(),
            reqs: HashMap::new(),
            ready: Vec::new(),
            delayed: Vec::new(),
            delay_order: 0,
            leases: Vec::new(),
            next_lease: 1,
            vtime: 0.0,
            kind_estimate: [None; KINDS],
            counters: Counters::default(),
            events: Vec::new(),
        }
    }

    // ----- helpers -------------------------------------------------------------

    pub fn find_pair(&self, org: OrgId, kind: Kind) -> Option<usize> {
        self.pairs.iter().position(|p| p.org == org && p.kind == kind)
    }

    fn pair(&mut self, org: OrgId, kind: Kind) -> usize {
        if let Some(p) = self.find_pair(org, kind) {
            return p;
        }
        self.pairs.push(MPair {
            org,
            kind,
            limits: self.default_limits[kind.index()],
            overridden: false,
            tag: 0.0,
            child_vtime: 0.0,
            estimate: None,
            rate: None,
            throttled: None,
        });
        self.pairs.len() - 1
    }

    fn leaf(&mut self, pair: usize, key: usize) -> usize {
        if let Some(l) = self.leaves.iter().position(|l| l.pair == pair && l.key == key) {
            return l;
        }
        self.leaves.push(MLeaf { pair, key, tag: 0.0 });
        self.leaves.len() - 1
    }

    /// Registers named key `n` of `org` as the harness does (after every org).
    pub fn add_key(&mut self, org: OrgId) -> KeyId {
        let o = &self.org_nodes[org.0 as usize];
        let (limits, rate) = (o.limits.per_key, o.per_key_rate);
        self.keys.push(MKey::new(org, true, limits, rate));
        KeyId(self.keys.len() as u32 - 1)
    }

    /// Where a pair that becomes backlogged (or changes limits) restarts.
    fn pair_start(&self, o: usize) -> f64 {
        if self.per_org {
            self.org_nodes[o].child_vtime
        } else {
            self.vtime
        }
    }

    fn fair(&self) -> bool {
        self.policy == PolicyKind::FairShare
    }

    pub fn key_running_pub(&self, k: usize) -> u32 {
        self.key_running(k)
    }

    pub fn org_running_pub(&self, o: usize) -> u32 {
        self.org_running(o)
    }

    fn key_running(&self, k: usize) -> u32 {
        self.leases.iter().filter(|l| self.reqs[&l.id].key == k).count() as u32
    }

    fn org_running(&self, o: usize) -> u32 {
        self.leases.iter().filter(|l| self.reqs[&l.id].org.0 as usize == o).count() as u32
    }

    fn org_queued(&self, o: usize) -> usize {
        self.ready.iter().filter(|id| self.reqs[id].org.0 as usize == o).count()
    }

    fn leaf_queued(&self, l: usize) -> usize {
        self.ready.iter().filter(|id| self.reqs[id].leaf == l).count()
    }

    /// A ready request's place in its line: sequence number plus the aging offset of
    /// the levels below the top priority.
    pub fn order(&self, id: RequestId) -> u64 {
        let r = &self.reqs[&id];
        r.seq + u64::from(MAX_PRIORITY - r.priority) * self.aging
    }

    /// The first request of line `l`: smallest order, then smallest sequence number.
    fn leaf_head(&self, l: usize) -> Option<RequestId> {
        self.ready
            .iter()
            .copied()
            .filter(|id| self.reqs[id].leaf == l)
            .min_by_key(|&id| (self.order(id), self.reqs[&id].seq))
    }

    pub fn throttled(&self, scope: MScope) -> Option<Nanos> {
        match scope {
            MScope::Org(o) => self.org_nodes[o].throttled,
            MScope::Pair(p) => self.pairs[p].throttled,
            MScope::Key(k) => self.keys[k].throttled,
        }
    }

    fn set_throttled(&mut self, scope: MScope, until: Option<Nanos>) {
        match scope {
            MScope::Org(o) => self.org_nodes[o].throttled = until,
            MScope::Pair(p) => self.pairs[p].throttled = until,
            MScope::Key(k) => self.keys[k].throttled = until,
        }
    }

    fn rate(&self, scope: MScope) -> Option<MRate> {
        match scope {
            MScope::Org(o) => self.org_nodes[o].rate,
            MScope::Pair(p) => self.pairs[p].rate,
            MScope::Key(k) => self.keys[k].rate,
        }
    }

    fn scopes_of(&self, id: RequestId) -> [MScope; 3] {
        let r = &self.reqs[&id];
        [MScope::Org(r.org.0 as usize), MScope::Pair(r.pair), MScope::Key(r.key)]
    }

    /// Line `l` may be served: it has a head, and its key is under cap and not waiting.
    fn leaf_runnable(&self, l: usize) -> bool {
        let k = &self.keys[self.leaves[l].key];
        self.leaf_head(l).is_some()
            && k.throttled.is_none()
            && k.limits.cap.is_none_or(|cap| self.key_running(self.leaves[l].key) < cap)
    }

    /// The pair's best runnable line by (tag bits, head order, line), if the pair may be served.
    fn pair_best_leaf(&self, p: usize) -> Option<(u64, u64, usize)> {
        let pair = &self.pairs[p];
        if pair.throttled.is_some() || self.pair_running(p) >= pair.limits.cap {
            return None;
        }
        (0..self.leaves.len())
            .filter(|&l| self.leaves[l].pair == p && self.leaf_runnable(l))
            .map(|l| (bits(self.leaves[l].tag), self.order(self.leaf_head(l).unwrap()), l))
            .min()
    }

    /// Every (org, kind) a free slot may serve: `(tier, org tag bits, head order, org, pair)`.
    fn fair_candidates(&self) -> Vec<(u8, u64, u64, usize, usize)> {
        let mut out = Vec::new();
        for (p, pair) in self.pairs.iter().enumerate() {
            let o = pair.org.0 as usize;
            let org = &self.org_nodes[o];
            let org_running = self.org_running(o);
            if !self.kind_open(pair.kind) || org.throttled.is_some() || org.limits.cap.is_some_and(|c| org_running >= c)
            {
                continue;
            }
            let Some((_, order, _)) = self.pair_best_leaf(p) else { continue };
            let reserved = org_running < org.limits.min || self.pair_running(p) < pair.limits.min;
            let top = if self.per_org { org.tag } else { pair.tag };
            out.push((if reserved { 0 } else { 1 }, bits(top), order, o, p));
        }
        out
    }

    fn check_org(&self, org: OrgId) -> CoreResult<()> {
        if org.0 < self.orgs {
            Ok(())
        } else {
            Err(CoreError::InvalidArgument { name: "org id", value: String::new(), expected: String::new() })
        }
    }

    pub fn pair_running(&self, p: usize) -> u32 {
        self.leases.iter().filter(|l| self.reqs[&l.id].pair == p).count() as u32
    }

    pub fn pair_queued(&self, p: usize) -> u32 {
        self.ready.iter().filter(|id| self.reqs[id].pair == p).count() as u32
    }

    pub fn pair_delayed(&self, p: usize) -> u32 {
        self.delayed.iter().filter(|(_, _, id)| self.reqs[id].pair == p).count() as u32
    }

    fn kind_running(&self, kind: Kind) -> u32 {
        self.leases.iter().filter(|l| self.reqs[&l.id].kind == kind).count() as u32
    }

    pub fn effective_slots(&self) -> u32 {
        (f64::from(self.slots) * self.capacity).floor() as u32
    }

    fn kind_open(&self, kind: Kind) -> bool {
        self.kind_slots[kind.index()].is_none_or(|limit| self.kind_running(kind) < limit)
    }

    fn make_ready(&mut self, id: RequestId) {
        let seq = if self.fair() { self.next_seq.max(self.now) } else { self.next_seq };
        self.next_seq = seq + 1;
        let (o, p, l) = {
            let r = self.reqs.get_mut(&id).unwrap();
            r.seq = seq;
            r.state = MState::Ready;
            (r.org.0 as usize, r.pair, r.leaf)
        };
        self.ready.push(id);
        if self.fair() {
            if self.org_queued(o) == 1 {
                self.org_nodes[o].tag = self.org_nodes[o].tag.max(self.vtime);
            }
            if self.pair_queued(p) == 1 {
                let start = self.pair_start(o);
                self.pairs[p].tag = self.pairs[p].tag.max(start);
            }
            if self.leaf_queued(l) == 1 {
                self.leaves[l].tag = self.leaves[l].tag.max(self.pairs[p].child_vtime);
            }
        }
    }

    fn delay(&mut self, id: RequestId, due: Nanos) {
        self.delayed.push((due, self.delay_order, id));
        self.delay_order += 1;
        self.reqs.get_mut(&id).unwrap().state = MState::Delayed(due);
    }

    /// Takes lease `i` off the active list and accounts the freed slot: charged `run`,
    /// or refunded when the grant never ran (`None`).
    fn free_lease(&mut self, i: usize, run: Option<Nanos>) -> MLease {
        let lease = self.leases.remove(i);
        let (o, p, k, l, kind) = {
            let r = &self.reqs[&lease.id];
            (r.org.0 as usize, r.pair, r.key, r.leaf, r.kind)
        };
        if self.policy == PolicyKind::FairShare {
            let (ow, pw, kw) =
                (self.org_nodes[o].limits.weight, self.pairs[p].limits.weight, self.keys[k].limits.weight);
            let extra = run.map_or(0.0, |r| r as f64) - lease.charged;
            let org = &mut self.org_nodes[o];
            org.tag = (org.tag + extra / (ow * pw)).max(0.0);
            let pair = &mut self.pairs[p];
            pair.tag = (pair.tag + extra / pw).max(0.0);
            let leaf = &mut self.leaves[l];
            leaf.tag = (leaf.tag + extra / kw).max(0.0);
            if let Some(run) = run {
                let pair = &mut self.pairs[p];
                pair.estimate = Some(blend(pair.estimate, run as f64));
                self.kind_estimate[kind.index()] = Some(blend(self.kind_estimate[kind.index()], run as f64));
            }
        }
        self.counters.released += 1;
        lease
    }

    /// Expired leases first (by expiry, then lease id), then due delays (by due, then
    /// insertion order).
    fn advance(&mut self) {
        let now = self.now;
        loop {
            let next = (0..self.leases.len())
                .filter(|&i| self.leases[i].expires_at <= now)
                .min_by_key(|&i| (self.leases[i].expires_at, self.leases[i].lease));
            let Some(i) = next else { break };
            let run = now.saturating_sub(self.leases[i].dispatched_at);
            let lease = self.free_lease(i, Some(run));
            self.counters.expired += 1;
            let r = &self.reqs[&lease.id];
            self.events.push(Event::LeaseExpired { id: lease.id, org: r.org, kind: r.kind, attempt: r.attempts });
            self.make_ready(lease.id);
        }
        loop {
            let next = (0..self.delayed.len())
                .filter(|&i| self.delayed[i].0 <= now)
                .min_by_key(|&i| (self.delayed[i].0, self.delayed[i].1));
            let Some(i) = next else { break };
            let (_, _, id) = self.delayed.remove(i);
            self.make_ready(id);
        }
        for o in &mut self.org_nodes {
            o.throttled = o.throttled.filter(|&t| t > now);
        }
        for p in &mut self.pairs {
            p.throttled = p.throttled.filter(|&t| t > now);
        }
        for k in &mut self.keys {
            k.throttled = k.throttled.filter(|&t| t > now);
        }
    }

    fn start(&mut self, id: RequestId) -> Grant {
        let pos = self.ready.iter().position(|&x| x == id).unwrap();
        self.ready.remove(pos);
        let (o, p, k, l, kind, cost) = {
            let r = &self.reqs[&id];
            (r.org.0 as usize, r.pair, r.key, r.leaf, r.kind, r.cost)
        };
        let charged = if self.policy == PolicyKind::FairShare {
            let (ow, pw, kw) =
                (self.org_nodes[o].limits.weight, self.pairs[p].limits.weight, self.keys[k].limits.weight);
            self.vtime = self.vtime.max(if self.per_org { self.org_nodes[o].tag } else { self.pairs[p].tag });
            self.org_nodes[o].child_vtime = self.org_nodes[o].child_vtime.max(self.pairs[p].tag);
            self.pairs[p].child_vtime = self.pairs[p].child_vtime.max(self.leaves[l].tag);
            let charge = self.pairs[p].estimate.or(self.kind_estimate[kind.index()]).unwrap_or(0.0);
            self.org_nodes[o].tag += charge / (ow * pw);
            self.pairs[p].tag += charge / pw;
            self.leaves[l].tag += charge / kw;
            charge
        } else {
            0.0
        };
        let now = self.now;
        for rate in [&mut self.org_nodes[o].rate, &mut self.pairs[p].rate, &mut self.keys[k].rate].into_iter().flatten()
        {
            let t = rate.interval();
            rate.tat = rate.tat.max(now) + u64::from(cost) * t;
        }
        let lease = self.next_lease;
        self.next_lease += 1;
        let expires_at = self.now.saturating_add(self.lease);
        self.leases.push(MLease { lease, id, dispatched_at: self.now, expires_at, charged });
        self.counters.dispatched += 1;
        let r = self.reqs.get_mut(&id).unwrap();
        r.attempts += 1;
        r.state = MState::Running(lease);
        Grant { lease, id, org: r.org, kind: r.kind, attempt: r.attempts, expires_at }
    }

    fn under_cap(&self, id: RequestId) -> bool {
        let p = self.reqs[&id].pair;
        self.pair_running(p) < self.pairs[p].limits.cap
    }

    /// The first request of the peek set a free slot may take.
    fn peek_serve(&self) -> Option<RequestId> {
        let window = &self.ready[..self.ready.len().min(self.peek_set)];
        window.iter().copied().find(|&id| self.under_cap(id) && self.kind_open(self.reqs[&id].kind))
    }

    fn select_peek_set(&mut self) -> Option<RequestId> {
        if let Some(id) = self.peek_serve() {
            return Some(id);
        }
        let n = self.ready.len().min(self.peek_set);
        if self.ready[..n].iter().any(|&id| self.under_cap(id)) {
            return None; // an org under cap is blocked only by its kind's global limit
        }
        // Every request in the peek set belongs to a capped pair: move the non-exempt
        // ones to the back with their kind's extended delay.
        let window: Vec<RequestId> = self.ready[..n].to_vec();
        let moved: Vec<RequestId> =
            window.iter().copied().filter(|id| self.extended_delay[self.reqs[id].kind.index()].is_some()).collect();
        if moved.is_empty() {
            return None;
        }
        for kind in Kind::ALL {
            let Some(d) = self.extended_delay[kind.index()] else { continue };
            let mut order: Vec<usize> = Vec::new();
            let mut counts: HashMap<usize, u32> = HashMap::new();
            for id in &moved {
                let r = &self.reqs[id];
                if r.kind == kind {
                    if !order.contains(&r.pair) {
                        order.push(r.pair);
                    }
                    *counts.entry(r.pair).or_default() += 1;
                }
            }
            for p in order {
                self.events.push(Event::ExtendedDelay {
                    org: self.pairs[p].org,
                    kind,
                    count: counts[&p],
                    until: self.now.saturating_add(d),
                });
            }
        }
        self.ready.retain(|id| !moved.contains(id));
        for &id in &moved {
            let d = self.extended_delay[self.reqs[&id].kind.index()].unwrap();
            self.delay(id, self.now.saturating_add(d));
        }
        self.counters.extended_delays += moved.len() as u64;
        self.peek_serve()
    }

    fn select_fair_share(&mut self) -> Option<RequestId> {
        loop {
            let candidates = self.fair_candidates();
            // An exact tie (same tier, tag, head order and org: two kinds of one org whose
            // heads' aged orders coincide) goes to the lower kind, as the core files an
            // org's kinds (not to the pair created first).
            let &(tier, _, _, o, first) =
                candidates.iter().min_by_key(|c| (c.0, c.1, c.2, c.3, self.pairs[c.4].kind.index()))?;
            let p = if !self.per_org {
                first
            } else {
                candidates
                    .iter()
                    .filter(|c| c.3 == o && c.0 == tier)
                    .map(|c| (bits(self.pairs[c.4].tag), c.2, c.4))
                    .min()
                    .unwrap()
                    .2
            };
            let (_, _, l) = self.pair_best_leaf(p).unwrap();
            let id = self.leaf_head(l).unwrap();
            let (cost, now) = (self.reqs[&id].cost, self.now);
            let short = self.scopes_of(id).into_iter().find_map(|scope| {
                let at = self.rate(scope)?.room_at(cost, now);
                (at > now).then_some((scope, at))
            });
            match short {
                Some((scope, at)) => self.set_throttled(scope, Some(at)),
                None => return Some(id),
            }
        }
    }

    /// Work conservation, stated on the requests alone: some ready request heads its
    /// line, every cap over it (kind, pair, key, org) has room, no scope over it is
    /// waiting for room, and every rate limit over it has room for its cost now.
    pub fn runnable_exists(&self) -> bool {
        self.ready.iter().any(|&id| {
            let r = &self.reqs[&id];
            let (o, p, k) = (r.org.0 as usize, r.pair, r.key);
            let org = &self.org_nodes[o];
            self.leaf_head(r.leaf) == Some(id)
                && self.kind_open(r.kind)
                && self.pair_running(p) < self.pairs[p].limits.cap
                && self.keys[k].limits.cap.is_none_or(|cap| self.key_running(k) < cap)
                && org.limits.cap.is_none_or(|cap| self.org_running(o) < cap)
                && self.scopes_of(id).iter().all(|&scope| {
                    self.throttled(scope).is_none()
                        && self.rate(scope).is_none_or(|rate| rate.room_at(r.cost, self.now) <= self.now)
                })
        })
    }

    // ----- the API ---------------------------------------------------------------

    pub fn enqueue_with(&mut self, requests: &[(NewRequest, RequestOptions)]) -> CoreResult<()> {
        for (r, opt) in requests {
            self.check_org(r.org)?;
            if opt.priority > MAX_PRIORITY {
                return Err(bad("priority"));
            }
            if opt.cost == 0 || opt.cost > MAX_COST {
                return Err(bad("cost"));
            }
            if !self.fair() && opt.priority != _core::DEFAULT_PRIORITY {
                return Err(bad("priority"));
            }
            if !self.fair() && opt.cost != 1 {
                return Err(bad("cost"));
            }
            let k = match opt.key {
                Some(k) => {
                    let k = k.0 as usize;
                    if k >= self.keys.len() || self.keys[k].org != r.org {
                        return Err(bad("key id"));
                    }
                    if self.keys[k].named && !self.fair() {
                        return Err(bad("key"));
                    }
                    k
                }
                None => r.org.0 as usize,
            };
            let pair_rate = self.find_pair(r.org, r.kind).and_then(|p| self.pairs[p].rate);
            for rate in [self.org_nodes[r.org.0 as usize].rate, pair_rate, self.keys[k].rate].into_iter().flatten() {
                if opt.cost > rate.limit.burst {
                    return Err(bad("cost"));
                }
            }
        }
        let mut seen = Vec::new();
        for (r, _) in requests {
            if self.reqs.contains_key(&r.id) || seen.contains(&r.id) {
                return Err(CoreError::DuplicateRequest(r.id));
            }
            seen.push(r.id);
        }
        for (r, opt) in requests {
            let p = self.pair(r.org, r.kind);
            let k = opt.key.map_or(r.org.0 as usize, |k| k.0 as usize);
            let l = self.leaf(p, k);
            self.reqs.insert(
                r.id,
                MReq {
                    org: r.org,
                    kind: r.kind,
                    pair: p,
                    key: k,
                    leaf: l,
                    priority: opt.priority,
                    cost: opt.cost,
                    seq: 0,
                    attempts: 0,
                    state: MState::Ready,
                },
            );
            self.counters.enqueued += 1;
            match r.run_at {
                Some(due) if due > self.now => self.delay(r.id, due),
                _ => self.make_ready(r.id),
            }
        }
        Ok(())
    }

    pub fn tick(&mut self) {
        self.advance();
    }

    pub fn dispatch(&mut self, max: usize) -> Vec<Grant> {
        self.advance();
        let mut grants = Vec::new();
        while grants.len() < max && (self.leases.len() as u32) < self.effective_slots() {
            let chosen = match self.policy {
                PolicyKind::PeekSet => self.select_peek_set(),
                PolicyKind::FairShare => self.select_fair_share(),
            };
            match chosen {
                Some(id) => grants.push(self.start(id)),
                None => break,
            }
        }
        grants
    }

    pub fn release(&mut self, lease: LeaseId, outcome: Outcome) -> CoreResult<Release> {
        let i = self.leases.iter().position(|l| l.lease == lease).ok_or(CoreError::UnknownLease(lease))?;
        let run = self.now.saturating_sub(self.leases[i].dispatched_at);
        let l = self.free_lease(i, if outcome == Outcome::Gone { None } else { Some(run) });
        let (org, kind) = (self.reqs[&l.id].org, self.reqs[&l.id].kind);
        match outcome {
            Outcome::Ack | Outcome::Fail | Outcome::Gone => {
                match outcome {
                    Outcome::Ack => self.counters.acked += 1,
                    Outcome::Fail => self.counters.failed += 1,
                    _ => self.counters.gone += 1,
                }
                self.reqs.remove(&l.id);
            }
            Outcome::Retry(at) => {
                self.counters.retried += 1;
                if at > self.now {
                    self.delay(l.id, at);
                } else {
                    self.make_ready(l.id);
                }
            }
        }
        Ok(Release { id: l.id, org, kind, run_time: run })
    }

    pub fn heartbeat(&mut self, lease: LeaseId) -> CoreResult<Nanos> {
        let now = self.now;
        let duration = self.lease;
        let l = self.leases.iter_mut().find(|l| l.lease == lease).ok_or(CoreError::UnknownLease(lease))?;
        l.expires_at = l.expires_at.max(now.saturating_add(duration));
        Ok(l.expires_at)
    }

    pub fn abort(&mut self, id: RequestId) -> CoreResult<Abort> {
        let r = self.reqs.get(&id).ok_or(CoreError::UnknownRequest(id))?;
        match r.state {
            MState::Running(lease) => return Ok(Abort::Running(lease)),
            MState::Ready => self.ready.retain(|&x| x != id),
            MState::Delayed(_) => self.delayed.retain(|&(_, _, x)| x != id),
        }
        if self.fair() {
            for scope in self.scopes_of(id) {
                if self.throttled(scope) == Some(Nanos::MAX) {
                    self.set_throttled(scope, None);
                }
            }
        }
        self.reqs.remove(&id);
        self.counters.aborted += 1;
        Ok(Abort::Removed)
    }

    pub fn set_limits(&mut self, org: OrgId, kind: Kind, limits: PairLimits) -> CoreResult<()> {
        check_limits(&limits)?;
        self.check_org(org)?;
        let p = self.pair(org, kind);
        let org_vtime = self.pair_start(org.0 as usize);
        let pair = &mut self.pairs[p];
        pair.limits = limits;
        pair.overridden = true;
        if self.policy == PolicyKind::FairShare {
            pair.tag = pair.tag.max(org_vtime);
        }
        Ok(())
    }

    pub fn set_default_limits(&mut self, kind: Kind, limits: PairLimits) -> CoreResult<()> {
        check_limits(&limits)?;
        self.default_limits[kind.index()] = limits;
        let fair = self.fair();
        for p in 0..self.pairs.len() {
            if self.pairs[p].kind == kind && !self.pairs[p].overridden {
                self.pairs[p].limits = limits;
                if fair {
                    let start = self.pair_start(self.pairs[p].org.0 as usize);
                    self.pairs[p].tag = self.pairs[p].tag.max(start);
                }
            }
        }
        Ok(())
    }

    fn restart_key(&mut self, k: usize) {
        for l in 0..self.leaves.len() {
            if self.leaves[l].key == k {
                let pair_vtime = self.pairs[self.leaves[l].pair].child_vtime;
                self.leaves[l].tag = self.leaves[l].tag.max(pair_vtime);
            }
        }
    }

    pub fn set_org_limits(&mut self, org: OrgId, l: OrgLimits) -> CoreResult<()> {
        if l.cap == Some(0) {
            return Err(bad("org cap"));
        }
        if l.cap.is_some_and(|cap| l.min > cap) {
            return Err(bad("org min"));
        }
        if !(l.weight.is_finite() && l.weight > 0.0) {
            return Err(bad("org weight"));
        }
        check_key_limits(&l.per_key)?;
        self.check_org(org)?;
        if l != OrgLimits::default() && !self.fair() {
            return Err(bad("org limits"));
        }
        let o = org.0 as usize;
        self.org_nodes[o].limits = l;
        if self.fair() {
            self.org_nodes[o].tag = self.org_nodes[o].tag.max(self.vtime);
        }
        for k in 0..self.keys.len() {
            if self.keys[k].org == org && self.keys[k].named && !self.keys[k].overridden {
                self.keys[k].limits = l.per_key;
                self.restart_key(k);
            }
        }
        Ok(())
    }

    pub fn set_key_limits(&mut self, key: KeyId, limits: Option<KeyLimits>) -> CoreResult<()> {
        let k = key.0 as usize;
        if k >= self.keys.len() {
            return Err(bad("key id"));
        }
        if let Some(l) = &limits {
            check_key_limits(l)?;
            if !self.fair() {
                return Err(bad("key limits"));
            }
        }
        let inherited = if self.keys[k].named {
            self.org_nodes[self.keys[k].org.0 as usize].limits.per_key
        } else {
            KeyLimits::default()
        };
        self.keys[k].overridden = limits.is_some();
        self.keys[k].limits = limits.unwrap_or(inherited);
        self.restart_key(k);
        Ok(())
    }

    pub fn set_rate_limit(&mut self, scope: RateScope, limit: Option<RateLimit>) -> CoreResult<()> {
        if let Some(l) = &limit {
            if !(l.rate.is_finite() && l.rate > 0.0) {
                return Err(bad("rate"));
            }
            if l.per == 0 {
                return Err(bad("per"));
            }
            if l.burst == 0 || l.burst > MAX_COST {
                return Err(bad("burst"));
            }
            if !self.fair() {
                return Err(bad("rate limit"));
            }
        }
        match scope {
            RateScope::Org(org) => {
                self.check_org(org)?;
                let o = &mut self.org_nodes[org.0 as usize];
                o.rate = with_limit(o.rate, limit);
                o.throttled = None;
            }
            RateScope::Pair(org, kind) => {
                self.check_org(org)?;
                let p = self.pair(org, kind);
                self.pairs[p].rate = with_limit(self.pairs[p].rate, limit);
                self.pairs[p].throttled = None;
            }
            RateScope::Key(key) => {
                let k = key.0 as usize;
                if k >= self.keys.len() {
                    return Err(bad("key id"));
                }
                let inherited =
                    if self.keys[k].named { self.org_nodes[self.keys[k].org.0 as usize].per_key_rate } else { None };
                let node = &mut self.keys[k];
                node.rate_overridden = limit.is_some();
                node.rate = with_limit(node.rate, limit.or(inherited));
                node.throttled = None;
            }
            RateScope::EveryKey(org) => {
                self.check_org(org)?;
                self.org_nodes[org.0 as usize].per_key_rate = limit;
                for node in self.keys.iter_mut().filter(|k| k.org == org && k.named && !k.rate_overridden) {
                    node.rate = with_limit(node.rate, limit);
                    node.throttled = None;
                }
            }
        }
        Ok(())
    }

    pub fn set_capacity(&mut self, capacity: f64) -> CoreResult<()> {
        if !(0.0..=1.0).contains(&capacity) {
            return Err(CoreError::InvalidArgument { name: "capacity", value: String::new(), expected: String::new() });
        }
        self.capacity = capacity;
        Ok(())
    }

    pub fn set_slots(&mut self, slots: u32) -> CoreResult<()> {
        if slots == 0 {
            return Err(CoreError::InvalidArgument { name: "slots", value: String::new(), expected: String::new() });
        }
        self.slots = slots;
        Ok(())
    }

    pub fn set_kind_slots(&mut self, kind: Kind, slots: Option<u32>) {
        self.kind_slots[kind.index()] = slots;
    }

    /// Where `id` is, as the dispatcher would report it; `ahead_in_pair` counts live
    /// requests only (the dispatcher may add aborted ones it has not swept yet).
    pub fn locate(&self, id: RequestId) -> CoreResult<Location> {
        let r = self.reqs.get(&id).ok_or(CoreError::UnknownRequest(id))?;
        Ok(match r.state {
            MState::Ready => {
                let pos = self.ready.iter().position(|&x| x == id).unwrap();
                let mine = (self.order(id), r.seq);
                let ahead_in_pair = self
                    .ready
                    .iter()
                    .filter(|&&x| self.reqs[&x].leaf == r.leaf && (self.order(x), self.reqs[&x].seq) < mine)
                    .count();
                let ahead_in_queue = (self.policy == PolicyKind::PeekSet).then_some(pos);
                Location::Queued { ahead_in_pair, ahead_in_queue }
            }
            MState::Delayed(due) => Location::Delayed { due },
            MState::Running(lease) => {
                let l = self.leases.iter().find(|l| l.lease == lease).unwrap();
                Location::Running { lease, dispatched_at: l.dispatched_at, expires_at: l.expires_at }
            }
        })
    }
}
