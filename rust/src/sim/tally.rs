//! Per-org accumulators of a run and the wait rows made from them: nearest-rank
//! percentiles per org and per group of orgs.

use std::collections::BTreeMap;

use crate::clock::{Nanos, NANOS_PER_SEC};

use super::report::{secs, KeyRow, OrgRow};
use super::Workload;

/// Accumulators of one named key.
#[derive(Default)]
pub(super) struct KeyTally {
    pub requests: u64,
    pub waits: Vec<Nanos>,
    pub slot_time: Nanos,
}

/// Per-org accumulators of a run, indexed like [`Workload::orgs`].
pub(super) struct Tally {
    pub waits: Vec<Vec<Nanos>>,
    pub requests: Vec<u64>,
    pub completed: Vec<u64>,
    pub done_at: Vec<Nanos>,
    pub slot_time: Vec<Nanos>,
    pub pending: Vec<u32>,
    pub extended: Vec<u64>,
    /// Named keys by (org index, key number).
    pub keys: BTreeMap<(u32, u32), KeyTally>,
}

impl Tally {
    /// All zeros for `n_orgs` orgs.
    pub fn new(n_orgs: usize) -> Self {
        Tally {
            waits: vec![Vec::new(); n_orgs],
            requests: vec![0; n_orgs],
            completed: vec![0; n_orgs],
            done_at: vec![0; n_orgs],
            slot_time: vec![0; n_orgs],
            pending: vec![0; n_orgs],
            extended: vec![0; n_orgs],
            keys: BTreeMap::new(),
        }
    }
}

/// One row per group of orgs, in order of first appearance. Sorts every org's waits.
pub(super) fn group_rows(w: &Workload, tally: &mut Tally) -> Vec<OrgRow> {
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
pub(super) fn row(name: String, orgs: usize, waits: &mut [Nanos], tally: &Tally, members: &[usize]) -> OrgRow {
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

/// One row per named key that had requests, by org then key number.
pub(super) fn key_rows(w: &Workload, tally: &mut Tally) -> Vec<KeyRow> {
    std::mem::take(&mut tally.keys)
        .into_iter()
        .map(|((org, key), mut k)| {
            k.waits.sort_unstable();
            let spec = &w.orgs[org as usize];
            KeyRow {
                org: spec.name.clone(),
                key: spec.keys[key as usize - 1].clone(),
                requests: k.requests,
                dispatched: k.waits.len() as u64,
                wait_p50: secs(percentile(&k.waits, 0.50)),
                wait_p99: secs(percentile(&k.waits, 0.99)),
                wait_max: secs(k.waits.last().copied().unwrap_or(0)),
                slot_time: secs(k.slot_time),
            }
        })
        .collect()
}
