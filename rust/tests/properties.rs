//! Property tests: the real dispatcher against the simple reference model in
//! `model/`, on thousands of random operation sequences per policy.
//!
//! Every operation is applied to both; every result (grants, releases, abort
//! outcomes, errors, events) must match exactly, and after every operation the
//! whole observable state (stats, every live request's location, every pair's
//! figures) must match and the dispatcher's own bookkeeping must recount clean.

mod model;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use _core::{
    Abort, Config, CoreError, Dispatcher, Event, Grant, Kind, LeaseId, Location, Nanos, NewRequest, OrgId, Outcome,
    PairLimits, PolicyKind, RequestId, VirtualClock, KINDS, NANOS_PER_SEC,
};
use model::{same_error, Model};
use proptest::prelude::*;

const MS: Nanos = NANOS_PER_SEC / 1000;
const ORGS: u32 = 3;
const START: Nanos = 1_000 * NANOS_PER_SEC;

#[derive(Debug, Clone)]
enum Op {
    /// `delay_ms`: `None` = no run-at; `Some(0)` = a run-at in the past; else in the future.
    Enqueue {
        org: u32,
        kind: Kind,
        delay_ms: Option<u32>,
    },
    /// A batch, all or none; `dup` repeats one of its ids (or a live id) to make it fail.
    EnqueueMany {
        items: Vec<(u32, Kind, Option<u32>)>,
        dup: Option<usize>,
    },
    /// Enqueue a live request's id again: refused.
    EnqueueDuplicate(usize),
    /// Enqueue for an org id that was never handed out: refused.
    EnqueueUnknownOrg,
    Dispatch(usize),
    Ack(usize),
    Fail(usize),
    /// Retry at now + ms (0: now; a negative offset is modelled as 1 ms in the past).
    Retry(usize, i32),
    Heartbeat(usize),
    /// Ack a lease that is no longer active (or never was).
    AckStale(usize),
    Abort(usize),
    AbortUnknown,
    Advance(u32),
    Tick,
    SetLimits {
        org: u32,
        kind: Kind,
        limits: PairLimits,
    },
    SetDefaultLimits {
        kind: Kind,
        limits: PairLimits,
    },
    SetCapacity(f64),
    SetKindSlots(Kind, Option<u32>),
    SetSlots(u32),
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => Just(Kind::Future),
        1 => Just(Kind::Queueable),
        3 => Just(Kind::Batch),
        1 => Just(Kind::Scheduled),
    ]
}

fn weight() -> impl Strategy<Value = f64> {
    prop_oneof![Just(1.0), Just(2.0), Just(0.5), Just(3.0), Just(0.1)]
}

/// Limits, sometimes invalid (cap 0, min > cap, bad weight).
fn limits() -> impl Strategy<Value = PairLimits> {
    let valid =
        (1u32..5, 0u32..5, weight()).prop_map(|(cap, min, weight)| PairLimits { cap, min: min % (cap + 1), weight });
    let invalid = prop_oneof![
        Just(PairLimits { cap: 0, min: 0, weight: 1.0 }),
        Just(PairLimits { cap: 2, min: 3, weight: 1.0 }),
        Just(PairLimits { cap: 2, min: 0, weight: f64::NAN }),
        Just(PairLimits { cap: 2, min: 0, weight: -1.0 }),
        Just(PairLimits { cap: 2, min: 0, weight: 0.0 }),
        Just(PairLimits { cap: 2, min: 0, weight: f64::INFINITY }),
    ];
    prop_oneof![9 => valid, 1 => invalid]
}

fn delay_ms() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![6 => Just(None), 1 => Just(Some(0)), 3 => (1u32..20_000).prop_map(Some)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        20 => (0..ORGS, kind(), delay_ms()).prop_map(|(org, kind, delay_ms)| Op::Enqueue { org, kind, delay_ms }),
        3 => (prop::collection::vec((0..ORGS, kind(), delay_ms()), 1..6), prop::option::weighted(0.3, any::<usize>()))
            .prop_map(|(items, dup)| Op::EnqueueMany { items, dup }),
        1 => any::<usize>().prop_map(Op::EnqueueDuplicate),
        1 => Just(Op::EnqueueUnknownOrg),
        14 => (0usize..6).prop_map(Op::Dispatch),
        8 => any::<usize>().prop_map(Op::Ack),
        2 => any::<usize>().prop_map(Op::Fail),
        3 => (any::<usize>(), -1i32..15_000).prop_map(|(i, ms)| Op::Retry(i, ms)),
        2 => any::<usize>().prop_map(Op::Heartbeat),
        1 => any::<usize>().prop_map(Op::AckStale),
        3 => any::<usize>().prop_map(Op::Abort),
        1 => Just(Op::AbortUnknown),
        8 => (0u32..40_000).prop_map(Op::Advance),
        2 => Just(Op::Tick),
        3 => (0..ORGS, kind(), limits()).prop_map(|(org, kind, limits)| Op::SetLimits { org, kind, limits }),
        1 => (kind(), limits()).prop_map(|(kind, limits)| Op::SetDefaultLimits { kind, limits }),
        1 => prop_oneof![Just(0.0), Just(0.4), Just(0.75), Just(1.0), Just(1.0), Just(-0.5), Just(1.5), Just(f64::NAN)]
            .prop_map(Op::SetCapacity),
        1 => (kind(), prop::option::weighted(0.6, 0u32..4)).prop_map(|(k, s)| Op::SetKindSlots(k, s)),
        1 => (0u32..7).prop_map(Op::SetSlots),
    ]
}

fn config(policy: PolicyKind) -> impl Strategy<Value = Config> {
    let delay = prop::option::weighted(0.85, (1u64..30).prop_map(|s| s * NANOS_PER_SEC));
    (
        1u32..7,
        1u32..9,
        [delay.clone(), delay.clone(), delay.clone(), delay],
        2u64..40,
        prop::array::uniform4((1u32..5, 0u32..5, weight())),
        prop::array::uniform4(prop::option::weighted(0.2, 1u32..4)),
    )
        .prop_map(move |(slots, peek_set, mut extended_delay, lease_s, defaults, kind_slots)| {
            // Batch is exempt as on the reference platform; other kinds vary.
            extended_delay[Kind::Batch.index()] = None;
            Config {
                policy,
                slots,
                peek_set,
                extended_delay,
                kind_slots,
                lease: lease_s * NANOS_PER_SEC,
                default_limits: defaults.map(|(cap, min, weight)| PairLimits { cap, min: min % (cap + 1), weight }),
            }
        })
}

/// Drives the dispatcher and the model side by side.
struct Harness {
    real: Dispatcher,
    model: Model,
    clock: VirtualClock,
    next_id: RequestId,
    /// Leases handed out and no longer active.
    dead_leases: Vec<LeaseId>,
    /// Ids ever enqueued successfully, and ids that left (acked, failed, aborted).
    enqueued: HashSet<RequestId>,
    finished: HashSet<RequestId>,
    /// Last delivery attempt granted per id, and re-deliveries owed after expiry.
    last_attempt: HashMap<RequestId, u32>,
    owed: HashMap<RequestId, u32>,
}

impl Harness {
    fn new(config: Config) -> Self {
        let clock = VirtualClock::new(START);
        let mut real = Dispatcher::new(config.clone(), Arc::new(clock.clone())).expect("valid config");
        for o in 0..ORGS {
            assert_eq!(real.org(&format!("org-{o}")).unwrap(), OrgId(o));
        }
        Harness {
            real,
            model: Model::new(&config, START, ORGS),
            clock,
            next_id: 1,
            dead_leases: Vec::new(),
            enqueued: HashSet::new(),
            finished: HashSet::new(),
            last_attempt: HashMap::new(),
            owed: HashMap::new(),
        }
    }

    fn new_request(&mut self, org: u32, kind: Kind, delay_ms: Option<u32>) -> NewRequest {
        let id = self.next_id;
        self.next_id += 1;
        let now = self.clock.now_ns();
        let run_at = delay_ms.map(|ms| if ms == 0 { now - MS } else { now + u64::from(ms) * MS });
        NewRequest { id, org: OrgId(org), kind, run_at }
    }

    fn held_lease(&self, pick: usize) -> Option<LeaseId> {
        let leases = &self.model.leases;
        (!leases.is_empty()).then(|| leases[pick % leases.len()].lease)
    }

    fn live_id(&self, pick: usize) -> Option<RequestId> {
        let mut ids: Vec<RequestId> = self.model.reqs.keys().copied().collect();
        ids.sort_unstable();
        (!ids.is_empty()).then(|| ids[pick % ids.len()])
    }

    fn enqueue(&mut self, batch: Vec<NewRequest>) {
        let expected = self.model.enqueue_many(&batch);
        let got = self.real.enqueue_many(&batch);
        compare_results(&got, &expected, "enqueue_many");
        if got.is_ok() {
            self.enqueued.extend(batch.iter().map(|r| r.id));
        }
    }

    fn release(&mut self, lease: LeaseId, outcome: Outcome) {
        let expected = self.model.release(lease, outcome);
        let got = self.real.release(lease, outcome);
        compare_results(&got, &expected, "release");
        if let Ok(release) = got {
            self.dead_leases.push(lease);
            if matches!(outcome, Outcome::Ack | Outcome::Fail) {
                self.finished.insert(release.id);
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Enqueue { org, kind, delay_ms } => {
                let r = self.new_request(org, kind, delay_ms);
                self.enqueue(vec![r]);
            }
            Op::EnqueueMany { ref items, dup } => {
                let mut batch: Vec<NewRequest> =
                    items.iter().map(|&(org, kind, delay)| self.new_request(org, kind, delay)).collect();
                if let Some(pick) = dup {
                    // Repeat an id of the batch itself, or of a live request.
                    let id = match self.live_id(pick) {
                        Some(live) if pick % 2 == 0 => live,
                        _ => batch[pick % batch.len()].id,
                    };
                    let at = pick % (batch.len() + 1);
                    let template = batch[0];
                    batch.insert(at, NewRequest { id, ..template });
                }
                self.enqueue(batch);
            }
            Op::EnqueueDuplicate(pick) => {
                if let Some(id) = self.live_id(pick) {
                    let r = NewRequest { id, org: OrgId(0), kind: Kind::Future, run_at: None };
                    self.enqueue(vec![r]);
                }
            }
            Op::EnqueueUnknownOrg => {
                let mut r = self.new_request(0, Kind::Future, None);
                r.org = OrgId(ORGS + 7);
                self.enqueue(vec![r]);
            }
            Op::Dispatch(max) => {
                let expected = self.model.dispatch(max);
                let got = self.real.dispatch(max);
                assert_eq!(got, expected, "dispatch({max}) grants");
                self.check_grants(&got);
            }
            Op::Ack(pick) => {
                if let Some(lease) = self.held_lease(pick) {
                    self.release(lease, Outcome::Ack);
                }
            }
            Op::Fail(pick) => {
                if let Some(lease) = self.held_lease(pick) {
                    self.release(lease, Outcome::Fail);
                }
            }
            Op::Retry(pick, ms) => {
                if let Some(lease) = self.held_lease(pick) {
                    let now = self.clock.now_ns();
                    let at = if ms < 0 { now - MS } else { now + u64::from(ms as u32) * MS };
                    self.release(lease, Outcome::Retry(at));
                }
            }
            Op::Heartbeat(pick) => {
                let lease = self.held_lease(pick).unwrap_or(999_999);
                let expected = self.model.heartbeat(lease);
                compare_results(&self.real.heartbeat(lease), &expected, "heartbeat");
            }
            Op::AckStale(pick) => {
                let lease =
                    if self.dead_leases.is_empty() { 0 } else { self.dead_leases[pick % self.dead_leases.len()] };
                assert!(self.model.leases.iter().all(|l| l.lease != lease));
                let got = self.real.ack(lease);
                assert_eq!(got, Err(CoreError::UnknownLease(lease)), "ack of a dead lease");
                compare_results(&got, &self.model.release(lease, Outcome::Ack), "ack stale");
            }
            Op::Abort(pick) => {
                if let Some(id) = self.live_id(pick) {
                    let expected = self.model.abort(id);
                    let got = self.real.abort(id);
                    compare_results(&got, &expected, "abort");
                    if got == Ok(Abort::Removed) {
                        self.finished.insert(id);
                    }
                }
            }
            Op::AbortUnknown => {
                let id = 10_000_000;
                assert_eq!(self.real.abort(id), Err(CoreError::UnknownRequest(id)));
                compare_results(&self.real.abort(id), &self.model.abort(id), "abort unknown");
            }
            Op::Advance(ms) => {
                self.clock.advance(u64::from(ms) * MS);
                self.model.now += u64::from(ms) * MS;
            }
            Op::Tick => {
                self.real.tick();
                self.model.tick();
            }
            Op::SetLimits { org, kind, limits } => {
                let expected = self.model.set_limits(OrgId(org), kind, limits);
                compare_results(&self.real.set_limits(OrgId(org), kind, limits), &expected, "set_limits");
            }
            Op::SetDefaultLimits { kind, limits } => {
                let expected = self.model.set_default_limits(kind, limits);
                compare_results(&self.real.set_default_limits(kind, limits), &expected, "set_default_limits");
            }
            Op::SetCapacity(c) => {
                let expected = self.model.set_capacity(c);
                compare_results(&self.real.set_capacity(c), &expected, "set_capacity");
            }
            Op::SetKindSlots(kind, slots) => {
                self.model.set_kind_slots(kind, slots);
                self.real.set_kind_slots(kind, slots);
            }
            Op::SetSlots(n) => {
                let expected = self.model.set_slots(n);
                compare_results(&self.real.set_slots(n), &expected, "set_slots");
            }
        }
        self.check_state();
    }

    /// Checks made on the real dispatcher alone, independent of the model.
    fn check_grants(&mut self, grants: &[Grant]) {
        let events = self.real.take_events();
        let expected: Vec<Event> = self.model.events.drain(..).collect();
        assert_eq!(events, expected, "events");
        for e in &events {
            if let Event::LeaseExpired { id, attempt, .. } = *e {
                assert_eq!(self.last_attempt.get(&id), Some(&attempt), "expired attempt is the last delivery");
                assert!(self.owed.insert(id, attempt + 1).is_none(), "one re-delivery owed per expiry");
            }
        }
        let mut kinds_granted = [false; KINDS];
        for g in grants {
            let last = self.last_attempt.insert(g.id, g.attempt).unwrap_or(0);
            assert_eq!(g.attempt, last + 1, "attempts count up by one per delivery");
            if let Some(owed) = self.owed.remove(&g.id) {
                assert_eq!(g.attempt, owed, "re-delivery after expiry");
            }
            // A granted pair is within its cap after all grants (running only grew).
            let ps = self.real.pair_stats(g.org, g.kind).unwrap();
            assert!(ps.running <= ps.limits.cap, "pair over cap after dispatch: {ps:?}");
            kinds_granted[g.kind.index()] = true;
        }
        for kind in Kind::ALL {
            if let (true, Some(limit)) = (kinds_granted[kind.index()], self.real.config().kind_slots[kind.index()]) {
                let running: u32 = (0..ORGS).map(|o| self.real.pair_stats(OrgId(o), kind).unwrap().running).sum();
                assert!(running <= limit, "kind {kind} over its global limit");
            }
        }
        if !grants.is_empty() {
            let stats = self.real.stats();
            assert!(stats.running <= stats.effective_slots, "more running than effective slots");
        }
        // No request is held twice.
        let running = self.real.running();
        let ids: HashSet<RequestId> = running.iter().map(|&(_, id)| id).collect();
        assert_eq!(ids.len(), running.len(), "a request holds two leases");
    }

    fn check_state(&mut self) {
        self.real.check_invariants();
        let events = self.real.take_events();
        let expected: Vec<Event> = self.model.events.drain(..).collect();
        assert_eq!(events, expected, "events");

        let stats = self.real.stats();
        let m = &self.model;
        assert_eq!(stats.queued, m.ready.len(), "queued");
        assert_eq!(stats.delayed, m.delayed.len(), "delayed");
        assert_eq!(stats.running as usize, m.leases.len(), "running");
        assert_eq!(stats.slots, m.slots);
        assert_eq!(stats.effective_slots, m.effective_slots());
        assert_eq!(stats.capacity.to_bits(), m.capacity.to_bits());
        assert_eq!(stats.counters, m.counters, "counters");
        let c = stats.counters;
        assert_eq!(c.dispatched, c.released + u64::from(stats.running));

        // Conservation: live = enqueued − acked − failed − aborted, each exactly once.
        let live: HashSet<RequestId> = self.enqueued.difference(&self.finished).copied().collect();
        let model_live: HashSet<RequestId> = m.reqs.keys().copied().collect();
        assert_eq!(live, model_live, "live ids");
        assert_eq!(live.len(), stats.queued + stats.delayed + stats.running as usize, "no request lost or duplicated");
        assert_eq!(c.enqueued as usize, self.enqueued.len());
        assert_eq!((c.acked + c.failed + c.aborted) as usize, self.finished.len());
        for &id in &self.finished {
            assert_eq!(self.real.locate(id), Err(CoreError::UnknownRequest(id)), "finished request {id} still held");
        }
        for &id in &live {
            let got = self.real.locate(id).expect("live request held");
            match (got, m.locate(id).unwrap()) {
                (
                    Location::Queued { ahead_in_pair, ahead_in_queue },
                    Location::Queued { ahead_in_pair: live_ahead, ahead_in_queue: model_ahead },
                ) => {
                    assert_eq!(ahead_in_queue, model_ahead, "place in queue of {id}");
                    assert!(ahead_in_pair >= live_ahead, "place in pair of {id}");
                }
                (got, expected) => assert_eq!(got, expected, "location of {id}"),
            }
        }
        let mut running: Vec<(LeaseId, RequestId)> = self.real.running();
        running.sort_unstable();
        let mut model_running: Vec<(LeaseId, RequestId)> = m.leases.iter().map(|l| (l.lease, l.id)).collect();
        model_running.sort_unstable();
        assert_eq!(running, model_running, "leases");

        // Every pair the model knows, with its figures.
        let real_pairs: Vec<(OrgId, Kind)> = self.real.pairs().collect();
        let model_pairs: Vec<(OrgId, Kind)> = m.pairs.iter().map(|p| (p.org, p.kind)).collect();
        assert_eq!(real_pairs, model_pairs, "pairs in creation order");
        for (p, pair) in m.pairs.iter().enumerate() {
            let ps = self.real.pair_stats(pair.org, pair.kind).unwrap();
            assert_eq!(ps.queued, m.pair_queued(p), "pair {p} queued");
            assert_eq!(ps.delayed, m.pair_delayed(p), "pair {p} delayed");
            assert_eq!(ps.running, m.pair_running(p), "pair {p} running");
            assert_eq!(ps.limits, pair.limits, "pair {p} limits");
            assert_eq!(ps.virtual_time.to_bits(), pair.tag.to_bits(), "pair {p} virtual time");
        }
        for kind in Kind::ALL {
            assert_eq!(self.real.config().default_limits[kind.index()], m.default_limits[kind.index()]);
        }
    }
}

fn compare_results<T: PartialEq + std::fmt::Debug>(
    got: &Result<T, CoreError>,
    expected: &Result<T, CoreError>,
    what: &str,
) {
    match (got, expected) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{what}"),
        (Err(a), Err(b)) => assert!(same_error(a, b), "{what}: got {a:?}, model says {b:?}"),
        _ => panic!("{what}: got {got:?}, model says {expected:?}"),
    }
}

trait NowNs {
    fn now_ns(&self) -> Nanos;
}

impl NowNs for VirtualClock {
    fn now_ns(&self) -> Nanos {
        use _core::Clock;
        self.now()
    }
}

fn run(config: Config, ops: &[Op]) {
    let mut h = Harness::new(config);
    for op in ops {
        h.apply(op);
    }
    // Drain: let everything come due and finish, so every request is seen through.
    for kind in Kind::ALL {
        h.apply(&Op::SetKindSlots(kind, None));
    }
    h.apply(&Op::SetCapacity(1.0));
    for _ in 0..200 {
        h.apply(&Op::Advance(60_000));
        h.apply(&Op::Dispatch(100));
        while h.held_lease(0).is_some() {
            h.apply(&Op::Ack(0));
        }
        if h.model.reqs.is_empty() {
            break;
        }
    }
    assert!(h.model.reqs.is_empty(), "every request drains once limits allow");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, max_shrink_iters: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn peek_set_matches_the_model(config in config(PolicyKind::PeekSet), ops in prop::collection::vec(op(), 1..80)) {
        run(config, &ops);
    }

    #[test]
    fn fair_share_matches_the_model(config in config(PolicyKind::FairShare), ops in prop::collection::vec(op(), 1..80)) {
        run(config, &ops);
    }
}
