//! Dense exact search: the quality reference every sparse engine is measured against.
//!
//! A flat scan computes one d-dimensional dot product per document: N·d multiply-adds and
//! N·d·4 bytes read per query. It is exact, so its top-k is the ground truth for recall.

use ndarray::{Array2, ArrayView1};
use rayon::prelude::*;

use crate::base::{dot, top_k, Hit};

/// Exact inner-product search over a matrix of document vectors (rows).
pub struct FlatIndex {
    vectors: Array2<f32>,
}

impl FlatIndex {
    /// Wraps an N × d matrix; the matrix is made C-contiguous once.
    pub fn new(vectors: Array2<f32>) -> Self {
        let vectors = if vectors.is_standard_layout() {
            vectors
        } else {
            vectors.as_standard_layout().to_owned()
        };
        Self { vectors }
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.vectors.ncols()
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.vectors.nrows()
    }

    /// Whether the index holds no documents.
    pub fn is_empty(&self) -> bool {
        self.vectors.nrows() == 0
    }

    /// Bytes of the stored vectors.
    pub fn bytes(&self) -> usize {
        self.vectors.len() * std::mem::size_of::<f32>()
    }

    /// The `top` documents with the largest inner product with `query`.
    pub fn search(&self, query: ArrayView1<f32>, top: usize) -> Vec<Hit> {
        assert_eq!(query.len(), self.dim(), "query dimension");
        let q = query
            .as_slice()
            .map(<[f32]>::to_vec)
            .unwrap_or_else(|| query.to_vec());
        let scores: Vec<f32> = self
            .vectors
            .rows()
            .into_iter()
            .map(|row| dot(&q, row.as_slice().expect("standard layout")))
            .collect();
        top_k(&scores, top)
    }

    /// Searches every row of `queries` on all threads of the current rayon pool.
    pub fn search_batch(&self, queries: &Array2<f32>, top: usize) -> Vec<Vec<Hit>> {
        (0..queries.nrows())
            .into_par_iter()
            .map(|i| self.search(queries.row(i), top))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive_sum_for_all_tails() {
        for n in [0, 1, 7, 8, 9, 17, 384] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (*x as f64) * (*y as f64))
                .sum();
            assert!((dot(&a, &b) as f64 - naive).abs() < 1e-4, "n={n}");
        }
    }

    #[test]
    fn flat_search_finds_the_best_rows() {
        let docs = Array2::from_shape_vec((3, 2), vec![1.0, 0.0, 0.0, 1.0, 0.7, 0.7]).unwrap();
        let idx = FlatIndex::new(docs);
        let q = Array2::from_shape_vec((1, 2), vec![0.0, 1.0]).unwrap();
        let hits = &idx.search_batch(&q, 2)[0];
        assert_eq!(hits.iter().map(|h| h.doc).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(hits[0].score, 1.0);
    }
}
