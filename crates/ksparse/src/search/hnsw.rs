//! HNSW over dense vectors (the `hnsw_rs` crate), the approximate baseline that sparse
//! retrieval is measured against: fast, but its graph and vectors must sit in memory.

use hnsw_rs::anndists::dist::Distance;
use hnsw_rs::prelude::Hnsw;
use ndarray::Array2;
use rayon::prelude::*;

use super::Hit;
use crate::base::dot;

/// 1 − inner product, clamped at 0 (the crate's own `DistDot` panics when rounding
/// makes a unit vector's self-product exceed 1).
#[derive(Clone, Copy, Default)]
struct InnerProductDistance;

impl Distance<f32> for InnerProductDistance {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

/// An HNSW graph over unit-norm vectors, scored by inner product.
pub struct HnswIndex {
    graph: Hnsw<'static, f32, InnerProductDistance>,
}

impl HnswIndex {
    /// Builds the graph with `m` links per node and `ef_construction` candidates per
    /// insertion, inserting on all threads. Vectors must be unit-norm (inner product =
    /// cosine), as sentence-transformers' normalised models produce.
    pub fn build(vectors: &Array2<f32>, m: usize, ef_construction: usize) -> Self {
        let n = vectors.nrows();
        let layers = 16.min(((n.max(2) as f64).ln() / (m.max(2) as f64).ln()).ceil() as usize + 1);
        let graph = Hnsw::new(m, n, layers, ef_construction, InnerProductDistance);
        let rows = vectors.as_standard_layout();
        let data: Vec<(&[f32], usize)> = rows
            .as_slice()
            .expect("standard layout")
            .par_chunks(vectors.ncols().max(1))
            .enumerate()
            .map(|(i, r)| (r, i))
            .collect();
        graph.parallel_insert_slice(&data);
        Self { graph }
    }

    /// Bytes of the structure: every stored vector (d × f32) and every neighbour link at
    /// every layer as a 4-byte point number, counted from the graph. This is what a compact
    /// layout (hnswlib's, faiss's) holds; `hnsw_rs` keeps more per link (a reference-counted
    /// pointer and the neighbour's distance) and per point (a list header for each possible
    /// layer), so the process holds more than this while the graph lives.
    pub fn bytes(&self) -> usize {
        if self.graph.get_nb_point() == 0 {
            return 0;
        }
        self.graph
            .get_point_indexation()
            .into_iter()
            .map(|p| {
                let links: usize = p.get_neighborhood_id().iter().map(Vec::len).sum();
                (p.get_v().len() + links) * 4
            })
            .sum()
    }

    /// The (approximate) top `top` by inner product, exploring `ef` candidates.
    pub fn search(&self, query: &[f32], top: usize, ef: usize) -> Vec<Hit> {
        self.graph
            .search(query, top, ef.max(top))
            .into_iter()
            .map(|n| Hit {
                doc: n.d_id as u32,
                score: 1.0 - n.distance,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::dense::FlatIndex;
    use rand::{Rng, SeedableRng};

    /// `n` random unit vectors of dimension `d`.
    fn unit_vectors(n: usize, d: usize, seed: u64) -> Array2<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut x = Array2::<f32>::from_shape_fn((n, d), |_| rng.random_range(-1.0..1.0));
        x.rows_mut().into_iter().for_each(|mut r| {
            let norm = r.dot(&r).sqrt();
            r.mapv_inplace(|v| v / norm);
        });
        x
    }

    #[test]
    fn bytes_count_the_vectors_and_every_link() {
        let (d, m) = (32, 16);
        let mut last = 0;
        for n in [200, 400, 800] {
            let hnsw = HnswIndex::build(&unit_vectors(n, d, 7), m, 100);
            let vectors = n * d * 4;
            let links = hnsw.bytes() - vectors;
            // Every point is linked, with at most 2m links on the bottom layer and m on
            // each layer above (a point rises to layer l with probability m^-l).
            assert_eq!(links % 4, 0);
            assert!(links >= n * 4, "n {n}: {links} bytes of links");
            assert!(links <= n * 4 * 3 * m, "n {n}: {links} bytes of links");
            assert!(hnsw.bytes() > last, "n {n}: grows with the points");
            last = hnsw.bytes();
        }
    }

    #[test]
    fn finds_most_exact_neighbours_on_random_unit_vectors() {
        let x = unit_vectors(2000, 32, 5);
        let hnsw = HnswIndex::build(&x, 16, 200);
        let flat = FlatIndex::new(x.clone());
        let mut found = 0;
        for i in 0..50 {
            let q = x.row(i * 7);
            let exact: Vec<u32> = flat.search(q, 10).iter().map(|h| h.doc).collect();
            let approx = hnsw.search(q.as_slice().unwrap(), 10, 64);
            found += approx.iter().filter(|h| exact.contains(&h.doc)).count();
        }
        assert!(found >= 450, "recall@10 {}", found as f64 / 500.0);
    }
}
