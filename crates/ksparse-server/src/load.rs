//! An HTTP load generator on hyper: `concurrency` keep-alive connections, each sending its
//! next request as soon as the previous answer is read (closed loop), for a fixed time.
//! `ksparse bench serve` drives the server with it from another process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;

pub use hyper::Method;
use serde::Serialize;

/// One prepared request.
#[derive(Debug, Clone)]
pub struct Call {
    /// HTTP method.
    pub method: hyper::Method,
    /// Path and query.
    pub path: String,
    /// JSON body.
    pub body: Bytes,
}

impl Call {
    /// A request with a JSON body.
    pub fn json(method: hyper::Method, path: &str, body: &serde_json::Value) -> Self {
        Self {
            method,
            path: path.to_string(),
            body: Bytes::from(serde_json::to_vec(body).expect("JSON serialises")),
        }
    }
}

/// What to send: `reads` in turn, and every `write_every`-th request one of `writes`;
/// for a time, or (`once`) each read exactly once, spread over the connections.
#[derive(Debug, Clone, Default)]
pub struct Workload {
    /// Send each read once and stop (the duration is then a limit).
    pub once: bool,
    /// Queries, sent in turn.
    pub reads: Vec<Call>,
    /// Writes, sent in turn.
    pub writes: Vec<Call>,
    /// One request in this many is a write (0: none).
    pub write_every: usize,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// Open connections.
    pub concurrency: usize,
    /// Answers read.
    pub requests: u64,
    /// Answers that were not 200, and transport failures.
    pub errors: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Requests per second.
    pub qps: f64,
    /// Median latency of reads, ms.
    pub p50_ms: f64,
    /// 99th percentile latency of reads, ms.
    pub p99_ms: f64,
    /// Median latency of writes, ms (0 without writes).
    pub write_p50_ms: f64,
}

/// Runs `workload` against `addr` with `concurrency` connections for `duration`.
pub async fn run(
    addr: SocketAddr,
    workload: Arc<Workload>,
    concurrency: usize,
    duration: Duration,
    api_key: Option<String>,
) -> Result<Measured> {
    if workload.reads.is_empty() {
        anyhow::bail!("a workload needs at least one read request");
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let (workload, key) = (workload.clone(), api_key.clone());
        tasks.push(tokio::spawn(async move {
            connection(addr, &workload, c, concurrency, deadline, key.as_deref()).await
        }));
    }
    let (mut reads, mut writes, mut errors) = (Vec::new(), Vec::new(), 0u64);
    for t in tasks {
        let (r, w, e) = t.await.context("load task")??;
        reads.extend(r);
        writes.extend(w);
        errors += e;
    }
    let seconds = start.elapsed().as_secs_f64();
    let requests = (reads.len() + writes.len()) as u64 + errors;
    Ok(Measured {
        concurrency,
        requests,
        errors,
        seconds,
        qps: requests as f64 / seconds,
        p50_ms: percentile(&mut reads, 0.50),
        p99_ms: percentile(&mut reads, 0.99),
        write_p50_ms: percentile(&mut writes, 0.50),
    })
}

type Latencies = (Vec<f64>, Vec<f64>, u64);

/// [`run`] on a runtime of its own with one worker thread: the client takes one core,
/// the server the rest.
pub fn run_blocking(
    addr: SocketAddr,
    workload: Arc<Workload>,
    concurrency: usize,
    duration: Duration,
    api_key: Option<String>,
) -> Result<Measured> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(run(addr, workload, concurrency, duration, api_key))
}

/// One keep-alive connection's loop; returns read and write latencies (ms) and errors.
async fn connection(
    addr: SocketAddr,
    workload: &Workload,
    first: usize,
    concurrency: usize,
    deadline: Instant,
    api_key: Option<&str>,
) -> Result<Latencies> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    let (mut reads, mut writes, mut errors) = (Vec::new(), Vec::new(), 0u64);
    let mut n = if workload.once { first } else { first * 7919 };
    let mut round = 0;
    while Instant::now() < deadline {
        if workload.once {
            // Connection c sends reads c, c + concurrency, …
            n = first + round * concurrency;
            round += 1;
            if n >= workload.reads.len() {
                break;
            }
        } else {
            n += 1;
        }
        let is_write = workload.write_every > 0
            && n % workload.write_every == 0
            && !workload.writes.is_empty();
        let call = if is_write {
            &workload.writes[(n / workload.write_every) % workload.writes.len()]
        } else {
            &workload.reads[n % workload.reads.len()]
        };
        let mut req = Request::builder()
            .method(call.method.clone())
            .uri(&call.path)
            .header("host", addr.to_string())
            .header("content-type", "application/json");
        if let Some(k) = api_key {
            req = req.header("api-key", k);
        }
        let req = req.body(Full::new(call.body.clone()))?;
        let t = Instant::now();
        sender.ready().await?;
        let ok = match sender.send_request(req).await {
            Ok(resp) => {
                let status = resp.status();
                let body = resp.into_body().collect().await;
                status.is_success() && body.is_ok()
            }
            Err(_) => false,
        };
        let ms = t.elapsed().as_secs_f64() * 1e3;
        match (ok, is_write) {
            (false, _) => errors += 1,
            (true, true) => writes.push(ms),
            (true, false) => reads.push(ms),
        }
    }
    Ok((reads, writes, errors))
}

/// The `q` quantile of `v` (sorted in place); 0 when empty.
fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}
