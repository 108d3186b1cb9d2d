//! Exact sparse search by term-at-a-time accumulation over in-memory posting lists.
//!
//! Every query term walks its latent's posting list and adds weight × value into a dense
//! per-document accumulator; the top documents are selected at the end. Cost: the sum of
//! the query terms' posting-list lengths, plus O(N) for the selection. This is the exact
//! reference for the on-disk index of the next stage.

use crate::base::SparseCode;
use crate::base::{top_k, Hit};
use crate::embed::int8::Int8Vectors;
use crate::encoder::scoring::{EngineHit, Fetch, Forward, SparseEngine};

/// Documents held in memory, numbered by row, as a second stage reads them: their codes
/// and, where kept, their dense vectors.
pub struct RowDocs<'a> {
    /// Codes by row.
    pub codes: &'a [SparseCode],
    /// Dense vectors by row, if kept.
    pub vectors: Option<&'a Int8Vectors>,
}

impl Forward for RowDocs<'_> {
    fn code_into(&self, doc: u32, out: &mut Vec<(u32, f32)>) {
        let c = &self.codes[doc as usize];
        out.extend(c.ids.iter().copied().zip(c.values.iter().copied()));
    }

    fn dense_dot(&self, doc: u32, q: &[f32]) -> Option<f32> {
        self.vectors.map(|v| v.dot(doc as usize, q))
    }

    fn keeps_vectors(&self) -> bool {
        self.vectors.is_some()
    }
}

/// Posting lists of document codes: for each latent, (document row, value) in row order.
pub struct SparseIndex {
    postings: Vec<Vec<(u32, f32)>>,
    docs: usize,
}

impl SparseIndex {
    /// Builds the lists from codes whose ids are below `hidden`.
    pub fn new(codes: &[SparseCode], hidden: usize) -> Self {
        let mut postings = vec![Vec::new(); hidden];
        for (d, c) in codes.iter().enumerate() {
            for (&j, &v) in c.ids.iter().zip(&c.values) {
                postings[j as usize].push((d as u32, v));
            }
        }
        Self {
            postings,
            docs: codes.len(),
        }
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.docs
    }

    /// Whether the index holds no documents.
    pub fn is_empty(&self) -> bool {
        self.docs == 0
    }

    /// Total postings (non-zeros of all codes).
    pub fn postings(&self) -> usize {
        self.postings.iter().map(Vec::len).sum()
    }

    /// The `top` documents by Σ weight · value over the query's (latent, weight) terms.
    pub fn search(&self, query: &[(u32, f32)], top: usize) -> Vec<Hit> {
        let mut scores = vec![0.0f32; self.docs];
        for &(j, w) in query {
            if let Some(list) = self.postings.get(j as usize) {
                for &(d, v) in list {
                    scores[d as usize] += w * v;
                }
            }
        }
        top_k(&scores, top)
    }
}

/// Codes in memory as an engine: exact f32 scores by [`SparseIndex`] — the reference a
/// database's or the on-disk index's answers are checked against.
pub struct ExactEngine {
    index: SparseIndex,
    codes: Vec<SparseCode>,
    ids: Vec<String>,
}

impl ExactEngine {
    /// The engine over `codes` (latents below `hidden`) named by `ids`, row for row.
    pub fn new(codes: Vec<SparseCode>, ids: Vec<String>, hidden: usize) -> Self {
        assert_eq!(codes.len(), ids.len(), "one id per code");
        Self {
            index: SparseIndex::new(&codes, hidden),
            codes,
            ids,
        }
    }
}

impl SparseEngine for ExactEngine {
    fn name(&self) -> String {
        "exact f32 codes (in memory)".to_string()
    }

    fn encoder_sha256(&self) -> anyhow::Result<Option<String>> {
        Ok(None)
    }

    fn count(&self) -> anyhow::Result<usize> {
        Ok(self.codes.len())
    }

    fn top(
        &self,
        terms: &[(u32, f32)],
        depth: usize,
        fetch: Fetch,
    ) -> anyhow::Result<Vec<EngineHit>> {
        Ok(self
            .index
            .search(terms, depth)
            .into_iter()
            .map(|h| EngineHit {
                id: self.ids[h.doc as usize].clone(),
                score: h.score,
                code: fetch.codes.then(|| self.codes[h.doc as usize].clone()),
                document: None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_brute_force_sparse_dot() {
        let codes = vec![
            SparseCode {
                ids: vec![0, 3],
                values: vec![1.0, 2.0],
            },
            SparseCode {
                ids: vec![1, 3],
                values: vec![0.5, 0.5],
            },
            SparseCode {
                ids: vec![2],
                values: vec![4.0],
            },
        ];
        let idx = SparseIndex::new(&codes, 4);
        let q = vec![(3u32, 1.0f32), (1, -2.0), (2, 0.1)];
        let hits = idx.search(&q, 3);
        let want: Vec<f32> = codes
            .iter()
            .map(|c| {
                c.dot(&SparseCode {
                    ids: vec![1, 2, 3],
                    values: vec![-2.0, 0.1, 1.0],
                })
            })
            .collect();
        assert_eq!(hits.iter().map(|h| h.doc).collect::<Vec<_>>(), [0, 2, 1]);
        for h in hits {
            assert!((h.score - want[h.doc as usize]).abs() < 1e-6);
        }
        assert_eq!(idx.postings(), 5);
    }
}
