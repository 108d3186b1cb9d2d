//! The `ksparse` binary end to end on small inputs: outputs, formats and error messages.

mod common;

use assert_cmd::Command;
use ksparse::io::{read_ids, read_npy};

fn ksparse() -> Command {
    let mut c = Command::cargo_bin("ksparse").unwrap();
    c.arg("--threads").arg("2");
    c
}

#[test]
fn embed_writes_vectors_and_ids() {
    let Some(model) = common::model("all-MiniLM-L6-v2") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.txt");
    std::fs::write(
        &input,
        "A man is eating food.\n\nThe girl is carrying a baby.\n",
    )
    .unwrap();
    let out = dir.path().join("x.npy");
    ksparse()
        .args(["embed", "--model", model.to_str().unwrap(), "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .assert()
        .success();
    let m = read_npy(&out).unwrap();
    assert_eq!(m.dim(), (2, 384));
    assert_eq!(read_ids(&out, 2).unwrap(), ["0", "2"]);
    for row in m.rows() {
        let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}

#[test]
fn eval_dense_on_precomputed_vectors_prints_json() {
    let Some(reference) = common::shared("reference/scifact-minilm") else {
        return;
    };
    let out = ksparse()
        .args(["eval-dense", "--model", "unused", "--json", "--dataset"])
        .arg(common::root().join("data/scifact"))
        .arg("--corpus-embeddings")
        .arg(reference.join("corpus.npy"))
        .arg("--query-embeddings")
        .arg(reference.join("queries.npy"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ndcg = v["mean"]["ndcg@10"].as_f64().unwrap();
    assert!((ndcg - 0.6451).abs() < 0.0005, "{ndcg}");
    assert_eq!(v["queries"], 300);
}

#[test]
fn errors_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let err = |args: &[&str]| {
        let out = ksparse()
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let e = err(&[
        "embed",
        "--model",
        "no-such-model",
        "--input",
        "x.txt",
        "--output",
        "x.npy",
    ]);
    assert!(
        e.contains("no-such-model") && e.contains("fetch-models.sh"),
        "{e}"
    );

    std::fs::create_dir_all(dir.path().join("ds/qrels")).unwrap();
    std::fs::write(
        dir.path().join("ds/corpus.jsonl"),
        "{\"_id\":\"d1\",\"text\":\"x\"}\nnot json\n",
    )
    .unwrap();
    let e = err(&["eval-dense", "--model", "m", "--dataset", "ds"]);
    assert!(
        e.contains("corpus.jsonl:2") && e.contains("invalid JSON"),
        "{e}"
    );

    let e = err(&["eval-dense", "--model", "m", "--dataset", "missing-dir"]);
    assert!(e.contains("missing-dir") && e.contains("not found"), "{e}");
}

#[test]
fn eval_run_scores_a_trec_file() {
    let dir = tempfile::tempdir().unwrap();
    let qrels = dir.path().join("qrels.tsv");
    let run = dir.path().join("run.trec");
    std::fs::write(&qrels, "query-id\tcorpus-id\tscore\nq1\td2\t1\n").unwrap();
    std::fs::write(&run, "q1 Q0 d1 1 0.9 t\nq1 Q0 d2 2 0.8 t\n").unwrap();
    let out = ksparse()
        .args(["eval-run", "--json", "--qrels"])
        .arg(&qrels)
        .arg("--run")
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mean"]["mrr@10"], 0.5);
}
