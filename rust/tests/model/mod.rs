//! A deliberately simple reference model of the dispatcher, for property tests.
//!
//! Plain vectors and linear scans, no indexes: one `Vec` of ready requests in queue
//! order, one `Vec` of delayed requests, one `Vec` of active leases. Each policy is
//! written out the way the spec states it, so the real dispatcher (Fenwick tree,
//! per-kind ordered lines, heaps) can be checked decision by decision against it.

use std::collections::HashMap;

use _core::{
    Abort, CoreError, CoreResult, Counters, Event, Grant, Kind, LeaseId, Location, Nanos, NewRequest, OrgId, Outcome,
    PairLimits, PolicyKind, Release, RequestId, KINDS,
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
    pub estimate: Option<f64>,
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

/// Errors compare by variant and, for invalid arguments, by the argument's name only.
pub fn same_error(a: &CoreError, b: &CoreError) -> bool {
    match (a, b) {
        (CoreError::InvalidArgument { name: x, .. }, CoreError::InvalidArgument { name: y, .. }) => x == y,
        _ => a == b,
    }
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
            estimate: None,
        });
        self.pairs.len() - 1
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
        let p = self.reqs[&id].pair;
        if self.policy == PolicyKind::FairShare && self.pair_queued(p) == 0 {
            let pair = &mut self.pairs[p];
            pair.tag = pair.tag.max(self.vtime);
        }
        self.ready.push(id);
        self.reqs.get_mut(&id).unwrap().state = MState::Ready;
    }

    fn delay(&mut self, id: RequestId, due: Nanos) {
        self.delayed.push((due, self.delay_order, id));
        self.delay_order += 1;
        self.reqs.get_mut(&id).unwrap().state = MState::Delayed(due);
    }

    /// Takes lease `i` off the active list and accounts the freed slot.
    fn free_lease(&mut self, i: usize, run: Nanos) -> MLease {
        let lease = self.leases.remove(i);
        let (p, kind) = {
            let r = &self.reqs[&lease.id];
            (r.pair, r.kind)
        };
        if self.policy == PolicyKind::FairShare {
            let pair = &mut self.pairs[p];
            let w = pair.limits.weight;
            pair.tag = (pair.tag + (run as f64 - lease.charged) / w).max(0.0);
            pair.estimate = Some(blend(pair.estimate, run as f64));
            self.kind_estimate[kind.index()] = Some(blend(self.kind_estimate[kind.index()], run as f64));
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
            let lease = self.free_lease(i, run);
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
    }

    fn start(&mut self, id: RequestId) -> Grant {
        let pos = self.ready.iter().position(|&x| x == id).unwrap();
        self.ready.remove(pos);
        let (p, kind) = (self.reqs[&id].pair, self.reqs[&id].kind);
        let charged = if self.policy == PolicyKind::FairShare {
            let pair = &mut self.pairs[p];
            self.vtime = self.vtime.max(pair.tag);
            let charge = pair.estimate.or(self.kind_estimate[kind.index()]).unwrap_or(0.0);
            pair.tag += charge / pair.limits.weight;
            charge
        } else {
            0.0
        };
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

    fn select_fair_share(&self) -> Option<RequestId> {
        // (tier, tag bits, head position, pair index): the smallest wins.
        let mut best: Option<((u8, u64, usize, usize), RequestId)> = None;
        for (p, pair) in self.pairs.iter().enumerate() {
            let Some(head_pos) = self.ready.iter().position(|id| self.reqs[id].pair == p) else { continue };
            if !self.kind_open(pair.kind) {
                continue;
            }
            let running = self.pair_running(p);
            let tier = if running < pair.limits.min {
                0
            } else if running < pair.limits.cap {
                1
            } else {
                continue;
            };
            let key = (tier, pair.tag.to_bits(), head_pos, p);
            if best.as_ref().is_none_or(|(k, _)| key < *k) {
                best = Some((key, self.ready[head_pos]));
            }
        }
        best.map(|(_, id)| id)
    }

    // ----- the API ---------------------------------------------------------------

    pub fn enqueue_many(&mut self, requests: &[NewRequest]) -> CoreResult<()> {
        let mut seen = Vec::new();
        for r in requests {
            self.check_org(r.org)?;
            if self.reqs.contains_key(&r.id) || seen.contains(&r.id) {
                return Err(CoreError::DuplicateRequest(r.id));
            }
            seen.push(r.id);
        }
        for r in requests {
            let p = self.pair(r.org, r.kind);
            self.reqs.insert(r.id, MReq { org: r.org, kind: r.kind, pair: p, attempts: 0, state: MState::Ready });
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
        let l = self.free_lease(i, run);
        let (org, kind) = (self.reqs[&l.id].org, self.reqs[&l.id].kind);
        match outcome {
            Outcome::Ack | Outcome::Fail => {
                if outcome == Outcome::Ack {
                    self.counters.acked += 1;
                } else {
                    self.counters.failed += 1;
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
        self.reqs.remove(&id);
        self.counters.aborted += 1;
        Ok(Abort::Removed)
    }

    pub fn set_limits(&mut self, org: OrgId, kind: Kind, limits: PairLimits) -> CoreResult<()> {
        check_limits(&limits)?;
        self.check_org(org)?;
        let p = self.pair(org, kind);
        let vtime = self.vtime;
        let pair = &mut self.pairs[p];
        pair.limits = limits;
        pair.overridden = true;
        if self.policy == PolicyKind::FairShare {
            pair.tag = pair.tag.max(vtime);
        }
        Ok(())
    }

    pub fn set_default_limits(&mut self, kind: Kind, limits: PairLimits) -> CoreResult<()> {
        check_limits(&limits)?;
        self.default_limits[kind.index()] = limits;
        let (fair, vtime) = (self.policy == PolicyKind::FairShare, self.vtime);
        for pair in self.pairs.iter_mut().filter(|p| p.kind == kind && !p.overridden) {
            pair.limits = limits;
            if fair {
                pair.tag = pair.tag.max(vtime);
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
                let ahead_in_pair = self.ready[..pos].iter().filter(|x| self.reqs[x].pair == r.pair).count();
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
