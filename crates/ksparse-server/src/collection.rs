//! A collection: a folder holding an index (codes + a document store of ids, payloads
//! and texts), optionally a model and encoder that turn text and dense vectors into codes,
//! and its settings.
//!
//! ```text
//! DATA/collections/NAME/
//!   collection.json   settings (checksummed): vector name, width, model, k, scoring mode
//!   encoder/          the K-sparse encoder (absent for a collection of codes only)
//!   index/            a ksparse index folder; its writer.lock is held by the server
//!   docs.jsonl        titles and texts of documents adopted from a `ksparse build` folder
//! ```
//!
//! Readers and the writer never wait for each other: a query takes the current [`View`]
//! (an `Arc`, swapped after every commit) and searches it; a write runs under the
//! collection's writer mutex, commits through the index's writer (new files fsynced,
//! then `meta.json` replaced atomically) and only then swaps in the new view and answers.
//! So an acknowledged write is on disk, and a query sees a whole commit or the one before.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{bail, Context, Result};
use ksparse::base::SparseCode;
use ksparse::data::document_text;
use ksparse::embed::Embedder;
use ksparse::encoder::scoring::{ScoringMode, DEFAULT_CANDIDATES};
use ksparse::encoder::SparseEncoder;
use ksparse::index::writer::{NewDocs, Writer};
use ksparse::index::{Exclusion, Index};
use ksparse::io::{read_json_checked, write_json_checked, Wait};
use ksparse::pipeline::{snippet, DOCS_FILE};
use serde::{Deserialize, Serialize};

use crate::api::ApiError;
use crate::filter::Filter;
use crate::points::{
    wanted, Contribution, Document, Payload, PointId, PointInput, Record, ScoredPoint, Sparse,
    StoredPoint, VectorInput,
};

/// Settings file of a collection folder.
pub const CONFIG_FILE: &str = "collection.json";
/// Width of a collection of codes created without one (Qdrant's create call has none):
/// indices of its sparse vectors must be below it.
pub const DEFAULT_WIDTH: usize = 65_536;
/// Segments above which a background merge starts.
pub const MAX_SEGMENTS: usize = 8;
/// A sparse-vector query's answer is re-scored with the exact f32 values (Qdrant's
/// scores): the first stage ranks by one-byte weights, so it takes 2 × (limit + offset),
/// at least this many more, and the exact scores order them.
const EXACT_EXTRA: usize = 10;
/// Points with vectors a training needs at least.
pub const MIN_TRAIN_POINTS: usize = 16;
/// Latents listed per hit by `explain`.
const EXPLAIN_LATENTS: usize = 8;

/// `collection.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CollectionConfig {
    /// The name of the collection's sparse vector (Qdrant's named vector; "text" unless
    /// created with another).
    pub vector_name: String,
    /// Latents (codes' indices are below it).
    pub width: usize,
    /// The sentence-transformers model folder, for text (None: codes only).
    pub model: Option<String>,
    /// SHA-256 over the model's files, checked when the collection opens.
    pub model_sha256: Option<String>,
    /// Tokens per text the model reads.
    pub max_seq_length: Option<usize>,
    /// Non-zeros per code written by the encoder.
    pub k: Option<usize>,
    /// Whether the encoder learnt judged pairs (its own scores then rank best).
    #[serde(default)]
    pub supervised: bool,
    /// Whether each point's dense vector is kept in its record (collections created with
    /// a model and no encoder: `POST …/train` learns the encoder from them).
    #[serde(default)]
    pub keeps_vectors: bool,
}

impl CollectionConfig {
    /// The settings of a collection of codes only (no model, no encoder).
    pub fn codes_only(vector_name: String, width: usize) -> Self {
        Self {
            vector_name,
            width,
            model: None,
            model_sha256: None,
            max_seq_length: None,
            k: None,
            supervised: false,
            keeps_vectors: false,
        }
    }
}

/// How a new collection is made (the body of `PUT /collections/{name}`).
/// Unknown keys are collected in `other` and refused there by name, except Qdrant's
/// settings ksparse has no use for.
#[derive(Debug, Clone, Deserialize)]
pub struct CreateRequest {
    /// Qdrant: `{"text": {}}` — a collection of sparse vectors under that name.
    #[serde(default)]
    pub sparse_vectors: Option<BTreeMap<String, serde_json::Value>>,
    /// Qdrant: dense vectors config; only an empty one (`{}`) is accepted.
    #[serde(default)]
    pub vectors: Option<serde_json::Value>,
    /// Width of a collection of codes (default [`DEFAULT_WIDTH`]).
    #[serde(default)]
    pub width: Option<usize>,
    /// A model (name in `models/`, or a folder) for text.
    #[serde(default)]
    pub model: Option<String>,
    /// An encoder folder written by `ksparse train` (needed with `model`).
    #[serde(default)]
    pub encoder: Option<String>,
    /// Non-zeros per code (default: the encoder's k, or 32 for an encoder to train).
    #[serde(default)]
    pub k: Option<usize>,
    /// Latents of the encoder `POST …/train` will learn: a number or a multiple of the
    /// model's dimension such as "4d" (the default).
    #[serde(default)]
    pub hidden: Option<String>,
    /// A search folder written by `ksparse build`, adopted as it is.
    #[serde(default)]
    pub from: Option<String>,
    /// Qdrant's other settings (shard_number, hnsw_config, …) are accepted and ignored.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// Qdrant's create-collection keys that configure what ksparse does not have (sharding,
/// HNSW, quantisation…): accepted, ignored.
const IGNORED_CREATE_KEYS: &[&str] = &[
    "shard_number",
    "sharding_method",
    "replication_factor",
    "write_consistency_factor",
    "on_disk_payload",
    "hnsw_config",
    "wal_config",
    "optimizers_config",
    "quantization_config",
    "strict_mode_config",
    "init_from",
    "metadata",
];

/// Models shared by the collections that use them (a model is loaded once per folder
/// and token limit).
#[derive(Default)]
pub struct Models(Mutex<HashMap<ModelKey, Arc<Embedder>>>);

/// A point's dense vector, where it came with one (or with text).
type Dense = Option<Vec<f32>>;

/// A loaded model: its folder and token limit.
type ModelKey = (PathBuf, Option<usize>);

impl Models {
    /// The model `spec` (a name in `models/` or a folder), loaded once, reading at most
    /// `max_seq_length` tokens per text (the model's own limit when `None`).
    pub fn get(&self, spec: &str, max_seq_length: Option<usize>) -> Result<Arc<Embedder>> {
        let path = ksparse::embed::ModelDir::resolve(spec)?;
        let path = path.canonicalize().unwrap_or(path);
        let mut map = self.0.lock().expect("models lock");
        let key = (path.clone(), max_seq_length);
        if let Some(e) = map.get(&key) {
            return Ok(e.clone());
        }
        let mut e = Embedder::from_dir(ksparse::embed::ModelDir::open(&path)?)?;
        if let Some(n) = max_seq_length {
            e.set_max_seq_length(n)?;
        }
        let e = Arc::new(e);
        map.insert(key, e.clone());
        Ok(e)
    }
}

/// What a collection's segment holds, parsed once and shared by every view that has the
/// segment: its documents' index keys → local rows, and their ids and payloads.
struct Part {
    keys: HashMap<String, u32>,
    points: Vec<(Option<PointId>, Option<Payload>)>,
    /// Kept dense vectors (collections that keep them).
    vectors: Vec<Option<Vec<f32>>>,
}

impl Part {
    fn of(seg: &ksparse::index::SegmentRef) -> Self {
        let n = seg.segment.docs;
        let mut keys = HashMap::with_capacity(n);
        let mut points = Vec::with_capacity(n);
        let mut vectors = Vec::with_capacity(n);
        for local in 0..n {
            keys.insert(seg.segment.id(local).to_string(), local as u32);
            let stored = seg
                .store
                .map(|s| StoredPoint::parse(s.get(local)))
                .unwrap_or_default();
            points.push((stored.id, stored.payload.filter(|p| !p.is_empty())));
            vectors.push(stored.vector);
        }
        Self {
            keys,
            points,
            vectors,
        }
    }
}

/// One commit of the collection, as queries see it.
pub struct View {
    /// The index at that commit.
    pub index: Index,
    parts: Vec<(String, u32, Arc<Part>)>,
}

impl View {
    fn new(index: Index, previous: Option<&View>) -> Self {
        let parts = index
            .segment_refs()
            .map(|seg| {
                let known = previous
                    .and_then(|p| p.parts.iter().find(|(f, _, _)| f == seg.file))
                    .map(|(_, _, part)| part.clone());
                let part = known.unwrap_or_else(|| Arc::new(Part::of(&seg)));
                (seg.file.to_string(), seg.base, part)
            })
            .collect();
        Self { index, parts }
    }

    /// (part, local row) of global document `doc`.
    fn locate(&self, doc: u32) -> (&Part, usize) {
        let (s, local) = self.index.locate(doc);
        (&self.parts[s].2, local)
    }

    /// The live document with index key `key`.
    fn find(&self, key: &str) -> Option<u32> {
        self.parts.iter().find_map(|(_, base, part)| {
            let doc = base + *part.keys.get(key)?;
            (!self.index.is_deleted(doc)).then_some(doc)
        })
    }

    /// The id of document `doc` as its point was given.
    fn point_id(&self, doc: u32) -> PointId {
        let (part, local) = self.locate(doc);
        part.points[local]
            .0
            .clone()
            .unwrap_or_else(|| PointId::from_key(self.index.id(doc)))
    }

    fn payload(&self, doc: u32) -> Option<&Payload> {
        let (part, local) = self.locate(doc);
        part.points[local].1.as_ref()
    }

    /// The live documents `filter` passes.
    fn exclusion(&self, filter: &Filter) -> Exclusion {
        self.index
            .exclusion(|doc| filter.passes(self.index.id(doc), self.payload(doc)))
    }

    /// The live documents `filter` passes, by number.
    fn passing(&self, filter: &Filter) -> Vec<u32> {
        let excluded = self.exclusion(filter);
        let mut docs = Vec::new();
        for (s, (base, seg, _)) in self.index.segments().enumerate() {
            let mask = excluded.segment(s);
            docs.extend(
                (0..seg.docs)
                    .filter(|&l| !mask[l])
                    .map(|l| (base + l) as u32),
            );
        }
        docs
    }

    /// (document, kept dense vector) of the live documents that have one and that
    /// `excluded` leaves (every live one when `None`).
    fn kept_vectors<'a>(
        &'a self,
        excluded: Option<&'a Exclusion>,
    ) -> impl Iterator<Item = (u32, &'a [f32])> + 'a {
        self.index
            .segments()
            .enumerate()
            .flat_map(move |(s, (base, seg, deleted))| {
                let mask = excluded.map_or(deleted, |e| e.segment(s));
                let part = &self.parts[s].2;
                (0..seg.docs)
                    .filter(move |&l| !mask[l])
                    .filter_map(move |l| Some(((base + l) as u32, part.vectors[l].as_deref()?)))
            })
    }
}

/// A query, as the routes parse it (Qdrant's `QueryRequest` with ksparse's options).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// A sparse vector, `{"nearest": …}`, a dense vector, or `{"text": "…"}`.
    pub query: Option<QueryInput>,
    /// The named vector to search (Qdrant); must be the collection's.
    #[serde(default)]
    pub using: Option<String>,
    /// Results to return (default 10).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Results to skip first.
    #[serde(default)]
    pub offset: Option<usize>,
    /// Only points that pass.
    #[serde(default)]
    pub filter: Option<Filter>,
    /// Return payloads (default false, as Qdrant).
    #[serde(default)]
    pub with_payload: Option<serde_json::Value>,
    /// Qdrant's option; vectors are not returned by queries.
    #[serde(default)]
    pub with_vector: Option<serde_json::Value>,
    /// Scoring mode for text and dense queries (default: the collection's best).
    #[serde(default)]
    pub mode: Option<String>,
    /// Per hit, the latents that contributed most.
    #[serde(default)]
    pub explain: bool,
    /// Per hit, title and snippet.
    #[serde(default)]
    pub with_document: bool,
    /// Qdrant's search params (hnsw_ef, exact…): accepted, ignored — search is exact.
    #[serde(default)]
    pub params: Option<serde_json::Value>,
    /// Qdrant's score threshold: hits below it are left out.
    #[serde(default)]
    pub score_threshold: Option<f32>,
}

/// What a query asks with.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum QueryInput {
    /// A sparse vector.
    Sparse(Sparse),
    /// Qdrant's `{"nearest": vector}`.
    Nearest {
        /// The vector.
        nearest: Box<QueryInput>,
    },
    /// Text, embedded and encoded by the collection.
    Text {
        /// The text.
        text: String,
    },
    /// A dense vector, encoded by the collection.
    Dense(Vec<f32>),
}

/// Limits on what one request may ask, so that no request can take the server down.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Points per upsert.
    pub batch: usize,
    /// Results per query (limit + offset).
    pub results: usize,
    /// Characters of query text.
    pub text_chars: usize,
    /// Queries per batch request.
    pub queries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            batch: 10_000,
            results: 10_000,
            text_chars: 8_192,
            queries: 256,
        }
    }
}

/// An open collection.
pub struct Collection {
    /// Its name.
    pub name: String,
    /// Its folder.
    pub dir: PathBuf,
    /// Its settings.
    pub config: CollectionConfig,
    model: Option<Arc<Embedder>>,
    /// The encoder; `None` for codes only, and until `train` for a collection that keeps
    /// vectors.
    encoder: RwLock<Option<Arc<SparseEncoder>>>,
    /// The last or current training job.
    training: Mutex<Training>,
    /// Upserts waiting for the writer (group commit).
    queued: Mutex<Vec<(Batch, Slot)>>,
    /// Titles and texts of adopted documents (from a search folder's docs.jsonl).
    adopted: HashMap<String, (String, String)>,
    view: RwLock<Arc<View>>,
    writer: Mutex<Writer>,
    /// Background merges running.
    pub merges: AtomicUsize,
    /// Set (under the writer mutex) when the collection is deleted or replaced: requests
    /// that still hold it may read their view but not write.
    closed: AtomicBool,
}

impl Collection {
    /// Opens the collection folder `dir`, loading its model and encoder (verified) and
    /// taking its index's writer lock (refused, naming the holder, if another process
    /// writes it).
    pub fn open(dir: &Path, name: &str, models: &Models) -> Result<Self> {
        let config: CollectionConfig =
            read_json_checked(&dir.join(CONFIG_FILE), "collection settings")?;
        let model = match &config.model {
            Some(spec) => {
                let m = models.get(spec, config.max_seq_length)?;
                let sha = ksparse::pipeline::model_fingerprint(&m.model_dir().path)?;
                if config.model_sha256.as_ref() != Some(&sha) {
                    bail!(
                        "{}: model {spec} has changed since the collection was created (SHA-256 {sha})",
                        dir.display()
                    );
                }
                Some(m)
            }
            None => None,
        };
        let enc_dir = dir.join("encoder");
        let encoder = if enc_dir.is_dir() {
            let (enc, _) = SparseEncoder::load(&enc_dir)?;
            if enc.hidden != config.width {
                bail!(
                    "{}: the encoder is {} wide, the collection {}",
                    dir.display(),
                    enc.hidden,
                    config.width
                );
            }
            Some(Arc::new(enc))
        } else {
            None
        };
        let index_dir = dir.join("index");
        let writer = Writer::open(&index_dir, Wait::No)?;
        let index = Index::open(&index_dir)?;
        let adopted = read_adopted(&dir.join(DOCS_FILE))?;
        Ok(Self {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            config,
            model,
            encoder: RwLock::new(encoder),
            training: Mutex::new(Training::default()),
            queued: Mutex::new(Vec::new()),
            adopted,
            view: RwLock::new(Arc::new(View::new(index, None))),
            writer: Mutex::new(writer),
            merges: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        })
    }

    /// The current commit.
    pub fn view(&self) -> Arc<View> {
        self.view.read().expect("view lock").clone()
    }

    /// The scoring mode text and dense queries use unless they name one: two-stage
    /// (re-ranked by the reconstruction score) for encoders trained without labels, the
    /// encoder's own sparse scores for one trained on judged pairs (see
    /// `ksparse::pipeline::Searcher::default_mode`).
    pub fn default_mode(&self) -> ScoringMode {
        if self.config.supervised {
            ScoringMode::Symmetric(None)
        } else {
            ScoringMode::TwoStage(DEFAULT_CANDIDATES)
        }
    }

    /// Upserts `points` (the last of repeated ids wins) in one commit; returns the
    /// commit's generation (the operation id).
    pub fn upsert(&self, points: Vec<PointInput>, limits: &Limits) -> Result<u64, ApiError> {
        if points.is_empty() {
            return Err(ApiError::bad("no points to upsert"));
        }
        if points.len() > limits.batch {
            return Err(ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "{} points in one upsert; the limit is {} (send several batches)",
                    points.len(),
                    limits.batch
                ),
            ));
        }
        // Repeated ids: the last wins (Qdrant's rule), as the batches commit.
        let points = points
            .into_iter()
            .map(|p| Ok((p.id.key()?, p)))
            .collect::<Result<Vec<(String, PointInput)>, ApiError>>()?;
        let (codes, dense) = self.codes_of(&points)?;
        let ids: Vec<String> = points.iter().map(|p| p.0.clone()).collect();
        let keep = self.config.keeps_vectors;
        let records: Vec<Vec<u8>> = points
            .into_iter()
            .zip(dense)
            .map(|((_, p), x)| {
                serde_json::to_vec(&StoredPoint {
                    id: Some(p.id),
                    payload: p.payload,
                    title: p.title,
                    text: p.text,
                    vector: x.filter(|_| keep),
                })
                .expect("JSON values serialise")
            })
            .collect();
        // Group commit: the batch joins the queue; whoever takes the writer next commits
        // every queued batch in one commit (fsyncs are the cost of a small write, and
        // concurrent writers share them) and hands each its result.
        let slot: Slot = Arc::new(Mutex::new(None));
        self.queued.lock().expect("queue lock").push((
            Batch {
                ids,
                codes,
                records,
            },
            slot.clone(),
        ));
        let writer = self.writer.lock().expect("writer lock");
        if let Some(done) = slot.lock().expect("slot lock").take() {
            return done.map_err(|(status, message)| ApiError::new(status, message));
        }
        let queued = std::mem::take(&mut *self.queued.lock().expect("queue lock"));
        let result = self
            .commit_batches(&writer, queued.iter().map(|q| &q.0))
            .map_err(|e| (e.status, e.message));
        for (_, s) in &queued {
            *s.lock().expect("slot lock") = Some(result.clone());
        }
        let mine = slot
            .lock()
            .expect("slot lock")
            .take()
            .expect("our batch was queued");
        mine.map_err(|(status, message)| ApiError::new(status, message))
    }

    /// Commits `batches` (in queue order: a later batch's point replaces an earlier one
    /// with the same id) as one segment; returns the commit's generation.
    fn commit_batches<'a>(
        &self,
        writer: &Writer,
        batches: impl Iterator<Item = &'a Batch>,
    ) -> Result<u64, ApiError> {
        let view = self.writable_view()?;
        let (mut ids, mut codes, mut records) = (Vec::new(), Vec::new(), Vec::new());
        for b in batches {
            ids.extend(b.ids.iter().cloned());
            codes.extend(b.codes.iter().cloned());
            records.extend(b.records.iter().cloned());
        }
        // Keep the last occurrence of each id.
        let mut seen = std::collections::HashSet::new();
        let keep: Vec<bool> = ids.iter().rev().map(|id| seen.insert(id.clone())).collect();
        let keep: Vec<bool> = keep.into_iter().rev().collect();
        let (ids, codes, records) = (
            marked(ids, &keep),
            marked(codes, &keep),
            marked(records, &keep),
        );
        let docs = NewDocs {
            codes: &codes,
            ids: &ids,
            records: Some(&records),
        };
        let replaced: Vec<u32> = ids.iter().filter_map(|key| view.find(key)).collect();
        let meta = writer
            .upsert_replacing(&view.index, docs, self.config.width, &replaced)
            .map_err(internal)?;
        self.swap(&view)?;
        Ok(meta.generation)
    }

    /// Deletes the points with these ids, or those `filter` passes; returns the commit's
    /// generation (unchanged when nothing was deleted).
    pub fn delete(&self, ids: &[PointId], filter: Option<&Filter>) -> Result<u64, ApiError> {
        let writer = self.writer.lock().expect("writer lock");
        let view = self.writable_view()?;
        let mut docs = Vec::new();
        for id in ids {
            docs.extend(view.find(&id.key()?));
        }
        if let Some(f) = filter {
            f.validate()?;
            docs.extend(view.passing(f));
        }
        docs.sort_unstable();
        docs.dedup();
        match writer.delete_docs(&view.index, &docs).map_err(internal)? {
            Some(meta) => {
                self.swap(&view)?;
                Ok(meta.generation)
            }
            None => Ok(view.index.meta.generation),
        }
    }

    /// The view a write starts from (the writer mutex held): refused once the collection
    /// was closed; reopened first if a commit's reopen failed after the commit, so that one
    /// failure does not block every later write.
    fn writable_view(&self) -> Result<Arc<View>, ApiError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(ApiError::conflict(format!(
                "collection {:?} was deleted or replaced meanwhile",
                self.name
            )));
        }
        let view = self.view();
        let on_disk = ksparse::index::read_meta(&self.dir.join("index"))
            .map_err(internal)?
            .generation;
        if on_disk != view.index.meta.generation {
            self.swap(&view)?;
            return Ok(self.view());
        }
        Ok(view)
    }

    /// Runs `f` under the writer mutex and closes the collection to writes for good:
    /// what deleting or replacing its folder does first, so that no write still in flight
    /// can commit into a folder that is no longer this collection's.
    pub fn close(&self, f: impl FnOnce() -> Result<()>) -> Result<()> {
        let _writer = self.writer.lock().expect("writer lock");
        self.closed.store(true, Ordering::SeqCst);
        f()
    }

    /// Reopens the index after a commit and makes it the view queries see.
    fn swap(&self, old: &View) -> Result<(), ApiError> {
        let index = old
            .index
            .reopen(&self.dir.join("index"))
            .map_err(internal)?;
        let view = Arc::new(View::new(index, Some(old)));
        *self.view.write().expect("view lock") = view;
        Ok(())
    }

    /// Merges small segments when there are more than [`MAX_SEGMENTS`]: those under an
    /// eighth of the largest (all of them when fewer than two are that small). Returns
    /// whether it merged. Holds the writer mutex; queries go on.
    pub fn merge_if_needed(&self) -> Result<bool> {
        let writer = self.writer.lock().expect("writer lock");
        if self.closed.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let view = self.view();
        let sizes: Vec<(String, usize)> = view
            .index
            .segment_refs()
            .map(|s| (s.file.to_string(), s.segment.docs))
            .collect();
        if sizes.len() <= MAX_SEGMENTS {
            return Ok(false);
        }
        let largest = sizes.iter().map(|s| s.1).max().unwrap_or(0);
        let mut small: Vec<String> = sizes
            .iter()
            .filter(|s| s.1 * 8 < largest)
            .map(|s| s.0.clone())
            .collect();
        if small.len() < 2 {
            // Segments of similar sizes: merge the smaller half, never the largest, so a
            // merge's cost stays a fraction of the collection's.
            let mut by_size = sizes;
            by_size.sort_by_key(|s| s.1);
            small = by_size[..by_size.len() / 2]
                .iter()
                .map(|s| s.0.clone())
                .collect();
        }
        writer.merge_segments(&view.index, &small)?;
        self.swap(&view).map_err(|e| anyhow::anyhow!(e.message))?;
        Ok(true)
    }

    /// The codes of points to upsert — given sparse codes as they are, dense vectors
    /// encoded, texts embedded (in one batch) and encoded — and each point's dense vector
    /// where it had one (empty codes until a collection that keeps vectors is trained).
    fn codes_of(
        &self,
        points: &[(String, PointInput)],
    ) -> Result<(Vec<SparseCode>, Vec<Dense>), ApiError> {
        let mut codes = vec![SparseCode::default(); points.len()];
        let mut dense: Vec<Dense> = vec![None; points.len()];
        let mut texts = Vec::new();
        for (i, (key, p)) in points.iter().enumerate() {
            let what = format!("point {key:?}");
            let sparse = match (&p.vector, &p.sparse) {
                (Some(VectorInput::Named(named)), None) => Some(self.named(named, &what)?),
                (None, Some(s)) => Some(s.clone()),
                (Some(_), Some(_)) => {
                    return Err(ApiError::bad(format!(
                        "{what}: give either \"vector\" or \"sparse\", not both"
                    )))
                }
                _ => None,
            };
            match (sparse, &p.vector, &p.text) {
                (Some(s), _, None) => codes[i] = self.document_code(&s, &what)?,
                (None, Some(VectorInput::Dense(x)), None) => {
                    check_dense(x, self.dim(&what)?, &what)?;
                    dense[i] = Some(x.clone());
                }
                (None, None, Some(t)) => {
                    texts.push((i, document_text(p.title.as_deref().unwrap_or(""), t)))
                }
                (None, None, None) => {
                    return Err(ApiError::bad(format!(
                        "{what} has no \"vector\", \"sparse\" or \"text\""
                    )))
                }
                _ => {
                    return Err(ApiError::bad(format!(
                        "{what}: give one of \"vector\", \"sparse\" and \"text\""
                    )))
                }
            }
        }
        if !texts.is_empty() {
            let model = self.model("text points")?;
            let strings: Vec<&str> = texts.iter().map(|t| t.1.as_str()).collect();
            let vectors = model.embed(&strings, 16, |_| {}).map_err(internal)?;
            for ((i, _), row) in texts.iter().zip(vectors.rows()) {
                dense[*i] = Some(row.to_vec());
            }
        }
        if let Some(enc) = self.encoder_now() {
            let k = self.config.k.unwrap_or(32);
            for (code, x) in codes.iter_mut().zip(&dense) {
                if let Some(x) = x {
                    *code = enc.encode_one(x, k);
                }
            }
        }
        Ok((codes, dense))
    }

    /// The collection's sparse vector among Qdrant's named vectors.
    fn named(&self, named: &BTreeMap<String, Sparse>, what: &str) -> Result<Sparse, ApiError> {
        let name = &self.config.vector_name;
        match named.get(name) {
            Some(s) if named.len() == 1 => Ok(s.clone()),
            _ => Err(ApiError::bad(format!(
                "{what}: the collection has one sparse vector, named {name:?}; got {:?}",
                named.keys().collect::<Vec<_>>()
            ))),
        }
    }

    /// A given sparse code as the index stores it: indices below the width, values
    /// positive (zeros dropped; negative values refused: codes come from TopK + ReLU).
    fn document_code(&self, s: &Sparse, what: &str) -> Result<SparseCode, ApiError> {
        let pairs = s.pairs(what)?;
        let mut code = SparseCode::default();
        for (j, v) in pairs {
            if j as usize >= self.config.width {
                return Err(ApiError::bad(format!(
                    "{what}: index {j} is not below the collection's width {}",
                    self.config.width
                )));
            }
            if v < 0.0 {
                return Err(ApiError::bad(format!(
                    "{what}: value {v} of index {j} is negative; stored codes are non-negative (TopK + ReLU)"
                )));
            }
            if v > 0.0 {
                code.ids.push(j);
                code.values.push(v);
            }
        }
        Ok(code)
    }

    /// Whether the collection has an encoder (codes-only collections never do; those
    /// that keep vectors once trained).
    pub fn has_encoder(&self) -> bool {
        self.encoder_now().is_some()
    }

    /// The encoder, if the collection has one now.
    fn encoder_now(&self) -> Option<Arc<SparseEncoder>> {
        self.encoder.read().expect("encoder lock").clone()
    }

    /// The dimension of dense vectors the collection takes.
    fn dim(&self, what: &str) -> Result<usize, ApiError> {
        match (self.encoder_now(), &self.model) {
            (Some(enc), _) => Ok(enc.dim),
            (None, Some(m)) if self.config.keeps_vectors => Ok(m.dim()),
            _ => Err(ApiError::bad(format!(
                "{what}: collection {:?} holds codes only (no encoder); send sparse vectors",
                self.name
            ))),
        }
    }

    fn model(&self, what: &str) -> Result<&Embedder, ApiError> {
        match &self.model {
            Some(m) if self.config.keeps_vectors || self.encoder_now().is_some() => Ok(m),
            _ => Err(ApiError::bad(format!(
                "{what}: collection {:?} has no model and encoder for text; send sparse vectors",
                self.name
            ))),
        }
    }

    /// Answers queries in one pass: texts are embedded together.
    pub fn query(
        &self,
        requests: &[QueryRequest],
        limits: &Limits,
    ) -> Result<Vec<Vec<ScoredPoint>>, ApiError> {
        if requests.len() > limits.queries {
            return Err(ApiError::bad(format!(
                "{} queries in one batch; the limit is {}",
                requests.len(),
                limits.queries
            )));
        }
        let view = self.view();
        // Text queries: embedded in one batch.
        let mut texts = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            if let Some(QueryInput::Text { text }) = unwrap_nearest(r.query.as_ref()) {
                if text.trim().is_empty() || text.chars().count() > limits.text_chars {
                    return Err(ApiError::bad(format!(
                        "query {i}: text must be 1 to {} characters",
                        limits.text_chars
                    )));
                }
                texts.push((i, text.as_str()));
            }
        }
        let mut dense: HashMap<usize, Vec<f32>> = HashMap::new();
        if !texts.is_empty() {
            let model = self.model("text queries")?;
            let strings: Vec<&str> = texts.iter().map(|t| t.1).collect();
            let vectors = model.embed(&strings, 16, |_| {}).map_err(internal)?;
            for ((i, _), row) in texts.iter().zip(vectors.rows()) {
                dense.insert(*i, row.to_vec());
            }
        }
        requests
            .iter()
            .enumerate()
            .map(|(i, r)| self.query_one(&view, r, dense.get(&i), limits, i))
            .collect()
    }

    fn query_one(
        &self,
        view: &View,
        r: &QueryRequest,
        embedded: Option<&Vec<f32>>,
        limits: &Limits,
        i: usize,
    ) -> Result<Vec<ScoredPoint>, ApiError> {
        let what = format!("query {i}");
        if let Some(using) = &r.using {
            if *using != self.config.vector_name {
                return Err(ApiError::bad(format!(
                    "{what}: \"using\": {using:?}, but the collection's vector is {:?}",
                    self.config.vector_name
                )));
            }
        }
        let (limit, offset) = (r.limit.unwrap_or(10), r.offset.unwrap_or(0));
        let depth = limit.saturating_add(offset);
        if depth > limits.results {
            return Err(ApiError::bad(format!(
                "{what}: limit + offset = {depth}; the limit is {}",
                limits.results
            )));
        }
        let excluded = match &r.filter {
            Some(f) => {
                f.validate()?;
                Some(view.exclusion(f))
            }
            None => None,
        };
        let mode = match &r.mode {
            Some(m) => Some(
                m.parse::<ScoringMode>()
                    .map_err(|e| ApiError::bad(format!("{what}: mode {m:?}: {e}")))?,
            ),
            None => None,
        };
        let query = unwrap_nearest(r.query.as_ref())
            .ok_or_else(|| ApiError::bad(format!("{what}: no \"query\"")))?;
        let dense_q = match query {
            QueryInput::Text { .. } => embedded.cloned(),
            QueryInput::Dense(x) => {
                check_dense(x, self.dim(&what)?, &what)?;
                Some(x.clone())
            }
            _ => None,
        };
        let (hits, explain_terms): (Vec<ksparse::base::Hit>, Explain) = match (query, dense_q) {
            (QueryInput::Sparse(s), _) => {
                if mode.is_some() {
                    return Err(ApiError::bad(format!(
                        "{what}: \"mode\" applies to text and dense queries; a sparse query scores by its dot product"
                    )));
                }
                let terms = s.pairs(&what)?;
                let rescore = depth.saturating_mul(2).max(depth + EXACT_EXTRA);
                let hits =
                    view.index
                        .search_excluding(&terms, depth, rescore, excluded.as_ref())?;
                (hits, Explain::Terms(terms))
            }
            (_, Some(q)) if self.encoder_now().is_none() => {
                // Not trained yet: exact dense search over the kept vectors.
                if mode.is_some() {
                    return Err(ApiError::bad(format!(
                        "{what}: \"mode\" needs an encoder; collection {:?} is not trained yet (POST /collections/{}/train)",
                        self.name, self.name
                    )));
                }
                (
                    dense_search(view, &q, depth, excluded.as_ref()),
                    Explain::Dense,
                )
            }
            (_, Some(q)) => {
                let enc = self.encoder_now().expect("checked above");
                let mode = mode.unwrap_or_else(|| self.default_mode());
                if mode.uses_vectors() {
                    return Err(ApiError::bad(format!(
                        "{what}: mode {mode} needs dense vectors kept beside the index, which a served collection does not keep; use two-stage"
                    )));
                }
                let plan = enc.plan(&q, self.config.k.unwrap_or(32), mode);
                let hits =
                    view.index
                        .search_plan_excluding(&plan, depth, None, excluded.as_ref())?;
                let explain = if plan.reranks() || matches!(mode, ScoringMode::Reconstruction) {
                    Explain::Reconstruction(q)
                } else {
                    Explain::Terms(plan.terms.clone())
                };
                (hits, explain)
            }
            _ => return Err(ApiError::bad(format!("{what}: unreadable query"))),
        };
        let with_payload = wanted(&r.with_payload, false);
        Ok(hits
            .into_iter()
            .skip(offset)
            .filter(|h| r.score_threshold.is_none_or(|t| h.score >= t))
            .map(|h| ScoredPoint {
                id: view.point_id(h.doc),
                version: view.index.meta.generation,
                score: h.score,
                payload: with_payload.then(|| view.payload(h.doc).cloned().unwrap_or_default()),
                document: r.with_document.then(|| self.document(view, h.doc)),
                explain: r.explain.then(|| self.explain(view, h.doc, &explain_terms)),
            })
            .collect())
    }

    /// The latents that contributed most to document `doc`'s score, largest first.
    fn explain(&self, view: &View, doc: u32, how: &Explain) -> Vec<Contribution> {
        let mut code = Vec::new();
        view.index.code_into(doc, &mut code);
        let mut parts: Vec<Contribution> = match how {
            Explain::Terms(terms) => code
                .iter()
                .filter_map(|&(j, v)| {
                    let p = terms.binary_search_by_key(&j, |t| t.0).ok()?;
                    Some(Contribution {
                        latent: j,
                        contribution: terms[p].1 * v,
                    })
                })
                .collect(),
            Explain::Dense => Vec::new(),
            Explain::Reconstruction(q) => {
                let enc = self.encoder_now().expect("dense queries have an encoder");
                code.iter()
                    .map(|&(j, v)| Contribution {
                        latent: j,
                        contribution: ksparse::base::dot(enc.atom(j as usize), q) * v,
                    })
                    .collect()
            }
        };
        parts.sort_by(|a, b| b.contribution.abs().total_cmp(&a.contribution.abs()));
        parts.truncate(EXPLAIN_LATENTS);
        parts
    }

    /// Title and snippet of document `doc`: its stored text, or the adopted folder's.
    fn document(&self, view: &View, doc: u32) -> Document {
        let stored = StoredPoint::parse(view.index.stored(doc));
        let (title, text) = match (stored.title, stored.text) {
            (None, None) => self
                .adopted
                .get(view.index.id(doc))
                .cloned()
                .unwrap_or_default(),
            (t, x) => (t.unwrap_or_default(), x.unwrap_or_default()),
        };
        Document {
            title,
            snippet: snippet(&text),
        }
    }

    /// Points by id (unknown ids left out), as Qdrant's retrieve answers.
    pub fn retrieve(
        &self,
        ids: &[PointId],
        with_payload: bool,
        with_vector: bool,
    ) -> Result<Vec<Record>, ApiError> {
        let view = self.view();
        let mut out = Vec::new();
        for id in ids {
            let Some(doc) = view.find(&id.key()?) else {
                continue;
            };
            let vector = with_vector.then(|| {
                let mut code = Vec::new();
                view.index.code_into(doc, &mut code);
                let (indices, values) = code.into_iter().unzip();
                BTreeMap::from([(self.config.vector_name.clone(), Sparse { indices, values })])
            });
            out.push(Record {
                id: view.point_id(doc),
                payload: with_payload.then(|| view.payload(doc).cloned().unwrap_or_default()),
                vector,
            });
        }
        Ok(out)
    }

    /// Live points whose payload `filter` passes (all when `None`).
    pub fn count(&self, filter: Option<&Filter>) -> Result<usize, ApiError> {
        let view = self.view();
        Ok(match filter {
            None => view.index.live(),
            Some(f) => {
                f.validate()?;
                view.passing(f).len()
            }
        })
    }

    /// The last or current training job.
    pub fn training(&self) -> Training {
        self.training.lock().expect("training lock").clone()
    }

    /// Starts training the collection's encoder on its points' kept dense vectors (and
    /// pseudo-queries cut from their texts, as `ksparse build` trains) in a background
    /// thread: the info route shows its progress. When it ends, every point with a vector
    /// is encoded and the index replaced in one commit; points added meanwhile are
    /// encoded too. `cache` keeps embeddings and encoders between runs.
    pub fn train(self: &Arc<Self>, epochs: Option<usize>, cache: PathBuf) -> Result<(), ApiError> {
        let (Some(model), true) = (self.model.clone(), self.config.keeps_vectors) else {
            return Err(ApiError::bad(format!(
                "collection {:?} was not created with a model and no encoder: it has nothing to train on",
                self.name
            )));
        };
        let (texts, vectors) = self.training_data(&self.view());
        if texts.len() < MIN_TRAIN_POINTS {
            return Err(ApiError::bad(format!(
                "collection {:?} has {} points with vectors; training needs at least {MIN_TRAIN_POINTS}",
                self.name,
                texts.len()
            )));
        }
        {
            let mut t = self.training.lock().expect("training lock");
            if t.state == "running" {
                return Err(ApiError::conflict(format!(
                    "collection {:?} is already training",
                    self.name
                )));
            }
            *t = Training {
                state: "running".into(),
                documents: texts.len(),
                ..Training::default()
            };
        }
        let k = self.config.k.unwrap_or(32);
        let cfg = ksparse::encoder::train::TrainConfig {
            hidden: self.config.width,
            k,
            epochs: epochs.unwrap_or(ksparse::encoder::train::TrainConfig::default().epochs),
            losses: ksparse::encoder::loss::LossWeights {
                distill: ksparse::encoder::train::PSEUDO_DISTILL_WEIGHT,
                ..Default::default()
            },
            ..Default::default()
        };
        let c = self.clone();
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let result = c.run_training(&model, &texts, &vectors, &cfg, &cache);
            let mut t = c.training.lock().expect("training lock");
            t.seconds = started.elapsed().as_secs_f64();
            match result {
                Ok(()) => t.state = "done".into(),
                Err(e) => {
                    tracing::error!(collection = %c.name, "training failed: {e:#}");
                    t.state = "failed".into();
                    t.error = Some(format!("{e:#}"));
                }
            }
        });
        Ok(())
    }

    /// Texts (title + text, as stored) and dense vectors of the live points that kept one.
    fn training_data(&self, view: &View) -> (ksparse::data::Texts, ndarray::Array2<f32>) {
        let mut texts = ksparse::data::Texts::default();
        let mut rows = Vec::new();
        let mut dim = 0;
        for (doc, x) in view.kept_vectors(None) {
            let stored = StoredPoint::parse(view.index.stored(doc));
            let title = stored.title.unwrap_or_default();
            texts
                .texts
                .push(document_text(&title, &stored.text.unwrap_or_default()));
            texts.titles.push(title);
            texts.ids.push(view.index.id(doc).to_string());
            dim = x.len();
            rows.extend_from_slice(x);
        }
        let n = texts.ids.len();
        let vectors = ndarray::Array2::from_shape_vec((n, dim), rows).expect("rows of one width");
        (texts, vectors)
    }

    /// The training job: train, install the encoder, re-encode every point in one commit.
    fn run_training(
        &self,
        model: &Embedder,
        texts: &ksparse::data::Texts,
        vectors: &ndarray::Array2<f32>,
        cfg: &ksparse::encoder::train::TrainConfig,
        cache: &Path,
    ) -> Result<()> {
        let progress = TrainingProgress(&self.training);
        let source = format!("collection {}", self.name);
        let (encoder, _, trained_in) = ksparse::pipeline::train_for_corpus(
            model,
            texts,
            vectors,
            cfg,
            (cache, 32, &source),
            &progress,
        )?;
        let writer = self.writer.lock().expect("writer lock");
        if self.closed.load(Ordering::SeqCst) {
            bail!("the collection was deleted or replaced while it trained");
        }
        // The encoder folder first (a copy made beside it, swapped in), then the codes.
        let tmp = self.dir.join(format!(".tmp-encoder-{}", unique()));
        copy_dir(&trained_in, &tmp)?;
        if let Some(old) = ksparse::io::dir::swap_in(&tmp, &self.dir.join("encoder"))? {
            std::fs::remove_dir_all(old).ok();
        }
        let encoder = Arc::new(encoder);
        *self.encoder.write().expect("encoder lock") = Some(encoder.clone());
        let view = self
            .writable_view()
            .map_err(|e| anyhow::anyhow!(e.message))?;
        let k = self.config.k.unwrap_or(32);
        let (mut codes, mut ids, mut records, mut replaced) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (doc, x) in view.kept_vectors(None) {
            codes.push(encoder.encode_one(x, k));
            ids.push(view.index.id(doc).to_string());
            records.push(view.index.stored(doc).to_vec());
            replaced.push(doc);
        }
        let docs = NewDocs {
            codes: &codes,
            ids: &ids,
            records: Some(&records),
        };
        writer.upsert_replacing(&view.index, docs, self.config.width, &replaced)?;
        self.swap(&view).map_err(|e| anyhow::anyhow!(e.message))?;
        drop(writer);
        Ok(())
    }

    /// Runs `f` with the writer held: nothing commits meanwhile (snapshots copy the
    /// folder under it).
    pub fn with_writer<T>(&self, f: impl FnOnce(&View) -> Result<T>) -> Result<T> {
        let _writer = self.writer.lock().expect("writer lock");
        f(&self.view())
    }
}

/// The items of `v` whose `keep` is true.
fn marked<T>(v: Vec<T>, keep: &[bool]) -> Vec<T> {
    v.into_iter()
        .zip(keep)
        .filter(|(_, k)| **k)
        .map(|(x, _)| x)
        .collect()
}

/// An upsert's documents, ready to commit.
struct Batch {
    ids: Vec<String>,
    codes: Vec<SparseCode>,
    records: Vec<Vec<u8>>,
}

/// Where the writer that commits a queued batch leaves its result.
type Slot = Arc<Mutex<Option<Result<u64, (axum::http::StatusCode, String)>>>>;

/// A training job's state, as the info route shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Training {
    /// "idle", "running", "done" or "failed".
    pub state: String,
    /// The current stage ("embedding pseudo-queries", "training h=… k=…").
    pub stage: String,
    /// Units of the stage done (texts or steps).
    pub done: usize,
    /// Units of the stage (0 while not known).
    pub total: usize,
    /// Points trained on.
    pub documents: usize,
    /// Seconds the job took (when it ended).
    pub seconds: f64,
    /// Why it failed.
    pub error: Option<String>,
}

/// Reports the pipeline's stages into a collection's [`Training`].
struct TrainingProgress<'a>(&'a Mutex<Training>);

impl ksparse::pipeline::Progress for TrainingProgress<'_> {
    fn start(&self, stage: ksparse::pipeline::Stage, total: usize) {
        let mut t = self.0.lock().expect("training lock");
        t.stage = stage.to_string();
        (t.done, t.total) = (0, total);
    }

    fn update(&self, done: usize, total: usize) {
        let mut t = self.0.lock().expect("training lock");
        (t.done, t.total) = (done, total);
    }

    fn finish(&self) {}
}

/// How `explain` splits a score into latents.
enum Explain {
    /// Σ query weight · document value over shared latents.
    Terms(Vec<(u32, f32)>),
    /// Σ (atom_j · q) · document value: the reconstruction score two-stage re-ranks by.
    Reconstruction(Vec<f32>),
    /// Dense scores (before training): no latents to name.
    Dense,
}

/// The exact top `top` by q · x over the live documents' kept dense vectors that
/// `excluded` leaves: how a collection that keeps vectors answers until it is trained.
fn dense_search(
    view: &View,
    q: &[f32],
    top: usize,
    excluded: Option<&Exclusion>,
) -> Vec<ksparse::base::Hit> {
    let mut best = ksparse::base::TopK::new(top);
    for (doc, x) in view.kept_vectors(excluded) {
        best.offer(ksparse::base::dot(q, x), doc);
    }
    best.into_sorted()
        .into_iter()
        .map(|(score, doc)| ksparse::base::Hit { doc, score })
        .collect()
}

fn unwrap_nearest(q: Option<&QueryInput>) -> Option<&QueryInput> {
    match q? {
        QueryInput::Nearest { nearest } => unwrap_nearest(Some(nearest)),
        other => Some(other),
    }
}

fn check_dense(x: &[f32], dim: usize, what: &str) -> Result<(), ApiError> {
    if x.len() != dim {
        return Err(ApiError::bad(format!(
            "{what}: a dense vector of {} dimensions; the collection's model gives {dim}",
            x.len()
        )));
    }
    if let Some((i, v)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(ApiError::bad(format!("{what}: dimension {i} is {v}")));
    }
    Ok(())
}

/// An error of the server's own doing (disk, a broken invariant): 500.
pub fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        format!("{e:#}"),
    )
}

/// Titles and texts of `docs.jsonl` (a search folder's), by document id; empty when the
/// file is absent.
fn read_adopted(path: &Path) -> Result<HashMap<String, (String, String)>> {
    if !path.exists() {
        return Ok(HashMap::new());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    ksparse::pipeline::parse_docs(&bytes, path)
}

/// Writes a new collection folder of codes only at `dir` (which must not exist) holding
/// `codes` under `ids`, `width` wide: how a large collection is loaded without HTTP
/// (`ksparse bench serve` makes its million-document collection this way).
pub fn create_from_codes(
    dir: &Path,
    codes: &[SparseCode],
    ids: &[String],
    width: usize,
) -> Result<()> {
    let parent = dir.parent().context("a collection folder has a parent")?;
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(".tmp-codes-{}-{}", std::process::id(), unique()));
    ksparse::index::build(&tmp.join("index"), codes, ids, width)?;
    let config = CollectionConfig::codes_only("text".into(), width);
    write_json_checked(&tmp.join(CONFIG_FILE), &config)?;
    std::fs::rename(&tmp, dir).with_context(|| format!("cannot create {}", dir.display()))?;
    ksparse::io::sync_dir(parent)
}

/// Writes a new collection folder at `dir` (which must not exist) as `request` says,
/// under a temporary name renamed into place, so a crash leaves no half collection.
pub fn create(dir: &Path, request: &CreateRequest, models: &Models) -> Result<(), ApiError> {
    if let Some(key) = request
        .other
        .keys()
        .find(|k| !IGNORED_CREATE_KEYS.contains(&k.as_str()))
    {
        return Err(ApiError::bad(format!("unknown collection setting {key:?}")));
    }
    if let Some(v) = &request.vectors {
        if v.as_object().is_none_or(|m| !m.is_empty()) {
            return Err(ApiError::bad(
                "dense \"vectors\" are not stored by ksparse: give \"vectors\": {} with \"sparse_vectors\", or a \"model\" and \"encoder\" to send dense vectors and text",
            ));
        }
    }
    let parent = dir.parent().expect("collections folder");
    let tmp = tempdir_in(parent)?;
    let config = match (&request.from, &request.model, &request.sparse_vectors) {
        (Some(from), None, None) => adopt(Path::new(from), tmp.path(), models)?,
        (None, Some(model), None) => with_model(model, request, tmp.path(), models)?,
        (None, None, sparse) => {
            let names: Vec<&String> = sparse.iter().flat_map(|m| m.keys()).collect();
            let vector_name = match names.as_slice() {
                [] => "text".to_string(),
                [one] => one.to_string(),
                _ => {
                    return Err(ApiError::bad(
                        "a collection has one sparse vector; name one in \"sparse_vectors\"",
                    ))
                }
            };
            let width = request.width.unwrap_or(DEFAULT_WIDTH);
            if width == 0 || width > ksparse::base::MAX_HIDDEN {
                return Err(ApiError::bad(format!(
                    "width {width} is not between 1 and {}",
                    ksparse::base::MAX_HIDDEN
                )));
            }
            ksparse::index::build(&tmp.path().join("index"), &[], &[], width).map_err(internal)?;
            CollectionConfig::codes_only(vector_name, width)
        }
        _ => {
            return Err(ApiError::bad(
                "give one of: \"sparse_vectors\" (codes only), \"model\" with \"encoder\", or \"from\" (a search folder)",
            ))
        }
    };
    write_json_checked(&tmp.path().join(CONFIG_FILE), &config).map_err(internal)?;
    let tmp = tmp.keep();
    if let Err(e) = std::fs::rename(&tmp, dir) {
        std::fs::remove_dir_all(&tmp).ok();
        return Err(if dir.exists() {
            ApiError::conflict(format!(
                "collection {:?} already exists",
                dir.file_name().unwrap_or_default()
            ))
        } else {
            internal(e)
        });
    }
    ksparse::io::sync_dir(parent).map_err(internal)?;
    Ok(())
}

fn tempdir_in(parent: &Path) -> Result<TempDir, ApiError> {
    let name = format!(".tmp-create-{}-{}", std::process::id(), unique());
    let path = parent.join(name);
    std::fs::create_dir_all(&path).map_err(internal)?;
    Ok(TempDir(Some(path)))
}

fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A folder removed on drop unless kept.
struct TempDir(Option<PathBuf>);

impl TempDir {
    fn path(&self) -> &Path {
        self.0.as_deref().expect("not kept")
    }

    fn keep(mut self) -> PathBuf {
        self.0.take().expect("kept once")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            std::fs::remove_dir_all(p).ok();
        }
    }
}

/// A collection with a model and encoder, empty.
fn with_model(
    model: &str,
    request: &CreateRequest,
    tmp: &Path,
    models: &Models,
) -> Result<CollectionConfig, ApiError> {
    let m = models
        .get(model, None)
        .map_err(|e| ApiError::bad(format!("model {model:?}: {e:#}")))?;
    let Some(encoder) = &request.encoder else {
        // No encoder yet: points keep their dense vectors until `train` learns one.
        let hidden: ksparse::encoder::Hidden = request
            .hidden
            .as_deref()
            .unwrap_or("4d")
            .parse()
            .map_err(|e| ApiError::bad(format!("hidden: {e:#}")))?;
        let width = hidden.resolve(m.dim());
        let k = request.k.unwrap_or(32);
        ksparse::encoder::check_k(k, width).map_err(|e| ApiError::bad(format!("{e:#}")))?;
        ksparse::index::build(&tmp.join("index"), &[], &[], width).map_err(internal)?;
        return Ok(CollectionConfig {
            vector_name: "text".into(),
            width,
            model_sha256: Some(
                ksparse::pipeline::model_fingerprint(&m.model_dir().path).map_err(internal)?,
            ),
            model: Some(m.model_dir().path.display().to_string()),
            max_seq_length: Some(m.max_seq_length()),
            k: Some(k),
            supervised: false,
            keeps_vectors: true,
        });
    };
    let (enc, enc_config) = SparseEncoder::load(Path::new(encoder))
        .map_err(|e| ApiError::bad(format!("encoder {encoder:?}: {e:#}")))?;
    if enc.dim != m.dim() {
        return Err(ApiError::bad(format!(
            "encoder {encoder:?} takes {}-d vectors but model {model:?} gives {}-d",
            enc.dim,
            m.dim()
        )));
    }
    let k = request.k.unwrap_or(enc_config.k);
    ksparse::encoder::check_k(k, enc.hidden).map_err(|e| ApiError::bad(format!("{e:#}")))?;
    copy_dir(Path::new(encoder), &tmp.join("encoder")).map_err(internal)?;
    ksparse::index::build(&tmp.join("index"), &[], &[], enc.hidden).map_err(internal)?;
    Ok(CollectionConfig {
        vector_name: "text".into(),
        width: enc.hidden,
        model_sha256: Some(
            ksparse::pipeline::model_fingerprint(&m.model_dir().path).map_err(internal)?,
        ),
        model: Some(m.model_dir().path.display().to_string()),
        max_seq_length: Some(m.max_seq_length()),
        k: Some(k),
        supervised: enc_config.training.losses.nce > 0.0,
        keeps_vectors: false,
    })
}

/// A search folder written by `ksparse build`, adopted: its encoder, index and docs.jsonl
/// are copied in (segments hard-linked where the file system allows: they never change).
fn adopt(from: &Path, tmp: &Path, models: &Models) -> Result<CollectionConfig, ApiError> {
    // Opening it verifies every checksum and cross-checks its parts.
    let searcher = ksparse::pipeline::Searcher::open(from, None)
        .map_err(|e| ApiError::bad(format!("{}: {e:#}", from.display())))?;
    let manifest = &searcher.manifest;
    let m = models
        .get(&manifest.model, Some(manifest.max_seq_length))
        .map_err(|e| ApiError::bad(format!("{e:#}")))?;
    copy_dir(&from.join("encoder"), &tmp.join("encoder")).map_err(internal)?;
    copy_dir(&from.join("index"), &tmp.join("index")).map_err(internal)?;
    std::fs::copy(from.join(DOCS_FILE), tmp.join(DOCS_FILE)).map_err(internal)?;
    let (_, enc_config) = SparseEncoder::load(&tmp.join("encoder")).map_err(internal)?;
    Ok(CollectionConfig {
        vector_name: "text".into(),
        width: manifest.hidden,
        model: Some(m.model_dir().path.display().to_string()),
        model_sha256: Some(manifest.model_sha256.clone()),
        max_seq_length: Some(manifest.max_seq_length),
        k: Some(manifest.k),
        supervised: enc_config.training.losses.nce > 0.0,
        keeps_vectors: false,
    })
}

/// Copies the files of folder `from` into a new folder `to` (hard links for immutable
/// segment files), leaving out writer locks and temporary files.
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in
        std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))?
    {
        let entry = entry?;
        let name = entry.file_name();
        let n = name.to_string_lossy();
        if n == ksparse::io::lock::LOCK_FILE || n.starts_with(".tmp") {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if entry.file_type()?.is_dir() {
            copy_dir(&src, &dst)?;
        } else if n.starts_with("seg-") {
            if std::fs::hard_link(&src, &dst).is_err() {
                std::fs::copy(&src, &dst)?;
            }
        } else {
            std::fs::copy(&src, &dst).with_context(|| format!("cannot copy {}", src.display()))?;
            // Durable before the copy is reported done (segments, hard-linked, already are).
            std::fs::File::open(&dst)?.sync_all()?;
        }
    }
    ksparse::io::sync_dir(to)?;
    Ok(())
}
