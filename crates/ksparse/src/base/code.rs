//! Sparse codes: the vectors every stage after the encoder passes around.

use super::topk::top_indices;

/// The widest codes ksparse writes or reads: 2²⁴ latents (thousands of times the widths in
/// use). Files and indexes allocate per latent, so a damaged width must not pass for a
/// real one.
pub const MAX_HIDDEN: usize = 1 << 24;

/// One sparse vector: latent ids in ascending order and their non-zero values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseCode {
    /// Latent ids, strictly ascending.
    pub ids: Vec<u32>,
    /// Values, same length as `ids`.
    pub values: Vec<f32>,
}

impl SparseCode {
    /// ReLU(TopK_k(pre)): the k largest pre-activations, keeping only positive ones.
    pub fn top_k_relu(pre: &[f32], k: usize) -> Self {
        let mut pairs: Vec<(u32, f32)> = top_indices(pre, k)
            .into_iter()
            .map(|j| (j, pre[j as usize]))
            .filter(|(_, v)| *v > 0.0)
            .collect();
        pairs.sort_unstable_by_key(|p| p.0);
        Self {
            ids: pairs.iter().map(|p| p.0).collect(),
            values: pairs.iter().map(|p| p.1).collect(),
        }
    }

    /// Number of non-zeros.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the code has no non-zeros.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Sparse dot product (merge of two ascending id lists).
    pub fn dot(&self, other: &SparseCode) -> f32 {
        let (mut i, mut j, mut s) = (0, 0, 0.0f32);
        while i < self.ids.len() && j < other.ids.len() {
            match self.ids[i].cmp(&other.ids[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    s += self.values[i] * other.values[j];
                    i += 1;
                    j += 1;
                }
            }
        }
        s
    }
}
