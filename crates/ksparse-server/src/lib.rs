//! `ksparse serve`: collections of sparse codes behind an HTTP API shaped like Qdrant's
//! REST API (so its clients work for the sparse-vector calls), with ksparse's own
//! additions — text in, explain, scoring modes —, a search page, metrics and API keys.
//!
//! - [`routes`]: the route table (router, access rules and OpenAPI from one list)
//! - [`collection`]: a collection folder, its writer and its current view
//! - [`points`], [`filter`]: the JSON of points and payload filters
//! - [`api`]: the answer envelope and errors; [`metrics`]: Prometheus text
//! - [`load`]: the HTTP load generator of `ksparse bench serve`

pub mod api;
pub mod collection;
pub mod filter;
pub mod load;
pub mod metrics;
pub mod openapi;
pub mod points;
pub mod routes;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use api::ApiError;
use collection::{Collection, CreateRequest, Limits, Models};
use ksparse::index;
use routes::Access;

/// How the server is started (`ksparse serve`'s flags).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The data folder: `collections/` and `snapshots/` live in it.
    pub data: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The key for every route (writes included); none: no key needed.
    pub api_key: Option<String>,
    /// A key for reading only (queries, retrieve, info).
    pub read_key: Option<String>,
    /// Largest request body, bytes.
    pub max_body: usize,
    /// Per-request limits.
    pub limits: Limits,
}

/// What every handler shares.
pub struct State {
    data: PathBuf,
    collections: RwLock<BTreeMap<String, Arc<Collection>>>,
    models: Models,
    metrics: metrics::Metrics,
    api_key: Option<String>,
    read_key: Option<String>,
    /// Per-request limits.
    pub limits: Limits,
    /// Largest request body, bytes.
    max_body: usize,
    ready: AtomicBool,
    /// Queries running at once: [`QUERIES_PER_CORE`] per core. Search and embedding are
    /// CPU work; without a bound, every waiting connection holds a thread and its
    /// allocator's memory (64 text queries at once took the process to 3.5 GiB).
    pub query_slots: tokio::sync::Semaphore,
}

/// Queries in flight per core: one per core left cores idle between a query's stages
/// (`bench serve`: 3,900 against 13,900 QPS by code on SciFact at 64 connections).
const QUERIES_PER_CORE: usize = 4;

/// Longest collection name.
const MAX_NAME: usize = 64;

impl State {
    /// The state over data folder `data`, its collections not yet opened.
    pub fn new(options: &ServeOptions) -> Result<Self> {
        if options.read_key.is_some() && options.api_key.is_none() {
            bail!("a read-only key needs an API key for writes beside it");
        }
        for dir in ["collections", "snapshots", "cache"] {
            let path = options.data.join(dir);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
        }
        Ok(Self {
            data: options.data.clone(),
            collections: RwLock::new(BTreeMap::new()),
            models: Models::default(),
            metrics: metrics::Metrics::default(),
            api_key: options.api_key.clone(),
            read_key: options.read_key.clone(),
            limits: options.limits,
            max_body: options.max_body,
            ready: AtomicBool::new(false),
            query_slots: tokio::sync::Semaphore::new(QUERIES_PER_CORE * cores()),
        })
    }

    /// Opens every collection of the data folder, then reports ready. Removes what a
    /// crashed create, delete or restore left (dot-prefixed folders). A collection that
    /// does not open is logged and left out, so one damaged folder does not take the
    /// others offline.
    pub fn open_all(&self) -> Result<()> {
        let root = self.data.join("collections");
        for entry in std::fs::read_dir(&root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                std::fs::remove_dir_all(entry.path()).ok();
                continue;
            }
            match Collection::open(&entry.path(), &name, &self.models) {
                Ok(c) => {
                    tracing::info!(collection = %name, documents = c.view().index.live(), "opened");
                    self.collections
                        .write()
                        .expect("collections lock")
                        .insert(name, Arc::new(c));
                }
                Err(e) => tracing::error!(
                    collection = %name,
                    "cannot open the collection, serving the others: {e:#}"
                ),
            }
        }
        self.ready.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// 503 until every collection is open.
    fn check_ready(&self) -> Result<(), ApiError> {
        if self.ready() {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is still opening its collections",
            ))
        }
    }

    /// Embeddings and encoders of training jobs, kept between runs.
    pub fn cache_dir(&self) -> PathBuf {
        self.data.join("cache")
    }

    /// Whether every collection is open.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Collection names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.collections
            .read()
            .expect("collections lock")
            .keys()
            .cloned()
            .collect()
    }

    /// The open collection `name`.
    pub fn collection(&self, name: &str) -> Result<Arc<Collection>, ApiError> {
        self.check_ready()?;
        self.collections
            .read()
            .expect("collections lock")
            .get(name)
            .cloned()
            .ok_or_else(|| {
                ApiError::not_found(format!("Not found: Collection `{name}` doesn't exist!"))
            })
    }

    fn folder(&self, name: &str) -> Result<PathBuf, ApiError> {
        check_name(name)?;
        Ok(self.data.join("collections").join(name))
    }

    /// Creates collection `name` and opens it.
    pub fn create(&self, name: &str, request: &CreateRequest) -> Result<(), ApiError> {
        self.check_ready()?;
        let dir = self.folder(name)?;
        if self.collection(name).is_ok() {
            return Err(ApiError::conflict(format!(
                "collection {name:?} already exists"
            )));
        }
        collection::create(&dir, request, &self.models)?;
        self.open_one(&dir, name)
    }

    /// Opens the collection folder `dir` as `name` and serves it.
    fn open_one(&self, dir: &Path, name: &str) -> Result<(), ApiError> {
        let c = Collection::open(dir, name, &self.models).map_err(collection::internal)?;
        self.collections
            .write()
            .expect("collections lock")
            .insert(name.to_string(), Arc::new(c));
        Ok(())
    }

    /// Deletes collection `name`: out of the map first (queries in flight finish on
    /// their view), closed to writes under its writer, then its folder renamed away and
    /// removed.
    pub fn delete(&self, name: &str) -> Result<(), ApiError> {
        self.check_ready()?;
        let dir = self.folder(name)?;
        let removed = self
            .collections
            .write()
            .expect("collections lock")
            .remove(name);
        let Some(old) = removed else {
            return Err(ApiError::not_found(format!(
                "Not found: Collection `{name}` doesn't exist!"
            )));
        };
        let trash = self
            .data
            .join("collections")
            .join(format!(".deleted-{name}-{}", unique()));
        old.close(|| Ok(std::fs::rename(&dir, &trash)?))
            .map_err(collection::internal)?;
        std::fs::remove_dir_all(&trash).map_err(collection::internal)?;
        Ok(())
    }

    /// Starts a background merge of `c`'s small segments when it has too many and none
    /// is running.
    pub fn merge_in_background(&self, c: &Arc<Collection>) {
        if c.view().index.meta.segments.len() <= collection::MAX_SEGMENTS
            || c.merges.swap(1, Ordering::SeqCst) == 1
        {
            return;
        }
        let c = c.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = c.merge_if_needed() {
                tracing::error!(collection = %c.name, "background merge failed: {e:#}");
            }
            c.merges.store(0, Ordering::SeqCst);
        });
    }

    /// Snapshots collection `name` under its writer (nothing commits meanwhile; queries
    /// go on): `snapshots/NAME/NAME-GENERATION-UNIXTIME/`, segments hard-linked.
    pub fn snapshot(&self, name: &str) -> Result<Value, ApiError> {
        let c = self.collection(name)?;
        let root = self.data.join("snapshots").join(name);
        std::fs::create_dir_all(&root).map_err(collection::internal)?;
        let made = c
            .with_writer(|view| {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs();
                let snap = format!("{name}-{}-{secs}", view.index.meta.generation);
                let tmp = root.join(format!(".tmp-{snap}"));
                collection::copy_dir(&c.dir, &tmp)?;
                let done = root.join(&snap);
                std::fs::rename(&tmp, &done)?;
                ksparse::io::sync_dir(&root)?;
                Ok(snap)
            })
            .map_err(collection::internal)?;
        Ok(snapshot_entry(&root.join(&made)))
    }

    /// The snapshots of collection `name`, oldest first.
    pub fn snapshots(&self, name: &str) -> Result<Vec<Value>, ApiError> {
        self.collection(name)?;
        let root = self.data.join("snapshots").join(name);
        let mut out: Vec<Value> = match std::fs::read_dir(&root) {
            Ok(entries) => entries
                .flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| snapshot_entry(&e.path()))
                .collect(),
            Err(_) => Vec::new(),
        };
        out.sort_by(|a, b| {
            a["creation_time"]
                .as_str()
                .cmp(&b["creation_time"].as_str())
        });
        Ok(out)
    }

    /// Replaces collection `name` by its snapshot `snapshot`: the copy is made beside it,
    /// then the old collection is closed to writes and the two folders are exchanged in
    /// one rename, so the path always holds one whole collection.
    pub fn restore(&self, name: &str, snapshot: &str) -> Result<(), ApiError> {
        self.check_ready()?;
        let dir = self.folder(name)?;
        check_name(snapshot)?;
        let snap = self.data.join("snapshots").join(name).join(snapshot);
        if !snap.is_dir() {
            return Err(ApiError::not_found(format!(
                "collection {name:?} has no snapshot {snapshot:?}"
            )));
        }
        let collections = self.data.join("collections");
        let tmp = collections.join(format!(".restore-{name}-{}", unique()));
        collection::copy_dir(&snap, &tmp).map_err(collection::internal)?;
        let old = self
            .collections
            .write()
            .expect("collections lock")
            .remove(name);
        let swap = || -> Result<()> {
            if let Some(replaced) = ksparse::io::dir::swap_in(&tmp, &dir)? {
                std::fs::remove_dir_all(replaced).ok();
            }
            Ok(())
        };
        match &old {
            Some(c) => c.close(swap),
            None => swap(),
        }
        .map_err(collection::internal)?;
        drop(old);
        self.open_one(&dir, name)
    }

    /// `/metrics`: request series, then per-collection gauges.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        self.metrics.render(&mut out);
        let collections: Vec<(String, index::Stats, usize)> = self
            .collections
            .read()
            .expect("collections lock")
            .values()
            .map(|c| {
                (
                    c.name.clone(),
                    c.view().index.stats(),
                    c.merges.load(Ordering::SeqCst),
                )
            })
            .collect();
        // One family at a time, every collection in it (the text format groups families).
        type Gauge = (&'static str, &'static str, fn(&index::Stats, usize) -> f64);
        let gauges: [Gauge; 5] = [
            ("ksparse_documents", "Live documents.", |s, _| s.docs as f64),
            (
                "ksparse_deleted_documents",
                "Deleted documents not yet merged away.",
                |s, _| s.deleted as f64,
            ),
            ("ksparse_segments", "Index segments.", |s, _| {
                s.segments as f64
            }),
            (
                "ksparse_index_bytes",
                "Bytes of segment and store files.",
                |s, _| s.file_bytes as f64,
            ),
            (
                "ksparse_background_jobs",
                "Background merges running.",
                |_, m| m as f64,
            ),
        ];
        for (name, help, value) in gauges {
            metrics::family(&mut out, name, help, "gauge");
            for (collection, stats, merges) in &collections {
                metrics::sample(
                    &mut out,
                    name,
                    &[("collection", collection)],
                    value(stats, *merges),
                );
            }
        }
        out
    }

    fn check_key(&self, access: Access, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
        let Some(write_key) = &self.api_key else {
            // Without keys the server listens on loopback only; refusing other Host names
            // keeps a web page a browser opened elsewhere (DNS rebinding) from using it.
            return match headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()) {
                Some(host) if !is_loopback_host(host) => Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("host {host:?} is not a loopback name; without an API key only loopback names are served"),
                )),
                _ => Ok(()),
            };
        };
        if access == Access::Open {
            return Ok(());
        }
        let given = headers
            .get("api-key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            });
        let Some(given) = given else {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "an API key is required: send it in the api-key header or as Authorization: Bearer KEY"));
        };
        let same = |k: &String| bool::from(k.as_bytes().ct_eq(given.as_bytes()));
        if same(write_key) {
            return Ok(());
        }
        if self.read_key.as_ref().is_some_and(same) {
            return match access {
                Access::Write => Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "this key may only read",
                )),
                _ => Ok(()),
            };
        }
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid API key"))
    }
}

/// Whether an HTTP Host value names this machine's loopback interface.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A process-unique suffix for temporary names.
fn unique() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Qdrant's snapshot description: name, creation time (ISO 8601, UTC) and bytes.
fn snapshot_entry(path: &Path) -> Value {
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let created = name.rsplit('-').next().and_then(|s| s.parse::<u64>().ok());
    json!({"name": name, "creation_time": created.map(iso_time), "size": dir_bytes(path)})
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SS` (UTC), by the days-to-civil-date algorithm.
fn iso_time(secs: u64) -> String {
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

fn dir_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_bytes(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Collection and snapshot names: 1 to 64 of `A-Z a-z 0-9 _ -`, not starting with `-`
/// (so no name can reach outside its folder).
fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "name {name:?}: use 1 to {MAX_NAME} letters, digits, '_' or '-' (not first)"
        )))
    }
}

/// Collection info in Qdrant's shape, with ksparse's details under `ksparse`.
pub fn info(c: &Collection) -> Value {
    let view = c.view();
    let stats = view.index.stats();
    json!({
        "status": "green",
        "optimizer_status": "ok",
        "segments_count": stats.segments,
        "points_count": stats.docs,
        "indexed_vectors_count": stats.docs,
        "config": {
            "params": {"sparse_vectors": {c.config.vector_name.clone(): {}}},
            "hnsw_config": {"m": 0, "ef_construct": 0, "full_scan_threshold": 0},
            "optimizer_config": {"default_segment_number": 0, "flush_interval_sec": 0},
        },
        "payload_schema": {},
        "ksparse": {
            "documents": stats.docs,
            "deleted": stats.deleted,
            "segments": stats.segments,
            "generation": view.index.meta.generation,
            "bytes": stats.bytes,
            "file_bytes": stats.file_bytes,
            "width": c.config.width,
            "k": c.config.k,
            "model": c.config.model,
            "encoder": c.has_encoder(),
            "default_mode": c.default_mode().to_string(),
            "background_merges": c.merges.load(Ordering::SeqCst),
            "keeps_vectors": c.config.keeps_vectors,
            "training": c.training(),
        },
    })
}

/// The machine's cores.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// [`blocking`] once one of `slots` is free.
pub async fn limited<T: Send + 'static>(
    slots: &tokio::sync::Semaphore,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let _slot = slots
        .acquire()
        .await
        .map_err(|_| collection::internal("the server is stopping"))?;
    blocking(f).await
}

/// Runs `f` on the blocking pool (searches, embedding and disk writes take CPU or wait
/// on fsync; the async workers keep accepting).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(collection::internal(format!(
            "the request's task failed: {e}"
        )))
    })
}

/// Access check, then metrics and a log line, around every request.
async fn guard(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    request: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = request.method().as_str().to_string();
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let route = matched
        .as_deref()
        .and_then(|p| routes::route_of(&method, p));
    // A matched path with a method the table does not list (HEAD, which axum answers
    // from GET handlers) needs the write key: nothing runs without the table's say.
    let access = match (route, &matched) {
        (Some(r), _) => r.access,
        (None, Some(_)) => Access::Write,
        (None, None) => Access::Open,
    };
    // A declared length over the limit is refused before the body is read.
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let too_large = declared.is_some_and(|n| n > state.max_body as u64);
    let response = match state.check_key(access, request.headers()) {
        Ok(()) if too_large => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than the server's body size limit",
        )
        .into_response(),
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    };
    let label = matched.unwrap_or_else(|| "unmatched".into());
    let method = match method.as_str() {
        "GET" | "PUT" | "POST" | "DELETE" | "HEAD" | "OPTIONS" | "PATCH" => method,
        _ => "OTHER".into(),
    };
    let status = response.status().as_u16();
    let secs = start.elapsed().as_secs_f64();
    state.metrics.observe(&method, &label, status, secs);
    tracing::debug!(%method, route = %label, status, ms = secs * 1e3, "request");
    response
}

async fn no_route(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route {} {}: see /openapi.json for the API",
        request.method(),
        request.uri().path()
    ))
}

/// The application: routes, access checks, metrics, body limit, JSON 404s.
pub fn app(state: Arc<State>, max_body: usize) -> axum::Router {
    routes::router()
        .fallback(no_route)
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Serves until SIGTERM or SIGINT, then finishes the requests in flight and returns.
/// Refuses to listen beyond loopback without an API key.
pub async fn serve(options: ServeOptions, on_listen: impl FnOnce(SocketAddr)) -> Result<()> {
    if !options.listen.ip().is_loopback() && options.api_key.is_none() {
        bail!(
            "refusing to listen on {} without an API key: anyone on the network could write; give an API key or listen on 127.0.0.1",
            options.listen
        );
    }
    let state = Arc::new(State::new(&options)?);
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    on_listen(listener.local_addr()?);
    // Collections open in the background: /healthz answers at once, /readyz and the
    // collection routes say 503 until they are open.
    let opener = state.clone();
    let opening = tokio::task::spawn_blocking(move || opener.open_all());
    axum::serve(listener, app(state, options.max_body))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    opening.await.context("opening collections")??;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// [`serve`] on a new multi-threaded runtime (what `ksparse serve` calls).
pub fn run(options: ServeOptions, on_listen: impl FnOnce(SocketAddr)) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(options, on_listen))
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_and_names() {
        assert_eq!(super::iso_time(0), "1970-01-01T00:00:00");
        assert_eq!(super::iso_time(1_796_212_800), "2026-12-02T12:00:00");
        assert_eq!(super::iso_time(951_782_400), "2000-02-29T00:00:00");
        for bad in ["", "..", "a/b", "-x", "a.b", &"x".repeat(65)] {
            assert!(super::check_name(bad).is_err(), "{bad:?}");
        }
        assert!(super::check_name("sci_fact-2").is_ok());
        for host in [
            "127.0.0.1:6333",
            "localhost",
            "LOCALHOST:80",
            "[::1]:6333",
            "127.0.0.2",
        ] {
            assert!(super::is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example:6333",
            "10.0.0.1",
            "[fe80::1]:1",
            "localhost.evil.example",
        ] {
            assert!(!super::is_loopback_host(host), "{host}");
        }
    }
}
