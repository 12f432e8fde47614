//! The pending-per-org time series: a sample every `sample_every` of simulated time,
//! thinned to every other sample (and the interval doubled) when it grows too long.

use crate::clock::Nanos;

use super::report::{secs, Sample};

/// The time series keeps at most this many samples; past it, every other sample is
/// dropped and the interval doubles, so a long run stays bounded.
const MAX_SAMPLES: usize = 4096;

/// Takes the samples of one run.
pub(super) struct Sampler {
    /// The current interval; `None` records nothing.
    pub every: Option<Nanos>,
    next: Nanos,
    pub samples: Vec<Sample>,
}

impl Sampler {
    /// A sampler with interval `every`, whose first sample is at time 0.
    pub fn new(every: Option<Nanos>) -> Self {
        Sampler { every, next: 0, samples: Vec::new() }
    }

    /// Records the state for every sample time before `t`.
    pub fn until(&mut self, t: Nanos, pending: &[u32]) {
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
