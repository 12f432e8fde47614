//! The reference platform's behaviour, pinned on a virtual clock: the worked
//! example and the extended delay of seed 001 ("Fair Request Handling"), the limits
//! both policies honour, leases, aborts, live limit changes, and bad input.

use std::sync::Arc;

use _core::{
    Abort, Clock, Config, CoreError, Dispatcher, Event, Grant, Kind, LeaseId, Location, Nanos, NewRequest, OrgId,
    Outcome, PairLimits, PairStats, PolicyKind, RequestId, Stats, VirtualClock, NANOS_PER_SEC,
};

const SEC: Nanos = NANOS_PER_SEC;
const MINUTE: Nanos = 60 * SEC;
const START: Nanos = 1_000_000 * SEC;

fn setup(config: Config) -> (Dispatcher, VirtualClock) {
    let clock = VirtualClock::new(START);
    let dispatcher = Dispatcher::new(config, Arc::new(clock.clone())).expect("valid config");
    (dispatcher, clock)
}

/// The seed's setting: cap 12 per org, leases long enough never to expire by accident.
fn peek_set(slots: u32, peek_set: u32) -> Config {
    Config { policy: PolicyKind::PeekSet, slots, peek_set, lease: 24 * 60 * MINUTE, ..Config::default() }
}

fn fair_share(slots: u32) -> Config {
    Config { policy: PolicyKind::FairShare, slots, lease: 24 * 60 * MINUTE, ..Config::default() }
}

fn enqueue(d: &mut Dispatcher, org: OrgId, kind: Kind, ids: impl IntoIterator<Item = RequestId>) {
    for id in ids {
        d.enqueue(NewRequest { id, org, kind, run_at: None }).unwrap();
    }
}

fn ids(grants: &[Grant]) -> Vec<RequestId> {
    grants.iter().map(|g| g.id).collect()
}

fn ahead_in_queue(d: &Dispatcher, id: RequestId) -> usize {
    match d.locate(id).unwrap() {
        Location::Queued { ahead_in_queue: Some(n), .. } => n,
        other => panic!("request {id} is not queued: {other:?}"),
    }
}

fn lease_of(grants: &[Grant], id: RequestId) -> LeaseId {
    grants.iter().find(|g| g.id == id).expect("granted").lease
}

// ----- seed 001: the worked example ------------------------------------------------

#[test]
fn seed_example_thirteenth_thread_skips_the_capped_org() {
    let (mut d, _clock) = setup(peek_set(13, 15));
    let (org1, org2) = (d.org("org-1").unwrap(), d.org("org-2").unwrap());
    enqueue(&mut d, org1, Kind::Future, 1..=13);
    enqueue(&mut d, org2, Kind::Future, [101, 102]);
    enqueue(&mut d, org1, Kind::Future, [14, 15]);

    let grants = d.dispatch(13);
    let mut expected: Vec<RequestId> = (1..=12).collect();
    expected.push(101);
    assert_eq!(ids(&grants), expected);
    assert!(grants[..12].iter().all(|g| g.org == org1 && g.kind == Kind::Future && g.attempt == 1));
    assert_eq!(grants[12].org, org2);
    // The 13th org-1 request stays at its place at the front; nothing was delayed.
    assert_eq!(ahead_in_queue(&d, 13), 0);
    assert_eq!(ahead_in_queue(&d, 102), 1);
    assert_eq!(d.stats().delayed, 0);
    assert!(d.take_events().is_empty());
    assert_eq!(d.pair_stats(org1, Kind::Future).unwrap().running, 12);

    // All 13 slots are busy: nothing more until one is released.
    assert!(d.dispatch(13).is_empty());
    // An org-1 slot comes free: the 13th request is the head and its org is under cap.
    d.ack(lease_of(&grants, 1)).unwrap();
    assert_eq!(ids(&d.dispatch(13)), vec![13]);
    d.check_invariants();
}

/// Org 1 holds 12 slots and has 15 requests queued in front of org 2's two.
fn peek_set_full_of_org1(kind: Kind) -> (Dispatcher, VirtualClock, OrgId, OrgId, Vec<Grant>) {
    let (mut d, clock) = setup(peek_set(13, 15));
    let (org1, org2) = (d.org("org-1").unwrap(), d.org("org-2").unwrap());
    enqueue(&mut d, org1, kind, 1..=12);
    let running = d.dispatch(12);
    assert_eq!(ids(&running), (1..=12).collect::<Vec<_>>());
    enqueue(&mut d, org1, kind, 13..=27);
    enqueue(&mut d, org2, Kind::Future, [101, 102]);
    (d, clock, org1, org2, running)
}

#[test]
fn extended_delay_moves_a_capped_peek_set_to_the_back_for_five_minutes() {
    let (mut d, clock, org1, org2, org1_leases) = peek_set_full_of_org1(Kind::Future);
    let now = clock.now();
    assert_eq!(ahead_in_queue(&d, 101), 15, "org 2 is just outside the peek set");

    let grants = d.dispatch(1);
    assert_eq!(ids(&grants), vec![101], "the free slot serves org 2 once the peek set is moved");
    assert_eq!(grants[0].org, org2);
    let until = now + 5 * MINUTE;
    assert_eq!(d.take_events(), vec![Event::ExtendedDelay { org: org1, kind: Kind::Future, count: 15, until }]);
    for id in 13..=27 {
        assert_eq!(d.locate(id).unwrap(), Location::Delayed { due: until });
    }
    assert_eq!(ahead_in_queue(&d, 102), 0);
    let stats = d.stats();
    assert_eq!((stats.queued, stats.delayed, stats.running), (1, 15, 13));
    assert_eq!(stats.counters.extended_delays, 15);
    assert_eq!(d.pair_stats(org1, Kind::Future).unwrap().delayed, 15);

    // Org 2 finishes; its second request runs; then org 2 is done.
    d.ack(grants[0].lease).unwrap();
    let second = d.dispatch(5);
    assert_eq!(ids(&second), vec![102]);
    d.ack(second[0].lease).unwrap();

    // A minimum of 5 minutes must elapse.
    clock.advance(5 * MINUTE - 1);
    assert!(d.dispatch(5).is_empty());
    assert_eq!(d.stats().delayed, 15);
    enqueue(&mut d, org2, Kind::Future, [103]);
    clock.advance(1);
    d.tick();
    // The 15 rejoin at the back (behind org 2's new request), in their original order.
    assert_eq!(ahead_in_queue(&d, 103), 0);
    for (i, id) in (13..=27).enumerate() {
        assert_eq!(ahead_in_queue(&d, id), i + 1, "request {id}");
    }
    let third = d.dispatch(5);
    assert_eq!(ids(&third), vec![103]);
    d.ack(third[0].lease).unwrap();
    assert!(d.take_events().is_empty());

    // They can be delayed again: the peek set is all org 1, at cap.
    let later = clock.now();
    assert!(d.dispatch(1).is_empty());
    assert_eq!(
        d.take_events(),
        vec![Event::ExtendedDelay { org: org1, kind: Kind::Future, count: 15, until: later + 5 * MINUTE }]
    );
    assert_eq!(d.stats().counters.extended_delays, 30);

    // After the second delay, with org 1's slots free, they run in their original order.
    clock.advance(5 * MINUTE);
    for g in &org1_leases {
        d.ack(g.lease).unwrap();
    }
    assert_eq!(ids(&d.dispatch(13)), (13..=24).collect::<Vec<_>>(), "cap 12, original order");
    d.check_invariants();
}

#[test]
fn batch_is_exempt_from_extended_delay() {
    let (mut d, _clock, org1, _org2, _) = peek_set_full_of_org1(Kind::Batch);
    assert!(d.dispatch(1).is_empty(), "org 2 is outside the peek set and the peek set stays put");
    assert!(d.take_events().is_empty());
    let stats = d.stats();
    assert_eq!((stats.queued, stats.delayed, stats.counters.extended_delays), (17, 0, 0));
    for (i, id) in (13..=27).enumerate() {
        assert_eq!(ahead_in_queue(&d, id), i);
    }
    assert_eq!(d.pair_stats(org1, Kind::Batch).unwrap().queued, 15);
    d.check_invariants();
}

#[test]
fn a_mixed_peek_set_moves_only_the_non_exempt_requests() {
    let (mut d, clock) = setup(peek_set(3, 4));
    let org1 = d.org("org-1").unwrap();
    let org2 = d.org("org-2").unwrap();
    d.set_limits(org1, Kind::Future, PairLimits { cap: 1, ..PairLimits::default() }).unwrap();
    d.set_limits(org1, Kind::Batch, PairLimits { cap: 1, ..PairLimits::default() }).unwrap();
    enqueue(&mut d, org1, Kind::Future, [1]);
    enqueue(&mut d, org1, Kind::Batch, [2]);
    assert_eq!(ids(&d.dispatch(2)), vec![1, 2]);
    enqueue(&mut d, org1, Kind::Batch, [3]);
    enqueue(&mut d, org1, Kind::Future, [4, 5]);
    enqueue(&mut d, org1, Kind::Batch, [6]);
    enqueue(&mut d, org2, Kind::Future, [7]);
    let now = clock.now();
    assert_eq!(ids(&d.dispatch(1)), vec![7]);
    assert_eq!(
        d.take_events(),
        vec![Event::ExtendedDelay { org: org1, kind: Kind::Future, count: 2, until: now + 5 * MINUTE }]
    );
    assert_eq!(ahead_in_queue(&d, 3), 0);
    assert_eq!(ahead_in_queue(&d, 6), 1);
    assert_eq!(d.locate(4).unwrap(), Location::Delayed { due: now + 5 * MINUTE });
    assert_eq!(d.locate(5).unwrap(), Location::Delayed { due: now + 5 * MINUTE });
    d.check_invariants();
}

#[test]
fn a_kind_at_its_global_limit_does_not_trigger_an_extended_delay() {
    // Org 2 is under cap but its kind is paused: the peek set is not "all capped orgs".
    let (mut d, _clock) = setup(peek_set(4, 2));
    let (org1, org2) = (d.org("org-1").unwrap(), d.org("org-2").unwrap());
    d.set_limits(org1, Kind::Future, PairLimits { cap: 1, ..PairLimits::default() }).unwrap();
    enqueue(&mut d, org1, Kind::Future, [1, 2]);
    enqueue(&mut d, org2, Kind::Queueable, [3]);
    enqueue(&mut d, org2, Kind::Future, [4]);
    d.set_kind_slots(Kind::Queueable, Some(0));
    assert_eq!(ids(&d.dispatch(4)), vec![1], "2 is capped, 3's kind is paused, 4 is outside the peek set");
    assert!(d.take_events().is_empty());
    assert_eq!(d.stats().delayed, 0);
    d.set_kind_slots(Kind::Queueable, None);
    assert_eq!(ids(&d.dispatch(4)), vec![3, 4]);
}

// ----- limits both policies honour --------------------------------------------------

#[test]
fn per_kind_global_slot_limits() {
    for config in [peek_set(10, 2000), fair_share(10)] {
        let (mut d, _clock) = setup(Config { kind_slots: [Some(2), None, None, None], ..config });
        let orgs: Vec<OrgId> = (0..3).map(|o| d.org(&format!("org-{o}")).unwrap()).collect();
        for (o, &org) in orgs.iter().enumerate() {
            let base = o as u64 * 100;
            enqueue(&mut d, org, Kind::Future, base + 1..=base + 3);
            enqueue(&mut d, org, Kind::Queueable, base + 11..=base + 12);
        }
        let grants = d.dispatch(10);
        assert_eq!(grants.iter().filter(|g| g.kind == Kind::Future).count(), 2, "{:?}", d.config().policy);
        assert_eq!(grants.iter().filter(|g| g.kind == Kind::Queueable).count(), 6);
        // Pausing a kind: nothing of it starts, even when slots free up.
        d.set_kind_slots(Kind::Future, Some(0));
        for g in grants.iter().filter(|g| g.kind == Kind::Future) {
            d.ack(g.lease).unwrap();
        }
        assert!(d.dispatch(10).is_empty());
        d.set_kind_slots(Kind::Future, None);
        assert_eq!(d.dispatch(10).len(), 4, "10 slots, 6 queueables still running");
        d.check_invariants();
    }
}

#[test]
fn capacity_factor_leaves_slots_unfilled() {
    for config in [peek_set(10, 2000), fair_share(10)] {
        let (mut d, _clock) = setup(config);
        let orgs: Vec<OrgId> = (0..3).map(|o| d.org(&format!("org-{o}")).unwrap()).collect();
        for (o, &org) in orgs.iter().enumerate() {
            enqueue(&mut d, org, Kind::Future, o as u64 * 100..o as u64 * 100 + 10);
        }
        d.set_capacity(0.0).unwrap();
        assert_eq!(d.stats().effective_slots, 0);
        assert!(d.dispatch(100).is_empty(), "capacity 0 fills no slot");
        d.set_capacity(0.55).unwrap();
        assert_eq!(d.stats().effective_slots, 5);
        assert_eq!(d.dispatch(100).len(), 5, "floor(10 × 0.55)");
        d.set_capacity(0.79).unwrap();
        assert_eq!(d.dispatch(100).len(), 2, "floor(10 × 0.79) = 7");
        d.set_capacity(0.3).unwrap();
        assert!(d.dispatch(100).is_empty(), "running work is never preempted, nothing new starts");
        assert_eq!(d.stats().running, 7);
        d.set_capacity(1.0).unwrap();
        assert_eq!(d.dispatch(100).len(), 3);
        d.check_invariants();
    }
}

#[test]
fn run_at_in_the_future_waits_and_in_the_past_does_not() {
    for config in [peek_set(4, 2000), fair_share(4)] {
        let (mut d, clock) = setup(config);
        let org = d.org("org-1").unwrap();
        let at = clock.now() + 10 * SEC;
        d.enqueue(NewRequest { id: 1, org, kind: Kind::Queueable, run_at: Some(at) }).unwrap();
        d.enqueue(NewRequest { id: 2, org, kind: Kind::Queueable, run_at: Some(clock.now() - SEC) }).unwrap();
        assert_eq!(d.locate(1).unwrap(), Location::Delayed { due: at });
        assert_eq!(ids(&d.dispatch(4)), vec![2]);
        clock.advance(10 * SEC - 1);
        assert!(d.dispatch(4).is_empty());
        assert_eq!(
            d.next_wakeup(),
            Some(at.min(d.locate(2).map_or(u64::MAX, |l| match l {
                Location::Running { expires_at, .. } => expires_at,
                _ => u64::MAX,
            })))
        );
        clock.advance(1);
        assert_eq!(ids(&d.dispatch(4)), vec![1]);
    }
}

#[test]
fn equal_due_times_keep_insertion_order() {
    let (mut d, clock) = setup(peek_set(10, 2000));
    let org = d.org("org-1").unwrap();
    let at = clock.now() + SEC;
    for id in [3, 1, 2] {
        d.enqueue(NewRequest { id, org, kind: Kind::Future, run_at: Some(at) }).unwrap();
    }
    clock.advance(SEC);
    assert_eq!(ids(&d.dispatch(10)), vec![3, 1, 2]);
}

#[test]
fn retry_at_t_redelivers_at_t_as_the_next_attempt() {
    for config in [peek_set(2, 2000), fair_share(2)] {
        let (mut d, clock) = setup(config);
        let org = d.org("org-1").unwrap();
        enqueue(&mut d, org, Kind::Future, [1]);
        let first = d.dispatch(2);
        let at = clock.now() + 30 * SEC;
        let release = d.release(first[0].lease, Outcome::Retry(at)).unwrap();
        assert_eq!((release.id, release.org, release.kind), (1, org, Kind::Future));
        assert_eq!(d.locate(1).unwrap(), Location::Delayed { due: at });
        assert_eq!(d.stats().counters.retried, 1);
        assert_eq!(d.release(first[0].lease, Outcome::Ack), Err(CoreError::UnknownLease(first[0].lease)));
        clock.advance(29 * SEC);
        assert!(d.dispatch(2).is_empty());
        clock.advance(SEC);
        let second = d.dispatch(2);
        assert_eq!((second[0].id, second[0].attempt), (1, 2));
        // A retry time already past means "now".
        d.release(second[0].lease, Outcome::Retry(clock.now() - SEC)).unwrap();
        assert_eq!(ahead_in_queue_any(&d, 1), 0);
        let third = d.dispatch(2);
        assert_eq!(third[0].attempt, 3);
        d.release(third[0].lease, Outcome::Fail).unwrap();
        assert_eq!(d.locate(1), Err(CoreError::UnknownRequest(1)));
        assert_eq!(d.stats().counters.failed, 1);
    }
}

fn ahead_in_queue_any(d: &Dispatcher, id: RequestId) -> usize {
    match d.locate(id).unwrap() {
        Location::Queued { ahead_in_pair, .. } => ahead_in_pair,
        other => panic!("request {id} is not queued: {other:?}"),
    }
}

#[test]
fn lease_expiry_redelivers_exactly_once() {
    for policy in [PolicyKind::PeekSet, PolicyKind::FairShare] {
        let (mut d, clock) = setup(Config { policy, slots: 2, lease: MINUTE, ..Config::default() });
        let org = d.org("org-1").unwrap();
        enqueue(&mut d, org, Kind::Future, [1]);
        let first = d.dispatch(2);
        assert_eq!((first[0].attempt, first[0].expires_at), (1, clock.now() + MINUTE));
        clock.advance(MINUTE - 1);
        d.tick();
        assert!(d.is_active(first[0].lease));
        assert!(d.take_events().is_empty());
        clock.advance(1);
        let second = d.dispatch(2);
        assert_eq!(second.len(), 1, "re-delivered once, not twice");
        assert_eq!((second[0].id, second[0].attempt), (1, 2));
        assert_ne!(second[0].lease, first[0].lease);
        assert_eq!(d.take_events(), vec![Event::LeaseExpired { id: 1, org, kind: Kind::Future, attempt: 1 }]);
        assert_eq!(d.ack(first[0].lease), Err(CoreError::UnknownLease(first[0].lease)));
        assert_eq!(d.heartbeat(first[0].lease), Err(CoreError::UnknownLease(first[0].lease)));
        assert!(d.dispatch(2).is_empty());
        let counters = d.stats().counters;
        assert_eq!((counters.expired, counters.dispatched, counters.released), (1, 2, 1));
        let release = d.ack(second[0].lease).unwrap();
        assert_eq!(release.run_time, 0);
        assert_eq!(d.stats().counters.acked, 1);
        assert_eq!(d.stats().running, 0);
        d.check_invariants();
    }
}

#[test]
fn a_grant_gone_before_it_ran_is_not_charged_to_its_org() {
    // Another worker took the job first: the org's slot-time is what its jobs ran.
    for (outcome, next) in [(Outcome::Ack, 3), (Outcome::Gone, 2)] {
        let (mut d, clock) = setup(fair_share(1));
        let (a, b) = (d.org("org-a").unwrap(), d.org("org-b").unwrap());
        enqueue(&mut d, a, Kind::Future, [1, 2]);
        enqueue(&mut d, b, Kind::Future, [3, 4]);
        let first = d.dispatch(1);
        assert_eq!(ids(&first), vec![1]);
        clock.advance(SEC);
        let release = d.release(first[0].lease, outcome).unwrap();
        assert_eq!((release.id, release.run_time), (1, SEC));
        assert_eq!(d.locate(1), Err(CoreError::UnknownRequest(1)), "{outcome:?}: the request left");
        // Charged a second, org-a waits for org-b; refunded, it is next again.
        assert_eq!(ids(&d.dispatch(1)), vec![next], "after {outcome:?}");
        let counters = d.stats().counters;
        assert_eq!((counters.acked, counters.gone), if outcome == Outcome::Gone { (0, 1) } else { (1, 0) });
        d.check_invariants();
    }
}

#[test]
fn expired_leases_rejoin_before_requests_due_at_the_same_time() {
    let (mut d, clock) = setup(Config { policy: PolicyKind::PeekSet, slots: 1, lease: MINUTE, ..Config::default() });
    let org = d.org("org-1").unwrap();
    enqueue(&mut d, org, Kind::Future, [1]);
    d.dispatch(1);
    d.enqueue(NewRequest { id: 2, org, kind: Kind::Future, run_at: Some(clock.now() + MINUTE) }).unwrap();
    clock.advance(MINUTE);
    d.tick();
    assert_eq!(ahead_in_queue(&d, 1), 0);
    assert_eq!(ahead_in_queue(&d, 2), 1);
}

#[test]
fn heartbeat_keeps_a_lease_alive() {
    let (mut d, clock) = setup(Config { policy: PolicyKind::FairShare, slots: 1, lease: MINUTE, ..Config::default() });
    let org = d.org("org-1").unwrap();
    enqueue(&mut d, org, Kind::Future, [1]);
    let grant = d.dispatch(1)[0];
    for _ in 0..5 {
        clock.advance(50 * SEC);
        assert_eq!(d.heartbeat(grant.lease), Ok(clock.now() + MINUTE));
        d.tick();
    }
    assert_eq!(
        d.locate(1).unwrap(),
        Location::Running { lease: grant.lease, dispatched_at: START, expires_at: clock.now() + MINUTE }
    );
    assert_eq!(d.stats().counters.expired, 0);
    // Without heartbeats it expires a minute after the last one.
    clock.advance(MINUTE);
    assert_eq!(d.dispatch(1)[0].attempt, 2);
    assert_eq!(d.heartbeat(999), Err(CoreError::UnknownLease(999)));
}

#[test]
fn abort_queued_delayed_and_running() {
    for config in [peek_set(1, 2000), fair_share(1)] {
        let (mut d, clock) = setup(config);
        let org = d.org("org-1").unwrap();
        enqueue(&mut d, org, Kind::Future, [1, 2]);
        d.enqueue(NewRequest { id: 3, org, kind: Kind::Future, run_at: Some(clock.now() + SEC) }).unwrap();
        let running = d.dispatch(1);
        assert_eq!(ids(&running), vec![1]);

        assert_eq!(d.abort(1), Ok(Abort::Running(running[0].lease)), "running: the caller cancels it");
        assert!(d.is_active(running[0].lease));
        assert_eq!(d.abort(2), Ok(Abort::Removed));
        assert_eq!(d.abort(3), Ok(Abort::Removed));
        assert_eq!(d.abort(2), Err(CoreError::UnknownRequest(2)));
        assert_eq!(d.locate(3), Err(CoreError::UnknownRequest(3)));
        let stats = d.stats();
        assert_eq!((stats.queued, stats.delayed, stats.counters.aborted), (0, 0, 2));

        d.ack(running[0].lease).unwrap();
        clock.advance(10 * SEC);
        assert!(d.dispatch(1).is_empty(), "aborted requests never run");
        // The id is free again once its request is gone.
        enqueue(&mut d, org, Kind::Future, [2]);
        assert_eq!(ids(&d.dispatch(1)), vec![2]);
        d.check_invariants();
    }
}

#[test]
fn a_lowered_cap_is_never_exceeded() {
    for config in [peek_set(10, 2000), fair_share(10)] {
        let (mut d, _clock) = setup(config);
        // Batch, being exempt from extended delay, keeps the capped backlog in place
        // under `peek_set` too.
        let org = d.org("org-1").unwrap();
        d.set_limits(org, Kind::Batch, PairLimits { cap: 4, ..PairLimits::default() }).unwrap();
        enqueue(&mut d, org, Kind::Batch, 1..=20);
        let mut held: Vec<LeaseId> = d.dispatch(10).iter().map(|g| g.lease).collect();
        assert_eq!(held.len(), 4);
        d.set_limits(org, Kind::Batch, PairLimits { cap: 2, ..PairLimits::default() }).unwrap();
        assert!(d.dispatch(10).is_empty());
        d.ack(held.pop().unwrap()).unwrap();
        assert!(d.dispatch(10).is_empty(), "3 running, cap 2");
        d.ack(held.pop().unwrap()).unwrap();
        assert!(d.dispatch(10).is_empty(), "2 running, cap 2");
        d.ack(held.pop().unwrap()).unwrap();
        assert_eq!(d.dispatch(10).len(), 1);
        assert_eq!(d.pair_stats(org, Kind::Batch).unwrap().running, 2);
        d.set_limits(org, Kind::Batch, PairLimits { cap: 5, ..PairLimits::default() }).unwrap();
        assert_eq!(d.dispatch(10).len(), 3);
        // A default change reaches pairs without an override only.
        let other = d.org("org-2").unwrap();
        enqueue(&mut d, other, Kind::Batch, 101..=110);
        d.set_default_limits(Kind::Batch, PairLimits { cap: 1, ..PairLimits::default() }).unwrap();
        assert_eq!(d.limits(other, Kind::Batch).unwrap().cap, 1);
        assert_eq!(d.limits(org, Kind::Batch).unwrap().cap, 5);
        assert_eq!(ids(&d.dispatch(10)), vec![101]);
        d.check_invariants();
    }
}

#[test]
fn fair_share_serves_reserved_minimums_first() {
    let (mut d, _clock) = setup(fair_share(4));
    let (big, small) = (d.org("big").unwrap(), d.org("small").unwrap());
    d.set_limits(small, Kind::Future, PairLimits { cap: 12, min: 2, weight: 1.0 }).unwrap();
    enqueue(&mut d, big, Kind::Future, 1..=10);
    enqueue(&mut d, small, Kind::Future, 101..=103);
    assert_eq!(ids(&d.dispatch(4)), vec![101, 102, 1, 2]);
}

#[test]
fn fair_share_a_capped_backlog_never_blocks_others_nor_is_delayed() {
    let (mut d, _clock) = setup(fair_share(13));
    let (org1, org2) = (d.org("org-1").unwrap(), d.org("org-2").unwrap());
    enqueue(&mut d, org1, Kind::Future, 1..=3000);
    enqueue(&mut d, org2, Kind::Future, [5001]);
    let grants = d.dispatch(13);
    assert_eq!(grants.len(), 13);
    assert_eq!(grants.iter().filter(|g| g.org == org1).count(), 12);
    assert!(ids(&grants).contains(&5001));
    assert!(d.take_events().is_empty());
    assert_eq!(d.stats().delayed, 0);
}

#[test]
fn fair_share_divides_slot_time_by_weight() {
    let (mut d, clock) = setup(fair_share(1));
    let (heavy, light) = (d.org("heavy").unwrap(), d.org("light").unwrap());
    d.set_limits(heavy, Kind::Future, PairLimits { cap: 12, min: 0, weight: 2.0 }).unwrap();
    enqueue(&mut d, heavy, Kind::Future, 1..=100);
    enqueue(&mut d, light, Kind::Future, 1001..=1100);
    let mut served = [0u32; 2];
    for _ in 0..30 {
        let g = d.dispatch(1)[0];
        served[g.org.0 as usize] += 1;
        clock.advance(10 * SEC);
        d.ack(g.lease).unwrap();
    }
    assert_eq!(served, [20, 10], "weight 2 gets two thirds of slot-time");
    assert!(d.pair_stats(heavy, Kind::Future).unwrap().virtual_time > 0.0);
}

#[test]
fn fair_share_charges_measured_run_time() {
    // Org 1's jobs run 10× longer: it gets about a tenth as many dispatches.
    let (mut d, clock) = setup(fair_share(1));
    let (slow, fast) = (d.org("slow").unwrap(), d.org("fast").unwrap());
    enqueue(&mut d, slow, Kind::Future, 1..=100);
    enqueue(&mut d, fast, Kind::Future, 1001..=1500);
    let mut served = [0u32; 2];
    let mut busy = [0u64; 2];
    for _ in 0..110 {
        let g = d.dispatch(1)[0];
        let run = if g.org == slow { 10 * SEC } else { SEC };
        served[g.org.0 as usize] += 1;
        busy[g.org.0 as usize] += run;
        clock.advance(run);
        d.ack(g.lease).unwrap();
    }
    assert!(served[1] >= 9 * served[0], "served {served:?}");
    let ratio = busy[0] as f64 / busy[1] as f64;
    assert!((0.8..1.25).contains(&ratio), "slot-time {busy:?}");
}

// ----- bad input changes nothing -----------------------------------------------------

type Snapshot = (Stats, Vec<(RequestId, Result<Location, CoreError>)>, Vec<PairStats>, Config);

fn snapshot(d: &Dispatcher) -> Snapshot {
    d.check_invariants();
    let locations = (0..40).chain(100..110).map(|id| (id, d.locate(id))).collect();
    let pairs = d.pairs().map(|(org, kind)| d.pair_stats(org, kind).unwrap()).collect();
    (d.stats(), locations, pairs, d.config().clone())
}

#[test]
fn bad_input_leaves_state_unchanged() {
    /// Some of everything: queued, delayed, running, released.
    fn busy(config: Config) -> (Dispatcher, VirtualClock, OrgId, Vec<Grant>) {
        let (mut d, clock) = setup(config);
        let org = d.org("org-1").unwrap();
        let other = d.org("org-2").unwrap();
        d.set_limits(org, Kind::Future, PairLimits { cap: 2, min: 1, weight: 1.0 }).unwrap();
        enqueue(&mut d, org, Kind::Future, 1..=6);
        d.enqueue(NewRequest { id: 7, org, kind: Kind::Batch, run_at: Some(clock.now() + MINUTE) }).unwrap();
        enqueue(&mut d, other, Kind::Queueable, [8, 9]);
        let grants = d.dispatch(3);
        assert_eq!(grants.len(), 3);
        d.ack(grants[0].lease).unwrap();
        clock.advance(SEC);
        let _ = d.take_events();
        (d, clock, org, grants)
    }
    for config in [peek_set(3, 4), fair_share(3)] {
        let (mut d, clock, org, grants) = busy(config.clone());
        let (mut twin, twin_clock, _, _) = busy(config);
        let acked = grants[0].lease;
        let before = snapshot(&d);
        let pairs_before: Vec<(OrgId, Kind)> = d.pairs().collect();

        let invalid = |r: Result<(), CoreError>, what: &str| match r {
            Err(CoreError::InvalidArgument { name, .. }) => assert_eq!(name, what),
            other => panic!("expected invalid {what}, got {other:?}"),
        };
        invalid(d.org("").map(|_| ()), "org");
        invalid(d.org("a\nb").map(|_| ()), "org");
        invalid(d.org(&"x".repeat(256)).map(|_| ()), "org");
        assert_eq!(d.find_org(""), None);
        assert_eq!(
            d.enqueue(NewRequest { id: 3, org, kind: Kind::Future, run_at: None }),
            Err(CoreError::DuplicateRequest(3))
        );
        assert_eq!(
            d.enqueue(NewRequest { id: 7, org, kind: Kind::Queueable, run_at: None }),
            Err(CoreError::DuplicateRequest(7))
        );
        let running_id = grants[1].id;
        assert_eq!(
            d.enqueue(NewRequest { id: running_id, org, kind: Kind::Future, run_at: None }),
            Err(CoreError::DuplicateRequest(running_id))
        );
        // All or none: a duplicate inside one batch, or against a live id, queues nothing.
        let batch = |ids: &[RequestId], kind: Kind| -> Vec<NewRequest> {
            ids.iter().map(|&id| NewRequest { id, org, kind, run_at: None }).collect()
        };
        assert_eq!(d.enqueue_many(&batch(&[100, 101, 100], Kind::Scheduled)), Err(CoreError::DuplicateRequest(100)));
        assert_eq!(d.enqueue_many(&batch(&[102, 103, 5], Kind::Scheduled)), Err(CoreError::DuplicateRequest(5)));
        invalid(d.enqueue(NewRequest { id: 104, org: OrgId(99), kind: Kind::Scheduled, run_at: None }), "org id");
        assert_eq!("x".parse::<Kind>(), Err(CoreError::UnknownKind("x".to_string())));
        assert_eq!("Future".parse::<Kind>(), Err(CoreError::UnknownKind("Future".to_string())));
        assert_eq!("peek".parse::<PolicyKind>(), Err(CoreError::UnknownPolicy("peek".to_string())));
        for (limits, name) in [
            (PairLimits { cap: 0, min: 0, weight: 1.0 }, "cap"),
            (PairLimits { cap: 2, min: 3, weight: 1.0 }, "min"),
            (PairLimits { cap: 2, min: 0, weight: f64::NAN }, "weight"),
            (PairLimits { cap: 2, min: 0, weight: -1.0 }, "weight"),
            (PairLimits { cap: 2, min: 0, weight: 0.0 }, "weight"),
            (PairLimits { cap: 2, min: 0, weight: f64::INFINITY }, "weight"),
        ] {
            invalid(d.set_limits(org, Kind::Future, limits), name);
            invalid(d.set_limits(org, Kind::Queueable, limits), name);
            invalid(d.set_default_limits(Kind::Future, limits), name);
        }
        invalid(d.set_limits(OrgId(99), Kind::Future, PairLimits::default()), "org id");
        for capacity in [-0.1, 1.1, f64::NAN, f64::INFINITY] {
            invalid(d.set_capacity(capacity), "capacity");
        }
        invalid(d.set_slots(0), "slots");
        assert_eq!(d.ack(acked), Err(CoreError::UnknownLease(acked)));
        assert_eq!(d.ack(12345), Err(CoreError::UnknownLease(12345)));
        assert_eq!(d.release(acked, Outcome::Retry(0)), Err(CoreError::UnknownLease(acked)));
        assert_eq!(d.heartbeat(12345), Err(CoreError::UnknownLease(12345)));
        assert_eq!(d.abort(12345), Err(CoreError::UnknownRequest(12345)));
        assert_eq!(d.locate(12345), Err(CoreError::UnknownRequest(12345)));

        assert_eq!(snapshot(&d), before, "{:?}", d.config().policy);
        assert_eq!(d.pairs().collect::<Vec<_>>(), pairs_before, "no pair was created");
        assert!(d.take_events().is_empty());
        // And it goes on working: its decisions are those of a twin that saw no bad input.
        for _ in 0..4 {
            clock.advance(3 * MINUTE);
            twin_clock.advance(3 * MINUTE);
            let (got, expected) = (d.dispatch(3), twin.dispatch(3));
            assert_eq!(got, expected);
            assert_eq!(d.take_events(), twin.take_events());
            if let Some(g) = got.first() {
                d.ack(g.lease).unwrap();
                twin.ack(g.lease).unwrap();
            }
        }
        assert_eq!(snapshot(&d), snapshot(&twin));
    }
}

#[test]
fn bad_configs_are_refused() {
    let clock = Arc::new(VirtualClock::new(0));
    let bad = [
        Config { slots: 0, ..Config::default() },
        Config { peek_set: 0, ..Config::default() },
        Config { lease: 0, ..Config::default() },
        Config { default_limits: [PairLimits { cap: 0, min: 0, weight: 1.0 }; 4], ..Config::default() },
    ];
    for config in bad {
        assert!(matches!(Dispatcher::new(config, clock.clone()), Err(CoreError::InvalidArgument { .. })));
    }
}

// ----- long runs ------------------------------------------------------------------------

#[test]
fn peek_set_order_survives_renumbering() {
    // Enough sequence numbers go by to make the peek-set index renumber itself
    // several times; the capped org's requests keep their order and places.
    let (mut d, _clock) = setup(peek_set(2, 2000));
    let (org1, org2) = (d.org("org-1").unwrap(), d.org("org-2").unwrap());
    d.set_limits(org1, Kind::Future, PairLimits { cap: 1, ..PairLimits::default() }).unwrap();
    enqueue(&mut d, org1, Kind::Future, 0..=5);
    let held = d.dispatch(1);
    assert_eq!(ids(&held), vec![0]);
    assert_eq!(d.abort(3), Ok(Abort::Removed));
    for i in 0..200_000u64 {
        enqueue(&mut d, org2, Kind::Future, [1_000_000 + i]);
        let g = d.dispatch(1);
        assert_eq!(g.len(), 1);
        d.ack(g[0].lease).unwrap();
    }
    d.check_invariants();
    assert!(d.take_events().is_empty());
    for (i, id) in [1, 2, 4, 5].into_iter().enumerate() {
        assert_eq!(ahead_in_queue(&d, id), i);
        match d.locate(id).unwrap() {
            Location::Queued { ahead_in_pair, .. } => assert!(
                ahead_in_pair == i || ahead_in_pair == i + usize::from(id > 3),
                "request {id}: {ahead_in_pair} ahead in its pair"
            ),
            other => panic!("{other:?}"),
        }
    }
    d.ack(held[0].lease).unwrap();
    let order: Vec<RequestId> = (0..4)
        .map(|_| {
            let g = d.dispatch(1)[0];
            d.ack(g.lease).unwrap();
            g.id
        })
        .collect();
    assert_eq!(order, vec![1, 2, 4, 5]);
}
