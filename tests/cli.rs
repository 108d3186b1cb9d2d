//! The `ksparse` binary end to end on small inputs: outputs, formats and error messages.

mod common;

use assert_cmd::Command;
use ksparse::io::{read_ids, read_npy};

fn ksparse() -> Command {
    let mut c = Command::cargo_bin("ksparse").unwrap();
    c.arg("--threads").arg("2");
    c
}

/// `ksparse encode` of `input` with encoder `enc` into `output`, plus `extra` flags.
fn encode(
    enc: &std::path::Path,
    input: &std::path::Path,
    output: &std::path::Path,
    extra: &[&str],
) -> Command {
    let mut c = ksparse();
    c.arg("encode")
        .args(extra)
        .arg("--encoder")
        .arg(enc)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output);
    c
}

/// Asserts the run succeeded (showing its log if not).
fn succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cmd`, asserts it succeeded, and parses its standard output as JSON.
fn json_of(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().unwrap();
    succeeded(&out);
    serde_json::from_slice(&out.stdout).unwrap()
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
    let v = json_of(
        ksparse()
            .args(["eval-dense", "--model", "unused", "--json", "--dataset"])
            .arg(common::root().join("data/scifact"))
            .arg("--corpus-embeddings")
            .arg(reference.join("corpus.npy"))
            .arg("--query-embeddings")
            .arg(reference.join("queries.npy")),
    );
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
    let v = json_of(
        ksparse()
            .args(["eval-run", "--json", "--qrels"])
            .arg(&qrels)
            .arg("--run")
            .arg(&run),
    );
    assert_eq!(v["mean"]["mrr@10"], 0.5);
}

fn random_vectors(
    dir: &std::path::Path,
    name: &str,
    rows: usize,
    dim: usize,
) -> std::path::PathBuf {
    let path = dir.join(name);
    let data: Vec<f32> = (0..rows * dim)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * ((i % 13) as f32 / 13.0))
        .collect();
    ksparse::io::write_npy(
        &path,
        &ndarray::Array2::from_shape_vec((rows, dim), data).unwrap(),
    )
    .unwrap();
    let ids: Vec<String> = (0..rows).map(|i| format!("doc{i}")).collect();
    ksparse::io::write_ids(&ksparse::io::ids_path(&path), &ids).unwrap();
    path
}

#[test]
fn train_then_encode_writes_valid_codes() {
    let dir = tempfile::tempdir().unwrap();
    let x = random_vectors(dir.path(), "x.npy", 300, 12);
    let enc = dir.path().join("enc");
    ksparse()
        .args([
            "train",
            "--hidden",
            "4d",
            "--k",
            "4",
            "--epochs",
            "3",
            "--batch-size",
            "64",
            "--input",
        ])
        .arg(&x)
        .arg("--output")
        .arg(&enc)
        .assert()
        .success();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(enc.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        (config["hidden"].as_u64(), config["k"].as_u64()),
        (Some(48), Some(4))
    );
    assert_eq!(
        std::fs::read_to_string(enc.join("train-log.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3
    );

    let codes = dir.path().join("codes.kspc");
    encode(&enc, &x, &codes, &["--k", "8"]).assert().success();
    let (read, hidden) = ksparse::encoder::codes::read_codes(&codes).unwrap();
    assert_eq!((read.len(), hidden), (300, 48));
    assert!(read
        .iter()
        .all(|c| c.len() <= 8 && c.values.iter().all(|v| *v > 0.0)));
    assert_eq!(ksparse::io::read_ids(&codes, 300).unwrap()[299], "doc299");
    let npz = dir.path().join("codes.npz");
    encode(&enc, &x, &npz, &[]).assert().success();
    assert!(npz.is_file());

    // A corrupt model file is named, and no codes are written.
    let weights = enc.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let out = encode(&enc, &x, &dir.path().join("new.kspc"), &[])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("model.safetensors"));
    assert!(!dir.path().join("new.kspc").exists());
}

#[test]
fn train_rejects_bad_input_and_leaves_no_folder() {
    let dir = tempfile::tempdir().unwrap();
    let x = random_vectors(dir.path(), "x.npy", 50, 6);
    let y = random_vectors(dir.path(), "y.npy", 50, 5);
    let enc = dir.path().join("enc");
    let run = |extra: &[&str], inputs: &[&std::path::Path]| {
        let mut c = ksparse();
        c.arg("train").arg("--output").arg(&enc).args(extra);
        for i in inputs {
            c.arg("--input").arg(i);
        }
        let out = c.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(run(&["--hidden", "8", "--k", "9"], &[&x]).contains("k = 9"));
    assert!(run(&[], &[&x, &y]).contains("5-d"));
    let mut bad = ndarray::Array2::<f32>::zeros((4, 6));
    bad[[2, 1]] = f32::NAN;
    let nan = dir.path().join("nan.npy");
    ksparse::io::write_npy(&nan, &bad).unwrap();
    assert!(run(&[], &[&nan]).contains("row 2"));
    assert!(!enc.exists());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.to_string_lossy().starts_with(".ksparse")),
        "{names:?}"
    );
}

#[test]
fn bench_quality_writes_the_table_and_reuses_cached_embeddings() {
    let Some(model) = common::model("all-MiniLM-L6-v2") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        ksparse()
            .args(["bench", "quality", "--model", model.to_str().unwrap()])
            .arg("--dataset")
            .arg(common::root().join("tests/fixtures/scifact-mini"))
            .args(["--k", "8,16", "--hidden", "2d", "--losses", "csr+dist"])
            .args(["--modes", "symmetric,symmetric:2k,reconstruction"])
            .args(["--epochs", "3", "--json", "--cache"])
            .arg(dir.path().join("cache"))
            .arg("--output")
            .arg(dir.path().join("report"))
            .output()
            .unwrap()
    };
    let first = run();
    succeeded(&first);
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let dense = report["dense"][0]["ndcg@10"].as_f64().unwrap();
    assert!(dense > 0.5, "dense NDCG@10 {dense} on the fixture");
    // 2 k × 3 modes, unsupervised and supervised (the fixture has training qrels).
    let rows = report["sparse"].as_array().unwrap();
    assert_eq!(rows.len(), 12);
    assert!(rows.iter().any(|r| r["supervised"] == true));
    assert!(rows.iter().all(|r| r["hidden"] == 768));
    assert!(rows.iter().any(|r| r["mode"] == "symmetric:32"));
    let md = std::fs::read_to_string(dir.path().join("report/report.md")).unwrap();
    assert!(md.contains("| 768 | csr+dist+nce | symmetric:2k |"), "{md}");
    // The second run embeds nothing.
    let second = run();
    assert!(second.status.success());
    let log = String::from_utf8_lossy(&second.stderr);
    assert_eq!(log.matches("embeddings from cache").count(), 3, "{log}");
}

#[test]
fn index_build_stats_search_and_bench_search() {
    let dir = tempfile::tempdir().unwrap();
    let x = random_vectors(dir.path(), "x.npy", 300, 12);
    let enc = dir.path().join("enc");
    ksparse()
        .args(["train", "--k", "4", "--epochs", "2", "--input"])
        .arg(&x)
        .arg("--output")
        .arg(&enc)
        .assert()
        .success();
    let codes = dir.path().join("codes.kspc");
    encode(&enc, &x, &codes, &[]).assert().success();
    let idx = dir.path().join("idx");
    let build = || {
        ksparse()
            .args(["index", "build", "--codes"])
            .arg(&codes)
            .arg("--output")
            .arg(&idx)
            .output()
            .unwrap()
    };
    assert!(build().status.success());
    // An existing folder is never overwritten.
    let again = build();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let stats = json_of(ksparse().args(["index", "stats", "--json"]).arg(&idx));
    assert_eq!(
        (stats["docs"].as_u64(), stats["hidden"].as_u64()),
        (Some(300), Some(48))
    );

    // CLI hits equal the library's brute-force reference.
    let out = ksparse()
        .args(["index", "search", "--top", "5", "--json", "--queries"])
        .arg(&codes)
        .arg(&idx)
        .output()
        .unwrap();
    succeeded(&out);
    let index = ksparse::index::Index::open(&idx).unwrap();
    let (query_codes, _) = ksparse::encoder::codes::read_codes(&codes).unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 300);
    for (line, code) in lines.iter().zip(&query_codes) {
        let q: Vec<(u32, f32)> = code
            .ids
            .iter()
            .copied()
            .zip(code.values.iter().copied())
            .collect();
        let want = ksparse::index::query::search_brute_force(&index, &q, 5);
        let got: Vec<&str> = line["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = want.iter().map(|h| index.id(h.doc)).collect();
        assert_eq!(got, want);
    }
    drop(index);

    // A damaged segment is refused with the file named.
    let seg = idx.join("seg-000001.ksx");
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    let bad = ksparse()
        .args(["index", "stats"])
        .arg(&idx)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("seg-000001.ksx"));

    let report = json_of(
        ksparse()
            .args(["bench", "search", "--n", "300,600", "--k", "4"])
            .args(["--modes", "symmetric,reconstruction"])
            .args(["--query-count", "20", "--json", "--embeddings"])
            .arg(&x)
            .arg("--encoder")
            .arg(&enc)
            .arg("--output")
            .arg(dir.path().join("bench")),
    );
    let rows = report["rows"].as_array().unwrap();
    let engines: Vec<&str> = rows.iter().map(|r| r["engine"].as_str().unwrap()).collect();
    // Ours at each size; then the Python baselines whose packages import here, the others
    // named as skipped (with the default `--python python3`).
    let ours = [
        "dense-flat",
        "hnsw",
        "sparse-exact",
        "sparse-exact-taat",
        "sparse-exact",
        "sparse-exact-taat",
    ];
    let baselines = ["faiss-flat", "hnswlib", "seismic", "scipy-csr"];
    for n in [300, 600] {
        let at_n: Vec<&str> = rows
            .iter()
            .filter(|r| r["n"] == n)
            .map(|r| r["engine"].as_str().unwrap())
            .collect();
        assert_eq!(at_n[..6], ours, "{engines:?}");
        assert!(
            at_n[6..].iter().all(|e| baselines.contains(e)),
            "{engines:?}"
        );
    }
    let skipped = report["skipped"].as_array().unwrap();
    for b in baselines {
        let ran = engines.contains(&b);
        let named = skipped.iter().any(|s| {
            let s = s.as_str().unwrap();
            s.starts_with(b) || s.starts_with("python baselines")
        });
        assert!(ran != named, "{b}: ran {ran}, skipped {skipped:?}");
    }
    for r in rows {
        for key in ["p50_ms", "p99_ms", "qps", "bytes", "build_s", "recall@10"] {
            assert!(r[key].as_f64().is_some_and(|v| v >= 0.0), "{key} in {r}");
        }
        if r["k"].is_u64() {
            let sparse_recall = r["sparse_recall@10"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&sparse_recall), "{r}");
        }
    }
    // Pruned and term-at-a-time search return the same hits, in each scoring mode.
    let ours_sparse: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["engine"] == "sparse-exact" || r["engine"] == "sparse-exact-taat")
        .collect();
    for pair in ours_sparse.chunks(2) {
        assert_eq!(pair[0]["mode"], pair[1]["mode"]);
        for key in ["recall@10", "sparse_recall@10"] {
            assert_eq!(pair[0][key], pair[1][key], "{key}: {pair:?}");
        }
    }
    let modes: Vec<&str> = ours_sparse[..4]
        .iter()
        .map(|r| r["mode"].as_str().unwrap())
        .collect();
    assert_eq!(
        modes,
        ["symmetric"; 2]
            .iter()
            .chain(&["reconstruction"; 2])
            .copied()
            .collect::<Vec<_>>()
    );
}

#[test]
fn bench_train_alternates_rounds_and_reports_the_ratio_or_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let report = json_of(
        ksparse()
            .args([
                "bench", "train", "--dim", "16", "--hidden", "64", "--k", "4",
            ])
            .args(["--batch", "32", "--steps", "2", "--rounds", "2", "--json"])
            .arg("--output")
            .arg(dir.path()),
    );
    assert_eq!(report["rounds"], 2);
    assert!(report["samples_per_s"].as_f64().unwrap() > 0.0);
    match report["torch"].as_object() {
        Some(t) => assert_eq!(t["round_ratios"].as_array().unwrap().len(), 2),
        None => assert!(report["baseline_skipped"].is_string(), "{report}"),
    }
    assert!(dir.path().join("report.md").exists());
}
