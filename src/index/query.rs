//! Exact top-k over an [`Index`]: term-at-a-time accumulation over the compressed
//! posting lists, and the brute-force reference it must equal.
//!
//! Score of document d for a query {(j, w)}: Σ_j (w · scale) · q(d, j), q the stored byte,
//! summed in query-term order. Both functions below add the terms of a document in that
//! same order with the same f32 operations, so their scores are bit-identical and their
//! rankings (score descending, then lower document) equal.

use super::postings::{decode_block, BLOCK};
use super::Index;
use crate::search::{top_k, Hit};

/// Term-at-a-time: each query term walks its latent's blocks and adds into a dense f32
/// accumulator with one slot per document; the top `top` are selected at the end.
/// Cost: the query terms' postings (decoded 128 at a time) plus O(N) for selection.
pub fn search_taat(index: &Index, query: &[(u32, f32)], top: usize) -> Vec<Hit> {
    ACCUMULATOR.with_borrow_mut(|acc| {
        // Reused per thread: zeroing touched pages is a memset, not fresh page faults.
        acc.clear();
        acc.resize(index.len(), 0.0);
        let mut docs = [0u32; BLOCK];
        for (base, seg, deleted) in index.segments() {
            let acc = &mut acc[base..base + seg.docs];
            let data = seg.postings();
            for &(j, w) in query {
                let w = w * seg.scale;
                let mut prev = None;
                for meta in seg.term_blocks(j as usize) {
                    let weights = decode_block(&meta, data, prev, &mut docs);
                    for (&d, &q) in docs.iter().zip(weights) {
                        acc[d as usize] += w * q as f32;
                    }
                    prev = Some(meta.last_doc);
                }
            }
            mask_deleted(acc, deleted);
        }
        live_top_k(acc, top)
    })
}

thread_local! {
    /// One score slot per document, kept between queries on a thread.
    static ACCUMULATOR: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Deleted documents can never be selected.
fn mask_deleted(scores: &mut [f32], deleted: &[bool]) {
    for (s, &d) in scores.iter_mut().zip(deleted) {
        if d {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// The top `top` of `scores`, leaving out masked (deleted) documents.
fn live_top_k(scores: &[f32], top: usize) -> Vec<Hit> {
    let mut hits = top_k(scores, top);
    hits.retain(|h| h.score != f32::NEG_INFINITY);
    hits
}

/// The reference: every document's score from its forward-index code, quantised the way
/// the postings were, in query-term order. O(N · (k + terms)); for tests and checks.
pub fn search_brute_force(index: &Index, query: &[(u32, f32)], top: usize) -> Vec<Hit> {
    let mut scores = Vec::with_capacity(index.len());
    for (_, seg, deleted) in index.segments() {
        // The build's quantiser, from the scale the segment stores: each stored byte is
        // recomputed from the exact value.
        let quant = super::postings::Quantizer { scale: seg.scale };
        for (i, &is_deleted) in deleted.iter().enumerate() {
            let code: Vec<(u32, f32)> = seg.forward(i).collect();
            let mut s = 0.0f32;
            for &(j, w) in query {
                if let Ok(p) = code.binary_search_by_key(&j, |e| e.0) {
                    s += (w * seg.scale) * quant.quantize(code[p].1) as f32;
                }
            }
            scores.push(if is_deleted { f32::NEG_INFINITY } else { s });
        }
    }
    live_top_k(&scores, top)
}
