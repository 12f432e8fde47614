//! The discrete-event loop: advance the virtual clock to the next arrival, completion
//! or wake-up; ack what completes, enqueue what arrives, dispatch; schedule each
//! grant's completion in a heap whose ties break on a sequence number.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::clock::{Nanos, VirtualClock};
use crate::dispatcher::NewRequest;
use crate::error::CoreResult;
use crate::request::OrgId;

use super::engine::{Engine, Start};
use super::report::{secs, Dispatched, OrgRow, Report};
use super::series::Sampler;
use super::tally::{group_rows, key_rows, row, Tally};
use super::Workload;

/// Requests handed to `enqueue_many` at once when a burst arrives at one instant.
const ENQUEUE_CHUNK: usize = 1 << 16;

/// Runs `w` on `engine`, whose clock is `clock`, and reports under the name `policy`.
pub(super) fn run(w: &Workload, engine: &mut dyn Engine, clock: &VirtualClock, policy: &str) -> CoreResult<Report> {
    let n_orgs = w.orgs.len();
    let end = w.horizon.unwrap_or(Nanos::MAX);
    let mut tally = Tally::new(n_orgs);
    for a in w.arrivals.iter().take_while(|a| a.at <= end) {
        tally.requests[a.org as usize] += 1;
        if a.key > 0 {
            tally.keys.entry((a.org, a.key)).or_default().requests += 1;
        }
    }
    let mut sampler = Sampler::new(w.sample_every);
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
                engine.enqueue(&batch, &w.arrivals)?;
                batch.clear();
            }
        }
        if !batch.is_empty() {
            engine.enqueue(&batch, &w.arrivals)?;
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
            if a.key > 0 {
                let k = tally.keys.entry((a.org, a.key)).or_default();
                k.slot_time += held;
                if s.attempt == 1 {
                    k.waits.push(now - a.at);
                }
            }
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
    let keys = key_rows(w, &mut tally);
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
        keys,
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
