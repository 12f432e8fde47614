//! `peek_set`: the reference platform's flow control.
//!
//! One FIFO of ready requests. A free slot takes the first request whose org is under
//! cap for its kind (and whose kind is under its global slot limit) provided it lies
//! within the first `size` requests — the peek set. When every request in the peek set
//! belongs to a pair at cap, the dispatcher moves them to the back with their kind's
//! extended delay.
//!
//! Nothing here walks the queue: the first eligible request is the smallest head of the
//! open lines (pairs are keyed by head sequence number), and whether it lies in the
//! peek set is a rank query on [`SeqIndex`], a Fenwick tree over live sequence numbers.

use crate::limits::PairLimits;
use crate::request::KINDS;

use super::{Decision, Key, Lines, Tier};

#[derive(Debug)]
pub(crate) struct PeekSet {
    size: u32,
    /// The sequence numbers of every ready request: the global FIFO.
    order: SeqIndex,
}

/// The line a pair stands in: under its cap or at it (there is no reserved minimum).
pub(crate) fn tier(running: u32, limits: &PairLimits) -> Tier {
    if running < limits.cap {
        Tier::Open
    } else {
        Tier::Capped
    }
}

/// The sort key of a pair under `peek_set`: the sequence number of its head request.
pub(crate) fn key(head_seq: u64, pair: u32) -> Key {
    (0, head_seq, pair)
}

impl PeekSet {
    pub fn new(size: u32) -> Self {
        PeekSet { size, order: SeqIndex::default() }
    }

    /// A request joined the back of the queue.
    pub fn on_queued(&mut self, seq: u64) {
        self.order.insert(seq);
    }

    /// A ready request left the queue.
    pub fn on_unqueued(&mut self, seq: u64) {
        self.order.remove(seq);
    }

    /// How many ready requests stand before `seq`.
    pub fn ahead(&self, seq: u64) -> usize {
        self.order.rank(seq)
    }

    /// How many requests are ready.
    pub fn queued(&self) -> usize {
        self.order.len()
    }

    /// True when dead sequence numbers dominate the index; see [`SeqIndex::wants_compaction`].
    pub fn wants_renumber(&self) -> bool {
        self.order.wants_compaction()
    }

    /// The ready requests were renumbered `0..count`.
    pub fn on_renumbered(&mut self, count: u64) {
        let mut order = SeqIndex::starting_at(0);
        for seq in 0..count {
            order.insert(seq);
        }
        self.order = order;
    }

    /// Serve the first eligible request if it lies in the peek set; otherwise wait,
    /// or move the peek set back when every request in it belongs to a capped pair.
    pub fn decide(&self, lines: &Lines, open: [bool; KINDS]) -> Decision {
        if self.order.is_empty() {
            return Decision::Wait;
        }
        if let Some(key) = lines.first(Tier::Open, open) {
            if self.order.rank(key.1) < self.size as usize {
                return Decision::Serve(key.2);
            }
        }
        let boundary = self.order.kth(self.order.len().min(self.size as usize) - 1);
        // A request in the peek set that is under cap but whose kind is at its global
        // limit is not "an org at cap": the peek set is then left where it is.
        let under_cap_in_window = lines.first(Tier::Open, [true; KINDS]).is_some_and(|key| key.1 <= boundary);
        if under_cap_in_window {
            Decision::Wait
        } else {
            Decision::ExtendedDelay { boundary }
        }
    }
}

/// The set of live ready sequence numbers, with rank and select in O(log n).
///
/// One bit per sequence number since `base`, and a Fenwick tree of per-word counts.
/// Sequence numbers are handed out in increasing order and never come back, so the
/// bit vector only grows at the end; [`SeqIndex::wants_compaction`] tells the owner
/// when dead space dominates and it is time to renumber.
#[derive(Debug, Default)]
pub(crate) struct SeqIndex {
    base: u64,
    words: Vec<u64>,
    /// Fenwick tree over `words` popcounts, 1-based (`tree[0]` unused).
    tree: Vec<u32>,
    live: usize,
}

impl SeqIndex {
    /// An empty index whose next sequence number is `base`.
    pub fn starting_at(base: u64) -> Self {
        SeqIndex { base, words: Vec::new(), tree: vec![0], live: 0 }
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Adds `seq`, which must be at or past every sequence number added before.
    pub fn insert(&mut self, seq: u64) {
        if self.tree.is_empty() {
            self.tree.push(0);
        }
        let offset = seq - self.base;
        let word = (offset / 64) as usize;
        while self.words.len() <= word {
            self.push_word();
        }
        debug_assert_eq!(self.words[word] & (1 << (offset % 64)), 0);
        self.words[word] |= 1 << (offset % 64);
        self.add(word, 1);
        self.live += 1;
    }

    pub fn remove(&mut self, seq: u64) {
        let offset = seq - self.base;
        let word = (offset / 64) as usize;
        debug_assert_ne!(self.words[word] & (1 << (offset % 64)), 0);
        self.words[word] &= !(1 << (offset % 64));
        self.add(word, -1);
        self.live -= 1;
    }

    /// How many live sequence numbers are smaller than `seq`.
    pub fn rank(&self, seq: u64) -> usize {
        let offset = seq - self.base;
        let word = (offset / 64) as usize;
        let below = self.words.get(word).map_or(0, |w| (w & ((1u64 << (offset % 64)) - 1)).count_ones());
        self.prefix(word) + below as usize
    }

    /// The `k`-th smallest live sequence number (0-based); `k < len()`.
    pub fn kth(&self, k: usize) -> u64 {
        debug_assert!(k < self.live);
        let mut pos = 0;
        let mut remaining = k as u32;
        let mut step = (self.tree.len() - 1).next_power_of_two();
        while step > 0 {
            let next = pos + step;
            if next < self.tree.len() && self.tree[next] <= remaining {
                pos = next;
                remaining -= self.tree[next];
            }
            step /= 2;
        }
        // `pos` words hold at most k live entries; the k-th is in word `pos`.
        let mut bits = self.words[pos];
        for _ in 0..remaining {
            bits &= bits - 1;
        }
        self.base + pos as u64 * 64 + u64::from(bits.trailing_zeros())
    }

    /// True when the index spans far more sequence numbers than it holds.
    pub fn wants_compaction(&self) -> bool {
        self.words.len() * 64 > 4 * self.live + (1 << 16)
    }

    /// Sum of popcounts of words `0..word`.
    fn prefix(&self, word: usize) -> usize {
        let mut i = word.min(self.words.len());
        let mut sum = 0usize;
        while i > 0 {
            sum += self.tree[i] as usize;
            i &= i - 1;
        }
        sum
    }

    fn add(&mut self, word: usize, delta: i32) {
        let mut i = word + 1;
        while i < self.tree.len() {
            self.tree[i] = self.tree[i].wrapping_add_signed(delta);
            i += i & i.wrapping_neg();
        }
    }

    /// Appends an empty word; its Fenwick node covers earlier words too.
    fn push_word(&mut self) {
        self.words.push(0);
        let i = self.words.len();
        let low = i & i.wrapping_neg();
        let covered = self.prefix(i - 1) - self.prefix(i - low);
        self.tree.push(covered as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::SeqIndex;

    #[test]
    fn rank_and_kth_agree_with_a_sorted_vector() {
        let mut index = SeqIndex::starting_at(10);
        let mut model: Vec<u64> = Vec::new();
        for seq in 10..2_000u64 {
            index.insert(seq);
            model.push(seq);
            if seq % 3 == 0 {
                let victim = model.remove((seq as usize * 7) % model.len());
                index.remove(victim);
            }
        }
        assert_eq!(index.len(), model.len());
        for (k, &seq) in model.iter().enumerate() {
            assert_eq!(index.kth(k), seq);
            assert_eq!(index.rank(seq), k);
        }
    }
}
