//! Search results.

/// One search result: a row of the searched collection and its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Row number in the collection (its external id is in the collection's id list).
    pub doc: u32,
    /// Similarity; higher is better.
    pub score: f32,
}

/// The `top` highest of `scores` (one per row), best first, ties by lower row.
///
/// Selection is O(n) (`select_nth_unstable`) plus O(top·log top) for the final sort.
pub fn top_k(scores: &[f32], top: usize) -> Vec<Hit> {
    super::topk::top_indices(scores, top)
        .into_iter()
        .map(|i| Hit {
            doc: i,
            score: scores[i as usize],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_score_then_row() {
        let hits = top_k(&[0.5, 0.9, 0.5, 0.1, 0.9], 3);
        let rows: Vec<u32> = hits.iter().map(|h| h.doc).collect();
        assert_eq!(rows, [1, 4, 0]);
        assert_eq!(top_k(&[1.0], 5).len(), 1);
        assert!(top_k(&[], 5).is_empty());
    }
}
