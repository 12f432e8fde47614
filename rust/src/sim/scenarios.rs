//! Scenarios: plain functions returning a [`Workload`] (seed 001's worked example,
//! the noisy neighbour, two orgs with tenfold service times, many orgs, the noisy user
//! inside one org, a rate-limited org, priorities with aging), and [`run_scenario`],
//! the entry point of `fairqueue simulate SCENARIO`.

use crate::clock::{Nanos, NANOS_PER_SEC};
use crate::error::{CoreError, CoreResult};
use crate::limits::{Config, KeyLimits, OrgLimits, PairLimits, PolicyKind, RateLimit, MAX_PRIORITY};
use crate::request::{Kind, KINDS};

use super::{simulate, simulate_fifo, Arrival, Baseline, OrgSpec, RateOn, Report, SplitMix64, Workload, MS};

/// Fills in the fields every scenario shares.
fn workload(name: &str, config: Config, orgs: Vec<OrgSpec>, arrivals: Vec<Arrival>) -> Workload {
    Workload { name: name.to_string(), config, orgs, arrivals, horizon: None, sample_every: None, trace: false }
}

/// The reference queue of seed 001: 13 slots, cap 12 per org and kind, futures delayed 5 minutes.
fn reference_config(policy: PolicyKind, slots: u32, peek_set: u32) -> Config {
    Config { policy, slots, peek_set, ..Config::default() }
}

/// Seed 001's worked example ("Fair Request Handling"), every request a future taking
/// `service`, all enqueued at t = 0 in the order the seed gives, on 13 slots with
/// cap 12 and a peek set of 15.
///
/// - `extended = false`: org 1 enqueues 13, org 2 enqueues 2, org 1 enqueues 2 more.
///   The 13th slot skips org 1's 13th request (org 1 is at cap) and serves org 2.
/// - `extended = true`: org 1 enqueues 12 (they take 12 slots) and 15 more, then org 2
///   enqueues 2. The 15 fill the peek set while org 1 is at cap, so they move to the
///   back with the 5-minute extended delay and org 2 is served.
///
/// Request ids are positions in that order (org 2's are 13, 14 resp. 27, 28).
pub fn seed_worked_example(extended: bool, service: Nanos) -> Workload {
    let future = |org| Arrival::new(0, service, org, Kind::Future);
    let arrivals: Vec<Arrival> = if extended {
        [(0, 27), (1, 2)].iter().flat_map(|&(org, n)| std::iter::repeat_n(future(org), n)).collect()
    } else {
        [(0, 13), (1, 2), (0, 2)].iter().flat_map(|&(org, n)| std::iter::repeat_n(future(org), n)).collect()
    };
    let name = if extended { "seed-extended" } else { "seed" };
    let mut w = workload(
        name,
        reference_config(PolicyKind::FairShare, 13, 15),
        vec![OrgSpec::new("org-1"), OrgSpec::new("org-2")],
        arrivals,
    );
    w.trace = true;
    w.sample_every = Some(NANOS_PER_SEC);
    w
}

/// Parameters of [`noisy_neighbour_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct NoisyParams {
    /// Requests the flooding org enqueues at t = 0.
    pub flood: usize,
    pub quiet_orgs: usize,
    /// Mean gap between two requests of one quiet org.
    pub quiet_gap: Nanos,
    /// Mean service time of every request; each is drawn uniformly within ±20 %.
    pub service: Nanos,
    pub slots: u32,
    pub cap: u32,
    pub peek_set: u32,
    pub seed: u64,
    /// Stop here; `None` means `max(1 h, 4 × the flood's ideal duration)`.
    pub horizon: Option<Nanos>,
}

impl Default for NoisyParams {
    fn default() -> Self {
        NoisyParams {
            flood: 100_000,
            quiet_orgs: 20,
            quiet_gap: 500 * MS,
            service: 10 * MS,
            slots: 13,
            cap: 12,
            peek_set: 2000,
            seed: 1,
            horizon: None,
        }
    }
}

/// One org floods `flood` futures at t = 0; 20 quiet orgs trickle futures in over the
/// time the flood needs at its cap (`flood × 10 ms / 12`). See [`noisy_neighbour_with`].
pub fn noisy_neighbour(flood: usize) -> Workload {
    noisy_neighbour_with(&NoisyParams { flood, ..NoisyParams::default() })
}

/// The noisy-neighbour scenario.
///
/// - Service times: uniform in `service ± 20 %` for every request (default 8–12 ms),
///   so both the flood and the quiet orgs' work is short and comparable.
/// - The flood: org `flood`, `p.flood` futures, all at t = 0.
/// - Quiet orgs `quiet-01`…: each starts at a random phase within its first gap and
///   then enqueues one future every `quiet_gap × (1 ± 10 %)` (default 2 per second per
///   org, 40/s in all, about 0.4 slots of load) until the flood's ideal duration
///   `flood × service / cap` has passed.
/// - Queue: `slots` 13, `cap` 12, peek set 2000, future extended delay 5 minutes
///   (the reference values). A pending-per-org sample is taken every second.
/// - Horizon: by default `max(1 h, 4 × flood duration)`. Under `fair_share` and the
///   FIFO baselines every request completes long before it; under `peek_set` a flood
///   larger than its peek set is moved back 5 minutes at a time and runs about
///   `cap` requests per 5 minutes, so it would take days (10,000 requests: 68 h) —
///   the horizon keeps that run cheap and the report says "not done".
pub fn noisy_neighbour_with(p: &NoisyParams) -> Workload {
    let mut rng = SplitMix64::new(p.seed);
    let service = p.service;
    let draw_service = |rng: &mut SplitMix64| rng.between(service - service / 5, service + service / 5);
    let mut arrivals: Vec<Arrival> = Vec::with_capacity(p.flood);
    for _ in 0..p.flood {
        arrivals.push(Arrival::new(0, draw_service(&mut rng), 0, Kind::Future));
    }
    let span = (p.flood as u128 * u128::from(service) / u128::from(p.cap.max(1))) as Nanos;
    let mut quiet = Vec::new();
    for q in 0..p.quiet_orgs {
        let mut at = rng.between(0, p.quiet_gap.saturating_sub(1));
        while at < span {
            quiet.push(Arrival::new(at, draw_service(&mut rng), q as u32 + 1, Kind::Future));
            at += rng.between(p.quiet_gap - p.quiet_gap / 10, p.quiet_gap + p.quiet_gap / 10);
        }
    }
    // Stable: equal times keep org order, and the flood (all at 0) stays first.
    quiet.sort_by_key(|a| a.at);
    arrivals.extend(quiet);
    let mut orgs = vec![OrgSpec::new("flood")];
    orgs.extend((1..=p.quiet_orgs).map(|q| OrgSpec::new(format!("quiet-{q:02}")).in_group("quiet")));
    let mut config = reference_config(PolicyKind::FairShare, p.slots, p.peek_set);
    config.default_limits = [PairLimits { cap: p.cap, ..PairLimits::default() }; KINDS];
    let mut w = workload("noisy", config, orgs, arrivals);
    w.sample_every = Some(NANOS_PER_SEC);
    w.horizon = Some(p.horizon.unwrap_or((3600 * NANOS_PER_SEC).max(span.saturating_mul(4))));
    w
}

/// Two always-backlogged orgs on 13 slots for 60 s: `short` runs 10 ms jobs, `long`
/// 100 ms jobs, with `weights = [short, long]`. Caps equal the slots, so only the
/// policy decides the split. Each org enqueues at t = 0 more work than 13 slots could
/// run in 60 s; arrivals alternate one short, one long, so a FIFO (or `peek_set`, which
/// is a FIFO when no cap binds) starts as many of each and gives the long org ten
/// times the slot-time of the short one. The run stops at 60 s.
pub fn two_orgs_service_times(weights: [f64; 2]) -> Workload {
    let slots = 13u32;
    let horizon = 60 * NANOS_PER_SEC;
    let (short, long) = (10 * MS, 100 * MS);
    let short_n = (u64::from(slots) * horizon / short) as usize;
    let long_n = (u64::from(slots) * horizon / long) as usize;
    let mut arrivals = Vec::with_capacity(short_n + long_n);
    for i in 0..short_n.max(long_n) {
        if i < short_n {
            arrivals.push(Arrival::new(0, short, 0, Kind::Future));
        }
        if i < long_n {
            arrivals.push(Arrival::new(0, long, 1, Kind::Future));
        }
    }
    let limits = |weight| PairLimits { cap: slots, min: 0, weight };
    let orgs = vec![
        OrgSpec::new("short").with_limits(Kind::Future, limits(weights[0])),
        OrgSpec::new("long").with_limits(Kind::Future, limits(weights[1])),
    ];
    let name = if weights[0] == weights[1] { "two-orgs" } else { "weighted" };
    let mut w = workload(name, reference_config(PolicyKind::FairShare, slots, 2000), orgs, arrivals);
    w.horizon = Some(horizon);
    w.sample_every = Some(NANOS_PER_SEC);
    w
}

/// A large mixed workload for speed measurements: `requests` futures over `orgs` orgs,
/// arriving as a Poisson process at 98 % of the capacity of `slots` slots, service
/// uniform in 8–12 ms. Org popularity is skewed (org index = `orgs × u²`), so a few
/// orgs are heavy and many are light; caps are the reference 12.
pub fn many_orgs(orgs: usize, requests: usize, slots: u32, seed: u64) -> Workload {
    let mut rng = SplitMix64::new(seed);
    let service = 10 * MS;
    let rate = 0.98 * f64::from(slots) / service as f64; // arrivals per nanosecond
    let mut at = 0f64;
    let mut arrivals = Vec::with_capacity(requests);
    for _ in 0..requests {
        at += -(1.0 - rng.next_f64()).ln() / rate;
        let u = rng.next_f64();
        let org = ((orgs as f64 * u * u) as usize).min(orgs - 1) as u32;
        arrivals.push(Arrival::new(at as Nanos, rng.between(8 * MS, 12 * MS), org, Kind::Future));
    }
    let specs = (0..orgs).map(|i| OrgSpec::new(format!("org-{i:05}")).in_group("all")).collect();
    workload("many-orgs", reference_config(PolicyKind::FairShare, slots, 2000), specs, arrivals)
}

/// Requests one trickling source sends from its random phase until `until`, one per
/// `gap × (1 ± 10 %)`, each taking `service × (1 ± 20 %)`.
fn trickle(rng: &mut SplitMix64, org: u32, key: u32, gap: Nanos, until: Nanos, service: Nanos) -> Vec<Arrival> {
    let mut out = Vec::new();
    let mut at = rng.between(0, gap.saturating_sub(1));
    while at < until {
        let s = rng.between(service - service / 5, service + service / 5);
        out.push(Arrival::new(at, s, org, Kind::Future).with_key(key));
        at += rng.between(gap - gap / 10, gap + gap / 10);
    }
    out
}

/// The noisy user: one user of an org floods, the same org's other users and other
/// orgs trickle, and a rival org floods as much with no keys.
///
/// - Org `acme`: key `user-flood` enqueues `flood` futures at t = 0; keys
///   `user-01`…`user-10` each enqueue one every 500 ms (± 10 %). Acme's per-key cap
///   is 8 (its pair cap the reference 12), so the flooding user never holds all of
///   acme's slots.
/// - Org `rival`: `flood` futures at t = 0 in its default key — the org-level
///   comparison: acme must get no more than rival for using eleven keys.
/// - Orgs `quiet-01`…`quiet-10` (group `quiet`): one future every 500 ms each.
/// - Service 10 ms ± 20 %, 13 slots, trickles until both floods could be done
///   (`2 × flood × 10 ms / 13`); horizon `max(1 h, 4 ×` that`)`.
pub fn noisy_user(flood: usize, seed: u64) -> Workload {
    let mut rng = SplitMix64::new(seed);
    let (service, slots) = (10 * MS, 13u32);
    let draw = |rng: &mut SplitMix64| rng.between(service - service / 5, service + service / 5);
    let mut arrivals = Vec::with_capacity(2 * flood);
    for _ in 0..flood {
        arrivals.push(Arrival::new(0, draw(&mut rng), 0, Kind::Future).with_key(1));
        arrivals.push(Arrival::new(0, draw(&mut rng), 1, Kind::Future));
    }
    let span = (2 * flood as u128 * u128::from(service) / u128::from(slots)) as Nanos;
    let mut trickles = Vec::new();
    for user in 0..10 {
        trickles.extend(trickle(&mut rng, 0, user + 2, 500 * MS, span, service));
    }
    for q in 0..10 {
        trickles.extend(trickle(&mut rng, q + 2, 0, 500 * MS, span, service));
    }
    trickles.sort_by_key(|a| a.at);
    arrivals.extend(trickles);
    let keys = std::iter::once("user-flood".to_string()).chain((1..=10).map(|u| format!("user-{u:02}")));
    let per_key = KeyLimits { cap: Some(8), weight: 1.0 };
    let mut orgs = vec![
        OrgSpec::new("acme").with_keys(keys).with_org_limits(OrgLimits { per_key, ..OrgLimits::default() }),
        OrgSpec::new("rival"),
    ];
    orgs.extend((1..=10).map(|q| OrgSpec::new(format!("quiet-{q:02}")).in_group("quiet")));
    let mut w = workload("noisy-user", reference_config(PolicyKind::FairShare, slots, 2000), orgs, arrivals);
    w.sample_every = Some(NANOS_PER_SEC);
    w.horizon = Some((3600 * NANOS_PER_SEC).max(span.saturating_mul(4)));
    w
}

/// The rate limit every `rate-limited` run puts on org `limited`: 10 per second,
/// bursts of 5.
pub const RATE_LIMITED: RateLimit = RateLimit { rate: 10.0, per: NANOS_PER_SEC, burst: 5 };

/// A rate-limited org beside unlimited ones: org `limited` (limited to
/// [`RATE_LIMITED`], 10/s with bursts of 5) and orgs `free-1`…`free-3` all enqueue
/// more at t = 0 than 13 slots can run in the 60 s the run lasts (service 100 ms, so
/// 130 jobs/s in all). The limited org should start 10 jobs per second (plus its
/// burst) and the free orgs use every other slot.
pub fn rate_limited() -> Workload {
    let (service, slots, horizon) = (100 * MS, 13u32, 60 * NANOS_PER_SEC);
    let mut arrivals = Vec::new();
    for _ in 0..3000 {
        for org in 0..4 {
            arrivals.push(Arrival::new(0, service, org, Kind::Future));
        }
    }
    let mut orgs = vec![OrgSpec::new("limited").with_rate(RateOn::Org, RATE_LIMITED)];
    orgs.extend((1..=3).map(|i| OrgSpec::new(format!("free-{i}")).in_group("free")));
    let mut w = workload("rate-limited", reference_config(PolicyKind::FairShare, slots, 2000), orgs, arrivals);
    w.horizon = Some(horizon);
    w.sample_every = Some(NANOS_PER_SEC);
    w
}

/// The aging rate of the `priorities` scenario: one level per second (the default
/// is 10 s; a shorter one keeps the run short).
pub const PRIORITIES_AGING: Nanos = NANOS_PER_SEC;

/// Priorities with aging, on 8 slots, service 100 ms, aging one level per second:
///
/// - org `backlog` enqueues 10,000 futures of the default priority 5 at t = 0 and one
///   of priority 9 at t = 1 s: it should start within a few service times, though
///   10,000 of its org's jobs were there first;
/// - org `stream` enqueues priority-9 futures at 44/s (10 % more than its half of the
///   slots runs) and one priority-0 future per second, for 60 s: the low ones still
///   start, each after exactly the high ones that arrived up to 9 levels × 1 s after
///   it — the documented aging rate.
///
/// Traced; the run stops at 90 s.
pub fn priorities() -> Workload {
    let (service, slots) = (100 * MS, 8u32);
    let mut arrivals: Vec<Arrival> = (0..10_000).map(|_| Arrival::new(0, service, 0, Kind::Future)).collect();
    let mut later = vec![Arrival::new(NANOS_PER_SEC, service, 0, Kind::Future).with_priority(MAX_PRIORITY)];
    let high_gap = NANOS_PER_SEC / 44;
    let mut at = 0;
    while at < 60 * NANOS_PER_SEC {
        later.push(Arrival::new(at, service, 1, Kind::Future).with_priority(MAX_PRIORITY));
        at += high_gap;
    }
    for s in 0..60 {
        later.push(Arrival::new(s * NANOS_PER_SEC + NANOS_PER_SEC / 2, service, 1, Kind::Future).with_priority(0));
    }
    // Stable: the urgent request stays first among those arriving at 1 s.
    later.sort_by_key(|a| a.at);
    arrivals.extend(later);
    let mut config = reference_config(PolicyKind::FairShare, slots, 2000);
    config.aging = PRIORITIES_AGING;
    config.default_limits = [PairLimits { cap: slots, ..PairLimits::default() }; KINDS];
    let orgs = vec![OrgSpec::new("backlog"), OrgSpec::new("stream")];
    let mut w = workload("priorities", config, orgs, arrivals);
    w.horizon = Some(90 * NANOS_PER_SEC);
    w.trace = true;
    w
}

/// Options of [`run_scenario`]; the defaults are the documented scenario values.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioOptions {
    /// `noisy`, `noisy-user`: the flood size (default 100,000).
    pub flood: Option<usize>,
    /// `weighted`: weights of the short and the long org (default 3:1).
    pub weights: Option<[f64; 2]>,
    /// Random seed for scenarios that draw (default 1).
    pub seed: u64,
    /// Stop at this many seconds (default: the scenario's own horizon, if any).
    pub horizon: Option<f64>,
}

impl Default for ScenarioOptions {
    fn default() -> Self {
        ScenarioOptions { flood: None, weights: None, seed: 1, horizon: None }
    }
}

/// Names accepted by [`scenario`] and [`run_scenario`].
pub const SCENARIOS: [&str; 8] =
    ["seed", "seed-extended", "noisy", "two-orgs", "weighted", "noisy-user", "rate-limited", "priorities"];

/// The workload of scenario `name` (one of [`SCENARIOS`]) under `policy`. Under
/// `peek_set` the scenario's keys, priorities, costs and org, key and rate limits are
/// taken out (see [`Workload::without_fair_share_features`]): peek_set refuses them.
pub fn scenario(name: &str, policy: PolicyKind, options: &ScenarioOptions) -> CoreResult<Workload> {
    let mut w = match name {
        "seed" => seed_worked_example(false, NANOS_PER_SEC),
        "seed-extended" => seed_worked_example(true, NANOS_PER_SEC),
        "noisy" => noisy_neighbour_with(&NoisyParams {
            flood: options.flood.unwrap_or(NoisyParams::default().flood),
            seed: options.seed,
            ..NoisyParams::default()
        }),
        "two-orgs" => two_orgs_service_times(options.weights.unwrap_or([1.0, 1.0])),
        "weighted" => two_orgs_service_times(options.weights.unwrap_or([3.0, 1.0])),
        "noisy-user" => noisy_user(options.flood.unwrap_or(NoisyParams::default().flood), options.seed),
        "rate-limited" => rate_limited(),
        "priorities" => priorities(),
        other => {
            return Err(CoreError::invalid("scenario", other, format!("one of {}", SCENARIOS.join(", "))));
        }
    };
    if let Some(h) = options.horizon {
        if !(h.is_finite() && h > 0.0) {
            return Err(CoreError::invalid("horizon", h, "a number of seconds greater than 0"));
        }
        w.horizon = Some((h * NANOS_PER_SEC as f64) as Nanos);
    }
    if policy == PolicyKind::PeekSet {
        w = w.without_fair_share_features();
    }
    Ok(w.with_policy(policy))
}

/// Runs scenario `name` (one of [`SCENARIOS`]) on the dispatcher under `policy`.
pub fn run_scenario(name: &str, policy: PolicyKind, options: &ScenarioOptions) -> CoreResult<Report> {
    simulate(&scenario(name, policy, options)?)
}

/// Runs scenario `name` under the FIFO baseline.
pub fn run_scenario_fifo(name: &str, baseline: Baseline, options: &ScenarioOptions) -> CoreResult<Report> {
    simulate_fifo(&scenario(name, PolicyKind::FairShare, options)?, baseline)
}
