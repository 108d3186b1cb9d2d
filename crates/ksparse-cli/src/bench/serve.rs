//! `ksparse bench serve`: `ksparse serve` under HTTP load from another process, against
//! in-process search of the same collections in the same run (what HTTP costs).
//!
//! Two collections: the SciFact search folder (adopted; queried by text and by code) and
//! a collection of `docs` codes — SciFact's corpus vectors, then vectors generated near
//! them (a real vector plus noise, renormalised, as `bench search` makes them), encoded
//! by the folder's encoder — written to disk before the server starts. The load
//! generator (`ksparse_server::load`) holds keep-alive connections, each sending its next
//! request when the answer arrives, for a fixed time per concurrency; a mixed run sends
//! one upsert of 10 points per 20 requests while the server's resident memory is sampled.
//! Ingest: dense vectors and texts upserted into an empty collection with the folder's
//! model and encoder.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ksparse::base::stopwatch::latencies;
use ksparse::index::Index;
use ksparse::pipeline::Searcher;
use ksparse_server::load::{self, Call, Measured, Method, Workload};
use serde::Serialize;
use serde_json::json;

use super::{CodeWorkload, WorkloadArgs};
use crate::output::Progress;

fn method(name: &str) -> Method {
    name.parse().expect("a valid method")
}

/// What to run.
pub struct Options {
    /// The search folder, its corpus, the queries and the embedding cache.
    pub workload: WorkloadArgs,
    /// Documents of the collection of codes.
    pub docs: usize,
    /// Connections per run.
    pub concurrency: Vec<usize>,
    /// Seconds per run.
    pub seconds: f64,
    /// Seconds of the mixed (query + upsert) soak.
    pub soak_seconds: f64,
    /// Where the server's data folder is made (removed afterwards).
    pub scratch: PathBuf,
}

/// One row of the report.
#[derive(Debug, Serialize)]
pub struct Row {
    /// What was sent.
    pub workload: String,
    /// Documents in the collection.
    pub documents: usize,
    /// The measurement.
    #[serde(flatten)]
    pub measured: Measured,
    /// HTTP p50 over in-process p50 of the same search (concurrency 1 rows).
    pub http_cost: Option<f64>,
}

/// The report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The CPU.
    pub cpu: String,
    /// Cores.
    pub cores: usize,
    /// In-process search, single thread: (what, documents, p50 ms, p99 ms).
    pub in_process: Vec<(String, usize, f64, f64)>,
    /// HTTP runs.
    pub rows: Vec<Row>,
    /// Ingest: (what, documents, documents/s, errors).
    pub ingest: Vec<(String, usize, f64, u64)>,
    /// Server resident memory during the soak, MiB: first sample, last, largest.
    pub soak_rss_mib: (f64, f64, f64),
    /// Errors over every run.
    pub errors: u64,
}

/// Top k of every query (as the server's default limit).
const TOP: usize = 10;

/// Runs the benchmark.
pub fn run(o: &Options, progress: &Progress) -> Result<Report> {
    let searcher = Searcher::open(&o.workload.folder, None)?;
    let w = CodeWorkload::load(&o.workload, progress)?;
    let (encoder, corpus, queries, x) = (&w.encoder, &w.corpus, &w.queries, &w.vectors);
    let query_codes = &w.query_codes;

    // The collection of codes, written before the server starts.
    let data = o.scratch.join("serve-data");
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    let big = data.join("collections/codes");
    tracing::info!("indexing {} generated codes", o.docs);
    let codes = w.codes(o.docs, 7);
    let ids: Vec<String> = (0..o.docs).map(|i| i.to_string()).collect();
    ksparse_server::collection::create_from_codes(&big, &codes, &ids, encoder.hidden)?;
    drop(codes);

    // In process, single thread, the searches the server runs.
    let index = Index::open(&big.join("index"))?;
    let terms = w.query_terms();
    let (code_p50, code_p99, _) = latencies(terms.len(), |i| {
        index.search(&terms[i], TOP, 2 * TOP).expect("valid query")
    });
    drop(index);
    let texts: Vec<String> = queries.texts.clone();
    let (text_p50, text_p99, _) = latencies(texts.len().min(100), |i| {
        searcher
            .search(
                std::slice::from_ref(&texts[i]),
                TOP,
                searcher.default_mode(),
                0,
            )
            .expect("search");
        Vec::new()
    });
    let scifact_docs = searcher.manifest.documents;
    let model = searcher.manifest.model.clone();
    drop(searcher);
    let in_process = vec![
        ("code".to_string(), o.docs, code_p50, code_p99),
        (
            "text (embed + two-stage)".to_string(),
            scifact_docs,
            text_p50,
            text_p99,
        ),
    ];

    let server = Server::start(&data)?;
    let addr = server.addr;
    let http = |m: &str, path: &str, body: serde_json::Value| -> Result<()> {
        let calls = vec![Call::json(method(m), path, &body)];
        let w = Arc::new(Workload {
            reads: calls,
            once: true,
            ..Workload::default()
        });
        let r = load::run_blocking(addr, w, 1, Duration::from_secs(600), None)?;
        if r.errors > 0 {
            bail!("{m} {path} failed");
        }
        Ok(())
    };
    http(
        "PUT",
        "/collections/scifact",
        json!({"from": o.workload.folder}),
    )?;

    let code_calls = |collection: &str| -> Vec<Call> {
        query_codes
            .iter()
            .map(|c| {
                Call::json(
                    method("POST"),
                    &format!("/collections/{collection}/points/query"),
                    &json!({"query": {"indices": c.ids, "values": c.values}, "limit": TOP}),
                )
            })
            .collect()
    };
    let text_calls: Vec<Call> = texts
        .iter()
        .map(|t| {
            Call::json(
                method("POST"),
                "/collections/scifact/points/query",
                &json!({"query": {"text": t}, "limit": TOP}),
            )
        })
        .collect();
    let duration = Duration::from_secs_f64(o.seconds);
    let mut rows = Vec::new();
    let runs: [(&str, usize, Vec<Call>, Option<f64>); 3] = [
        ("query by code", o.docs, code_calls("codes"), Some(code_p50)),
        ("query by code", scifact_docs, code_calls("scifact"), None),
        ("query by text", scifact_docs, text_calls, Some(text_p50)),
    ];
    for (what, documents, calls, baseline) in runs {
        let workload = Arc::new(Workload {
            reads: calls,
            ..Workload::default()
        });
        for &c in &o.concurrency {
            let m = load::run_blocking(addr, workload.clone(), c, duration, None)?;
            tracing::info!("{what} at {documents} documents, {c} connections: {:.0} QPS, p50 {:.2} ms, p99 {:.2} ms", m.qps, m.p50_ms, m.p99_ms);
            rows.push(Row {
                workload: what.to_string(),
                documents,
                http_cost: baseline.filter(|_| c == 1).map(|b| m.p50_ms / b),
                measured: m,
            });
        }
    }

    // Mixed: 95 % queries by code, 5 % upserts of 10 generated points, memory sampled.
    let extra_codes = w.codes(2_000, 11);
    let writes: Vec<Call> = extra_codes
        .chunks(10)
        .enumerate()
        .map(|(b, chunk)| {
            let points: Vec<serde_json::Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, c)| json!({"id": o.docs + b * 10 + i, "vector": {"text": {"indices": c.ids, "values": c.values}}}))
                .collect();
            Call::json(method("PUT"), "/collections/codes/points", &json!({ "points": points }))
        })
        .collect();
    let mixed = Arc::new(Workload {
        reads: code_calls("codes"),
        writes,
        write_every: 20,
        once: false,
    });
    let c = *o.concurrency.iter().max().unwrap_or(&8);
    let sampler = server.sample_rss();
    let m = load::run_blocking(
        addr,
        mixed,
        c,
        Duration::from_secs_f64(o.soak_seconds),
        None,
    )?;
    let rss = sampler.finish();
    rows.push(Row {
        workload: "95 % query by code, 5 % upsert of 10".into(),
        documents: o.docs,
        http_cost: None,
        measured: m,
    });

    // Ingest into an empty collection with the folder's model and encoder.
    http(
        "PUT",
        "/collections/ingest",
        json!({"model": model, "encoder": o.workload.folder.join("encoder")}),
    )?;
    let mut ingest = Vec::new();
    let n_vec = x.nrows();
    let vec_calls = upserts(
        "ingest",
        n_vec,
        256,
        |i| json!({"id": format!("v{i}"), "vector": x.row(i).to_vec()}),
    );
    let n_text = corpus.len().min(1024);
    let text_ingest = upserts(
        "ingest",
        n_text,
        64,
        |i| json!({"id": format!("t{i}"), "text": corpus.texts[i]}),
    );
    for (what, calls, docs) in [
        ("dense vectors, 256 a request", vec_calls, n_vec),
        ("texts, 64 a request", text_ingest, n_text),
    ] {
        let w = Arc::new(Workload {
            reads: calls,
            once: true,
            ..Workload::default()
        });
        let m = load::run_blocking(addr, w, 2, Duration::from_secs(3600), None)?;
        ingest.push((what.to_string(), docs, docs as f64 / m.seconds, m.errors));
    }
    server.stop()?;
    std::fs::remove_dir_all(&data).ok();
    let errors = rows.iter().map(|r| r.measured.errors).sum::<u64>()
        + ingest.iter().map(|i| i.3).sum::<u64>();
    Ok(Report {
        cpu: super::cpu_name(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        in_process,
        rows,
        ingest,
        soak_rss_mib: rss,
        errors,
    })
}

/// Upserts of points `0..n` (each made by `point`) into `collection`, `per` a request.
fn upserts(
    collection: &str,
    n: usize,
    per: usize,
    point: impl Fn(usize) -> serde_json::Value,
) -> Vec<Call> {
    (0..n)
        .step_by(per)
        .map(|start| {
            let points: Vec<serde_json::Value> =
                (start..(start + per).min(n)).map(&point).collect();
            Call::json(
                method("PUT"),
                &format!("/collections/{collection}/points"),
                &json!({ "points": points }),
            )
        })
        .collect()
}

/// `ksparse serve` as a child process on a free loopback port.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(data: &Path) -> Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env_remove("KSPARSE_API_KEY")
            .env_remove("KSPARSE_READ_KEY")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start ksparse serve")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .with_context(|| format!("ksparse serve printed {line:?}"))?
            .parse()?;
        let server = Self { child, addr };
        let ready = Arc::new(Workload {
            reads: vec![Call::json(method("GET"), "/readyz", &json!(null))],
            once: true,
            ..Workload::default()
        });
        let deadline = Instant::now() + Duration::from_secs(600);
        while load::run_blocking(addr, ready.clone(), 1, Duration::from_secs(5), None)?.errors > 0 {
            if Instant::now() > deadline {
                bail!("the server did not open its collections in 10 minutes");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(server)
    }

    /// Samples the server's resident memory every 0.5 s until `finish`.
    fn sample_rss(&self) -> RssSampler {
        let pid = self.child.id();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
                samples.extend(rss_mib(pid));
                std::thread::sleep(Duration::from_millis(500));
            }
            samples.extend(rss_mib(pid));
            samples
        });
        RssSampler { stop, thread }
    }

    /// SIGTERM, and the exit status checked.
    fn stop(mut self) -> Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("ksparse serve exited with {status}");
        }
        Ok(())
    }
}

struct RssSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<f64>>,
}

impl RssSampler {
    /// (first, last, largest) sample, MiB.
    fn finish(self) -> (f64, f64, f64) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let s = self.thread.join().unwrap_or_default();
        let max = s.iter().copied().fold(0.0, f64::max);
        (
            s.first().copied().unwrap_or(0.0),
            s.last().copied().unwrap_or(0.0),
            max,
        )
    }
}

/// Resident memory of process `pid`, MiB (Linux).
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

impl Report {
    /// The report as Markdown.
    pub fn markdown(&self, command: &str) -> String {
        let mut s = format!(
            "# ksparse serve under HTTP load\n\n`{command}`\n\n{} ({} cores; the load generator runs on one thread beside the server). Errors over every run: {}.\n\n",
            self.cpu, self.cores, self.errors
        );
        s += "## In process (single thread, the same searches)\n\n| search | documents | p50 ms | p99 ms |\n|---|---:|---:|---:|\n";
        for (what, n, p50, p99) in &self.in_process {
            s += &format!("| {what} | {n} | {p50:.3} | {p99:.3} |\n");
        }
        s += "\n## Over HTTP\n\n| workload | documents | connections | QPS | p50 ms | p99 ms | upsert p50 ms | errors | HTTP p50 / in-process p50 |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for r in &self.rows {
            let m = &r.measured;
            let cost = r.http_cost.map_or("".into(), |c| format!("{c:.2}×"));
            let w = if m.write_p50_ms > 0.0 {
                format!("{:.2}", m.write_p50_ms)
            } else {
                "".into()
            };
            s += &format!(
                "| {} | {} | {} | {:.0} | {:.3} | {:.3} | {w} | {} | {cost} |\n",
                r.workload, r.documents, m.concurrency, m.qps, m.p50_ms, m.p99_ms, m.errors
            );
        }
        let (first, last, max) = self.soak_rss_mib;
        s += &format!("\nServer resident memory during the mixed run: {first:.0} MiB at the start, {last:.0} MiB at the end, {max:.0} MiB at most.\n\n## Ingest\n\n| what | documents | documents/s | errors |\n|---|---:|---:|---:|\n");
        for (what, n, rate, errors) in &self.ingest {
            s += &format!("| {what} | {n} | {rate:.0} | {errors} |\n");
        }
        s
    }
}
