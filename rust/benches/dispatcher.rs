//! Dispatcher benchmarks (criterion), no Python.
//!
//! - `cycle/<policy>`: one enqueue + dispatch + ack with 1,000,000 requests queued over
//!   10,000 orgs (the backlog stays at 1M: each cycle adds one and runs one).
//! - `cycle_keys/{flat,keys,keys_priorities}`: the `fair_share` cycle at 1,000,000
//!   queued over 10,000 orgs, first with every request in its org's default key
//!   (today's flat-org shape), then over 100,000 concurrency keys (10 per org, with a
//!   per-key cap of 2), then the same with priorities 0–9 mixed — the hierarchy's
//!   cost, measured in the same run.
//! - `cycle_capped_head/<policy>`: the same, but an org at cap holds 1,000 requests at
//!   the front of the queue, so every dispatch must look past them.
//! - `enqueue_many_1m/<policy>`: bulk enqueue of 1,000,000 requests over 10,000 orgs
//!   into a fresh dispatcher (throughput per request).
//!
//! Printed, not sampled by criterion (each takes seconds, so a sample size of 10 would
//! blow the time budget):
//! - resident memory per queued request: VmRSS before and after enqueueing 1,000,000
//!   requests one by one into a fresh dispatcher, measured in a child process per
//!   policy so no allocator state carries over;
//! - simulation speed: `sim::many_orgs` with 10,000,000 requests over 10,000 orgs on
//!   100 slots, one run per policy, wall time and requests per second.
//!
//! `cargo bench -p fairqueue-core --bench dispatcher`; under `cargo test --benches`
//! (criterion's `--test` mode) the printed measurements shrink to a smoke run.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use _core::sim::{self, Baseline};
use _core::{
    Config, Dispatcher, KeyId, KeyLimits, Kind, NewRequest, OrgId, OrgLimits, PolicyKind, RequestOptions, VirtualClock,
    NANOS_PER_SEC,
};
use criterion::{BatchSize, Criterion, Throughput};

const ORGS: u32 = 10_000;
/// Concurrency keys per org in `cycle_keys/keys`: 100,000 in all.
const KEYS_PER_ORG: u32 = 10;
const BACKLOG: u64 = 1_000_000;
const POLICIES: [PolicyKind; 2] = [PolicyKind::FairShare, PolicyKind::PeekSet];
/// Leases never expire during a benchmark.
const LONG_LEASE: u64 = 10 * 365 * 24 * 3600 * NANOS_PER_SEC;
/// The child-process switch of the memory measurement.
const MEMORY_ENV: &str = "FAIRQUEUE_BENCH_MEMORY_POLICY";

fn config(policy: PolicyKind) -> Config {
    Config { policy, lease: LONG_LEASE, ..Config::default() }
}

fn dispatcher(policy: PolicyKind) -> (Dispatcher, VirtualClock) {
    let clock = VirtualClock::new(NANOS_PER_SEC);
    let mut d = Dispatcher::new(config(policy), Arc::new(clock.clone())).expect("valid config");
    for i in 0..ORGS {
        d.org(&format!("org-{i:05}")).expect("valid org name");
    }
    (d, clock)
}

/// Request `i` of a backlog spread round-robin over the orgs.
fn request(id: u64) -> NewRequest {
    NewRequest { id, org: OrgId((id % u64::from(ORGS)) as u32), kind: Kind::Future, run_at: None }
}

fn backlogged(policy: PolicyKind) -> (Dispatcher, VirtualClock) {
    let (mut d, clock) = dispatcher(policy);
    let batch: Vec<NewRequest> = (0..BACKLOG).map(request).collect();
    d.enqueue_many(&batch).expect("fresh ids");
    (d, clock)
}

/// One enqueue + dispatch + ack; the clock moves 10 ms so fair share charges run time.
fn cycle(d: &mut Dispatcher, clock: &VirtualClock, next_id: &mut u64) {
    d.enqueue(request(*next_id)).expect("fresh id");
    *next_id += 1;
    let grants = d.dispatch(1);
    let grant = grants.first().expect("a free slot and a runnable request");
    clock.advance(10_000_000);
    black_box(d.ack(grant.lease).expect("active lease"));
}

fn bench_cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("cycle");
    group.sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for policy in POLICIES {
        let (mut d, clock) = backlogged(policy);
        let mut next_id = BACKLOG;
        group.bench_function(policy.name(), |b| b.iter(|| cycle(&mut d, &clock, &mut next_id)));
        assert_eq!(d.stats().queued as u64, BACKLOG);
    }
    group.finish();

    let mut group = c.benchmark_group("cycle_capped_head");
    group.sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for policy in POLICIES {
        let (mut d, clock) = dispatcher(policy);
        // An org at cap (12 of the 13 slots, never released) with 1,000 more requests
        // at the front: inside the 2,000 peek set, so peek_set skips them, no delay.
        let flood = d.org("flood").expect("valid org name");
        let front: Vec<NewRequest> =
            (0..1_012).map(|i| NewRequest { id: u64::MAX - i, org: flood, kind: Kind::Future, run_at: None }).collect();
        d.enqueue_many(&front).expect("fresh ids");
        assert_eq!(d.dispatch(12).len(), 12);
        let batch: Vec<NewRequest> = (0..BACKLOG).map(request).collect();
        d.enqueue_many(&batch).expect("fresh ids");
        let mut next_id = BACKLOG;
        group.bench_function(policy.name(), |b| b.iter(|| cycle(&mut d, &clock, &mut next_id)));
        let flood_stats = d.pair_stats(flood, Kind::Future).expect("known org");
        assert_eq!((flood_stats.running, flood_stats.queued), (12, 1_000), "the capped head stayed put");
        assert_eq!(d.stats().counters.extended_delays, 0);
    }
    group.finish();
}

/// How the keyed cycle spreads its requests.
#[derive(Clone, Copy)]
struct Spread {
    keys: bool,
    priorities: bool,
}

/// A dispatcher with 1M queued over 10,000 orgs and, if `spread.keys`, over 100,000
/// keys (request `i` goes to org `i mod 10,000` and key `(i / 10,000) mod 10` of that
/// org; with `spread.priorities` its priority is `(i / 7) mod 10`); returns the key table.
fn keyed_backlog(spread: Spread) -> (Dispatcher, VirtualClock, Vec<KeyId>) {
    let keyed = spread.keys;
    let (mut d, clock) = dispatcher(PolicyKind::FairShare);
    let mut keys = Vec::new();
    if keyed {
        for o in 0..ORGS {
            let per_key = KeyLimits { cap: Some(2), weight: 1.0 };
            d.set_org_limits(OrgId(o), OrgLimits { per_key, ..OrgLimits::default() }).expect("valid limits");
            for k in 0..KEYS_PER_ORG {
                keys.push(d.key(OrgId(o), &format!("user-{k}")).expect("valid key name"));
            }
        }
    }
    let batch: Vec<(NewRequest, RequestOptions)> = (0..BACKLOG).map(|id| keyed_request(id, &keys, spread)).collect();
    d.enqueue_with(&batch).expect("fresh ids");
    (d, clock, keys)
}

fn keyed_request(id: u64, keys: &[KeyId], spread: Spread) -> (NewRequest, RequestOptions) {
    let r = request(id);
    let mut options = RequestOptions::default();
    if spread.keys {
        let k = (id / u64::from(ORGS)) % u64::from(KEYS_PER_ORG);
        options.key = Some(keys[(u64::from(r.org.0) * u64::from(KEYS_PER_ORG) + k) as usize]);
    }
    if spread.priorities {
        options.priority = ((id / 7) % 10) as u8;
    }
    (r, options)
}

fn bench_cycle_keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("cycle_keys");
    group.sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    let spreads = [
        ("flat", Spread { keys: false, priorities: false }),
        ("keys", Spread { keys: true, priorities: false }),
        ("keys_priorities", Spread { keys: true, priorities: true }),
    ];
    for (name, spread) in spreads {
        let (mut d, clock, keys) = keyed_backlog(spread);
        let mut next_id = BACKLOG;
        group.bench_function(name, |b| {
            b.iter(|| {
                d.enqueue_with(&[keyed_request(next_id, &keys, spread)]).expect("fresh id");
                next_id += 1;
                let grants = d.dispatch(1);
                let grant = grants.first().expect("a free slot and a runnable request");
                clock.advance(10_000_000);
                black_box(d.ack(grant.lease).expect("active lease"));
            })
        });
        assert_eq!(d.stats().queued as u64, BACKLOG);
    }
    group.finish();
}

fn bench_enqueue_many(c: &mut Criterion) {
    let mut group = c.benchmark_group("enqueue_many_1m");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(BACKLOG));
    let batch: Vec<NewRequest> = (0..BACKLOG).map(request).collect();
    for policy in POLICIES {
        group.bench_function(policy.name(), |b| {
            b.iter_batched(
                || dispatcher(policy).0,
                |mut d| {
                    d.enqueue_many(&batch).expect("fresh ids");
                    d
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

/// Resident set size in bytes, from /proc/self/status.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// In the child: enqueue `n` requests one by one into a fresh dispatcher, print bytes per request.
fn measure_memory_child(policy: PolicyKind, n: u64) {
    let (mut d, _clock) = dispatcher(policy);
    let before = rss_bytes().expect("/proc/self/status");
    for id in 0..n {
        d.enqueue(request(id)).expect("fresh id");
    }
    let after = rss_bytes().expect("/proc/self/status");
    assert_eq!(d.stats().queued as u64, n);
    println!("{:.1}", (after.saturating_sub(before)) as f64 / n as f64);
    black_box(&d);
}

fn memory_per_request(n: u64) {
    let exe = std::env::current_exe().expect("own path");
    for policy in POLICIES {
        let out = std::process::Command::new(&exe)
            .env(MEMORY_ENV, format!("{}:{n}", policy.name()))
            .output()
            .expect("re-run self");
        let text = String::from_utf8_lossy(&out.stdout);
        match text.trim().parse::<f64>() {
            Ok(bytes) if out.status.success() => println!(
                "memory/{}: {bytes:.1} bytes resident per queued request ({n} requests over {ORGS} orgs)",
                policy.name()
            ),
            _ => println!(
                "memory/{}: measurement failed: {text} {}",
                policy.name(),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

fn simulation_speed(requests: usize) {
    let started = Instant::now();
    let workload = sim::many_orgs(ORGS as usize, requests, 100, 42);
    println!(
        "simulate: workload of {requests} requests over {ORGS} orgs generated in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    for name in ["fair_share", "peek_set", "fifo"] {
        let started = Instant::now();
        let report = match name {
            "fifo" => sim::simulate_fifo(&workload, Baseline::SameCaps),
            policy => sim::simulate(&workload.clone().with_policy(policy.parse().expect("policy name"))),
        }
        .expect("valid workload");
        let secs = started.elapsed().as_secs_f64();
        let all = report.group("all").expect("one group");
        println!(
            "simulate/{name}: {requests} requests in {secs:.2} s wall ({:.2} M requests/s, {} steps, {:.0} s simulated); \
             waits p50 {} p99 {} max {}",
            requests as f64 / secs / 1e6,
            report.steps,
            report.end,
            sim::format_duration(all.wait_p50),
            sim::format_duration(all.wait_p99),
            sim::format_duration(all.wait_max),
        );
        assert_eq!(report.completed as usize, requests);
    }
}

fn main() {
    if let Ok(spec) = std::env::var(MEMORY_ENV) {
        let (policy, n) = spec.split_once(':').expect("policy:n");
        measure_memory_child(policy.parse().expect("policy name"), n.parse().expect("count"));
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let smoke = args.iter().any(|a| a == "--test");
    let listing = args.iter().any(|a| a == "--list");
    // A positional filter (as in `cargo bench -- cycle`) selects criterion benchmarks only.
    let filtered = args.iter().skip(1).any(|a| !a.starts_with('-'));
    if !listing && !filtered {
        if smoke {
            memory_per_request(10_000);
            simulation_speed(100_000);
        } else {
            memory_per_request(BACKLOG);
            simulation_speed(10_000_000);
        }
    }
    let mut criterion = Criterion::default().configure_from_args();
    bench_cycle(&mut criterion);
    bench_cycle_keys(&mut criterion);
    bench_enqueue_many(&mut criterion);
    criterion.final_summary();
}
