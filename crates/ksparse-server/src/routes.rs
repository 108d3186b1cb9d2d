//! Every route the server answers, in one table: the router, the access check and the
//! OpenAPI document are all generated from it, so they cannot disagree.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State as Axum};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{Answer, ApiError, Body, Reply};
use crate::collection::{self, QueryRequest};
use crate::filter::Filter;
use crate::points::{wanted, PointId, PointInput};
use crate::{blocking, limited, State};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health, the page, the API description).
    Open,
    /// The read key or the write key.
    Read,
    /// The write key only.
    Write,
}

/// One route of the table.
#[derive(Debug)]
pub struct Route {
    /// HTTP method.
    pub method: &'static str,
    /// Path, with `{parameters}`.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// What it does (the OpenAPI summary).
    pub summary: &'static str,
}

macro_rules! routes {
    ($($method:ident $path:literal $access:ident $handler:path => $summary:literal;)*) => {
        /// The route table.
        pub const ROUTES: &[Route] = &[$(Route {
            method: stringify!($method),
            path: $path,
            access: Access::$access,
            summary: $summary,
        }),*];

        /// The router serving [`ROUTES`].
        pub fn router() -> Router<Arc<State>> {
            Router::new()$(.route($path, on(MethodFilter::$method, $handler)))*
        }
    };
}

routes! {
    GET "/" Open page => "The search page (HTML); JSON with the server's name and version for API clients.";
    GET "/healthz" Open healthz => "Liveness: the process answers.";
    GET "/readyz" Open readyz => "Readiness: every collection is open.";
    GET "/metrics" Read metrics => "Prometheus metrics: requests and latency by route and status, documents, segments, bytes, background jobs.";
    GET "/openapi.json" Open openapi => "This API's OpenAPI 3 description.";
    GET "/collections" Read list_collections => "List collections.";
    PUT "/collections/{name}" Write create_collection => "Create a collection: codes only (sparse_vectors), a model with an encoder, or adopt a search folder (from).";
    GET "/collections/{name}" Read collection_info => "Collection info (Qdrant's CollectionInfo, with ksparse's details under \"ksparse\").";
    DELETE "/collections/{name}" Write delete_collection => "Delete a collection and its files.";
    GET "/collections/{name}/exists" Read collection_exists => "Whether a collection exists.";
    PUT "/collections/{name}/points" Write upsert_points => "Upsert points (sparse vector, dense vector or text, with payload); answers once committed to disk.";
    POST "/collections/{name}/points" Read retrieve_points => "Retrieve points by id.";
    GET "/collections/{name}/points/{id}" Read get_point => "Get one point by id.";
    POST "/collections/{name}/points/delete" Write delete_points => "Delete points by id or by payload filter.";
    POST "/collections/{name}/points/query" Read query_points => "Query by sparse vector, dense vector or text, with filter, limit, offset, scoring mode and explain.";
    POST "/collections/{name}/points/query/batch" Read query_batch => "Several queries in one request.";
    POST "/collections/{name}/points/count" Read count_points => "Count points, optionally those a filter passes.";
    POST "/collections/{name}/train" Write train_collection => "Train the encoder of a collection created with a model and no encoder, in the background; its info shows the progress.";
    POST "/collections/{name}/snapshots" Write create_snapshot => "Snapshot the collection: a consistent copy taken while serving.";
    GET "/collections/{name}/snapshots" Read list_snapshots => "List the collection's snapshots.";
    POST "/collections/{name}/snapshots/{snapshot}/restore" Write restore_snapshot => "Replace the collection by one of its snapshots.";
}

/// The route a request matched, by method and matched path.
pub fn route_of(method: &str, path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.method == method && r.path == path)
}

async fn page(headers: HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if wants_html {
        Html(include_str!("page.html")).into_response()
    } else {
        axum::Json(json!({"title": "ksparse", "version": env!("CARGO_PKG_VERSION")}))
            .into_response()
    }
}

async fn healthz() -> Reply<Value> {
    Ok(Answer(json!("ok"), Instant::now()))
}

async fn readyz(Axum(state): Axum<Arc<State>>) -> Result<Answer<Value>, ApiError> {
    if state.ready() {
        Ok(Answer(json!("ready"), Instant::now()))
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "opening collections",
        ))
    }
}

async fn metrics(Axum(state): Axum<Arc<State>>) -> Response {
    let text = state.render_metrics();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn openapi() -> axum::Json<Value> {
    axum::Json(crate::openapi::document())
}

async fn list_collections(Axum(state): Axum<Arc<State>>) -> Reply<Value> {
    let t = Instant::now();
    let names: Vec<Value> = state
        .names()
        .into_iter()
        .map(|name| json!({"name": name}))
        .collect();
    Ok(Answer(json!({"collections": names}), t))
}

async fn create_collection(
    Axum(state): Axum<Arc<State>>,
    Path(name): Path<String>,
    Body(request): Body<collection::CreateRequest>,
) -> Reply<bool> {
    let t = Instant::now();
    blocking(move || state.create(&name, &request)).await?;
    Ok(Answer(true, t))
}

async fn collection_info(Axum(state): Axum<Arc<State>>, Path(name): Path<String>) -> Reply<Value> {
    let t = Instant::now();
    let c = state.collection(&name)?;
    Ok(Answer(blocking(move || Ok(crate::info(&c))).await?, t))
}

async fn delete_collection(Axum(state): Axum<Arc<State>>, Path(name): Path<String>) -> Reply<bool> {
    let t = Instant::now();
    blocking(move || state.delete(&name)).await?;
    Ok(Answer(true, t))
}

async fn collection_exists(
    Axum(state): Axum<Arc<State>>,
    Path(name): Path<String>,
) -> Reply<Value> {
    let t = Instant::now();
    Ok(Answer(
        json!({"exists": state.collection(&name).is_ok()}),
        t,
    ))
}

/// Qdrant's write options (`?wait=true&ordering=…`): every write here is durable before
/// the answer, so they are accepted and need nothing.
#[derive(Deserialize)]
struct WriteOptions {
    #[allow(dead_code)]
    wait: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpsertRequest {
    points: Vec<PointInput>,
    #[serde(default)]
    shard_key: Option<Value>,
}

async fn upsert_points(
    Axum(state): Axum<Arc<State>>,
    Path(name): Path<String>,
    Query(_): Query<WriteOptions>,
    Body(request): Body<UpsertRequest>,
) -> Reply<Value> {
    let t = Instant::now();
    if request.shard_key.is_some() {
        return Err(ApiError::bad(
            "shard_key: ksparse collections have one shard",
        ));
    }
    let c = state.collection(&name)?;
    let limits = state.limits;
    // Not limited like queries: a write waiting for the writer is not using a core, and
    // waiting writers are what a group commit gathers.
    let generation = blocking(move || {
        let g = c.upsert(request.points, &limits)?;
        state.merge_in_background(&c);
        Ok(g)
    })
    .await?;
    Ok(Answer(
        json!({"operation_id": generation, "status": "completed"}),
        t,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrieveRequest {
    ids: Vec<PointId>,
    #[serde(default)]
    with_payload: Option<Value>,
    #[serde(default)]
    with_vector: Option<Value>,
}

async fn retrieve_points(
    Axum(state): Axum<Arc<State>>,
    Path(name): Path<String>,
    Body(request): Body<RetrieveRequest>,
) -> Reply<Value> {
    let t = Instant::now();
    let c = state.collection(&name)?;
    let with_payload = wanted(&request.with_payload, true);
    let with_vector = wanted(&request.with_vector, false);
    let records = blocking(move || c.retrieve(&request.ids, with_payload, with_vector)).await?;
    Ok(Answer(json!(records), t))
}

async fn get_point(
    Axum(state): Axum<Arc<State>>,
    Path((name, id)): Path<(String, String)>,
) -> Reply<Value> {
    let t = Instant::now();
    let c = state.collection(&name)?;
    let id = match id.parse::<u64>() {
        Ok(n) => PointId::Num(n),
        Err(_) => PointId::Str(id),
    };
    let mut records = blocking(move || c.retrieve(std::slice::from_ref(&id), true, true)).await?;
    match records.pop() {
        Some(r) => Ok(Answer(json!(r), t)),
        None => Err(ApiError::not_found(format!(
            "no point with that id in collection {name:?}"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteRequest {
    #[serde(default)]
    points: Option<Vec<PointId>>,
    #[serde(default)]
    filter: Option<Filter>,
    #[serde(default)]
    shard_key: Option<Value>,
}

async fn delete_points(
    Axum(state): Axum<Arc<State>>,
    Path(name): Path<String>,
    Query(_): Query<WriteOptions>,
    Body(request): Body<DeleteRequest>,
) -> Reply<Value> {
    let t = Instant::now();
    if request.shard_key.is_some() {
        return Err(ApiError::bad(
            "shard_key: ksparse collections have one shard",
        ));
    }
    if request.points.is_some() == request.filter.is_some() {
        return Err(ApiError::bad("give either \"points\" (ids) or \"filter\""));
    }
    let c = state.collection(&name)?;
    let generation = blocking(move || {
        c.delete(
            request.points.as_deref().unwrap_or_default(),
            request.filter.as_ref(),
        )
    })
    .await?;
    Ok(Answer(
        json!({"operation_id": generation, "status": "completed"}),
        t,
    ))
}

async fn query_points(
    Axum(state): Axum<Arc<State>>,
    Path(name): Path<String>,
    Body(request): Body<QueryRequest>,
) -> Reply<Value> {
    let t = Instant::now();
    let c = state.collection(&name)?;
    let limits = state.limits;
    let mut hits = limited(&state.query_slots, move || {
        c.query(std::slice::from_ref(&request), &limits)
    })
    .await?;
    Ok(Answer(json!({"points": hits.pop().unwrap_or_default()}), t))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    searches: Vec<QueryRequest>,
}

async fn query_batch(
    Axum(state): Axum<Arc<State>>,
    Path(name): Path<String>,
    Body(request): Body<BatchRequest>,
) -> Reply<Value> {
    let t = Instant::now();
    let c = state.collection(&name)?;
    let limits = state.limits;
    let hits = limited(&state.query_slots, move || {
        c.query(&request.searches, &limits)
    })
    .await?;
    let answers: Vec<Value> = hits.into_iter().map(|h| json!({"points": h})).collect();
    Ok(Answer(json!(answers), t))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountRequest {
    #[serde(default)]
    filter: Option<Filter>,
    #[serde(default)]
    #[allow(dead_code)]
    exact: Option<bool>,
}

async fn count_points(
    Axum(state): Axum<Arc<State>>,
    Path(name): Path<String>,
    Body(request): Body<CountRequest>,
) -> Reply<Value> {
    let t = Instant::now();
    let c = state.collection(&name)?;
    let n = blocking(move || c.count(request.filter.as_ref())).await?;
    Ok(Answer(json!({"count": n}), t))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TrainRequest {
    #[serde(default)]
    epochs: Option<usize>,
}

async fn train_collection(
    Axum(state): Axum<Arc<State>>,
    Path(name): Path<String>,
    Body(request): Body<TrainRequest>,
) -> Reply<Value> {
    let t = Instant::now();
    if request.epochs == Some(0) {
        return Err(ApiError::bad("epochs must be at least 1"));
    }
    let c = state.collection(&name)?;
    let cache = state.cache_dir();
    blocking(move || c.train(request.epochs, cache)).await?;
    Ok(Answer(json!({"status": "started"}), t))
}

async fn create_snapshot(Axum(state): Axum<Arc<State>>, Path(name): Path<String>) -> Reply<Value> {
    let t = Instant::now();
    let s = blocking(move || state.snapshot(&name)).await?;
    Ok(Answer(s, t))
}

async fn list_snapshots(Axum(state): Axum<Arc<State>>, Path(name): Path<String>) -> Reply<Value> {
    let t = Instant::now();
    let s = blocking(move || state.snapshots(&name)).await?;
    Ok(Answer(json!(s), t))
}

async fn restore_snapshot(
    Axum(state): Axum<Arc<State>>,
    Path((name, snapshot)): Path<(String, String)>,
) -> Reply<bool> {
    let t = Instant::now();
    blocking(move || state.restore(&name, &snapshot)).await?;
    Ok(Answer(true, t))
}
