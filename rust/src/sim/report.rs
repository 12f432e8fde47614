//! What a run measured: per-org and per-group wait rows, the pending-per-org time
//! series and the dispatch trace, with the text tables `fairqueue simulate` prints.

use std::fmt::Write as _;

use crate::clock::{Nanos, NANOS_PER_SEC};

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

/// Waits of one named concurrency key of an org. Times are in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRow {
    pub org: String,
    pub key: String,
    /// Requests that arrived (before the horizon, if any).
    pub requests: u64,
    /// Requests dispatched at least once.
    pub dispatched: u64,
    pub wait_p50: f64,
    pub wait_p99: f64,
    pub wait_max: f64,
    /// Slot-time its requests held (up to the horizon, if any).
    pub slot_time: f64,
}

/// Pending (arrived, not yet dispatched) requests per org at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Seconds since the start of the run.
    pub at: f64,
    /// Indexed like [`Report::orgs`].
    pub pending: Vec<u32>,
}

/// One dispatch, when [`Workload::trace`](super::Workload::trace) is set.
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
    /// One row per named key that had requests, by org then key.
    pub keys: Vec<KeyRow>,
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

/// `t` in seconds, the unit of every report.
pub(super) fn secs(t: Nanos) -> f64 {
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

    /// The row of key `key` of org `org`.
    pub fn key(&self, org: &str, key: &str) -> Option<&KeyRow> {
        self.keys.iter().find(|r| r.org == org && r.key == key)
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
