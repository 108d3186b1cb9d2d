//! Metrics parity with pytrec_eval on the shared reference runs (SciFact binary qrels,
//! Cranfield graded qrels), and dense exact search on the reference SciFact vectors.

mod common;

use std::path::Path;

use ksparse::data::{read_qrels, Dataset};
use ksparse::eval::{dense_exact, evaluate, read_trec_run};
use ksparse::io::read_npy_aligned;
use serde_json::Value;

fn check_run(name: &str, qrels: &Path) {
    let Some(dir) = common::shared("reference/metrics") else {
        return;
    };
    let run = read_trec_run(&dir.join(format!("{name}.run"))).unwrap();
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{name}.expected.json"))).unwrap(),
    )
    .unwrap();
    let got = evaluate(&read_qrels(qrels).unwrap(), &run);
    let per_query = expected["per_query"].as_object().unwrap();
    assert_eq!(
        got.queries,
        per_query.len(),
        "{name}: number of evaluated queries"
    );
    for (q, want) in per_query {
        let m = got.per_query[q];
        for (key, value) in [
            ("ndcg@10", m.ndcg_at_10),
            ("recall@100", m.recall_at_100),
            ("mrr@10", m.mrr_at_10),
        ] {
            let w = want[key].as_f64().unwrap();
            assert!(
                (value - w).abs() < 1e-9,
                "{name} query {q} {key}: {value} vs pytrec_eval {w}"
            );
        }
    }
    let mean = &expected["mean"];
    assert!((got.mean.ndcg_at_10 - mean["ndcg@10"].as_f64().unwrap()).abs() < 1e-9);
    assert!((got.mean.recall_at_100 - mean["recall@100"].as_f64().unwrap()).abs() < 1e-9);
    assert!((got.mean.mrr_at_10 - mean["mrr@10"].as_f64().unwrap()).abs() < 1e-9);
}

#[test]
fn scifact_run_matches_pytrec_eval() {
    check_run(
        "scifact-minilm-dense",
        &common::root().join("data/scifact/qrels/test.tsv"),
    );
}

#[test]
fn cranfield_graded_run_matches_pytrec_eval() {
    let Some(qrels) = common::shared("data/cranfield/qrels/test.tsv") else {
        return;
    };
    check_run("cranfield-minilm-dense", &qrels);
}

#[test]
fn dense_exact_on_reference_vectors_gives_published_ndcg() {
    let Some(dir) = common::shared("reference/scifact-minilm") else {
        return;
    };
    let ds = Dataset::load(&common::root().join("data/scifact"), "test").unwrap();
    let corpus = read_npy_aligned(&dir.join("corpus.npy"), &ds.corpus.ids).unwrap();
    let queries = read_npy_aligned(&dir.join("queries.npy"), &ds.queries.ids).unwrap();
    let (e, _) = dense_exact(&ds, corpus, &queries, false).unwrap();
    assert_eq!(e.queries, 300);
    assert!(
        (e.mean.ndcg_at_10 - 0.6451).abs() < 0.0005,
        "NDCG@10 {}",
        e.mean.ndcg_at_10
    );
}
