//! `ksparse serve` on loopback, started and stopped by the tests: every route of the
//! table, API keys, the bad-input matrix, SIGKILL in the middle of an ingest, readers
//! during writes, background merges, snapshots, the official qdrant-client and the
//! search page in a real headless Chromium.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ksparse_testkit as common;
use serde_json::{json, Value};

/// A server process on a free loopback port, killed when dropped.
struct Server {
    child: Option<Child>,
    url: String,
}

impl Server {
    fn start(data: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ksparse"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra)
            .env_remove("KSPARSE_API_KEY")
            .env_remove("KSPARSE_READ_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let server = Server {
            child: Some(child),
            url,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while server.call("GET", "/readyz", None, None).0 != 200 {
            assert!(Instant::now() < deadline, "the server never got ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// (status, JSON body) of one request.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let mut req =
            ureq::request(method, &format!("{}{path}", self.url)).timeout(Duration::from_secs(120));
        if let Some(k) = key {
            req = req.set("api-key", k);
        }
        let result = match body {
            Some(b) => req
                .set("content-type", "application/json")
                .send_string(&b.to_string()),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The `result` of a request that must succeed.
    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body.as_ref(), None);
        assert_eq!(status, 200, "{method} {path}: {v}");
        assert_eq!(v["status"], "ok", "{v}");
        v["result"].clone()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL: no shutdown, no destructors.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    /// SIGTERM, then the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        let sent = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        c.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A search folder built once per test run from the 300-document SciFact slice with the
/// real MiniLM (small encoder, few epochs: the routes are under test, not quality).
fn mini_folder() -> Option<PathBuf> {
    static FOLDER: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOLDER
        .get_or_init(|| {
            let model = common::model("all-MiniLM-L6-v2")?;
            let dir = tempfile::tempdir().unwrap().keep();
            let folder = dir.join("mini.ks");
            let out = Command::new(env!("CARGO_BIN_EXE_ksparse"))
                .args(["build", "--model"])
                .arg(&model)
                .arg("--corpus")
                .arg(common::root().join("tests/fixtures/scifact-mini/corpus.jsonl.gz"))
                .arg("--output")
                .arg(&folder)
                .args(["--hidden", "2d", "--k", "8", "--epochs", "5", "--cache"])
                .arg(dir.join("cache"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(folder)
        })
        .clone()
}

fn sparse_collection(s: &Server, name: &str) {
    s.ok(
        "PUT",
        &format!("/collections/{name}"),
        Some(json!({"sparse_vectors": {"text": {}}, "width": 1000})),
    );
}

fn points(ids: std::ops::Range<u64>, batch: u64) -> Value {
    let pts: Vec<Value> = ids
        .map(|i| {
            json!({
                "id": i,
                "vector": {"text": {"indices": [i % 50, 50 + i % 7], "values": [1.0 + (i % 5) as f32, 0.5]}},
                "payload": {"batch": batch, "parity": if i % 2 == 0 { "even" } else { "odd" }},
            })
        })
        .collect();
    json!({ "points": pts })
}

fn ids_of(hits: &Value) -> Vec<Value> {
    hits["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].clone())
        .collect()
}

#[test]
fn every_route_answers_and_text_collections_search() {
    let Some(folder) = mini_folder() else { return };
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &[]);
    // Adopt the search folder; query by text with explain and documents.
    s.ok("PUT", "/collections/scifact", Some(json!({"from": folder})));
    let info = s.ok("GET", "/collections/scifact", None);
    assert_eq!(info["points_count"], 300);
    assert_eq!(info["ksparse"]["k"], 8);
    assert_eq!(info["ksparse"]["width"], 768);
    let q = json!({"query": {"text": "vitamin D and bone density"}, "limit": 5, "explain": true, "with_document": true});
    let hits = s.ok("POST", "/collections/scifact/points/query", Some(q.clone()));
    let first = &hits["points"][0];
    assert_eq!(hits["points"].as_array().unwrap().len(), 5);
    assert!(
        !first["document"]["title"].as_str().unwrap().is_empty(),
        "{first}"
    );
    assert!(!first["explain"].as_array().unwrap().is_empty());
    // The same hits as `ksparse search` on the folder (same default mode: two-stage).
    let cli = Command::new(env!("CARGO_BIN_EXE_ksparse"))
        .arg("search")
        .arg(&folder)
        .args(["vitamin D and bone density", "--top", "5", "--json"])
        .output()
        .unwrap();
    assert!(cli.status.success());
    let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
    let cli_ids: Vec<Value> = cli["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].clone())
        .collect();
    assert_eq!(ids_of(&hits), cli_ids);
    // Offset: the next page continues the ranking.
    let page2 = s.ok(
        "POST",
        "/collections/scifact/points/query",
        Some(json!({"query": {"text": "vitamin D and bone density"}, "limit": 3, "offset": 2})),
    );
    assert_eq!(ids_of(&page2), ids_of(&hits)[2..5]);
    // Text points go in and come back first for their own text.
    s.ok("PUT", "/collections/scifact/points", Some(json!({"points": [
        {"id": 90001, "title": "Penguins", "text": "Emperor penguins huddle through the Antarctic winter.", "payload": {"kind": "new"}},
        {"id": "d-2", "text": "Quantum error correction with surface codes.", "payload": {"kind": "new"}}]})));
    let hits = s.ok("POST", "/collections/scifact/points/query", Some(json!({"query": {"text": "emperor penguins antarctic winter"}, "limit": 1, "with_payload": true})));
    assert_eq!(hits["points"][0]["id"], 90001);
    assert_eq!(hits["points"][0]["payload"]["kind"], "new");
    let filtered = s.ok(
        "POST",
        "/collections/scifact/points/query",
        Some(json!({"query": {"text": "vitamin D"}, "limit": 10,
        "filter": {"must": [{"key": "kind", "match": {"value": "new"}}]}})),
    );
    assert_eq!(
        filtered["points"].as_array().unwrap().len(),
        2,
        "exact filtered search returns every passing point"
    );
    // Batch queries, modes, count, get, retrieve, delete by filter.
    let batch = s.ok("POST", "/collections/scifact/points/query/batch", Some(json!({"searches": [q, {"query": {"text": "penguins"}, "limit": 2, "mode": "symmetric"}]})));
    assert_eq!(batch.as_array().unwrap().len(), 2);
    assert_eq!(
        s.ok("POST", "/collections/scifact/points/count", Some(json!({})))["count"],
        302
    );
    assert_eq!(
        s.ok("GET", "/collections/scifact/points/d-2", None)["payload"]["kind"],
        "new"
    );
    let got = s.ok(
        "POST",
        "/collections/scifact/points",
        Some(json!({"ids": [90001, "nope"], "with_vector": true})),
    );
    assert_eq!(got.as_array().unwrap().len(), 1);
    assert_eq!(
        got[0]["vector"]["text"]["indices"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    // Snapshot, change, restore: the change is gone.
    let snap = s.ok("POST", "/collections/scifact/snapshots", None);
    s.ok(
        "POST",
        "/collections/scifact/points/delete",
        Some(json!({"filter": {"must": [{"key": "kind", "match": {"value": "new"}}]}})),
    );
    assert_eq!(
        s.ok("POST", "/collections/scifact/points/count", Some(json!({})))["count"],
        300
    );
    let listed = s.ok("GET", "/collections/scifact/snapshots", None);
    assert_eq!(listed[0]["name"], snap["name"]);
    let name = snap["name"].as_str().unwrap();
    s.ok(
        "POST",
        &format!("/collections/scifact/snapshots/{name}/restore"),
        None,
    );
    assert_eq!(
        s.ok("POST", "/collections/scifact/points/count", Some(json!({})))["count"],
        302
    );
    // Every route of the table is served (no route answers the fallback's 404 or a 405),
    // and the OpenAPI document lists each.
    let (status, doc) = s.call("GET", "/openapi.json", None, None);
    assert_eq!(status, 200);
    for r in ksparse_server::routes::ROUTES {
        assert!(
            doc["paths"][r.path][r.method.to_lowercase()].is_object(),
            "{} {} not in the OpenAPI document",
            r.method,
            r.path
        );
        let path = r
            .path
            .replace("{name}", "sweep")
            .replace("{id}", "90001")
            .replace("{snapshot}", "none");
        let body = matches!(r.method, "PUT" | "POST").then(|| json!({}));
        let (status, v) = s.call(r.method, &path, body.as_ref(), None);
        assert_ne!(status, 405, "{} {}", r.method, r.path);
        let fallback = v["status"]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("no route"));
        assert!(!fallback, "{} {} is not routed: {v}", r.method, r.path);
    }
    let (status, v) = s.call("GET", "/no/such/route", None, None);
    assert_eq!(status, 404);
    assert!(v["status"]["error"]
        .as_str()
        .unwrap()
        .starts_with("no route"));
    // Metrics count requests by route and show the collection's gauges.
    let (status, metrics) = s.call("GET", "/metrics", None, None);
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(metrics.contains("ksparse_requests_total{method=\"POST\",route=\"/collections/{name}/points/query\",status=\"200\"}"), "{metrics}");
    assert!(metrics.contains("ksparse_documents{collection=\"scifact\"} 302"));
    // The collection and everything in it survive a restart.
    drop(s);
    let s = Server::start(data.path(), &[]);
    assert_eq!(
        s.ok("GET", "/collections", None)["collections"][0]["name"],
        "scifact"
    );
    assert_eq!(
        s.ok("POST", "/collections/scifact/points/count", Some(json!({})))["count"],
        302
    );
    s.ok("DELETE", "/collections/scifact", None);
    assert_eq!(
        s.ok("GET", "/collections/scifact/exists", None)["exists"],
        false
    );
    assert!(!data.path().join("collections/scifact").exists());
}

/// A collection made with a model and no encoder keeps the points' dense vectors and
/// answers by exact dense search; `POST …/train` learns the encoder in the background
/// (progress in the info route) and then answers through the index.
#[test]
fn a_collection_trains_its_encoder_on_its_points() {
    let Some(model) = common::model("all-MiniLM-L6-v2") else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &[]);
    s.ok(
        "PUT",
        "/collections/fresh",
        Some(json!({"model": model, "hidden": "2d", "k": 8})),
    );
    let corpus = ksparse::data::read_texts(
        &common::root().join("tests/fixtures/scifact-mini/corpus.jsonl.gz"),
    )
    .unwrap();
    for chunk in (0..corpus.len()).collect::<Vec<_>>().chunks(100) {
        let points: Vec<Value> = chunk
            .iter()
            .map(|&i| json!({"id": corpus.ids[i], "text": corpus.texts[i], "payload": {"n": i}}))
            .collect();
        s.ok(
            "PUT",
            "/collections/fresh/points",
            Some(json!({ "points": points })),
        );
    }
    let probe = |s: &Server| {
        s.ok(
            "POST",
            "/collections/fresh/points/query",
            Some(json!({"query": {"text": corpus.texts[7]}, "limit": 3})),
        )
    };
    // Before training: exact dense search over the kept vectors.
    assert_eq!(probe(&s)["points"][0]["id"], corpus.ids[7]);
    let (status, v) = s.call(
        "POST",
        "/collections/fresh/points/query",
        Some(&json!({"query": {"text": "x"}, "mode": "two-stage"})),
        None,
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        s.ok(
            "POST",
            "/collections/fresh/train",
            Some(json!({"epochs": 5}))
        )["status"],
        "started"
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    let info = loop {
        let info = s.ok("GET", "/collections/fresh", None);
        let state = info["ksparse"]["training"]["state"]
            .as_str()
            .unwrap()
            .to_string();
        assert_ne!(state, "failed", "{info}");
        if state == "done" {
            break info;
        }
        assert!(Instant::now() < deadline, "training did not end: {info}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(info["ksparse"]["encoder"], true);
    assert_eq!(info["ksparse"]["training"]["documents"], 300);
    assert_eq!(info["points_count"], 300);
    // Now through the index, with the latents that explain each hit.
    let hits = s.ok(
        "POST",
        "/collections/fresh/points/query",
        Some(json!({"query": {"text": corpus.texts[7]}, "limit": 3, "explain": true})),
    );
    assert_eq!(hits["points"][0]["id"], corpus.ids[7]);
    assert!(!hits["points"][0]["explain"].as_array().unwrap().is_empty());
    let got = s.ok(
        "POST",
        "/collections/fresh/points",
        Some(json!({"ids": [corpus.ids[7]], "with_vector": true})),
    );
    assert_eq!(
        got[0]["vector"]["text"]["indices"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    // New points are encoded as they arrive; the encoder survives a restart.
    drop(s);
    let s = Server::start(data.path(), &[]);
    s.ok("PUT", "/collections/fresh/points", Some(json!({"points": [{"id": "new", "text": "Emperor penguins huddle through the Antarctic winter."}]})));
    let hits = s.ok(
        "POST",
        "/collections/fresh/points/query",
        Some(json!({"query": {"text": "emperor penguins in the antarctic winter"}, "limit": 1})),
    );
    assert_eq!(hits["points"][0]["id"], "new");
}

#[test]
fn keys_guard_writes_and_reads() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(
        data.path(),
        &["--api-key", "write-key", "--read-key", "read-key"],
    );
    let create = json!({"sparse_vectors": {"text": {}}});
    let (status, v) = s.call("PUT", "/collections/c", Some(&create), None);
    assert_eq!(status, 401, "{v}");
    assert!(v["status"]["error"].as_str().unwrap().contains("API key"));
    assert_eq!(
        s.call("PUT", "/collections/c", Some(&create), Some("wrong"))
            .0,
        401
    );
    assert_eq!(
        s.call("PUT", "/collections/c", Some(&create), Some("read-key"))
            .0,
        403
    );
    assert_eq!(
        s.call("PUT", "/collections/c", Some(&create), Some("write-key"))
            .0,
        200
    );
    assert_eq!(s.call("GET", "/collections", None, Some("read-key")).0, 200);
    assert_eq!(s.call("GET", "/collections", None, None).0, 401);
    assert_eq!(s.call("GET", "/metrics", None, None).0, 401);
    // HEAD (answered from GET handlers) is not a way around the keys.
    assert_eq!(s.call("HEAD", "/collections/c", None, None).0, 401);
    assert_eq!(
        s.call("HEAD", "/collections/c", None, Some("read-key")).0,
        403
    );
    // Open routes need no key.
    assert_eq!(s.call("GET", "/healthz", None, None).0, 200);
    assert_eq!(s.call("GET", "/openapi.json", None, None).0, 200);
    // Authorization: Bearer works as well.
    let resp = ureq::get(&format!("{}/collections", s.url))
        .set("authorization", "Bearer read-key")
        .call()
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Without a key the server refuses to listen beyond loopback.
    let out = Command::new(env!("CARGO_BIN_EXE_ksparse"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(data.path().join("other"))
        .env_remove("KSPARSE_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("without an API key"));
    // Without keys, only loopback Host names are served (no DNS rebinding).
    let open = Server::start(&data.path().join("open"), &[]);
    let resp = ureq::get(&format!("{}/collections", open.url))
        .set("host", "attacker.example")
        .call();
    assert!(matches!(resp, Err(ureq::Error::Status(403, _))));
    assert_eq!(open.call("GET", "/collections", None, None).0, 200);
}

#[test]
fn bad_input_gets_a_json_error_that_names_it() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &["--max-body-mb", "1", "--max-batch", "5"]);
    sparse_collection(&s, "c");
    let bad = |method: &str, path: &str, body: Value, status: u16, words: &str| {
        let (got, v) = s.call(method, path, Some(&body), None);
        let msg = v["status"]["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(got, status, "{method} {path} {body}: {v}");
        assert!(
            msg.contains(words),
            "{method} {path} {body}: {msg:?} lacks {words:?}"
        );
    };
    let up = "/collections/c/points";
    let q = "/collections/c/points/query";
    bad(
        "PUT",
        up,
        json!({"points": [{"id": 1, "sparse": {"indices": [1], "values": [-1.0]}}]}),
        400,
        "negative",
    );
    bad(
        "PUT",
        up,
        json!({"points": [{"id": 1, "sparse": {"indices": [1000], "values": [1.0]}}]}),
        400,
        "width 1000",
    );
    bad(
        "PUT",
        up,
        json!({"points": [{"id": 1, "sparse": {"indices": [1, 2], "values": [1.0]}}]}),
        400,
        "2 indices but 1 values",
    );
    bad(
        "PUT",
        up,
        json!({"points": [{"id": 1, "sparse": {"indices": [3, 3], "values": [1.0, 1.0]}}]}),
        400,
        "twice",
    );
    bad(
        "PUT",
        up,
        json!({"points": [{"id": 1}]}),
        400,
        "no \"vector\"",
    );
    bad(
        "PUT",
        up,
        json!({"points": [{"id": 1, "text": "hello"}]}),
        400,
        "no model",
    );
    bad(
        "PUT",
        up,
        json!({"points": [{"id": 1, "vector": {"dense": {"indices": [1], "values": [1.0]}}}]}),
        400,
        "named \"text\"",
    );
    bad(
        "PUT",
        up,
        json!({"points": [{"id": -4, "sparse": {"indices": [1], "values": [1.0]}}]}),
        422,
        "points",
    );
    bad(
        "PUT",
        up,
        json!({"points": [{"id": "", "sparse": {"indices": [1], "values": [1.0]}}]}),
        400,
        "point id",
    );
    bad(
        "PUT",
        up,
        json!({"points": [{"id": 1, "sparse": {"indices": [1], "values": [1.0]}, "colour": 1}]}),
        422,
        "colour",
    );
    bad("PUT", up, points(0..6, 0), 413, "limit is 5");
    bad("PUT", up, json!({"points": []}), 400, "no points");
    // A body over the limit is refused from its length, before it is read.
    let mut tcp = std::net::TcpStream::connect(s.url.trim_start_matches("http://")).unwrap();
    std::io::Write::write_all(
        &mut tcp,
        format!("PUT {up} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{{", 2 << 20).as_bytes(),
    )
    .unwrap();
    let mut answer = String::new();
    BufReader::new(tcp).read_line(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    bad(
        "POST",
        q,
        json!({"query": {"indices": [1], "values": [1.0]}, "limit": 20000}),
        400,
        "limit + offset",
    );
    bad(
        "POST",
        q,
        json!({"query": {"indices": [1], "values": [1.0]}, "filter": {"must": [{"key": "a", "match": {"value": 1.5}}]}}),
        400,
        "not a keyword",
    );
    bad(
        "POST",
        q,
        json!({"query": {"indices": [1], "values": [1.0]}, "filter": {"must": [{"key": "a", "range": {"lt": 1}, "match": {"value": 1}}]}}),
        400,
        "exactly one",
    );
    bad(
        "POST",
        q,
        json!({"query": {"indices": [1], "values": [1.0]}, "mode": "two-stage"}),
        400,
        "mode",
    );
    bad(
        "POST",
        q,
        json!({"query": {"text": "hello"}}),
        400,
        "no model",
    );
    bad("POST", q, json!({"query": [0.1, 0.2]}), 400, "codes only");
    bad(
        "POST",
        q,
        json!({"query": {"indices": [1], "values": [1.0]}, "using": "other"}),
        400,
        "using",
    );
    bad("POST", q, json!({"limit": 3}), 400, "no \"query\"");
    bad(
        "POST",
        q,
        json!({"query": {"indices": [1], "values": [1.0]}, "lmit": 3}),
        422,
        "lmit",
    );
    bad(
        "POST",
        "/collections/nope/points/query",
        json!({"query": {"indices": [1], "values": [1.0]}}),
        404,
        "nope",
    );
    bad("PUT", "/collections/bad.name", json!({}), 400, "name");
    bad(
        "PUT",
        "/collections/c",
        json!({"sparse_vectors": {"text": {}}}),
        409,
        "already exists",
    );
    bad(
        "PUT",
        "/collections/d",
        json!({"vectors": {"size": 4, "distance": "Dot"}}),
        400,
        "dense",
    );
    bad(
        "PUT",
        "/collections/d",
        json!({"model": "no-such-model"}),
        400,
        "no-such-model",
    );
    bad(
        "PUT",
        "/collections/d",
        json!({"model": "x", "hidden": "huge"}),
        400,
        "x",
    );
    bad(
        "PUT",
        "/collections/d",
        json!({"from": "/no/such/folder"}),
        400,
        "/no/such/folder",
    );
    bad("PUT", "/collections/d", json!({"shards": 3}), 400, "shards");
    bad(
        "POST",
        "/collections/c/points/delete",
        json!({}),
        400,
        "either",
    );
    // Not JSON, or JSON without the content type.
    let resp = ureq::post(&format!("{}{q}", s.url))
        .set("content-type", "application/json")
        .send_string("{not json");
    let Err(ureq::Error::Status(code, r)) = resp else {
        panic!("accepted broken JSON")
    };
    assert!(code == 400 || code == 422);
    let v: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
    assert!(v["status"]["error"]
        .as_str()
        .unwrap()
        .contains("invalid request body"));
    let resp = ureq::post(&format!("{}{q}", s.url)).send_string("{}");
    let Err(ureq::Error::Status(code, r)) = resp else {
        panic!("accepted a body without content type")
    };
    assert_eq!(code, 415);
    assert!(r.into_string().unwrap().contains("content-type"));
    // Nothing bad got in.
    assert_eq!(
        s.ok("POST", "/collections/c/points/count", Some(json!({})))["count"],
        0
    );
    assert!(!data.path().join("collections/d").exists());
    // Repeated ids in one upsert: the last wins.
    s.ok(
        "PUT",
        up,
        Some(json!({"points": [
        {"id": 9, "sparse": {"indices": [1], "values": [1.0]}, "payload": {"v": "first"}},
        {"id": 9, "sparse": {"indices": [2], "values": [1.0]}, "payload": {"v": "last"}}]})),
    );
    let got = s.ok("POST", up, Some(json!({"ids": [9], "with_vector": true})));
    assert_eq!(got.as_array().unwrap().len(), 1);
    assert_eq!(got[0]["payload"]["v"], "last");
    assert_eq!(got[0]["vector"]["text"]["indices"], json!([2]));
}

/// Upserts batches until killed; every batch the server acknowledged must be found after
/// a restart, and no batch half: a batch is one commit.
#[test]
fn sigkill_during_ingest_loses_no_acknowledged_point() {
    let data = tempfile::tempdir().unwrap();
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    let mut sent_batches = 0u64;
    for round in 0..4u64 {
        let mut s = Server::start(data.path(), &[]);
        if round == 0 {
            sparse_collection(&s, "c");
        }
        let url = s.url.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let first = sent_batches;
        let ingest = std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut b = first;
            while !stop2.load(Ordering::SeqCst) {
                let body = points(b * 20..b * 20 + 20, b).to_string();
                let r = ureq::put(&format!("{url}/collections/c/points?wait=true"))
                    .set("content-type", "application/json")
                    .timeout(Duration::from_secs(30))
                    .send_string(&body);
                match r {
                    Ok(resp) if resp.status() == 200 => acked.push(b),
                    _ => break,
                }
                b += 1;
            }
            (acked, b + 1)
        });
        // Kill at a different moment each round, mid-stream.
        std::thread::sleep(Duration::from_millis(150 + 170 * round));
        s.kill();
        stop.store(true, Ordering::SeqCst);
        let (batches, next) = ingest.join().unwrap();
        assert!(
            !batches.is_empty() || round > 0,
            "nothing was acknowledged before the kill"
        );
        acked.extend(batches);
        sent_batches = next;
    }
    let s = Server::start(data.path(), &[]);
    let n = s.ok("POST", "/collections/c/points/count", Some(json!({})))["count"]
        .as_u64()
        .unwrap();
    for &b in &acked {
        let got = s.ok(
            "POST",
            "/collections/c/points/count",
            Some(json!({"filter": {"must": [{"key": "batch", "match": {"value": b}}]}})),
        );
        assert_eq!(got["count"], 20, "acknowledged batch {b} lost points");
    }
    // Whatever else is there is whole batches (one unacknowledged batch per kill at most).
    assert_eq!(n % 20, 0, "a batch is visible in part");
    assert!(n / 20 >= acked.len() as u64 && n / 20 <= acked.len() as u64 + 4);
    let ids: Vec<Value> = acked.iter().map(|b| json!(b * 20 + 19)).collect();
    let got = s.ok("POST", "/collections/c/points", Some(json!({"ids": ids})));
    assert_eq!(got.as_array().unwrap().len(), acked.len());
}

/// Readers query while a writer upserts batches of 20 points: every answer holds whole
/// batches only, and a reader never sees fewer batches than it saw before.
#[test]
fn readers_during_writes_see_only_whole_commits() {
    let data = tempfile::tempdir().unwrap();
    let s = Arc::new(Server::start(data.path(), &[]));
    sparse_collection(&s, "c");
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (s, done) = (s.clone(), done.clone());
            std::thread::spawn(move || {
                let mut seen = 0;
                let mut answers = 0;
                while !done.load(Ordering::SeqCst) {
                    // Index 50..57 is in every point: the query returns all of them.
                    let q = json!({"query": {"indices": [50, 51, 52, 53, 54, 55, 56], "values": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]}, "limit": 10000, "with_payload": true});
                    let hits = s.ok("POST", "/collections/c/points/query", Some(q));
                    let mut per_batch: BTreeMap<u64, usize> = BTreeMap::new();
                    for h in hits["points"].as_array().unwrap() {
                        *per_batch.entry(h["payload"]["batch"].as_u64().unwrap()).or_default() += 1;
                    }
                    assert!(per_batch.values().all(|&n| n == 20), "a batch seen in part: {per_batch:?}");
                    assert!(per_batch.len() >= seen, "went back from {seen} to {} batches", per_batch.len());
                    seen = per_batch.len();
                    answers += 1;
                }
                answers
            })
        })
        .collect();
    // Four writers at once: their batches may share a commit (group commit), but each
    // batch is whole in whichever commit holds it.
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let s = s.clone();
            std::thread::spawn(move || {
                for b in (w * 10)..(w * 10 + 10) {
                    s.ok(
                        "PUT",
                        "/collections/c/points",
                        Some(points(b * 20..b * 20 + 20, b)),
                    );
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(
        s.ok("POST", "/collections/c/points/count", Some(json!({})))["count"],
        800
    );
    // Replacing points (same ids, new batch number) swaps whole batches too.
    for b in 0..5u64 {
        s.ok(
            "PUT",
            "/collections/c/points",
            Some(points(b * 20..b * 20 + 20, 100 + b)),
        );
    }
    done.store(true, Ordering::SeqCst);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    // 45 commits on a collection: background merges keep the segments few.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = s.ok("GET", "/collections/c", None);
        if info["segments_count"].as_u64().unwrap() <= 8
            && info["ksparse"]["background_merges"] == 0
        {
            assert_eq!(info["points_count"], 800);
            break;
        }
        assert!(Instant::now() < deadline, "segments never merged: {info}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The index CLI respects the server's writer lock.
    let out = Command::new(env!("CARGO_BIN_EXE_ksparse"))
        .args(["index", "merge"])
        .arg(data.path().join("collections/c/index"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&s.pid().to_string()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SIGTERM: a graceful stop.
    let mut s = Arc::into_inner(s).unwrap();
    assert!(s.terminate().success());
}

/// A Python with qdrant-client, or None (skip; fail under KSPARSE_REQUIRE_DATA=1).
fn python_with(module: &str) -> Option<String> {
    let python = std::env::var("KSPARSE_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some(python)
    } else {
        common::skip(format!(
            "{python} cannot import {module} (pip install qdrant-client)"
        ))
    }
}

#[test]
fn the_official_qdrant_client_works_unchanged() {
    let Some(python) = python_with("qdrant_client") else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &["--api-key", "k3y"]);
    let out = Command::new(python)
        .arg(common::root().join("crates/ksparse-server/tests/qdrant_compat.py"))
        .args([&s.url, "k3y"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("PASS"));
}

#[test]
fn the_search_page_shows_hits_in_headless_chromium() {
    let chromium = Path::new("/usr/bin/chromium");
    if !chromium.exists() {
        common::skip::<()>("chromium is not installed (apt-get install chromium)".into());
        return;
    }
    let Some(folder) = mini_folder() else { return };
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &[]);
    s.ok("PUT", "/collections/scifact", Some(json!({"from": folder})));
    let profile = tempfile::tempdir().unwrap();
    let url = format!(
        "{}/?collection=scifact&q=vitamin%20D%20and%20bone%20density",
        s.url
    );
    let chrome = |extra: &[&str]| {
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=20000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .stderr(Stdio::null())
            .output()
            .unwrap()
    };
    let dom = String::from_utf8(chrome(&["--dump-dom"]).stdout).unwrap();
    assert!(
        dom.contains("data-state=\"done\""),
        "the page did not finish: {dom}"
    );
    let hits = dom.matches("class=\"hit\"").count();
    assert_eq!(hits, 10, "{dom}");
    assert!(dom.contains("class=\"latent\""), "no explanation shown");
    // The first hit is the API's first hit.
    let api = s.ok(
        "POST",
        "/collections/scifact/points/query",
        Some(json!({"query": {"text": "vitamin D and bone density"}, "limit": 1})),
    );
    let first = api["points"][0]["id"].as_str().unwrap().to_string();
    let at = dom.find("class=\"hit\"").unwrap();
    assert!(
        dom[at..]
            .find(&format!("data-id=\"{first}\""))
            .is_some_and(|i| i < 200),
        "first hit differs"
    );
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("search-page.png");
    let out = chrome(&[
        "--window-size=1200,900",
        &format!("--screenshot={}", shot.display()),
    ]);
    assert!(out.status.success());
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "screenshot too small"
    );
    eprintln!("search page screenshot: {}", shot.display());
}
