//! `ksparse build` and `ksparse search` end to end on the shipped 300-document SciFact
//! slice with the real MiniLM model: the folder, the cache that makes a rebuild skip
//! finished stages, text search, and the errors a user meets.

mod common;

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
    for part in [
        "ksparse.json",
        "index/meta.json",
        "encoder/model.safetensors",
        "docs.jsonl",
    ] {
        assert!(folder.join(part).exists(), "{part}");
    }

    // A second build finds both long stages in the cache.
    let second = build();
    assert!(second.status.success(), "{}", stderr(&second));
    let log = stderr(&second);
    assert!(
        log.contains("embeddings from cache") && log.contains("encoder from cache"),
        "{log}"
    );

    // A document's own text finds it, with its title and a snippet.
    let docs = std::fs::read_to_string(folder.join("docs.jsonl")).unwrap();
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
    assert!(!own["snippet"].as_str().unwrap().is_empty());
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
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["query"], "protein folding in cells");

    // A tampered copy of the folder is refused with the reason, never searched.
    let search_copy = |name: &str, tamper: &dyn Fn(&std::path::Path)| -> String {
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
    let edit_manifest =
        |copy: &std::path::Path, key: &str, value: serde_json::Value, keep_sum: bool| {
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
        let code = ksparse::encoder::SparseCode {
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
            .args([
                "--modes",
                "symmetric,symmetric:4k,reconstruction",
                "--supervised",
            ])
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
    assert_eq!(report["queries"], 30);
    for engine in ["dense", "hnsw"] {
        for key in ["ndcg@10", "recall@100", "p50_ms", "bytes"] {
            assert!(report[engine][key].as_f64().is_some(), "{engine}.{key}");
        }
    }
    let sparse = report["sparse"].as_array().unwrap();
    assert_eq!(
        sparse.len(),
        2 * 2 * 3,
        "unsupervised and supervised × k × mode"
    );
    let supervised = sparse.iter().filter(|r| r["supervised"] == true).count();
    assert_eq!(supervised, 2 * 3);
    for row in sparse {
        for key in [
            "k",
            "hidden",
            "ndcg@10",
            "recall@100",
            "mrr@10",
            "p50_ms",
            "p99_ms",
            "bytes",
            "train_s",
        ] {
            assert!(row[key].as_f64().is_some(), "{key} in {row}");
        }
        let ndcg = row["ndcg@10"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&ndcg));
    }
    assert_eq!(sparse[1]["mode"], "symmetric:32");
    // Hits are the collection's documents, not a permutation of them (the index stores
    // its own document order): the best sparse row gets most of dense's quality.
    let best = sparse
        .iter()
        .map(|r| r["ndcg@10"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let dense = report["dense"]["ndcg@10"].as_f64().unwrap();
    assert!(best > 0.6 * dense, "best sparse {best} vs dense {dense}");
    let out = dir.path().join("report");
    for plot in ["ndcg_vs_k.svg", "latency_vs_ndcg.svg", "bytes_vs_k.svg"] {
        let svg = std::fs::read_to_string(out.join(plot)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<circle"), "{plot}");
    }
    assert!(std::fs::read_to_string(out.join("report.md"))
        .unwrap()
        .contains("| dense exact |"));

    // The second run embeds and trains nothing and reports the same quality.
    let second = eval();
    assert!(second.status.success(), "{}", stderr(&second));
    let log = stderr(&second);
    assert!(log.contains("embeddings from cache"), "{log}");
    assert_eq!(log.matches("encoder from cache").count(), 4, "{log}");
    let again: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    for (a, b) in sparse.iter().zip(again["sparse"].as_array().unwrap()) {
        assert_eq!(a["ndcg@10"], b["ndcg@10"]);
        assert_eq!(a["train_s"], b["train_s"]);
    }
}

#[test]
fn eval_explains_a_wrong_dataset_and_k_above_the_width() {
    let Some(model) = common::model("all-MiniLM-L6-v2") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = |dataset: &std::path::Path, k: &str| {
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
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
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
