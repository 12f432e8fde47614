//! Fairness of the policies, measured by the simulator (`_core::sim`) on the real
//! dispatcher: seed 001's worked example and extended delay, the noisy neighbour
//! (quiet orgs' waits do not grow with the flood; the flood loses no throughput against
//! a FIFO with the same caps), and slot-time shares of orgs whose jobs differ tenfold
//! in length, with equal and with 3:1 weights.
//!
//! Flood sizes: 10,000 and 100,000 always; 1,000,000 runs too (about 10 s in a debug
//! build, under a second in release), in its own test so it can be timed on its own.

use _core::sim::{
    compare, noisy_neighbour, noisy_neighbour_with, run_scenario, run_scenario_fifo, scenario, seed_worked_example,
    simulate, simulate_fifo, two_orgs_service_times, Baseline, NoisyParams, Report, ScenarioOptions, MS, SCENARIOS,
};
use _core::{PolicyKind, NANOS_PER_SEC};

const SEC: f64 = 1.0;
const MINUTES_5: f64 = 300.0 * SEC;
/// The noisy scenario's longest service time (10 ms + 20 %), in seconds.
const MAX_SERVICE: f64 = 0.012;

fn dispatched_at(report: &Report) -> Vec<(f64, u64)> {
    report.trace.iter().map(|d| (d.at, d.id)).collect()
}

// ----- seed 001 -------------------------------------------------------------------------

#[test]
fn seed_example_dispatches_in_the_order_the_seed_describes() {
    // Ids: org 1's first 13 are 0..=12, org 2's two are 13 and 14, org 1's last two 15, 16.
    let report = simulate(&seed_worked_example(false, NANOS_PER_SEC).with_policy(PolicyKind::PeekSet)).unwrap();
    let mut first: Vec<(f64, u64)> = (0..12).map(|id| (0.0, id)).collect();
    // 12 slots take org 1's first 12; the 13th skips org 1's 13th (at cap) for org 2's first.
    first.push((0.0, 13));
    // When the 12 finish, org 1's 13th is at the head and runs, then the rest in queue order.
    first.extend([(1.0, 12), (1.0, 14), (1.0, 15), (1.0, 16)]);
    assert_eq!(dispatched_at(&report), first);
    assert_eq!(report.extended_delay_events, 0);
    assert_eq!(report.org("org-2").unwrap().wait_p50, 0.0);
    assert_eq!(report.makespan, 2.0);

    // fair_share makes the same first choice; afterwards org 2, having had less, goes first.
    let fair = simulate(&seed_worked_example(false, NANOS_PER_SEC)).unwrap();
    let trace = dispatched_at(&fair);
    assert_eq!(trace[..13], first[..13]);
    assert_eq!(trace[13..], [(1.0, 14), (1.0, 12), (1.0, 15), (1.0, 16)]);
}

#[test]
fn seed_extended_delay_moves_org_1_back_five_minutes() {
    // Ids: org 1's 27 are 0..=26 (12 run at once, 15 fill the peek set), org 2's are 27, 28.
    let report = simulate(&seed_worked_example(true, NANOS_PER_SEC).with_policy(PolicyKind::PeekSet)).unwrap();
    let trace = dispatched_at(&report);
    let mut expected: Vec<(f64, u64)> = (0..12).map(|id| (0.0, id)).collect();
    // The 15 move to the back; org 2's first is then at the front and runs at once.
    expected.push((0.0, 27));
    expected.push((1.0, 28));
    // Five minutes later the 15 are eligible again: 12 run (the cap); the 3 left fill the
    // peek set on their own while org 1 is at cap, so they are delayed once more.
    expected.extend((12..24).map(|id| (MINUTES_5, id)));
    expected.extend((24..27).map(|id| (2.0 * MINUTES_5, id)));
    assert_eq!(trace, expected);
    assert_eq!(report.extended_delay_events, 2);
    assert_eq!(report.extended_delayed_requests, 15 + 3);
    let org1 = report.org("org-1").unwrap();
    assert_eq!(org1.extended_delays, 18);
    assert_eq!(org1.wait_p50, MINUTES_5);
    assert_eq!(org1.wait_max, 2.0 * MINUTES_5);
    assert_eq!(report.org("org-2").unwrap().wait_max, 1.0);

    // fair_share has no peek set: org 1's backlog waits only for org 1's own slots.
    let fair = simulate(&seed_worked_example(true, NANOS_PER_SEC)).unwrap();
    assert_eq!(fair.extended_delay_events, 0);
    assert_eq!(fair.org("org-1").unwrap().wait_max, 2.0);
    assert_eq!(fair.org("org-2").unwrap().wait_max, 1.0);
    assert_eq!(fair.makespan, 3.0);
}

// ----- noisy neighbour ----------------------------------------------------------------

/// fair_share and the same-caps FIFO on one flood size: quiet waits and flood makespans.
struct Noisy {
    quiet_p99: f64,
}

fn noisy_fair_share(flood: usize) -> Noisy {
    let w = noisy_neighbour(flood);
    let fair = simulate(&w).unwrap();
    let fifo = simulate_fifo(&w, Baseline::SameCaps).unwrap();
    println!("{}", Report::side_by_side(&[fair.clone(), fifo.clone()]));
    assert!(!fair.cut_short && !fifo.cut_short, "everything completes before the horizon");
    assert_eq!(fair.completed, fair.requests);
    assert_eq!(fair.extended_delay_events, 0);

    // Every quiet org waits at most a couple of service times, at the 99th percentile.
    let quiet = fair.group("quiet").unwrap();
    assert_eq!(quiet.orgs, 20);
    for row in fair.orgs.iter().filter(|r| r.org.starts_with("quiet")) {
        assert!(row.requests > 0);
        assert!(row.wait_p99 <= 2.0 * MAX_SERVICE, "{}: p99 {} s at flood {flood}", row.org, row.wait_p99);
    }
    assert!(quiet.wait_max <= 4.0 * MAX_SERVICE, "quiet max {} s at flood {flood}", quiet.wait_max);

    // Work-conserving: the flood finishes no later than under a FIFO with the same caps.
    let (fair_done, fifo_done) =
        (fair.group("flood").unwrap().done_at.unwrap(), fifo.group("flood").unwrap().done_at.unwrap());
    println!("flood {flood}: done at {fair_done:.3} s under fair_share, {fifo_done:.3} s under FIFO (same caps)");
    assert!(fair_done <= fifo_done * 1.01, "flood {flood}: fair_share {fair_done} s, FIFO {fifo_done} s");
    Noisy { quiet_p99: quiet.wait_p99 }
}

fn within_twice(a: f64, b: f64) -> bool {
    a <= 2.0 * b && b <= 2.0 * a
}

#[test]
fn fair_share_quiet_waits_do_not_grow_with_the_flood() {
    let small = noisy_fair_share(10_000);
    let large = noisy_fair_share(100_000);
    assert!(
        within_twice(small.quiet_p99, large.quiet_p99),
        "quiet p99: {} s at 10k, {} s at 100k",
        small.quiet_p99,
        large.quiet_p99
    );
}

#[test]
fn fair_share_a_million_request_flood() {
    // Runs in every build (about 10 s in debug): the 1M point of the same curve.
    let small = noisy_fair_share(10_000);
    let million = noisy_fair_share(1_000_000);
    assert!(
        within_twice(small.quiet_p99, million.quiet_p99),
        "quiet p99: {} s at 10k, {} s at 1M",
        small.quiet_p99,
        million.quiet_p99
    );
}

#[test]
fn with_caps_equal_to_the_slots_nothing_is_lost_against_a_plain_fifo() {
    // No cap binds, so the uncapped FIFO is the fair comparison. Total work is the same;
    // a work-conserving policy ends the whole run when the FIFO does. (The flood's own
    // last request is later under fair_share by the quiet work it lets go first: under
    // the FIFO the quiet requests wait behind the whole flood.)
    let w = noisy_neighbour_with(&NoisyParams { flood: 10_000, cap: 13, ..NoisyParams::default() });
    let fair = simulate(&w).unwrap();
    let fifo = simulate_fifo(&w, Baseline::Uncapped).unwrap();
    println!("{}", Report::side_by_side(&[fair.clone(), fifo.clone()]));
    assert!(fair.makespan <= fifo.makespan * 1.01, "fair_share {} s, FIFO {} s", fair.makespan, fifo.makespan);
    let fair_flood = fair.group("flood").unwrap().done_at.unwrap();
    assert!(fair_flood <= fifo.makespan * 1.01, "fair_share flood {fair_flood} s, FIFO all {} s", fifo.makespan);
    // The FIFO makes quiet requests queue behind the flood; fair_share does not.
    assert!(fifo.group("quiet").unwrap().wait_p50 > 1.0);
    assert!(fair.group("quiet").unwrap().wait_p99 <= 2.0 * MAX_SERVICE);
}

#[test]
fn peek_set_delays_the_flood_again_and_again() {
    // The reference model: whenever a slot is free while the flood is at cap and fills
    // the peek set, the whole peek set moves back 5 minutes. The quiet orgs are never
    // at cap, so they are never delayed and run at once; the flood runs about `cap`
    // requests per 5-minute round. One hour is enough to see it.
    let mut w = noisy_neighbour(10_000).with_policy(PolicyKind::PeekSet);
    w.horizon = Some(3600 * NANOS_PER_SEC);
    let report = simulate(&w).unwrap();
    println!("{}", report.table());
    assert!(report.cut_short);
    assert!(report.extended_delay_events > 0);
    let flood = report.group("flood").unwrap();
    assert_eq!(flood.extended_delays, report.extended_delayed_requests);
    assert!(flood.wait_max >= MINUTES_5, "flood max wait {} s", flood.wait_max);
    assert_eq!(flood.done_at, None);
    // 12 start at t = 0 and about a dozen per round after that: far from 10,000.
    assert!(flood.dispatched < 1_000, "flood dispatched {}", flood.dispatched);
    let quiet = report.group("quiet").unwrap();
    assert_eq!(quiet.extended_delays, 0);
    assert_eq!(quiet.dispatched, quiet.requests);
    assert!(quiet.wait_max <= 2.0 * MAX_SERVICE, "quiet max wait {} s", quiet.wait_max);

    // The same hour under fair_share finishes the whole flood in about 8 s.
    let fair = simulate(&w.clone().with_policy(PolicyKind::FairShare)).unwrap();
    assert!(fair.group("flood").unwrap().done_at.unwrap() < 10.0);
}

#[test]
fn the_pending_series_follows_the_flood() {
    let report = simulate(&noisy_neighbour(10_000)).unwrap();
    let every = report.sample_every.unwrap();
    assert_eq!(every, 1.0);
    let first = &report.series[0];
    assert_eq!(first.at, 0.0);
    // At t = 0 the flood has 12 running (its cap) and the rest pending.
    assert_eq!(first.pending[0], 10_000 - 12);
    assert!(report.series.windows(2).all(|s| s[0].pending[0] >= s[1].pending[0]), "the flood only drains");
    assert!(report.series.windows(2).all(|s| s[1].at - s[0].at == every));
    let last = report.series.last().unwrap();
    assert!(last.at >= report.makespan);
    assert!(last.pending.iter().all(|&p| p == 0));
}

// ----- service times and weights ---------------------------------------------------------

fn slot_times(report: &Report) -> (f64, f64) {
    (report.org("short").unwrap().slot_time, report.org("long").unwrap().slot_time)
}

#[test]
fn equal_weights_share_slot_time_not_requests() {
    let report = simulate(&two_orgs_service_times([1.0, 1.0])).unwrap();
    println!("{}", report.table());
    let (short, long) = slot_times(&report);
    let total = short + long;
    assert!((total - 13.0 * 60.0).abs() < 1e-6, "13 slots busy for 60 s: {total}");
    for (name, share) in [("short", short), ("long", long)] {
        assert!((share / total - 0.5).abs() <= 0.05, "{name}: {share} s of {total} s");
    }
    // Ten times as many short jobs ran.
    let (short_n, long_n) = (report.org("short").unwrap().dispatched, report.org("long").unwrap().dispatched);
    assert!((short_n as f64 / long_n as f64 - 10.0).abs() < 1.0, "{short_n} vs {long_n}");

    // peek_set (a FIFO here: no cap binds) starts as many of each: long gets ~10x.
    let fifo = simulate(&two_orgs_service_times([1.0, 1.0]).with_policy(PolicyKind::PeekSet)).unwrap();
    let (short, long) = slot_times(&fifo);
    assert!(long / short > 8.0, "peek_set: long {long} s, short {short} s");
}

#[test]
fn weights_three_to_one_give_three_times_the_slot_time() {
    for (weights, heavy) in [([3.0, 1.0], "short"), ([1.0, 3.0], "long")] {
        let report = simulate(&two_orgs_service_times(weights)).unwrap();
        let (short, long) = slot_times(&report);
        let ratio = if heavy == "short" { short / long } else { long / short };
        assert!((ratio / 3.0 - 1.0).abs() <= 0.10, "weights {weights:?}: short {short} s, long {long} s");
    }
}

// ----- the scenario entry point ------------------------------------------------------------

#[test]
fn every_named_scenario_runs_under_both_policies_and_the_fifo() {
    let small = ScenarioOptions { flood: Some(2_000), ..ScenarioOptions::default() };
    for name in SCENARIOS {
        for policy in [PolicyKind::FairShare, PolicyKind::PeekSet] {
            let report = run_scenario(name, policy, &small).unwrap();
            assert_eq!(report.scenario, name);
            assert_eq!(report.policy, policy.name());
            assert!(report.dispatched > 0);
            assert!(!report.table().is_empty());
        }
        let fifo = run_scenario_fifo(name, Baseline::SameCaps, &small).unwrap();
        assert_eq!(fifo.policy, "fifo");
    }
    let all = compare(&scenario("noisy", PolicyKind::FairShare, &small).unwrap()).unwrap();
    let policies: Vec<&str> = all.iter().map(|r| r.policy.as_str()).collect();
    assert_eq!(policies, ["fair_share", "peek_set", "fifo"]);
    let table = Report::side_by_side(&all);
    assert!(table.contains("quiet (×20)") && table.contains("peek_set"), "{table}");

    assert!(run_scenario("nope", PolicyKind::FairShare, &small).is_err());
    let bad = ScenarioOptions { horizon: Some(-1.0), ..ScenarioOptions::default() };
    assert!(run_scenario("seed", PolicyKind::FairShare, &bad).is_err());
    let short = ScenarioOptions { horizon: Some(10.0), ..ScenarioOptions::default() };
    let cut = run_scenario("two-orgs", PolicyKind::FairShare, &short).unwrap();
    assert!(cut.cut_short && cut.end == 10.0);
}

#[test]
fn runs_are_deterministic_per_seed() {
    let options = ScenarioOptions { flood: Some(5_000), seed: 7, ..ScenarioOptions::default() };
    let a = run_scenario("noisy", PolicyKind::FairShare, &options).unwrap();
    let b = run_scenario("noisy", PolicyKind::FairShare, &options).unwrap();
    assert_eq!(a, b);
    let c = run_scenario("noisy", PolicyKind::FairShare, &ScenarioOptions { seed: 8, ..options }).unwrap();
    assert_ne!(a.orgs, c.orgs);
}

#[test]
fn a_workload_must_be_sorted_by_time() {
    let mut w = noisy_neighbour(100);
    let last = w.arrivals.len() - 1;
    assert!(w.arrivals[last].at > MS);
    w.arrivals[last].at = 0;
    assert!(simulate(&w).is_err());
}
