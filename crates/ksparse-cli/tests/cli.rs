//! The `ksparse` binary end to end on small inputs: outputs, formats and error messages.

use ksparse_testkit as common;

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
    let (_, config) = ksparse::encoder::SparseEncoder::load(&enc).unwrap();
    assert_eq!((config.hidden, config.k), (48, 4));
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
            .args(["--signals", "pseudo-distill,docs", "--focus-k", "8"])
            .args([
                "--modes",
                "symmetric,symmetric:2k,two-stage:20,reconstruction",
            ])
            .args([
                "--latency-docs",
                "3000",
                "--epochs",
                "3",
                "--json",
                "--cache",
            ])
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
    // 2 k × 4 modes with pseudo-query distillation, unsupervised and supervised (the
    // fixture has training qrels), and the `docs` ablation at k = 8.
    let rows = report["sparse"].as_array().unwrap();
    assert_eq!(rows.len(), 20);
    assert_eq!(rows.iter().filter(|r| r["supervised"] == true).count(), 8);
    assert_eq!(rows.iter().filter(|r| r["signal"] == "docs").count(), 4);
    assert!(rows
        .iter()
        .all(|r| r["hidden"] == 768 && r["trained_on"] == "self"));
    assert!(rows.iter().any(|r| r["mode"] == "symmetric:32"));
    for r in rows {
        let ratio = r["ndcg@10"].as_f64().unwrap() / dense;
        assert!(
            (r["retention"].as_f64().unwrap() - ratio).abs() < 1e-9,
            "{r}"
        );
    }
    let latency = report["latency"].as_array().unwrap();
    let modes: Vec<&str> = latency
        .iter()
        .map(|r| r["mode"].as_str().unwrap())
        .collect();
    assert_eq!(
        modes,
        [
            "symmetric",
            "symmetric:16",
            "two-stage:20",
            "reconstruction"
        ]
    );
    assert!(latency
        .iter()
        .all(|r| r["docs"] == 3000 && r["p50_ms"].as_f64().unwrap() > 0.0));
    let md = std::fs::read_to_string(dir.path().join("report/report.md")).unwrap();
    for line in [
        "| 768 | csr+dist + InfoNCE on training qrels | symmetric:2k |",
        "| 768 | csr+dist + pseudo-distill | two-stage:20 |",
        "## Ablation: training signal at k = 8",
        "| docs | two-stage:20 |",
        "## Latency at 3000 documents, k = 8",
    ] {
        assert!(md.contains(line), "{line} not in {md}");
    }
    // The second run embeds nothing.
    let second = run();
    assert!(second.status.success());
    let log = String::from_utf8_lossy(&second.stderr);
    assert_eq!(log.matches("embeddings from cache").count(), 4, "{log}");
}

#[test]
fn index_build_stats_search_and_bench_search() {
    let dir = tempfile::tempdir().unwrap();
    let x = random_vectors(dir.path(), "x.npy", 300, 12);
    let enc = dir.path().join("enc");
    train_small(&x, &enc).assert().success();
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
            .args(["--modes", "symmetric,two-stage:30,reconstruction"])
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
        assert_eq!(at_n[..8], ours, "{engines:?}");
        assert!(
            at_n[8..].iter().all(|e| baselines.contains(e)),
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
    let modes: Vec<&str> = ours_sparse[..6]
        .iter()
        .map(|r| r["mode"].as_str().unwrap())
        .collect();
    assert_eq!(
        modes,
        ["symmetric"; 2]
            .iter()
            .chain(&["two-stage:30"; 2])
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

/// Runs `cmd`, asserts it failed, and returns its standard error.
fn failure_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        !out.status.success(),
        "expected a failure; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Arguments of `ksparse eval-run --json` on `qrels` and `run` (file contents), written
/// into `dir`.
fn eval_run_args(dir: &std::path::Path, qrels: &str, run: &str) -> Vec<std::ffi::OsString> {
    std::fs::write(dir.join("qrels.tsv"), qrels).unwrap();
    std::fs::write(dir.join("run.trec"), run).unwrap();
    vec![
        "eval-run".into(),
        "--json".into(),
        "--qrels".into(),
        dir.join("qrels.tsv").into(),
        "--run".into(),
        dir.join("run.trec").into(),
    ]
}

/// `ksparse eval-run --json` on `qrels` and `run` (file contents) written into `dir`.
fn eval_run(dir: &std::path::Path, qrels: &str, run: &str) -> Command {
    let mut c = ksparse();
    c.args(eval_run_args(dir, qrels, run));
    c
}

#[test]
fn eval_run_refuses_a_document_listed_twice() {
    let dir = tempfile::tempdir().unwrap();
    let e = failure_of(&mut eval_run(
        dir.path(),
        "q1\td1\t1\n",
        "q1 Q0 d1 1 0.9 t\nq1 Q0 d2 2 0.8 t\nq1 Q0 d1 3 0.7 t\n",
    ));
    assert!(
        e.contains("run.trec:3") && e.contains("\"d1\"") && e.contains("twice"),
        "{e}"
    );
}

#[test]
fn evaluation_without_a_judged_query_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // Judgements, none relevant.
    let e = failure_of(&mut eval_run(
        dir.path(),
        "q1\td1\t0\n",
        "q1 Q0 d1 1 0.9 t\n",
    ));
    assert!(
        e.contains("qrels.tsv") && e.contains("no query is judged"),
        "{e}"
    );
    // The run's queries are not those of the qrels.
    let e = failure_of(&mut eval_run(
        dir.path(),
        "q1\td1\t1\n",
        "q9 Q0 d1 1 0.9 t\n",
    ));
    assert!(
        e.contains("run.trec") && e.contains("qrels.tsv") && e.contains("is judged"),
        "{e}"
    );
    // A byte order mark before the header is no error.
    let v = json_of(&mut eval_run(
        dir.path(),
        "\u{feff}query-id\tcorpus-id\tscore\nq1\td1\t1\n",
        "q1 Q0 d1 1 0.9 t\n",
    ));
    assert_eq!(v["mean"]["mrr@10"], 1.0);

    // eval-dense on a dataset whose qrels judge nothing relevant.
    let e = failure_of(&mut eval_dense_tiny(
        dir.path(),
        "d2",
        "query-id\tcorpus-id\tscore\nq1\td1\t0\n",
    ));
    assert!(
        e.contains("test.tsv") && e.contains("no query is judged"),
        "{e}"
    );
}

#[test]
fn eval_dense_refuses_a_run_with_whitespace_in_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("out.trec");
    let e = failure_of(
        eval_dense_tiny(dir.path(), "doc 2", "q1\td1\t1\n")
            .arg("--run-output")
            .arg(&run),
    );
    assert!(
        e.contains("\"doc 2\"") && e.contains("whitespace") && e.contains("out.trec"),
        "{e}"
    );
    assert!(!run.exists());
}

#[test]
fn float_flags_must_be_finite_and_in_range() {
    let dir = tempfile::tempdir().unwrap();
    let x = random_vectors(dir.path(), "x.npy", 40, 6);
    let enc = dir.path().join("enc");
    let train = |flag: &str, value: &str| {
        failure_of(
            ksparse()
                .args(["train", "--k", "2", "--epochs", "1", flag, value, "--input"])
                .arg(&x)
                .arg("--output")
                .arg(&enc),
        )
    };
    for (flag, value) in [
        ("--input-noise", "NaN"),
        ("--input-noise", "-0.1"),
        ("--temperature", "inf"),
        ("--temperature", "0"),
        ("--lr", "0"),
        ("--lr", "1e39"),
        ("--validation-fraction", "1"),
        ("--mse", "-1"),
        ("--multi", "nan"),
        ("--aux", "-inf"),
        ("--dist", "x"),
        ("--nce", "NaN"),
    ] {
        let e = train(flag, value);
        assert!(e.contains(flag) && e.contains(value), "{flag} {value}: {e}");
        assert!(!enc.exists());
    }
    let e = failure_of(
        ksparse()
            .args(["bench", "search", "--noise", "NaN", "--embeddings"])
            .arg(&x),
    );
    assert!(e.contains("--noise"), "{e}");
    let e = failure_of(ksparse().args([
        "bench",
        "quality",
        "--model",
        "m",
        "--dataset",
        "d",
        "--nce",
        "inf",
    ]));
    assert!(e.contains("--nce"), "{e}");
}

#[test]
fn counts_of_zero_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let x = random_vectors(dir.path(), "x.npy", 40, 6);
    let p = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (x, out) = (p(&x), p(&dir.path().join("out")));
    let (x, out) = (x.as_str(), out.as_str());
    for args in [
        vec!["train", "--k", "0", "--input", x, "--output", out],
        vec!["train", "--epochs", "0", "--input", x, "--output", out],
        vec!["train", "--batch-size", "0", "--input", x, "--output", out],
        vec!["train", "--hidden", "0d", "--input", x, "--output", out],
        vec![
            "train",
            "--pair-batch-size",
            "0",
            "--input",
            x,
            "--output",
            out,
        ],
        vec!["train", "--dead-after", "0", "--input", x, "--output", out],
        vec![
            "encode",
            "--k",
            "0",
            "--encoder",
            out,
            "--input",
            x,
            "--output",
            out,
        ],
        vec!["search", "--top", "0", out, "query"],
        vec!["index", "search", "--top", "0", out, "--queries", x],
        vec![
            "embed",
            "--batch-size",
            "0",
            "--model",
            "m",
            "--input",
            x,
            "--output",
            out,
        ],
        vec!["eval", "--k", "16,0", "--model", "m", "--dataset", out],
        vec!["bench", "train", "--steps", "0"],
        vec!["bench", "search", "--n", "0", "--embeddings", x],
    ] {
        let e = failure_of(ksparse().args(&args));
        assert!(
            e.contains("0 is not allowed") || e.contains("no width"),
            "{args:?}: {e}"
        );
    }
    let e = failure_of(ksparse().args([
        "index",
        "search",
        "--top",
        "10",
        "--rescore",
        "5",
        out,
        "--queries",
        x,
    ]));
    assert!(e.contains("--rescore 5") && e.contains("--top 10"), "{e}");
    assert!(!dir.path().join("out").exists());
}

#[test]
fn encode_refuses_codes_that_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let x = random_vectors(dir.path(), "x.npy", 200, 12);
    let enc = dir.path().join("enc");
    train_small(&x, &enc).assert().success();
    // Finite input, but far too large: ±3e38 in every dimension of rows 3 and 4.
    let mut m = read_npy(&x).unwrap().slice(ndarray::s![..6, ..]).to_owned();
    m.row_mut(3).fill(3e38);
    m.row_mut(4).fill(-3e38);
    let big = dir.path().join("big.npy");
    ksparse::io::write_npy(&big, &m).unwrap();
    let ids: Vec<String> = (0..6).map(|i| format!("doc{i}")).collect();
    ksparse::io::write_ids(&ksparse::io::ids_path(&big), &ids).unwrap();
    for name in ["big.kspc", "big.npz"] {
        let out = dir.path().join(name);
        let e = failure_of(&mut encode(&enc, &big, &out, &[]));
        assert!(
            e.contains("big.npy")
                && (e.contains("row 3") || e.contains("row 4"))
                && e.contains("infinite"),
            "{e}"
        );
        assert!(!out.exists());
    }
}

#[test]
fn train_pairs_use_the_supervised_infonce_weight_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let x = random_vectors(dir.path(), "x.npy", 100, 8);
    let q = random_vectors(dir.path(), "q.npy", 10, 8);
    let qids: Vec<String> = (0..10).map(|i| format!("q{i}")).collect();
    ksparse::io::write_ids(&ksparse::io::ids_path(&q), &qids).unwrap();
    let qrels = dir.path().join("train.tsv");
    let lines: String = (0..10)
        .map(|i| format!("q{i}\tdoc{}\t1\n", i * 3))
        .collect();
    std::fs::write(&qrels, lines).unwrap();
    let enc = dir.path().join("enc");
    let train = |extra: &[&str]| {
        let mut c = train_small(&x, &enc);
        c.arg("--pairs").arg(&q).arg(&x).arg(&qrels).args(extra);
        c
    };
    let out = train(&[]).output().unwrap();
    succeeded(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("InfoNCE weight 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, config) = ksparse::encoder::SparseEncoder::load(&enc).unwrap();
    assert_eq!(
        config.training.losses.nce,
        ksparse::encoder::train::SUPERVISED_NCE_WEIGHT
    );
    std::fs::remove_dir_all(&enc).unwrap();
    let e = failure_of(&mut train(&["--nce", "0"]));
    assert!(e.contains("pairs given but InfoNCE weight 0"), "{e}");
    assert!(!enc.exists());
    let help = ksparse().args(["train", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("ksparse eval --supervised"), "{help}");
}

#[test]
fn codes_with_an_absurd_width_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    // One row, one non-zero at latent 7, width 2³² − 1, valid checksum.
    let mut b = b"KSPCODE1".to_vec();
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&7u32.to_le_bytes());
    b.extend_from_slice(&0.5f32.to_le_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let codes = dir.path().join("wide.kspc");
    std::fs::write(&codes, &b).unwrap();
    ksparse::io::write_ids(&ksparse::io::ids_path(&codes), &["a".into()]).unwrap();
    let e = failure_of(
        ksparse()
            .args(["index", "build", "--codes"])
            .arg(&codes)
            .arg("--output")
            .arg(dir.path().join("idx")),
    );
    assert!(
        e.contains("wide.kspc") && e.contains("hidden") && e.contains("4294967295"),
        "{e}"
    );
}

/// Runs ksparse with `args`, its standard output closed by the reader right away (as
/// `| head` does once it has its lines), and asserts that it still succeeds, without a
/// panic.
fn survives_a_closed_pipe<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ksparse"))
        .args(["--threads", "2"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("panicked"),
        "{:?}: {err}",
        out.status
    );
}

#[test]
fn printing_commands_stop_quietly_on_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    survives_a_closed_pipe(eval_run_args(
        dir.path(),
        "q1\td1\t1\n",
        "q1 Q0 d1 1 0.9 t\n",
    ));
    let x = random_vectors(dir.path(), "x.npy", 300, 12);
    let enc = dir.path().join("enc");
    ksparse()
        .args(["train", "--k", "4", "--epochs", "1", "--input"])
        .arg(&x)
        .arg("--output")
        .arg(&enc)
        .assert()
        .success();
    let codes = dir.path().join("codes.kspc");
    encode(&enc, &x, &codes, &[]).assert().success();
    let idx = dir.path().join("idx");
    ksparse()
        .args(["index", "build", "--codes"])
        .arg(&codes)
        .arg("--output")
        .arg(&idx)
        .assert()
        .success();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (x, codes, idx, enc2) = (s(&x), s(&codes), s(&idx), s(&dir.path().join("enc2")));
    survives_a_closed_pipe(["index", "stats", &idx]);
    survives_a_closed_pipe(["index", "stats", "--json", &idx]);
    survives_a_closed_pipe(["index", "search", "--top", "50", "--queries", &codes, &idx]);
    survives_a_closed_pipe([
        "train", "--k", "4", "--epochs", "1", "--input", &x, "--output", &enc2,
    ]);
}

/// `ksparse eval-dense` on a two-document, one-query dataset in `dir` (documents "d1" and
/// `second`, query "q1", `qrels` as test.tsv) with random vectors given for both.
fn eval_dense_tiny(dir: &std::path::Path, second: &str, qrels: &str) -> Command {
    let ds = dir.join("ds");
    std::fs::create_dir_all(ds.join("qrels")).unwrap();
    let corpus_lines = format!(
        "{{\"_id\":\"d1\",\"text\":\"x\"}}\n{}\n",
        serde_json::json!({ "_id": second, "text": "y" })
    );
    std::fs::write(ds.join("corpus.jsonl"), corpus_lines).unwrap();
    std::fs::write(
        ds.join("queries.jsonl"),
        "{\"_id\":\"q1\",\"text\":\"x\"}\n",
    )
    .unwrap();
    std::fs::write(ds.join("qrels/test.tsv"), qrels).unwrap();
    let corpus = random_vectors(dir, "corpus.npy", 2, 4);
    ksparse::io::write_ids(
        &ksparse::io::ids_path(&corpus),
        &["d1".into(), second.into()],
    )
    .unwrap();
    let queries = random_vectors(dir, "queries.npy", 1, 4);
    ksparse::io::write_ids(&ksparse::io::ids_path(&queries), &["q1".into()]).unwrap();
    let mut c = ksparse();
    c.args(["eval-dense", "--model", "unused", "--dataset"])
        .arg(&ds)
        .arg("--corpus-embeddings")
        .arg(&corpus)
        .arg("--query-embeddings")
        .arg(&queries);
    c
}

/// `ksparse train` of a small encoder (k 4, 2 epochs) on `x` into `enc`.
fn train_small(x: &std::path::Path, enc: &std::path::Path) -> Command {
    let mut c = ksparse();
    c.args(["train", "--k", "4", "--epochs", "2", "--input"])
        .arg(x)
        .arg("--output")
        .arg(enc);
    c
}
