//! IR metrics computed the way trec_eval / pytrec_eval compute them, so our numbers can be
//! compared with published BEIR and MTEB figures.
//!
//! - A run is ranked by score, highest first; equal scores are ordered by document id,
//!   descending (trec_eval's tie rule).
//! - A document is relevant when its qrels grade is ≥ 1.
//! - NDCG@10: gain = grade, discount log2(rank + 1); the ideal DCG is built from *all*
//!   judged documents of the query, not only the retrieved ones.
//! - Recall@100: relevant documents in the top 100 / all relevant documents.
//! - MRR@10: 1 / rank of the first relevant document within the top 10, else 0.
//! - The mean is over the qrels queries that have at least one relevant document; such a
//!   query missing from the run scores 0 on every metric (trec_eval `-c`).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::data::Qrels;

/// A ranked run: query id → (doc id, score) pairs in any order.
pub type Run = HashMap<String, Vec<(String, f64)>>;

/// The three headline metrics for one query or their mean.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Metrics {
    /// Normalised discounted cumulative gain at rank 10.
    #[serde(rename = "ndcg@10")]
    pub ndcg_at_10: f64,
    /// Recall at rank 100.
    #[serde(rename = "recall@100")]
    pub recall_at_100: f64,
    /// Mean reciprocal rank at rank 10.
    #[serde(rename = "mrr@10")]
    pub mrr_at_10: f64,
}

/// Per-query metrics and their mean.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Mean over evaluated queries.
    pub mean: Metrics,
    /// Number of queries evaluated.
    pub queries: usize,
    /// Metrics of each evaluated query.
    pub per_query: BTreeMap<String, Metrics>,
}

/// Ranks a query's results by trec_eval's order: score descending, then doc id descending.
pub fn rank(results: &mut [(String, f64)]) {
    results.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
}

/// Metrics of one query given its ranked doc ids and its judgements.
pub fn query_metrics(ranked: &[&str], judged: &HashMap<String, i32>) -> Metrics {
    let grade = |d: &str| judged.get(d).copied().unwrap_or(0).max(0) as f64;
    let discount = |i: usize| 1.0 / ((i + 2) as f64).log2();
    let dcg: f64 = ranked
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, d)| grade(d) * discount(i))
        .sum();
    let mut ideal: Vec<f64> = judged
        .values()
        .filter(|&&g| g > 0)
        .map(|&g| g as f64)
        .collect();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, g)| g * discount(i))
        .sum();
    let relevant = ideal.len();
    let found = ranked.iter().take(100).filter(|d| grade(d) > 0.0).count();
    let first = ranked.iter().take(10).position(|d| grade(d) > 0.0);
    Metrics {
        ndcg_at_10: if idcg > 0.0 { dcg / idcg } else { 0.0 },
        recall_at_100: if relevant > 0 {
            found as f64 / relevant as f64
        } else {
            0.0
        },
        mrr_at_10: first.map_or(0.0, |r| 1.0 / (r + 1) as f64),
    }
}

/// Evaluates a run against qrels (see the module docs for the conventions). With no
/// judged query the mean is all zeros over `queries == 0`; `eval::evaluate_checked` refuses
/// that case instead. A document listed twice for a query counts twice: runs read from
/// files are checked for that by `eval::read_trec_run`.
pub fn evaluate(qrels: &Qrels, run: &Run) -> Evaluation {
    let mut per_query = BTreeMap::new();
    for (qid, judged) in qrels {
        if !judged.values().any(|&g| g > 0) {
            continue;
        }
        let m = match run.get(qid) {
            Some(results) => {
                let mut ranked = results.clone();
                rank(&mut ranked);
                let ids: Vec<&str> = ranked.iter().map(|(d, _)| d.as_str()).collect();
                query_metrics(&ids, judged)
            }
            None => Metrics::default(),
        };
        per_query.insert(qid.clone(), m);
    }
    // No judged query: no mean either (all zero, and `queries` says 0); callers that report
    // a mean refuse this case (see `eval::evaluate_checked`).
    let mean = if per_query.is_empty() {
        Metrics::default()
    } else {
        let n = per_query.len() as f64;
        let sum = |f: fn(&Metrics) -> f64| per_query.values().map(f).sum::<f64>() / n;
        Metrics {
            ndcg_at_10: sum(|m| m.ndcg_at_10),
            recall_at_100: sum(|m| m.recall_at_100),
            mrr_at_10: sum(|m| m.mrr_at_10),
        }
    };
    Evaluation {
        mean,
        queries: per_query.len(),
        per_query,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, i32)]) -> HashMap<String, i32> {
        pairs.iter().map(|(d, g)| (d.to_string(), *g)).collect()
    }

    #[test]
    fn binary_relevance_by_hand() {
        // Relevant: a (rank 2) and z (never retrieved).
        let m = query_metrics(&["x", "a", "y"], &judged(&[("a", 1), ("z", 1)]));
        let dcg = 1.0 / 3f64.log2();
        let idcg = 1.0 + 1.0 / 3f64.log2();
        assert!((m.ndcg_at_10 - dcg / idcg).abs() < 1e-12);
        assert_eq!(m.recall_at_100, 0.5);
        assert_eq!(m.mrr_at_10, 0.5);
    }

    #[test]
    fn graded_relevance_by_hand() {
        // Grades 3 and 1 retrieved in the wrong order; a grade-0 judgement counts as non-relevant.
        let m = query_metrics(
            &["low", "n", "high"],
            &judged(&[("high", 3), ("low", 1), ("n", 0)]),
        );
        let dcg = 1.0 + 3.0 / 4f64.log2();
        let idcg = 3.0 + 1.0 / 3f64.log2();
        assert!((m.ndcg_at_10 - dcg / idcg).abs() < 1e-12);
        assert_eq!(m.recall_at_100, 1.0);
        assert_eq!(m.mrr_at_10, 1.0);
    }

    #[test]
    fn cutoffs_apply() {
        let mut ranked: Vec<String> = (0..150).map(|i| format!("d{i}")).collect();
        ranked[10] = "rel1".into();
        ranked[120] = "rel2".into();
        let ids: Vec<&str> = ranked.iter().map(String::as_str).collect();
        let m = query_metrics(&ids, &judged(&[("rel1", 1), ("rel2", 1)]));
        assert_eq!(m.ndcg_at_10, 0.0);
        assert_eq!(m.mrr_at_10, 0.0);
        assert_eq!(m.recall_at_100, 0.5);
    }

    #[test]
    fn ties_break_by_doc_id_descending_and_missing_queries_score_zero() {
        let mut qrels = Qrels::new();
        qrels.insert("q1".into(), judged(&[("a", 1)]));
        qrels.insert("q2".into(), judged(&[("b", 1)]));
        qrels.insert("q3".into(), judged(&[("c", 0)])); // no relevant doc: skipped
        let mut run = Run::new();
        run.insert("q1".into(), vec![("a".into(), 0.5), ("b".into(), 0.5)]);
        let e = evaluate(&qrels, &run);
        assert_eq!(e.queries, 2);
        // "b" > "a", so b ranks first and a second.
        assert_eq!(e.per_query["q1"].mrr_at_10, 0.5);
        assert_eq!(e.per_query["q2"], Metrics::default());
        assert_eq!(e.mean.mrr_at_10, 0.25);
    }

    #[test]
    fn the_mean_over_no_query_is_zero_not_negative_zero() {
        let mut qrels = Qrels::new();
        qrels.insert("q".into(), judged(&[("a", 0)]));
        let e = evaluate(&qrels, &Run::new());
        assert_eq!(e.queries, 0);
        assert!(e.mean.ndcg_at_10.is_sign_positive() && e.mean.ndcg_at_10 == 0.0);
        assert_eq!(format!("{:.4}", e.mean.ndcg_at_10), "0.0000");
    }
}
