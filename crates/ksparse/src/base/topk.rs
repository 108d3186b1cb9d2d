//! Top-k selection: the k largest scores of a collection, ties to the lower index — the
//! order every search path and every scorer agrees on.

/// Indices of the `k` largest values, ties broken by the lower index, in descending
/// order of value. For k much smaller than the input (search results), one pass with a
/// k-element min-heap: most values are rejected by one comparison with the heap's worst,
/// and nothing of the input's size is allocated. Otherwise O(len) selection plus
/// O(k log k) sorting.
pub fn top_indices(values: &[f32], k: usize) -> Vec<u32> {
    let k = k.min(values.len());
    if k == 0 {
        return Vec::new();
    }
    let better = |a: &u32, b: &u32| {
        values[*b as usize]
            .total_cmp(&values[*a as usize])
            .then(a.cmp(b))
    };
    if k * 16 <= values.len() {
        // The collector hands its k back already in this order.
        let mut best = TopK::new(k);
        best.offer_slice(values, 0);
        return best.into_sorted().into_iter().map(|(_, i)| i).collect();
    }
    let mut idx: Vec<u32> = (0..values.len() as u32).collect();
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, better);
        idx.truncate(k);
    }
    idx.sort_unstable_by(better);
    idx
}

/// A candidate of [`TopK`]; greater = better (higher value, then lower index).
#[derive(Clone, PartialEq)]
struct Candidate(f32, u32);

impl Eq for Candidate {}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

/// The `k` best (value, index) pairs offered so far, in any offering order: higher value
/// first (f32 total order), ties to the lower index. A k-element min-heap, so an offer
/// below the current worst costs one comparison.
#[derive(Clone)]
pub struct TopK {
    k: usize,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<Candidate>>,
}

impl TopK {
    /// An empty collector of the `k` best.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            // A hint only: a huge k (a caller's `--top`) must not allocate up front.
            heap: std::collections::BinaryHeap::with_capacity(k.saturating_add(1).min(1 << 16)),
        }
    }

    /// The worst kept value once `k` are kept (a candidate must reach it to enter),
    /// `None` before.
    pub fn threshold(&self) -> Option<f32> {
        (self.heap.len() == self.k)
            .then(|| self.heap.peek().map(|w| w.0 .0))
            .flatten()
    }

    /// Offers `value` for `index`.
    #[inline]
    pub fn offer(&mut self, value: f32, index: u32) {
        let c = Candidate(value, index);
        if self.heap.len() < self.k {
            self.heap.push(std::cmp::Reverse(c));
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if c > worst.0 {
                *worst = std::cmp::Reverse(c);
            }
        }
    }

    /// Offers `values[o]` for index `first + o`, each o. Values are compared 16 at a time
    /// against the worst kept first (a vectorised test): once the collector is full almost
    /// every chunk is below it and is passed over without touching the heap.
    pub fn offer_slice(&mut self, values: &[f32], first: u32) {
        const CHUNK: usize = 16;
        for (c, chunk) in values.chunks(CHUNK).enumerate() {
            if let Some(worst) = self.threshold() {
                // Strictly below the worst in the partial order: cannot enter (a NaN or an
                // equal value takes the exact path below).
                let any_candidate = chunk
                    .iter()
                    .fold(false, |any, &v| any | (v >= worst) | v.is_nan());
                if !any_candidate {
                    continue;
                }
            }
            for (o, &v) in chunk.iter().enumerate() {
                self.offer(v, first + (c * CHUNK + o) as u32);
            }
        }
    }

    /// The kept (value, index) pairs, best first.
    pub fn into_sorted(self) -> Vec<(f32, u32)> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|std::cmp::Reverse(c)| (c.0, c.1))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: a full sort by value (total order) then index.
    fn sorted_top(values: &[f32], k: usize) -> Vec<u32> {
        let mut want: Vec<u32> = (0..values.len() as u32).collect();
        want.sort_by(|a, b| {
            values[*b as usize]
                .total_cmp(&values[*a as usize])
                .then(a.cmp(b))
        });
        want.truncate(k);
        want
    }

    #[test]
    fn heap_and_selection_paths_agree() {
        let values: Vec<f32> = (0..5000).map(|i| ((i * 7919) % 613) as f32 * 0.5).collect();
        for k in [1, 10, 100, 312, 313, 4999, 5000] {
            assert_eq!(top_indices(&values, k), sorted_top(&values, k), "k = {k}");
        }
        // Few distinct values: many ties, ±0.0 and −∞ (deleted documents).
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let pool = [-1.0f32, -0.0, 0.0, 0.5, 2.0, f32::NEG_INFINITY];
        for len in [17usize, 160, 1000, 4099] {
            let values: Vec<f32> = (0..len)
                .map(|_| pool[rng.random_range(0..pool.len())])
                .collect();
            for k in [1usize, 3, 10] {
                assert_eq!(top_indices(&values, k), sorted_top(&values, k), "len {len}");
            }
        }
    }

    #[test]
    fn top_indices_breaks_ties_by_index() {
        assert_eq!(top_indices(&[0.1, 0.9, 0.5, 0.9, -1.0], 3), [1, 3, 2]);
        assert_eq!(top_indices(&[1.0, 2.0], 5), [1, 0]);
        assert!(top_indices(&[1.0], 0).is_empty());
    }
}
