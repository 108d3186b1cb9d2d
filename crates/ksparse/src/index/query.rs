//! Exact top-k over an [`Index`], two ways, and the brute-force reference they must equal.
//!
//! Score of document d for a query: Σ_j (w_j · scale) · q(d, j) over the query's latents j
//! in ascending order, q the stored byte. A query is first put in [canonical] form
//! (latents ascending, duplicates summed, zero weights dropped); every path then adds the
//! same products in the same order from 0.0, so their scores are bit-identical and their
//! rankings (score descending, then lower document) equal.
//!
//! - **Term-at-a-time** walks every posting of the query's latents into a dense per-segment
//!   accumulator: cost = the postings of the query's latents, whatever the query.
//! - **Block-max** (segments of format 3) bounds each block of [`DOC_BLOCK`] consecutive
//!   documents by Σ_j max(w_j, 0) · scale · max_q(block, j) — one dense byte row per query
//!   latent, added with SIMD — then scores whole blocks from the forward index in order of
//!   decreasing bound and stops at the first bound below the current 10th score. The
//!   documents of a segment are stored clustered ([`super::order`]), so a few blocks hold
//!   the answer and their bounds fall off fast behind them. Exact: f32 addition and
//!   multiplication are monotone, so the bound computed this way is never below a score
//!   computed as above.
//!
//! [`DOC_BLOCK`]: super::segment::DOC_BLOCK

use super::postings::{decode_block, BLOCK};
use super::segment::{BlockView, Segment};
use super::{Exclusion, Index};
use crate::base::Hit;
use crate::base::TopK;

/// How segments are searched (all give the same hits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Per segment: block-max, unless the query has no positive weight or a first look
    /// at the bounds says term-at-a-time is cheaper (see [`search_blocks`]).
    #[default]
    Auto,
    /// Term-at-a-time everywhere.
    TermAtATime,
    /// Block-max wherever the segment has block maxima.
    BlockMax,
}

/// The query every search path scores: latents ascending, weights of repeated latents
/// summed, zero weights dropped.
pub fn canonical(query: &[(u32, f32)]) -> Vec<(u32, f32)> {
    let mut q = query.to_vec();
    q.sort_by_key(|t| t.0);
    let mut out: Vec<(u32, f32)> = Vec::with_capacity(q.len());
    for (j, w) in q {
        match out.last_mut() {
            Some(last) if last.0 == j => last.1 += w,
            _ => out.push((j, w)),
        }
    }
    out.retain(|t| t.1 != 0.0);
    out
}

/// The exact top `top` of `index` for `query` (any terms, negative weights included).
pub fn search(index: &Index, query: &[(u32, f32)], top: usize, strategy: Strategy) -> Vec<Hit> {
    search_excluding(index, query, top, strategy, None)
}

/// [`search`] among the documents `excluded` leaves (every live one when `None`); the
/// excluded documents are skipped exactly as deleted ones are.
pub fn search_excluding(
    index: &Index,
    query: &[(u32, f32)],
    top: usize,
    strategy: Strategy,
    excluded: Option<&Exclusion>,
) -> Vec<Hit> {
    let query = canonical(query);
    let mut best = TopK::new(top);
    for (s, (base, seg, deleted)) in index.segments().enumerate() {
        let deleted = excluded.map_or(deleted, |e| e.segment(s));
        let base = base as u32;
        let done = match (strategy, seg.blocks_view()) {
            (Strategy::TermAtATime, _) | (_, None) => false,
            (Strategy::BlockMax, Some(view)) => {
                search_blocks(seg, &view, deleted, base, &query, &mut best, None)
            }
            (Strategy::Auto, Some(view)) => {
                query.iter().any(|t| t.1 > 0.0) && {
                    let budget = Some(term_at_a_time_cost(seg, &query));
                    search_blocks(seg, &view, deleted, base, &query, &mut best, budget)
                }
            }
        };
        if !done {
            search_terms(seg, deleted, base, &query, &mut best);
        }
    }
    hits(best)
}

/// Term-at-a-time's cost on `seg`, in forward-index postings scored by block-max (the
/// unit of [`search_blocks`]' budget): each of the query's postings is scattered into the
/// accumulator at about 4 such units (roughly 7 ns against 1.7 ns per posting in the
/// search benchmark at 5k–1M documents), plus a reset and a scan per document.
fn term_at_a_time_cost(seg: &Segment, query: &[(u32, f32)]) -> usize {
    let postings: usize = query
        .iter()
        .map(|t| seg.term_blocks(t.0 as usize).len() * BLOCK)
        .sum();
    4 * postings + seg.docs / 4
}

/// Term-at-a-time over one segment: each query term walks its latent's blocks and adds
/// into a dense f32 accumulator with one slot per document; the segment's documents are
/// then offered to `best`.
fn search_terms(seg: &Segment, deleted: &[bool], base: u32, query: &[(u32, f32)], best: &mut TopK) {
    SCRATCH.with_borrow_mut(|scratch| {
        // Reused per thread: zeroing touched pages is a memset, not fresh page faults.
        let acc = &mut scratch.scores;
        acc.clear();
        acc.resize(seg.docs, 0.0);
        let mut docs = [0u32; BLOCK];
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
        best.offer_slice(acc, base);
    })
}

/// Block-max over one segment (see the module documentation). With a `budget` (`Auto`),
/// it first scores blocks in bound order until `top` hits are held, then counts the blocks
/// whose bound still reaches the current threshold: if scoring them would cost more than
/// the budget (term-at-a-time's cost: small segments, long codes, loose bounds), it leaves
/// `best` untouched and returns false so the caller searches term-at-a-time. Returns true
/// when it searched the segment.
fn search_blocks(
    seg: &Segment,
    view: &BlockView,
    deleted: &[bool],
    base: u32,
    query: &[(u32, f32)],
    best: &mut TopK,
    budget: Option<usize>,
) -> bool {
    /// Buckets of the bound's range: blocks are visited bucket by bucket, best first.
    const BUCKETS: usize = 256;
    SCRATCH.with_borrow_mut(|scratch| {
        let Scratch {
            scores: bounds,
            dense,
            order,
            bucket_start,
            bucket_max,
        } = scratch;
        bounds.clear();
        bounds.resize(view.blocks, 0.0);
        for &(j, w) in query.iter().filter(|t| t.1 > 0.0) {
            let w = w * seg.scale;
            for (b, &m) in bounds.iter_mut().zip(view.latent_max(j as usize)) {
                *b += w * m as f32;
            }
        }
        dense.clear();
        dense.resize(seg.hidden, 0.0);
        for &(j, w) in query {
            dense[j as usize] = w * seg.scale;
        }
        // Counting sort of the blocks into buckets of their bound, highest bucket first.
        // The bucket is a monotone function of the bound, so a block never sits behind
        // one with a lower bound in another bucket.
        let top_bound = bounds.iter().copied().fold(0.0f32, f32::max);
        let bucket = |b: f32| {
            if top_bound > 0.0 {
                BUCKETS - 1 - ((b / top_bound * (BUCKETS - 1) as f32) as usize).min(BUCKETS - 1)
            } else {
                0
            }
        };
        bucket_start.clear();
        bucket_start.resize(BUCKETS + 1, 0);
        bucket_max.clear();
        bucket_max.resize(BUCKETS, f32::NEG_INFINITY);
        for &b in bounds.iter() {
            let k = bucket(b);
            bucket_start[k + 1] += 1;
            bucket_max[k] = bucket_max[k].max(b);
        }
        for k in 0..BUCKETS {
            bucket_start[k + 1] += bucket_start[k];
        }
        order.clear();
        order.resize(view.blocks, 0);
        let mut fill = bucket_start.clone();
        for (i, &b) in bounds.iter().enumerate() {
            let k = bucket(b);
            order[fill[k]] = i as u32;
            fill[k] += 1;
        }
        // Scores go to a copy of `best` until the budget check has passed.
        let mut found = best.clone();
        let mut budget = budget;
        let per_block = view.doc_block * view.postings() / seg.docs.max(1);
        let mut visited = 0usize;
        for k in 0..BUCKETS {
            let blocks = &order[bucket_start[k]..bucket_start[k + 1]];
            // A bound equal to the worst kept score may still hold a tie with a lower
            // document, so only a bound strictly below it is passed over.
            if !blocks.is_empty() && found.threshold().is_some_and(|t| bucket_max[k] < t) {
                break;
            }
            for &block in blocks {
                let block = block as usize;
                if let (Some(limit), Some(t)) = (budget, found.threshold()) {
                    let reach = bounds.iter().filter(|&&b| b >= t).count();
                    let left = reach.saturating_sub(visited);
                    if left * per_block > limit {
                        return false;
                    }
                    budget = None;
                }
                if found.threshold().is_some_and(|t| bounds[block] < t) {
                    continue;
                }
                visited += 1;
                let first = block * view.doc_block;
                let last = (first + view.doc_block).min(seg.docs);
                for (i, _) in (first..last).zip(&deleted[first..last]).filter(|d| !*d.1) {
                    let mut s = 0.0f32;
                    view.for_each_posting(i, |l, q| s += dense[l] * q as f32);
                    found.offer(s, base + i as u32);
                }
            }
        }
        *best = found;
        true
    })
}

/// Per-thread buffers reused between queries.
#[derive(Default)]
struct Scratch {
    /// Per-document scores (term-at-a-time) or per-block bounds (block-max).
    scores: Vec<f32>,
    /// The query as a dense vector over the latents, weights times the scale.
    dense: Vec<f32>,
    /// Blocks in visiting order.
    order: Vec<u32>,
    /// Start of each bound bucket in `order`.
    bucket_start: Vec<usize>,
    /// Largest bound in each bucket.
    bucket_max: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Deleted documents can never be selected.
fn mask_deleted(scores: &mut [f32], deleted: &[bool]) {
    for (s, &d) in scores.iter_mut().zip(deleted) {
        if d {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// The collected hits, best first, leaving out masked (deleted) documents.
fn hits(best: TopK) -> Vec<Hit> {
    best.into_sorted()
        .into_iter()
        .filter(|&(score, _)| score != f32::NEG_INFINITY)
        .map(|(score, doc)| Hit { doc, score })
        .collect()
}

/// The reference: every document's score from its forward-index code, quantised the way
/// the postings were, over the canonical query. O(N · (k + terms)); for tests and checks.
pub fn search_brute_force(index: &Index, query: &[(u32, f32)], top: usize) -> Vec<Hit> {
    search_brute_force_excluding(index, query, top, None)
}

/// [`search_brute_force`] among the documents `excluded` leaves.
pub fn search_brute_force_excluding(
    index: &Index,
    query: &[(u32, f32)],
    top: usize,
    excluded: Option<&Exclusion>,
) -> Vec<Hit> {
    let query = canonical(query);
    let mut best = TopK::new(top);
    for (s, (base, seg, deleted)) in index.segments().enumerate() {
        let deleted = excluded.map_or(deleted, |e| e.segment(s));
        // The build's quantiser, from the scale the segment stores: each stored byte is
        // recomputed from the exact value.
        let quant = super::postings::Quantizer { scale: seg.scale };
        let mut scores = Vec::with_capacity(seg.docs);
        for (i, &is_deleted) in deleted.iter().enumerate() {
            let code: Vec<(u32, f32)> = seg.forward(i).collect();
            let mut s = 0.0f32;
            for &(j, w) in &query {
                if let Ok(p) = code.binary_search_by_key(&j, |e| e.0) {
                    s += (w * seg.scale) * quant.quantize(code[p].1) as f32;
                }
            }
            scores.push(if is_deleted { f32::NEG_INFINITY } else { s });
        }
        best.offer_slice(&scores, base as u32);
    }
    hits(best)
}
