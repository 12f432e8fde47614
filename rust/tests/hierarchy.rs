//! The hierarchy's figures, measured by the simulator on the real dispatcher: the
//! noisy user (a flooding user's org-mates keep short waits whatever the flood, and
//! the org gets no more than an org without keys), two orgs one of which spreads its
//! work over 3 kinds and 5 keys (equal slot-time), a rate-limited org (its rate, the
//! others the rest) and priorities with aging (an urgent job overtakes 10,000 of its
//! org's jobs; low ones start exactly where the documented aging rate puts them).

use _core::sim::{
    noisy_user, priorities, rate_limited, run_scenario, simulate, Arrival, OrgSpec, Report, Workload, MS,
    PRIORITIES_AGING, RATE_LIMITED,
};
use _core::{Config, Kind, Nanos, PolicyKind, Shares, MAX_PRIORITY, NANOS_PER_SEC};

/// The noisy-user scenario's longest service time (10 ms + 20 %), in seconds.
const MAX_SERVICE: f64 = 0.012;

fn mates_worst_p99(report: &Report) -> f64 {
    let mates: Vec<_> = report.keys.iter().filter(|k| k.org == "acme" && k.key != "user-flood").collect();
    assert_eq!(mates.len(), 10, "ten org-mates with requests");
    mates.iter().map(|k| k.wait_p99).fold(0.0, f64::max)
}

#[test]
fn a_flooding_users_org_mates_keep_short_waits_whatever_the_flood() {
    let mut p99 = Vec::new();
    for flood in [10_000, 100_000] {
        let report = simulate(&noisy_user(flood, 1)).unwrap();
        println!("{}", report.table());
        assert!(!report.cut_short);
        let mates = mates_worst_p99(&report);
        let quiet = report.group("quiet").unwrap().wait_p99;
        println!("flood {flood}: org-mates' worst p99 {mates:.4} s, quiet orgs' p99 {quiet:.4} s");
        assert!(mates <= 3.0 * MAX_SERVICE, "flood {flood}: org-mates' p99 {mates} s");
        assert!(quiet <= 3.0 * MAX_SERVICE, "flood {flood}: quiet orgs' p99 {quiet} s");
        p99.push(mates.max(MAX_SERVICE / 10.0));
    }
    assert!(p99[1] <= 2.0 * p99[0] && p99[0] <= 2.0 * p99[1], "org-mates' p99 {p99:?} at 10k vs 100k");
}

#[test]
fn an_org_with_eleven_keys_gets_no_more_than_an_org_with_none() {
    // Cut the run while both floods are still backlogged (they need ~15 s together).
    let mut w = noisy_user(10_000, 7);
    w.horizon = Some(7 * NANOS_PER_SEC);
    let report = simulate(&w).unwrap();
    let (acme, rival) = (report.org("acme").unwrap().slot_time, report.org("rival").unwrap().slot_time);
    println!("slot-time over 7 s: acme (11 keys) {acme:.2} s, rival (no keys) {rival:.2} s");
    assert!((acme / rival - 1.0).abs() <= 0.10, "acme {acme} s vs rival {rival} s");
    // The flooding user is held to acme's per-key cap of 8.
    let flood = report.key("acme", "user-flood").unwrap();
    assert!(flood.slot_time <= 8.0 * 7.0 + 1e-9);
}

/// Two always-backlogged orgs for 60 s on 13 slots: `spread` runs its jobs over 3
/// kinds and 5 keys, `plain` over 1 kind and its default key; service 20 ms.
fn spread_and_plain() -> Workload {
    let (service, horizon) = (20 * MS, 60 * NANOS_PER_SEC);
    let per_org = (13 * horizon / service) as usize;
    let kinds = [Kind::Future, Kind::Queueable, Kind::Batch];
    let mut arrivals = Vec::with_capacity(2 * per_org);
    for i in 0..per_org {
        let kind = kinds[i % 3];
        arrivals.push(Arrival::new(0, service, 0, kind).with_key((i / 3 % 5) as u32 + 1));
        arrivals.push(Arrival::new(0, service, 1, Kind::Future));
    }
    let orgs = vec![OrgSpec::new("spread").with_keys((1..=5).map(|k| format!("key-{k}"))), OrgSpec::new("plain")];
    Workload {
        name: "spread-and-plain".to_string(),
        config: Config { policy: PolicyKind::FairShare, slots: 13, ..Config::default() },
        orgs,
        arrivals,
        horizon: Some(horizon),
        sample_every: None,
        trace: false,
    }
}

#[test]
fn an_org_using_three_kinds_and_five_keys_gets_the_slot_time_of_an_org_using_one() {
    let report = simulate(&spread_and_plain()).unwrap();
    let (spread, plain) = (report.org("spread").unwrap().slot_time, report.org("plain").unwrap().slot_time);
    println!("slot-time over 60 s: spread (3 kinds, 5 keys) {spread:.1} s, plain (1 kind) {plain:.1} s");
    assert!((spread / plain - 1.0).abs() <= 0.10, "spread {spread} s vs plain {plain} s");
    // Within the spread org, its five keys share alike too.
    let keys: Vec<f64> = report.keys.iter().map(|k| k.slot_time).collect();
    let (lo, hi) = keys.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &t| (lo.min(t), hi.max(t)));
    assert!(hi / lo <= 1.10, "key slot-times {keys:?}");
}

#[test]
fn with_shares_per_pair_each_kind_of_an_org_holds_a_share_as_before_the_hierarchy() {
    let mut w = spread_and_plain();
    w.config.shares = Shares::PerPair;
    let report = simulate(&w).unwrap();
    let (spread, plain) = (report.org("spread").unwrap().slot_time, report.org("plain").unwrap().slot_time);
    println!("shares per pair, slot-time over 60 s: spread (3 kinds) {spread:.1} s, plain (1 kind) {plain:.1} s");
    assert!((spread / plain / 3.0 - 1.0).abs() <= 0.10, "spread {spread} s vs plain {plain} s");
}

#[test]
fn a_rate_limited_org_runs_at_its_rate_and_the_others_use_the_rest() {
    let report = simulate(&rate_limited()).unwrap();
    println!("{}", report.table());
    let limited = report.org("limited").unwrap();
    let expected = RATE_LIMITED.rate * 60.0;
    let started = limited.dispatched as f64;
    println!("limited: {started} started in 60 s at {} per s (burst {})", RATE_LIMITED.rate, RATE_LIMITED.burst);
    assert!((started / expected - 1.0).abs() <= 0.05, "limited started {started}, rate × 60 s = {expected}");
    assert!(started <= expected + f64::from(RATE_LIMITED.burst), "over rate × t + burst");
    assert!(report.utilisation >= 0.97, "free orgs use the other slots: utilisation {}", report.utilisation);
    // The limited org's waits are its rate's, not the queue's: the free orgs never wait long.
    assert!(report.group("free").unwrap().dispatched as f64 >= 0.97 * (13.0 * 60.0 / 0.1 - expected));
}

/// The order the documented aging gives a request: arrival less 1 level per aging.
fn aged(a: &Arrival) -> Nanos {
    a.at + u64::from(MAX_PRIORITY - a.priority) * PRIORITIES_AGING
}

#[test]
fn an_urgent_job_behind_ten_thousand_starts_within_a_few_service_times() {
    let w = priorities();
    let report = simulate(&w).unwrap();
    let urgent = w.arrivals.iter().position(|a| a.org == 0 && a.priority == MAX_PRIORITY).unwrap() as u64;
    let started = report.trace.iter().find(|d| d.id == urgent).expect("the urgent job started").at;
    let wait = started - 1.0;
    println!("urgent job: enqueued at 1 s behind 10,000 of its org, started after {wait:.3} s");
    assert!(wait <= 3.0 * 0.1, "urgent job waited {wait} s");
    // Without its priority it would have waited for its org's 10,000.
    let plain = simulate(&w.clone().without_fair_share_features()).unwrap();
    let plain_start = plain.trace.iter().find(|d| d.id == urgent).map_or(f64::INFINITY, |d| d.at);
    assert!(plain_start > 60.0, "at the default priority it starts at {plain_start} s");
}

#[test]
fn low_priority_jobs_progress_at_the_documented_aging_rate() {
    let w = priorities();
    let report = simulate(&w).unwrap();
    // The stream org's line, in dispatch order: every start is the smallest aged
    // order among the stream's requests present and not yet started.
    let starts: Vec<(f64, &Arrival)> =
        report.trace.iter().map(|d| (d.at, &w.arrivals[d.id as usize])).filter(|(_, a)| a.org == 1).collect();
    let mut started = vec![false; w.arrivals.len()];
    let stream: Vec<usize> = (0..w.arrivals.len()).filter(|&i| w.arrivals[i].org == 1).collect();
    for d in report.trace.iter().filter(|d| w.arrivals[d.id as usize].org == 1) {
        let (now, me) = ((d.at * 1e9).round() as Nanos, aged(&w.arrivals[d.id as usize]));
        started[d.id as usize] = true;
        let overtaken = stream.iter().find(|&&i| {
            let a = &w.arrivals[i];
            !started[i] && a.at <= now && aged(a) + 1_000 < me
        });
        assert!(overtaken.is_none(), "request {} started at {now} ns before {overtaken:?}", d.id);
    }
    // The low ones do start, at a steady pace: one a second, about 9 levels × 1 s late.
    let lows: Vec<f64> = starts.iter().filter(|(_, a)| a.priority == 0).map(|(t, a)| t - a.at as f64 / 1e9).collect();
    println!("low-priority waits (s): first {:?}, last {:?}, {} started", lows.first(), lows.last(), lows.len());
    assert!(lows.len() >= 40, "{} of 60 low-priority jobs started in 90 s", lows.len());
    assert!(lows[0] >= 9.0 * 0.9 && lows[0] <= 9.0 + 3.0, "the first low waited {} s", lows[0]);
}

#[test]
fn the_new_scenarios_run_under_peek_set_without_their_fair_share_features() {
    let options = _core::sim::ScenarioOptions { flood: Some(1_000), horizon: Some(30.0), ..Default::default() };
    for name in ["noisy-user", "rate-limited", "priorities"] {
        let report = run_scenario(name, PolicyKind::PeekSet, &options).unwrap();
        assert!(report.keys.is_empty(), "{name}: no keys under peek_set");
        assert!(report.dispatched > 0, "{name}");
    }
}
