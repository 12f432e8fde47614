//! The dispatcher on a virtual clock: workloads, scenarios and per-org wait reports.
//!
//! A [`Workload`] is a queue configuration, a list of orgs (with their limits and a
//! group label for summaries) and a time-ordered list of [`Arrival`]s, each with the
//! service time it will take once a slot runs it. [`simulate`] drives the real
//! [`Dispatcher`] through a discrete-event loop on a [`VirtualClock`]:
//!
//! 1. advance the clock to the next event: the next arrival, the next completion, or
//!    [`Dispatcher::next_wakeup`] (a delayed request falling due);
//! 2. ack every request that completes at that instant (slots come free first),
//!    then enqueue every request that arrives at that instant, in list order;
//! 3. call `dispatch(usize::MAX)` and schedule each grant's completion at
//!    `now + service` in a heap whose ties break on a sequence number.
//!
//! A request's wait is its first dispatch time minus its arrival time. Leases are
//! set far longer than any service time, so nothing is ever re-delivered.
//!
//! [`simulate_fifo`] runs the same loop over a plain first-come-first-served queue
//! (see [`Baseline`]) so that a policy can be compared with the simplest scheduler on
//! the very same arrivals. Scenarios ([`seed_worked_example`], [`noisy_neighbour`],
//! [`two_orgs_service_times`], [`many_orgs`]) are plain functions returning a
//! workload; [`run_scenario`] is the entry point of `fairqueue simulate SCENARIO`.
//!
//! Everything is deterministic: random workloads draw from [`SplitMix64`] seeded
//! by the caller, and the loop has no other source of nondeterminism.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;

use crate::clock::{Nanos, VirtualClock, NANOS_PER_SEC};
use crate::dispatcher::{Dispatcher, Event, NewRequest};
use crate::error::{CoreError, CoreResult};
use crate::limits::{Config, PairLimits, PolicyKind};
use crate::request::{Kind, OrgId, KINDS};

/// One millisecond in nanoseconds.
pub const MS: Nanos = NANOS_PER_SEC / 1000;

/// Leases in simulation: far longer than any service time, so none ever expires.
const SIM_LEASE: Nanos = 10 * 365 * 24 * 3600 * NANOS_PER_SEC;

/// Requests handed to `enqueue_many` at once when a burst arrives at one instant.
const ENQUEUE_CHUNK: usize = 1 << 16;

/// The time series keeps at most this many samples; past it, every other sample is
/// dropped and the interval doubles, so a long run stays bounded.
const MAX_SAMPLES: usize = 4096;

// ----- deterministic randomness ------------------------------------------------------

/// SplitMix64: a tiny, fast, well-mixed generator, enough for reproducible workloads.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform integer in [lo, hi] (inclusive; `lo` when `hi <= lo`).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }
}

// ----- workloads ---------------------------------------------------------------------

/// One request of a workload. 24 bytes, so a 10-million-request workload is 240 MB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// When the request is enqueued.
    pub at: Nanos,
    /// How long it holds a slot once dispatched.
    pub service: Nanos,
    /// Index into [`Workload::orgs`].
    pub org: u32,
    pub kind: Kind,
}

/// An org of a workload: its name, a group label for summary rows, and limit overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgSpec {
    pub name: String,
    /// Orgs with the same group are merged into one summary row ("flood", "quiet").
    pub group: String,
    /// Per-kind overrides of the config's default limits.
    pub limits: Vec<(Kind, PairLimits)>,
}

impl OrgSpec {
    /// An org with the default limits, in a group of its own.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        OrgSpec { group: name.clone(), name, limits: Vec::new() }
    }

    /// The same org in group `group`.
    pub fn in_group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// The same org with `limits` for `kind`.
    pub fn with_limits(mut self, kind: Kind, limits: PairLimits) -> Self {
        self.limits.push((kind, limits));
        self
    }
}

/// Everything a simulation run needs.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Scenario name, carried into the report.
    pub name: String,
    /// The queue: policy, slots, peek set, extended delays, default limits.
    pub config: Config,
    pub orgs: Vec<OrgSpec>,
    /// Requests in non-decreasing arrival time; request id = index. Requests arriving
    /// at the same instant are enqueued in list order before the next dispatch.
    pub arrivals: Vec<Arrival>,
    /// Stop the run at this time (requests not yet dispatched are counted, not waited on).
    pub horizon: Option<Nanos>,
    /// Interval of the pending-per-org time series; `None` records none.
    pub sample_every: Option<Nanos>,
    /// Record every dispatch in [`Report::trace`] (small workloads only).
    pub trace: bool,
}

impl Workload {
    /// The same workload under `policy`.
    pub fn with_policy(mut self, policy: PolicyKind) -> Self {
        self.config.policy = policy;
        self
    }

    fn validate(&self) -> CoreResult<()> {
        self.config.validate()?;
        if self.orgs.is_empty() {
            return Err(CoreError::invalid("orgs", 0, "at least one org"));
        }
        if self.orgs.len() > u32::MAX as usize {
            return Err(CoreError::invalid("orgs", self.orgs.len(), "at most 2^32 - 1 orgs"));
        }
        for spec in &self.orgs {
            Dispatcher::check_org_name(&spec.name)?;
            spec.limits.iter().try_for_each(|(_, l)| l.validate())?;
        }
        let mut last = 0;
        for (i, a) in self.arrivals.iter().enumerate() {
            if a.at < last {
                return Err(CoreError::invalid("arrival time", a.at, format!("arrivals sorted by time (request {i})")));
            }
            if a.org as usize >= self.orgs.len() {
                return Err(CoreError::invalid("arrival org", a.org, format!("an index below {}", self.orgs.len())));
            }
            last = a.at;
        }
        if self.sample_every == Some(0) {
            return Err(CoreError::invalid("sample_every", 0, "an interval greater than 0"));
        }
        Ok(())
    }
}

// ----- reports -----------------------------------------------------------------------

/// Waits and completion of one org (or of one group of orgs). Times are in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgRow {
    /// Org name, or group name for group rows.
    pub org: String,
    /// Orgs merged into this row (1 for an org row).
    pub orgs: usize,
    /// Requests that arrived (before the horizon, if any).
    pub requests: u64,
    /// Requests dispatched at least once.
    pub dispatched: u64,
    pub wait_mean: f64,
    pub wait_p50: f64,
    pub wait_p95: f64,
    pub wait_p99: f64,
    pub wait_max: f64,
    /// When the last of its requests completed; `None` if some never did.
    pub done_at: Option<f64>,
    /// Slot-time its requests held (up to the horizon, if any).
    pub slot_time: f64,
    /// Requests of this org moved to the back by an extended delay (counted per move).
    pub extended_delays: u64,
}

/// Pending (arrived, not yet dispatched) requests per org at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Seconds since the start of the run.
    pub at: f64,
    /// Indexed like [`Report::orgs`].
    pub pending: Vec<u32>,
}

/// One dispatch, when [`Workload::trace`] is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dispatched {
    pub at: f64,
    /// Request id (index into the workload's arrivals).
    pub id: u64,
    /// Index into [`Report::orgs`].
    pub org: u32,
}

/// What a run measured. All times are `f64` seconds since the start of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub scenario: String,
    /// `fair_share`, `peek_set`, `fifo` (same caps) or `fifo_uncapped`.
    pub policy: String,
    pub slots: u32,
    /// One row per org, in workload order.
    pub orgs: Vec<OrgRow>,
    /// One row per group, in order of first appearance.
    pub groups: Vec<OrgRow>,
    pub requests: u64,
    pub dispatched: u64,
    pub completed: u64,
    /// Time of the last completion.
    pub makespan: f64,
    /// Where the run stopped: the horizon if work was left, else the last event.
    pub end: f64,
    /// True when the horizon cut the run short (some work was left).
    pub cut_short: bool,
    /// Slot-time used / (slots × end).
    pub utilisation: f64,
    /// Extended-delay events (one per pair moved).
    pub extended_delay_events: u64,
    /// Requests moved by extended delays (a request delayed twice counts twice).
    pub extended_delayed_requests: u64,
    /// Loop iterations (distinct event instants); a measure of simulation work.
    pub steps: u64,
    /// Interval of [`Report::series`] in seconds (it doubles if the run is long).
    pub sample_every: Option<f64>,
    pub series: Vec<Sample>,
    pub trace: Vec<Dispatched>,
}

fn secs(t: Nanos) -> f64 {
    t as f64 / NANOS_PER_SEC as f64
}

/// A duration in a unit that suits it: `850µs`, `12.3ms`, `4.20s`, `5.00min`, `2.10h`.
pub fn format_duration(s: f64) -> String {
    if !s.is_finite() {
        return "-".to_string();
    }
    if s == 0.0 {
        "0".to_string()
    } else if s < 1e-3 {
        format!("{:.0}µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1}ms", s * 1e3)
    } else if s < 60.0 {
        format!("{s:.2}s")
    } else if s < 3600.0 {
        format!("{:.2}min", s / 60.0)
    } else {
        format!("{:.2}h", s / 3600.0)
    }
}

impl Report {
    /// The row of org `name`.
    pub fn org(&self, name: &str) -> Option<&OrgRow> {
        self.orgs.iter().find(|r| r.org == name)
    }

    /// The row of group `name`.
    pub fn group(&self, name: &str) -> Option<&OrgRow> {
        self.groups.iter().find(|r| r.org == name)
    }

    /// A readable table: a summary line, then one row per org (or per group when
    /// there are more than 30 orgs).
    pub fn table(&self) -> String {
        let rows = if self.orgs.len() > 30 { &self.groups } else { &self.orgs };
        let mut out = self.summary();
        out.push('\n');
        out.push_str(&render_rows(rows.iter().map(|r| (r, None))));
        out
    }

    /// One line: scenario, policy, makespan, utilisation, extended delays.
    pub fn summary(&self) -> String {
        let stopped = if self.cut_short {
            format!(", stopped at {} with work left", format_duration(self.end))
        } else {
            String::new()
        };
        format!(
            "{} under {}: {} requests on {} slots, {} completed; last completion {}{stopped}, utilisation {:.1}%, extended delays {} ({} requests moved)",
            self.scenario,
            self.policy,
            self.requests,
            self.slots,
            self.completed,
            format_duration(self.makespan),
            self.utilisation * 100.0,
            self.extended_delay_events,
            self.extended_delayed_requests,
        )
    }

    /// Reports of the same workload side by side: per group, one line per policy.
    pub fn side_by_side(reports: &[Report]) -> String {
        let mut out = String::new();
        for r in reports {
            out.push_str(&r.summary());
            out.push('\n');
        }
        let Some(first) = reports.first() else {
            return out;
        };
        let mut lines = Vec::new();
        for g in &first.groups {
            for r in reports {
                if let Some(row) = r.group(&g.org) {
                    lines.push((row, Some(r.policy.as_str())));
                }
            }
        }
        out.push_str(&render_rows(lines.into_iter()));
        out
    }
}

fn render_rows<'a>(rows: impl Iterator<Item = (&'a OrgRow, Option<&'a str>)>) -> String {
    let rows: Vec<_> = rows.collect();
    let with_policy = rows.iter().any(|(_, p)| p.is_some());
    let mut header = vec!["org"];
    if with_policy {
        header.push("policy");
    }
    header.extend(["n", "run", "p50", "p95", "p99", "max", "done at", "slot-time", "ext.delayed"]);
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for (r, policy) in &rows {
        let name = if r.orgs > 1 { format!("{} (×{})", r.org, r.orgs) } else { r.org.clone() };
        let mut line = vec![name];
        if let Some(p) = policy {
            line.push(p.to_string());
        } else if with_policy {
            line.push(String::new());
        }
        line.extend([
            r.requests.to_string(),
            r.dispatched.to_string(),
            format_duration(r.wait_p50),
            format_duration(r.wait_p95),
            format_duration(r.wait_p99),
            format_duration(r.wait_max),
            r.done_at.map_or_else(|| "not done".to_string(), format_duration),
            format_duration(r.slot_time),
            r.extended_delays.to_string(),
        ]);
        cells.push(line);
    }
    let widths: Vec<usize> =
        (0..cells[0].len()).map(|c| cells.iter().map(|l| l[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for (i, line) in cells.iter().enumerate() {
        let parts: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(c, s)| {
                let pad = widths[c] - s.chars().count();
                if c == 0 || (with_policy && c == 1) {
                    format!("{s}{}", " ".repeat(pad))
                } else {
                    format!("{}{s}", " ".repeat(pad))
                }
            })
            .collect();
        let _ = writeln!(out, "{}", parts.join(" | ").trim_end());
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
            let _ = writeln!(out, "{}", rule.join("-|-"));
        }
    }
    out
}

// ----- engines: the dispatcher, or a plain FIFO --------------------------------------

/// A first dispatch or re-dispatch, as the loop needs it.
#[derive(Debug, Clone, Copy)]
struct Start {
    /// What to hand back on completion (a lease, or a FIFO pair index).
    handle: u64,
    id: u64,
    attempt: u32,
}

/// What the event loop drives: the real dispatcher, or the FIFO baseline.
trait Engine {
    fn enqueue(&mut self, batch: &[NewRequest]) -> CoreResult<()>;
    fn dispatch(&mut self, out: &mut Vec<Start>);
    fn complete(&mut self, handle: u64) -> CoreResult<()>;
    fn next_wakeup(&mut self) -> Option<Nanos>;
    /// Reports extended delays since the last call as `(org index, requests moved)`.
    fn drain_delays(&mut self, sink: &mut dyn FnMut(u32, u32));
}

struct DispatcherEngine {
    dispatcher: Dispatcher,
}

impl Engine for DispatcherEngine {
    fn enqueue(&mut self, batch: &[NewRequest]) -> CoreResult<()> {
        self.dispatcher.enqueue_many(batch)
    }

    fn dispatch(&mut self, out: &mut Vec<Start>) {
        out.extend(self.dispatcher.dispatch(usize::MAX).into_iter().map(|g| Start {
            handle: g.lease,
            id: g.id,
            attempt: g.attempt,
        }));
    }

    fn complete(&mut self, handle: u64) -> CoreResult<()> {
        self.dispatcher.ack(handle).map(|_| ())
    }

    fn next_wakeup(&mut self) -> Option<Nanos> {
        self.dispatcher.next_wakeup()
    }

    fn drain_delays(&mut self, sink: &mut dyn FnMut(u32, u32)) {
        for event in self.dispatcher.take_events() {
            if let Event::ExtendedDelay { org, count, .. } = event {
                sink(org.0, count);
            }
        }
    }
}

/// Which plain first-come-first-served queue [`simulate_fifo`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// One FIFO honouring the workload's per-(org, kind) caps and per-kind slot
    /// limits: a free slot takes the oldest request whose pair is under cap, however
    /// deep in the queue (no peek-set window, no extended delay, no weights). This is
    /// the fair comparison for work conservation: the same limits, no fairness.
    SameCaps,
    /// One FIFO with no caps at all: a free slot takes the oldest request.
    Uncapped,
}

impl Baseline {
    /// The name reports carry.
    pub fn name(self) -> &'static str {
        match self {
            Baseline::SameCaps => "fifo",
            Baseline::Uncapped => "fifo_uncapped",
        }
    }
}

struct FifoPair {
    line: VecDeque<u64>,
    running: u32,
    cap: u32,
    kind: usize,
    /// Filed in `open[kind]` under its head id.
    filed: Option<u64>,
}

struct FifoEngine {
    slots: u32,
    kind_slots: [Option<u32>; KINDS],
    running: u32,
    kind_running: [u32; KINDS],
    pairs: Vec<FifoPair>,
    /// Pair index per (org, kind), `u32::MAX` until first used.
    org_pairs: Vec<[u32; KINDS]>,
    caps: Vec<[u32; KINDS]>,
    /// Per kind: backlogged pairs under cap, by head id (ids are arrival order).
    open: [BTreeSet<(u64, u32)>; KINDS],
}

impl FifoEngine {
    fn new(w: &Workload, baseline: Baseline) -> Self {
        let caps = w
            .orgs
            .iter()
            .map(|spec| {
                let mut caps = [u32::MAX; KINDS];
                if baseline == Baseline::SameCaps {
                    caps = w.config.default_limits.map(|l| l.cap);
                    for (kind, l) in &spec.limits {
                        caps[kind.index()] = l.cap;
                    }
                }
                caps
            })
            .collect();
        FifoEngine {
            slots: w.config.slots,
            kind_slots: if baseline == Baseline::SameCaps { w.config.kind_slots } else { [None; KINDS] },
            running: 0,
            kind_running: [0; KINDS],
            pairs: Vec::new(),
            org_pairs: vec![[u32::MAX; KINDS]; w.orgs.len()],
            caps,
            open: Default::default(),
        }
    }

    fn refile(&mut self, p: u32) {
        let pair = &mut self.pairs[p as usize];
        let want = if pair.running < pair.cap { pair.line.front().copied() } else { None };
        if want == pair.filed {
            return;
        }
        if let Some(head) = pair.filed {
            self.open[pair.kind].remove(&(head, p));
        }
        if let Some(head) = want {
            self.open[pair.kind].insert((head, p));
        }
        pair.filed = want;
    }
}

impl Engine for FifoEngine {
    fn enqueue(&mut self, batch: &[NewRequest]) -> CoreResult<()> {
        for r in batch {
            let (org, kind) = (r.org.0 as usize, r.kind.index());
            let mut p = self.org_pairs[org][kind];
            if p == u32::MAX {
                p = self.pairs.len() as u32;
                self.pairs.push(FifoPair {
                    line: VecDeque::new(),
                    running: 0,
                    cap: self.caps[org][kind],
                    kind,
                    filed: None,
                });
                self.org_pairs[org][kind] = p;
            }
            self.pairs[p as usize].line.push_back(r.id);
            self.refile(p);
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<Start>) {
        while self.running < self.slots {
            let best = (0..KINDS)
                .filter(|&k| self.kind_slots[k].is_none_or(|limit| self.kind_running[k] < limit))
                .filter_map(|k| self.open[k].first().copied())
                .min();
            let Some((_, p)) = best else { break };
            let pair = &mut self.pairs[p as usize];
            let id = pair.line.pop_front().expect("an open pair has a request");
            pair.running += 1;
            self.running += 1;
            self.kind_running[pair.kind] += 1;
            self.refile(p);
            out.push(Start { handle: u64::from(p), id, attempt: 1 });
        }
    }

    fn complete(&mut self, handle: u64) -> CoreResult<()> {
        let p = handle as u32;
        let pair = &mut self.pairs[p as usize];
        pair.running -= 1;
        self.running -= 1;
        self.kind_running[pair.kind] -= 1;
        self.refile(p);
        Ok(())
    }

    fn next_wakeup(&mut self) -> Option<Nanos> {
        None
    }

    fn drain_delays(&mut self, _sink: &mut dyn FnMut(u32, u32)) {}
}

// ----- the event loop ----------------------------------------------------------------

/// Runs `workload` on the real dispatcher under `workload.config.policy`.
pub fn simulate(workload: &Workload) -> CoreResult<Report> {
    workload.validate()?;
    let clock = VirtualClock::new(0);
    let config = Config { lease: SIM_LEASE, ..workload.config.clone() };
    let mut dispatcher = Dispatcher::new(config, Arc::new(clock.clone()))?;
    for (i, spec) in workload.orgs.iter().enumerate() {
        let org = dispatcher.org(&spec.name)?;
        if org != OrgId(i as u32) {
            return Err(CoreError::invalid("org name", &spec.name, "names unique within a workload"));
        }
        for &(kind, limits) in &spec.limits {
            dispatcher.set_limits(org, kind, limits)?;
        }
    }
    let mut engine = DispatcherEngine { dispatcher };
    run(workload, &mut engine, &clock, workload.config.policy.name())
}

/// Runs `workload` on a plain FIFO queue (see [`Baseline`]) with the same slots.
pub fn simulate_fifo(workload: &Workload, baseline: Baseline) -> CoreResult<Report> {
    workload.validate()?;
    let clock = VirtualClock::new(0);
    let mut engine = FifoEngine::new(workload, baseline);
    run(workload, &mut engine, &clock, baseline.name())
}

/// Runs `workload` under `fair_share`, `peek_set` and the same-caps FIFO, in that order.
pub fn compare(workload: &Workload) -> CoreResult<Vec<Report>> {
    Ok(vec![
        simulate(&workload.clone().with_policy(PolicyKind::FairShare))?,
        simulate(&workload.clone().with_policy(PolicyKind::PeekSet))?,
        simulate_fifo(workload, Baseline::SameCaps)?,
    ])
}

/// Per-org accumulators of a run.
struct Tally {
    waits: Vec<Vec<Nanos>>,
    requests: Vec<u64>,
    completed: Vec<u64>,
    done_at: Vec<Nanos>,
    slot_time: Vec<Nanos>,
    pending: Vec<u32>,
    extended: Vec<u64>,
}

struct Sampler {
    every: Option<Nanos>,
    next: Nanos,
    samples: Vec<Sample>,
}

impl Sampler {
    /// Records the state for every sample time before `t`.
    fn until(&mut self, t: Nanos, pending: &[u32]) {
        let Some(mut every) = self.every else { return };
        while self.next < t {
            self.samples.push(Sample { at: secs(self.next), pending: pending.to_vec() });
            if self.samples.len() == MAX_SAMPLES {
                let mut index = 0;
                self.samples.retain(|_| {
                    index += 1;
                    index % 2 == 1
                });
                every *= 2;
                self.every = Some(every);
            }
            self.next = self.samples.len() as u64 * every;
        }
    }
}

fn run(w: &Workload, engine: &mut dyn Engine, clock: &VirtualClock, policy: &str) -> CoreResult<Report> {
    let n_orgs = w.orgs.len();
    let end = w.horizon.unwrap_or(Nanos::MAX);
    let mut tally = Tally {
        waits: vec![Vec::new(); n_orgs],
        requests: vec![0; n_orgs],
        completed: vec![0; n_orgs],
        done_at: vec![0; n_orgs],
        slot_time: vec![0; n_orgs],
        pending: vec![0; n_orgs],
        extended: vec![0; n_orgs],
    };
    for a in w.arrivals.iter().take_while(|a| a.at <= end) {
        tally.requests[a.org as usize] += 1;
    }
    let mut sampler = Sampler { every: w.sample_every, next: 0, samples: Vec::new() };
    let mut trace = Vec::new();
    // (completion time, sequence, handle, request id); the sequence keeps ties FIFO.
    let mut completions: BinaryHeap<Reverse<(Nanos, u64, u64, u64)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut next_arrival = 0usize;
    let mut batch: Vec<NewRequest> = Vec::new();
    let mut starts: Vec<Start> = Vec::new();
    let (mut now, mut makespan, mut steps) = (0, 0, 0u64);
    let (mut dispatched, mut completed, mut busy) = (0u64, 0u64, 0u128);
    let (mut delay_events, mut delayed_requests) = (0u64, 0u64);
    let mut cut = false;

    loop {
        let mut t = Nanos::MAX;
        if let Some(a) = w.arrivals.get(next_arrival) {
            t = t.min(a.at);
        }
        if let Some(Reverse((at, ..))) = completions.peek() {
            t = t.min(*at);
        }
        // Anything due at or before `now` was consumed by the last dispatch.
        if let Some(wake) = engine.next_wakeup().filter(|&wake| wake > now) {
            t = t.min(wake);
        }
        if t == Nanos::MAX {
            break;
        }
        if t > end {
            cut = true;
            break;
        }
        sampler.until(t, &tally.pending);
        now = now.max(t);
        clock.set(now);
        steps += 1;

        while let Some(&Reverse((at, _, handle, id))) = completions.peek() {
            if at > now {
                break;
            }
            completions.pop();
            engine.complete(handle)?;
            let org = w.arrivals[id as usize].org as usize;
            tally.completed[org] += 1;
            tally.done_at[org] = at;
            completed += 1;
            makespan = at;
        }

        while let Some(a) = w.arrivals.get(next_arrival) {
            if a.at > now {
                break;
            }
            batch.push(NewRequest { id: next_arrival as u64, org: OrgId(a.org), kind: a.kind, run_at: None });
            tally.pending[a.org as usize] += 1;
            next_arrival += 1;
            if batch.len() == ENQUEUE_CHUNK {
                engine.enqueue(&batch)?;
                batch.clear();
            }
        }
        if !batch.is_empty() {
            engine.enqueue(&batch)?;
            batch.clear();
        }

        starts.clear();
        engine.dispatch(&mut starts);
        for s in &starts {
            let a = w.arrivals[s.id as usize];
            let org = a.org as usize;
            if s.attempt == 1 {
                tally.waits[org].push(now - a.at);
                tally.pending[org] -= 1;
                dispatched += 1;
                if w.trace {
                    trace.push(Dispatched { at: secs(now), id: s.id, org: a.org });
                }
            }
            let held = a.service.min(end - now);
            tally.slot_time[org] += held;
            busy += u128::from(held);
            completions.push(Reverse((now.saturating_add(a.service), seq, s.handle, s.id)));
            seq += 1;
        }
        engine.drain_delays(&mut |org, count| {
            tally.extended[org as usize] += u64::from(count);
            delay_events += 1;
            delayed_requests += u64::from(count);
        });
    }

    // A run that drained before its horizon ends at its last event.
    let stop = if cut { end } else { now };
    if let Some(every) = sampler.every {
        sampler.until(stop.saturating_add(every), &tally.pending);
    }
    let requests: u64 = tally.requests.iter().sum();
    let groups = group_rows(w, &mut tally);
    let orgs: Vec<OrgRow> = (0..n_orgs)
        .map(|i| {
            let mut waits = std::mem::take(&mut tally.waits[i]);
            row(w.orgs[i].name.clone(), 1, &mut waits, &tally, &[i])
        })
        .collect();
    let utilisation = if stop == 0 { 0.0 } else { busy as f64 / (f64::from(w.config.slots) * stop as f64) };
    Ok(Report {
        scenario: w.name.clone(),
        policy: policy.to_string(),
        slots: w.config.slots,
        orgs,
        groups,
        requests,
        dispatched,
        completed,
        makespan: secs(makespan),
        end: secs(stop),
        cut_short: cut,
        utilisation,
        extended_delay_events: delay_events,
        extended_delayed_requests: delayed_requests,
        steps,
        sample_every: sampler.every.map(secs),
        series: sampler.samples,
        trace,
    })
}

/// One row per group of orgs, in order of first appearance. Sorts every org's waits.
fn group_rows(w: &Workload, tally: &mut Tally) -> Vec<OrgRow> {
    let mut names: Vec<&str> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (i, spec) in w.orgs.iter().enumerate() {
        match names.iter().position(|&g| g == spec.group) {
            Some(g) => members[g].push(i),
            None => {
                names.push(&spec.group);
                members.push(vec![i]);
            }
        }
    }
    names
        .iter()
        .zip(&members)
        .map(|(name, m)| {
            let mut waits: Vec<Nanos> = m.iter().flat_map(|&i| tally.waits[i].iter().copied()).collect();
            row(name.to_string(), m.len(), &mut waits, tally, m)
        })
        .collect()
}

/// The nearest-rank percentile of sorted `waits`.
fn percentile(sorted: &[Nanos], p: f64) -> Nanos {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A row over the orgs `members`, whose waits are concatenated in `waits`.
fn row(name: String, orgs: usize, waits: &mut [Nanos], tally: &Tally, members: &[usize]) -> OrgRow {
    waits.sort_unstable();
    let total: u128 = waits.iter().map(|&w| u128::from(w)).sum();
    let requests: u64 = members.iter().map(|&i| tally.requests[i]).sum();
    let completed: u64 = members.iter().map(|&i| tally.completed[i]).sum();
    let done_at = (completed == requests).then(|| secs(members.iter().map(|&i| tally.done_at[i]).max().unwrap_or(0)));
    OrgRow {
        org: name,
        orgs,
        requests,
        dispatched: waits.len() as u64,
        wait_mean: if waits.is_empty() { 0.0 } else { total as f64 / waits.len() as f64 / NANOS_PER_SEC as f64 },
        wait_p50: secs(percentile(waits, 0.50)),
        wait_p95: secs(percentile(waits, 0.95)),
        wait_p99: secs(percentile(waits, 0.99)),
        wait_max: secs(waits.last().copied().unwrap_or(0)),
        done_at,
        slot_time: members.iter().map(|&i| secs(tally.slot_time[i])).sum(),
        extended_delays: members.iter().map(|&i| tally.extended[i]).sum(),
    }
}

// ----- scenarios ---------------------------------------------------------------------

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
    let future = |org| Arrival { at: 0, service, org, kind: Kind::Future };
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
        arrivals.push(Arrival { at: 0, service: draw_service(&mut rng), org: 0, kind: Kind::Future });
    }
    let span = (p.flood as u128 * u128::from(service) / u128::from(p.cap.max(1))) as Nanos;
    let mut quiet = Vec::new();
    for q in 0..p.quiet_orgs {
        let mut at = rng.between(0, p.quiet_gap.saturating_sub(1));
        while at < span {
            quiet.push(Arrival { at, service: draw_service(&mut rng), org: q as u32 + 1, kind: Kind::Future });
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
            arrivals.push(Arrival { at: 0, service: short, org: 0, kind: Kind::Future });
        }
        if i < long_n {
            arrivals.push(Arrival { at: 0, service: long, org: 1, kind: Kind::Future });
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
        arrivals.push(Arrival { at: at as Nanos, service: rng.between(8 * MS, 12 * MS), org, kind: Kind::Future });
    }
    let specs = (0..orgs).map(|i| OrgSpec::new(format!("org-{i:05}")).in_group("all")).collect();
    workload("many-orgs", reference_config(PolicyKind::FairShare, slots, 2000), specs, arrivals)
}

/// Options of [`run_scenario`]; the defaults are the documented scenario values.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioOptions {
    /// `noisy`: the flood size (default 100,000).
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
pub const SCENARIOS: [&str; 5] = ["seed", "seed-extended", "noisy", "two-orgs", "weighted"];

/// The workload of scenario `name` (one of [`SCENARIOS`]) under `policy`.
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
