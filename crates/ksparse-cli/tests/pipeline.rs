//! `ksparse build` and `ksparse search` end to end on the shipped 300-document SciFact
//! slice with the real MiniLM model: the folder, the cache that makes a rebuild skip
//! finished stages, text search, and the errors a user meets.

use ksparse_testkit as common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn ksparse() -> Command {
    let mut c = Command::cargo_bin("ksparse").unwrap();
    c.arg("--threads").arg("2");
    c
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn build_then_search_by_text() {
    let Some(model) = common::model("all-MiniLM-L6-v2") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let corpus = common::root().join("tests/fixtures/scifact-mini/corpus.jsonl.gz");
    let folder = dir.path().join("mini.ks");
    let build = || {
        ksparse()
            .arg("build")
            .arg("--model")
            .arg(&model)
            .arg("--corpus")
            .arg(&corpus)
            .arg("--output")
            .arg(&folder)
            .args(["--hidden", "2d", "--k", "8", "--epochs", "5", "--json"])
            .arg("--cache")
            .arg(dir.path().join("cache"))
            .output()
            .unwrap()
    };
    let first = build();
    assert!(first.status.success(), "{}", stderr(&first));
    let manifest: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(manifest["documents"], 300);
    assert_eq!(manifest["k"], 8);
    assert_eq!(manifest["hidden"], 768);
    // The folder holds what the manifest says: the manifest itself, an index of every
    // document, the encoder, and the documents' texts in corpus order.
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("ksparse.json")).unwrap())
            .unwrap();
    assert_eq!(saved["content"], manifest);
    let index = ksparse::index::Index::open(&folder.join("index")).unwrap();
    assert_eq!((index.live(), index.hidden()), (300, 768));
    let (encoder, config) = ksparse::encoder::SparseEncoder::load(&folder.join("encoder")).unwrap();
    assert_eq!((encoder.dim, encoder.hidden, config.k), (384, 768, 8));
    let corpus_ids = ksparse::data::read_texts(&corpus).unwrap().ids;
    let docs = std::fs::read_to_string(folder.join("docs.jsonl")).unwrap();
    let doc_ids: Vec<String> = docs
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(doc_ids, corpus_ids);

    // A second build finds both long stages in the cache: it writes nothing there and
    // makes the same folder.
    let cached = cache_files(&dir.path().join("cache"));
    let second = build();
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(cache_files(&dir.path().join("cache")), cached);
    let again: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(again, manifest);

    // A document's own text finds it, with its title and a snippet.
    let doc: serde_json::Value = serde_json::from_str(docs.lines().nth(7).unwrap()).unwrap();
    let text = format!(
        "{} {}",
        doc["title"].as_str().unwrap(),
        doc["text"].as_str().unwrap()
    );
    let out = ksparse()
        .arg("search")
        .arg(&folder)
        .arg(&text)
        .args(["--top", "10", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hits = result["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 10);
    let own = hits
        .iter()
        .find(|h| h["id"] == doc["_id"])
        .expect("own document in the top 10");
    assert_eq!(own["title"], doc["title"]);
    // The snippet is the start of the text, cut at a word (and marked) when longer.
    let snippet = own["snippet"].as_str().unwrap();
    let body = doc["text"].as_str().unwrap();
    let start = snippet.strip_suffix('…').unwrap_or(snippet);
    assert!(
        start.chars().count() >= body.chars().count().min(100),
        "{snippet:?}"
    );
    assert!(
        body.starts_with(start),
        "{snippet:?} is not the start of {body:?}"
    );
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");

    // Many queries from stdin, one JSON line each, in order.
    let out = ksparse()
        .arg("search")
        .arg(&folder)
        .args([
            "--queries",
            "-",
            "--json",
            "--top",
            "3",
            "--mode",
            "symmetric:16",
        ])
        .write_stdin("vitamin D deficiency\n\nprotein folding in cells\n")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let queries: Vec<&str> = lines.iter().map(|l| l["query"].as_str().unwrap()).collect();
    assert_eq!(
        queries,
        ["vitamin D deficiency", "protein folding in cells"]
    );
    for l in &lines {
        assert_eq!(l["hits"].as_array().unwrap().len(), 3, "{l}");
    }

    // Two-stage-dense needs the documents' vectors: refused here with the way out; a
    // folder built with --keep-vectors has them, searches with them by default, and
    // refuses a damaged copy of them.
    let search_json = |folder: &Path, args: &[&str]| {
        ksparse()
            .arg("search")
            .arg(folder)
            .arg(&text)
            .args(["--top", "10", "--json"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = search_json(&folder, &["--mode", "two-stage-dense"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--keep-vectors"), "{}", stderr(&out));
    let kept = dir.path().join("kept.ks");
    let out = ksparse()
        .args(["build", "--model"])
        .arg(&model)
        .arg("--corpus")
        .arg(&corpus)
        .arg("--output")
        .arg(&kept)
        .args([
            "--hidden",
            "2d",
            "--k",
            "8",
            "--epochs",
            "5",
            "--keep-vectors",
        ])
        .arg("--cache")
        .arg(dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::metadata(kept.join("vectors.i8")).unwrap().len(),
        20 + 300 * (4 + 384) + 4
    );
    let hits_of = |out: std::process::Output| -> Vec<String> {
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_string())
            .collect()
    };
    let by_default = hits_of(search_json(&kept, &[]));
    assert_eq!(
        by_default,
        hits_of(search_json(&kept, &["--mode", "two-stage-dense:100"]))
    );
    assert_eq!(
        by_default[0],
        doc["_id"].as_str().unwrap(),
        "own document first"
    );
    let mut bytes = std::fs::read(kept.join("vectors.i8")).unwrap();
    bytes[100] ^= 1;
    std::fs::write(kept.join("vectors.i8"), bytes).unwrap();
    let out = search_json(&kept, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("vectors.i8"), "{}", stderr(&out));

    // A tampered copy of the folder is refused with the reason, never searched.
    let search_copy = |name: &str, tamper: &dyn Fn(&Path)| -> String {
        let copy = dir.path().join(name);
        copy_dir(&folder, &copy);
        tamper(&copy);
        let out = ksparse()
            .arg("search")
            .arg(&copy)
            .arg("vitamin D")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name}: searched a tampered folder");
        stderr(&out)
    };
    let edit_manifest = |copy: &Path, key: &str, value: serde_json::Value, keep_sum: bool| {
        let path = copy.join("ksparse.json");
        let mut m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        m["content"][key] = value;
        if !keep_sum {
            // As a manifest written before checksums: the content alone.
            m = m["content"].take();
        }
        std::fs::write(&path, m.to_string()).unwrap();
    };
    let err = search_copy("edited.ks", &|c| edit_manifest(c, "k", 4.into(), true));
    assert!(err.contains("checksum mismatch"), "{err}");
    let err = search_copy("k0.ks", &|c| edit_manifest(c, "k", 0.into(), false));
    assert!(err.contains("k = 0"), "{err}");
    let err = search_copy("sha.ks", &|c| {
        edit_manifest(c, "model_sha256", "éééééééééééééééé".into(), false)
    });
    assert!(
        err.contains("different model") && !err.contains("panicked"),
        "{err}"
    );
    let err = search_copy("swapped.ks", &|c| {
        std::fs::remove_dir_all(c.join("index")).unwrap();
        let code = ksparse::base::SparseCode {
            ids: vec![1],
            values: vec![1.0],
        };
        ksparse::index::build(&c.join("index"), &[code], &["x".into()], 64).unwrap();
    });
    assert!(err.contains("disagree on the width"), "{err}");
    let err = search_copy("docs.ks", &|c| {
        let docs = std::fs::read_to_string(c.join("docs.jsonl")).unwrap();
        std::fs::write(c.join("docs.jsonl"), docs.replacen("a", "b", 1)).unwrap();
    });
    assert!(
        err.contains("docs.jsonl") && err.contains("SHA-256"),
        "{err}"
    );

    // Another model is refused with the reason and the fix.
    if let Some(other) = common::model("all-mpnet-base-v2") {
        let out = ksparse()
            .arg("search")
            .arg(&folder)
            .arg("anything")
            .arg("--model")
            .arg(&other)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(stderr(&out).contains("different model"), "{}", stderr(&out));
    }
}

#[test]
fn search_and_build_explain_wrong_folders() {
    let dir = tempfile::tempdir().unwrap();
    let out = ksparse()
        .arg("search")
        .arg(dir.path())
        .arg("query")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a ksparse search folder"),
        "{}",
        stderr(&out)
    );

    let Some(model) = common::model("all-MiniLM-L6-v2") else {
        return;
    };
    // An existing folder that is not a search folder is never replaced.
    std::fs::write(dir.path().join("precious.txt"), "keep me").unwrap();
    let out = ksparse()
        .arg("build")
        .arg("--model")
        .arg(&model)
        .arg("--corpus")
        .arg(common::root().join("tests/fixtures/scifact-mini/corpus.jsonl.gz"))
        .arg("--output")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a ksparse search folder"),
        "{}",
        stderr(&out)
    );
    assert!(dir.path().join("precious.txt").exists());
}

#[test]
fn eval_writes_the_report_and_plots_and_reuses_its_cache() {
    let Some(model) = common::model("all-MiniLM-L6-v2") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let eval = || {
        ksparse()
            .arg("eval")
            .arg("--dataset")
            .arg(common::root().join("tests/fixtures/scifact-mini"))
            .arg("--model")
            .arg(&model)
            .args(["--k", "8,16", "--hidden", "2d", "--epochs", "3", "--json"])
            .arg("--supervised")
            .arg("--cache")
            .arg(dir.path().join("cache"))
            .arg("--output")
            .arg(dir.path().join("report"))
            .output()
            .unwrap()
    };
    let first = eval();
    assert!(first.status.success(), "{}", stderr(&first));
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(report["dataset"], "scifact-mini");
    assert_eq!(report["documents"], 300);
    assert_eq!(report["queries"], 30);
    let metrics =
        |row: &serde_json::Value| ["ndcg@10", "recall@100", "mrr@10"].map(|k| num(&row[k]));
    // Dense exact search over our MiniLM vectors scores as over sentence-transformers'.
    let dense = &report["dense"];
    common::assert_metrics(
        "dense",
        metrics(dense),
        common::SCIFACT_MINI_MINILM_DENSE,
        0.005,
    );
    // 300 vectors of 384 f32; HNSW holds them and at least one 4-byte link per point,
    // at most 2m on the bottom layer and m per layer above (m = 16).
    let vectors = 300 * 384 * 4;
    assert_eq!(num(&dense["bytes"]), vectors as f64);
    let hnsw = &report["hnsw"];
    let links = num(&hnsw["bytes"]) - vectors as f64;
    assert!(
        (300.0 * 4.0..=300.0 * 4.0 * 48.0).contains(&links),
        "{hnsw}"
    );
    // On 300 documents HNSW finds what exact search finds.
    common::assert_metrics("hnsw", metrics(hnsw), metrics(dense), 0.01);
    for row in [dense, hnsw] {
        assert!(
            num(&row["p50_ms"]) > 0.0 && num(&row["p99_ms"]) >= num(&row["p50_ms"]),
            "{row}"
        );
    }

    // One row per supervision × k × mode (the default modes), at the width asked (2d = 768).
    let sparse = report["sparse"].as_array().unwrap();
    let rows: BTreeSet<(bool, u64, String)> = sparse
        .iter()
        .map(|r| {
            assert_eq!(r["hidden"], 768, "{r}");
            let key = (
                r["supervised"].as_bool().unwrap(),
                r["k"].as_u64().unwrap(),
                r["mode"].as_str().unwrap().to_string(),
            );
            key
        })
        .collect();
    let mut want = BTreeSet::new();
    for supervised in [false, true] {
        for k in [8u64, 16] {
            for mode in [
                "symmetric".to_string(),
                format!("symmetric:{}", 4 * k),
                "two-stage:100".into(),
                "two-stage-dense:100".into(),
                "reconstruction".into(),
            ] {
                want.insert((supervised, k, mode));
            }
        }
    }
    assert_eq!(rows, want);
    assert_eq!(sparse.len(), want.len());
    let index_bytes = |supervised: bool, k: u64| -> BTreeSet<u64> {
        sparse
            .iter()
            .filter(|r| r["supervised"] == supervised && r["k"] == k)
            .filter(|r| !r["mode"].as_str().unwrap().starts_with("two-stage-dense"))
            .map(|r| r["bytes"].as_u64().unwrap())
            .collect()
    };
    for supervised in [false, true] {
        // The modes of one encoder search one index: one size; longer codes, more bytes.
        let (small, large) = (index_bytes(supervised, 8), index_bytes(supervised, 16));
        assert_eq!((small.len(), large.len()), (1, 1), "{sparse:?}");
        assert!(small.first() < large.first(), "{small:?} vs {large:?}");
        // Re-ranking by the dense vectors adds them: 384 bytes and a scale per document.
        let dense_row = sparse
            .iter()
            .find(|r| {
                r["supervised"] == supervised && r["k"] == 8 && r["mode"] == "two-stage-dense:100"
            })
            .unwrap();
        assert_eq!(
            dense_row["bytes"].as_u64().unwrap(),
            small.first().unwrap() + 300 * (384 + 4)
        );
    }
    for row in sparse {
        assert!(num(&row["train_s"]) > 0.0, "{row}");
        assert!(
            num(&row["p50_ms"]) > 0.0 && num(&row["p99_ms"]) >= num(&row["p50_ms"]),
            "{row}"
        );
    }
    // Hits are the collection's documents, not a permutation of them (the index stores
    // its own document order): the best sparse row gets most of dense's quality.
    let best = sparse
        .iter()
        .map(|r| num(&r["ndcg@10"]))
        .fold(0.0, f64::max);
    let dense_ndcg = num(&dense["ndcg@10"]);
    assert!(
        best > 0.6 * dense_ndcg,
        "best sparse {best} vs dense {dense_ndcg}"
    );

    // The plots draw every row: a point per sparse row (and one per dense engine on the
    // latency plot), a point per index size.
    let out = dir.path().join("report");
    let sizes: BTreeSet<(u64, u64)> = sparse
        .iter()
        .filter(|r| !r["mode"].as_str().unwrap().starts_with("two-stage-dense"))
        .map(|r| (r["k"].as_u64().unwrap(), r["bytes"].as_u64().unwrap()))
        .collect();
    for (plot, points) in [
        ("ndcg_vs_k.svg", sparse.len()),
        ("latency_vs_ndcg.svg", sparse.len() + 2),
        ("bytes_vs_k.svg", sizes.len()),
    ] {
        let svg = std::fs::read_to_string(out.join(plot)).unwrap();
        assert_eq!(svg.matches("<circle").count(), points, "{plot}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let dense_row = format!(
        "| dense exact | {dense_ndcg:.4} | {:.4} |",
        num(&dense["recall@100"])
    );
    assert!(md.contains(&dense_row), "{dense_row} in\n{md}");
    assert_eq!(md.matches("\n| 768 |").count(), sparse.len(), "{md}");

    // The second run embeds and trains nothing (the cache is not written) and reports the
    // same quality and the recorded training times.
    let cached = cache_files(&dir.path().join("cache"));
    let second = eval();
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(cache_files(&dir.path().join("cache")), cached);
    let again: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(metrics(&again["dense"]), metrics(dense));
    let again = again["sparse"].as_array().unwrap();
    assert_eq!(again.len(), sparse.len());
    for (a, b) in sparse.iter().zip(again) {
        for key in [
            "supervised",
            "k",
            "mode",
            "ndcg@10",
            "recall@100",
            "mrr@10",
            "train_s",
            "bytes",
        ] {
            assert_eq!(a[key], b[key], "{key}");
        }
    }
}

/// A JSON number.
fn num(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

/// Every file under `dir` with its length and modification time.
fn cache_files(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let meta = e.metadata().unwrap();
        if meta.is_dir() {
            files.extend(cache_files(&e.path()));
        } else {
            files.insert(e.path(), (meta.len(), meta.modified().unwrap()));
        }
    }
    files
}

#[test]
fn eval_explains_a_wrong_dataset_and_k_above_the_width() {
    let Some(model) = common::model("all-MiniLM-L6-v2") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = |dataset: &Path, k: &str| {
        ksparse()
            .arg("eval")
            .arg("--dataset")
            .arg(dataset)
            .arg("--model")
            .arg(&model)
            .args(["--k", k, "--hidden", "2d"])
            .arg("--cache")
            .arg(dir.path().join("cache"))
            .arg("--output")
            .arg(dir.path().join("report"))
            .output()
            .unwrap()
    };
    let out = run(dir.path(), "8");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("corpus.jsonl"), "{}", stderr(&out));
    let out = run(&common::root().join("tests/fixtures/scifact-mini"), "5000");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("larger than the width"),
        "{}",
        stderr(&out)
    );
}

/// Copies a folder tree.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
