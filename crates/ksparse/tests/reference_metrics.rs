//! Metrics parity with pytrec_eval on the shared reference runs (SciFact binary qrels,
//! Cranfield graded qrels), and dense exact search on the reference SciFact vectors.

use ksparse_testkit as common;

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
    common::assert_metrics(
        &format!("{name}, mean"),
        [
            got.mean.ndcg_at_10,
            got.mean.recall_at_100,
            got.mean.mrr_at_10,
        ],
        ["ndcg@10", "recall@100", "mrr@10"].map(|k| mean[k].as_f64().unwrap()),
        1e-9,
    );
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

/// Dense exact search over sentence-transformers' own vectors (the shared
/// `reference/scifact-minilm`) on the SciFact folder `dataset` (`queries` judged test
/// queries over `documents` documents) gives the metrics `want`.
fn check_dense_on_reference_vectors(
    dataset: &str,
    (queries, documents): (usize, usize),
    want: [f64; 3],
    tolerance: f64,
) {
    let Some(dir) = common::shared("reference/scifact-minilm") else {
        return;
    };
    let ds = Dataset::load(&common::root().join(dataset), "test").unwrap();
    let corpus = read_npy_aligned(&dir.join("corpus.npy"), &ds.corpus.ids).unwrap();
    let query_vectors = read_npy_aligned(&dir.join("queries.npy"), &ds.queries.ids).unwrap();
    let (e, _) = dense_exact(&ds, corpus, &query_vectors, false).unwrap();
    assert_eq!(
        (e.queries, ds.corpus.ids.len()),
        (queries, documents),
        "{dataset}"
    );
    let m = e.mean;
    common::assert_metrics(
        dataset,
        [m.ndcg_at_10, m.recall_at_100, m.mrr_at_10],
        want,
        tolerance,
    );
}

#[test]
fn dense_exact_on_reference_vectors_gives_published_ndcg() {
    check_dense_on_reference_vectors(
        "data/scifact",
        (300, 5183),
        common::SCIFACT_MINILM_DENSE,
        0.0005,
    );
}

#[test]
fn dense_exact_on_reference_vectors_of_the_scifact_fixture() {
    check_dense_on_reference_vectors(
        "tests/fixtures/scifact-mini",
        (30, 300),
        common::SCIFACT_MINI_MINILM_DENSE,
        0.0001,
    );
}
