//! Document order inside a segment: similar codes next to each other.
//!
//! Block-max search ([`super::query`]) bounds a whole block of consecutive documents by
//! the per-latent maxima of the block. Those bounds are only tight when the documents of a
//! block share their latents, so a segment stores its documents grouped by similarity:
//! recursive balanced bisection, each split along the direction that separates the two
//! halves' mean codes (a few rounds of 2-means with the halves held at equal size, which
//! converges to the principal direction of the node's codes). Splits fall on block
//! boundaries, so every block is one leaf of the recursion. Deterministic: the same codes
//! give the same order on any number of threads.

use crate::base::SparseCode;

/// 2-means rounds per split.
const ROUNDS: usize = 4;

/// The order to store `codes` in: position → input row. Every run of `leaf` positions
/// starting at a multiple of `leaf` is one cluster of the recursion.
pub fn cluster_order(codes: &[SparseCode], hidden: usize, leaf: usize) -> Vec<u32> {
    let mut rows: Vec<u32> = (0..codes.len() as u32).collect();
    bisect(codes, hidden, leaf.max(1), &mut rows);
    rows
}

/// Orders `rows` in place: split into two halves of whole leaves, recurse.
fn bisect(codes: &[SparseCode], hidden: usize, leaf: usize, rows: &mut [u32]) {
    if rows.len() <= leaf {
        return;
    }
    // The left half takes the larger share of leaves.
    let mid = rows.len().div_ceil(leaf).div_ceil(2) * leaf;
    let mut direction = vec![0.0f32; hidden];
    let mut affinity: Vec<(f32, u32)> = Vec::with_capacity(rows.len());
    for _ in 0..ROUNDS {
        // direction = mean(left) − mean(right); the current halves start as the input
        // order's, and each round re-splits by the projection on it.
        direction.fill(0.0);
        for (i, &r) in rows.iter().enumerate() {
            let sign = if i < mid {
                1.0 / mid as f32
            } else {
                -1.0 / (rows.len() - mid) as f32
            };
            let c = &codes[r as usize];
            for (&j, &v) in c.ids.iter().zip(&c.values) {
                direction[j as usize] += sign * v;
            }
        }
        affinity.clear();
        affinity.extend(rows.iter().map(|&r| {
            let c = &codes[r as usize];
            let s: f32 = c
                .ids
                .iter()
                .zip(&c.values)
                .map(|(&j, &v)| direction[j as usize] * v)
                .sum();
            (s, r)
        }));
        // Highest projection first; ties by row so the order is deterministic.
        affinity.select_nth_unstable_by(mid, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (slot, &(_, r)) in rows.iter_mut().zip(&affinity) {
            *slot = r;
        }
    }
    let (left, right) = rows.split_at_mut(mid);
    rayon::join(
        || bisect(codes, hidden, leaf, left),
        || bisect(codes, hidden, leaf, right),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(ids: &[u32]) -> SparseCode {
        SparseCode {
            ids: ids.to_vec(),
            values: vec![1.0; ids.len()],
        }
    }

    #[test]
    fn order_is_a_permutation_that_groups_similar_codes() {
        // Two topics interleaved in the input: {0, 1, 2} and {5, 6, 7}.
        let codes: Vec<SparseCode> = (0..64)
            .map(|i| {
                if i % 2 == 0 {
                    code(&[0, 1, 2, 10 + i % 3])
                } else {
                    code(&[5, 6, 7, 20 + i % 3])
                }
            })
            .collect();
        let order = cluster_order(&codes, 32, 8);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..64).collect::<Vec<u32>>());
        // Every leaf of 8 holds one topic.
        for leaf in order.chunks(8) {
            let topic = leaf[0] % 2;
            assert!(leaf.iter().all(|r| r % 2 == topic), "{leaf:?}");
        }
        assert_eq!(order, cluster_order(&codes, 32, 8), "deterministic");
    }

    #[test]
    fn small_inputs_keep_their_order() {
        let codes: Vec<SparseCode> = (0..5).map(|i| code(&[i])).collect();
        assert_eq!(cluster_order(&codes, 8, 8), vec![0, 1, 2, 3, 4]);
        assert!(cluster_order(&[], 8, 8).is_empty());
    }
}
