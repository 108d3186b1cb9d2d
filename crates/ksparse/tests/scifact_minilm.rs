//! SciFact end to end with all-MiniLM-L6-v2: our corpus vectors equal the
//! sentence-transformers reference row by row, and dense exact search over our own
//! vectors reproduces the published NDCG@10 of 0.645.

use ksparse_testkit as common;

use ksparse::data::Dataset;
use ksparse::embed::Embedder;
use ksparse::eval::dense_exact;
use ksparse::io::read_npy;

#[test]
fn scifact_corpus_matches_reference_and_ndcg_is_0_645() {
    let Some(model) = common::model("all-MiniLM-L6-v2") else {
        return;
    };
    let Some(reference) = common::shared("reference/scifact-minilm") else {
        return;
    };
    let ds = Dataset::load(&common::root().join("data/scifact"), "test").unwrap();
    let e = Embedder::load(model.to_str().unwrap()).unwrap();
    let corpus = e.embed(&ds.corpus.texts, 16, |_| {}).unwrap();
    let queries = e.embed(&ds.queries.texts, 16, |_| {}).unwrap();

    let want = read_npy(&reference.join("corpus.npy")).unwrap();
    let ids: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(reference.join("corpus.ids.json")).unwrap())
            .unwrap();
    assert_eq!(ids, ds.corpus.ids, "reference rows follow corpus order");
    let (worst_row, worst) = (0..want.nrows())
        .map(|i| {
            (
                i,
                common::cosine(
                    corpus.row(i).as_slice().unwrap(),
                    want.row(i).as_slice().unwrap(),
                ),
            )
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    println!("SciFact corpus: min cosine to sentence-transformers {worst:.7} (row {worst_row})");
    assert!(
        worst >= 0.9999,
        "row {worst_row} ({}) cosine {worst}",
        ds.corpus.ids[worst_row]
    );

    let (eval, _) = dense_exact(&ds, corpus, &queries, false).unwrap();
    println!("SciFact dense exact NDCG@10 {:.4}", eval.mean.ndcg_at_10);
    assert_eq!(eval.queries, 300);
    let m = eval.mean;
    common::assert_metrics(
        "SciFact, our vectors",
        [m.ndcg_at_10, m.recall_at_100, m.mrr_at_10],
        common::SCIFACT_MINILM_DENSE,
        0.001,
    );
}
