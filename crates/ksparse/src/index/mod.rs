//! The on-disk inverted index of sparse codes.
//!
//! An index is a folder: `meta.json` (the commit point: format version, width, segment
//! files) and immutable segment files ([`segment`]), each holding block-compressed
//! posting lists ([`postings`]), a forward index of exact codes and the external id map.
//! A build writes the whole folder under a temporary name, fsyncs it and renames it into
//! place, so a reader sees either no index or a complete one. Later changes ([`writer`]:
//! add documents as a new segment, delete by id, merge) write new files first and commit
//! by atomically replacing `meta.json`; a crash at any point leaves the last commit.
//! One writer at a time: every change holds the index's writer lock (`writer.lock`).
//! `meta.json` carries a checksum, and its segment list and generation are checked on
//! open (names unique, no segment newer than the commit).
//!
//! Search ([`query`]) is exact over the stored (quantised) weights; an optional rescoring
//! pass recomputes the top R with the exact f32 codes of the forward index.

pub mod order;
pub mod postings;
pub mod query;
pub mod segment;
pub mod store;
pub mod writer;

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::base::Hit;
use crate::base::SparseCode;
use crate::embed::int8::Int8Vectors;
use crate::encoder::scoring::{EngineHit, Fetch, Forward, QueryPlan, SparseEngine};
use crate::io::{
    read_json_checked, write_atomic, write_dir_atomic, write_json_checked, FolderKind, IoError,
};
use segment::Segment;
use store::Store;

/// The commit version of an index whose segments have document stores ([`store`]):
/// releases from before stores read at most version 3 and so refuse such a commit,
/// rather than rewrite it without its stores (which would lose the records).
pub const STORE_VERSION: u32 = 4;

/// Name of the commit file inside an index folder.
pub const META_FILE: &str = "meta.json";

/// `meta.json`: what a reader needs to open the index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    /// Always "ksparse-index".
    pub format: String,
    /// Segment format version.
    pub version: u32,
    /// Latents (ids of codes are below this).
    pub hidden: usize,
    /// Segments, in document order.
    pub segments: Vec<SegmentEntry>,
    /// Incremented by every commit; new files are named after it.
    pub generation: u64,
}

/// One segment of a commit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SegmentEntry {
    /// File name inside the index folder.
    pub file: String,
    /// Deleted documents (tombstones): local row numbers, ascending.
    #[serde(default)]
    pub deleted: Vec<u32>,
    /// Whether the segment has a document store beside it ([`store`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub store: bool,
}

/// An open index: its segments, memory-mapped. Segments are shared (`Arc`) with the
/// index they were reopened from ([`Index::reopen`]), so reopening after a small change
/// maps and verifies only the new files.
pub struct Index {
    /// The commit that was opened.
    pub meta: Meta,
    segments: Vec<Arc<Segment>>,
    /// Per segment, its document store, if it has one.
    stores: Vec<Option<Arc<Store>>>,
    /// First global document number of each segment.
    bases: Vec<usize>,
    /// Per segment, whether each local row is deleted.
    deleted: Vec<Vec<bool>>,
}

/// Index folders, as [`write_dir_atomic`] knows them.
pub const FOLDER: FolderKind = FolderKind {
    name: "index",
    legacy: |dir| dir.join(META_FILE).is_file(),
};

/// Writes a new index folder at `dir` (which must not exist) for `codes` with external
/// `ids`, codes' latent ids below `hidden`. Validates everything first; on error nothing
/// is left behind.
pub fn build(dir: &Path, codes: &[SparseCode], ids: &[String], hidden: usize) -> Result<Meta> {
    if dir.exists() {
        bail!(
            "{} already exists: an index is built into a new folder",
            dir.display()
        );
    }
    segment::validate(codes, ids, hidden)?;
    let bytes = segment::encode(codes, ids, hidden);
    let meta = Meta {
        format: "ksparse-index".into(),
        version: segment::VERSION,
        hidden,
        segments: vec![SegmentEntry {
            file: segment_file(1),
            deleted: Vec::new(),
            store: false,
        }],
        generation: 1,
    };
    write_dir_atomic(dir, &FOLDER, |tmp| {
        write_atomic(&tmp.join(&meta.segments[0].file), |w| {
            Ok(w.write_all(&bytes)?)
        })?;
        write_meta(tmp, &meta)
    })?;
    Ok(meta)
}

/// The file name of the segment written by commit `generation`.
fn segment_file(generation: u64) -> String {
    format!("seg-{generation:06}.ksx")
}

/// The generation in a segment file name, if it is one ([`segment_file`]'s pattern).
fn segment_generation(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".ksx")?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Commits `meta`: `meta.json`, with its checksum, is replaced atomically (temp file,
/// fsync, rename).
fn write_meta(dir: &Path, meta: &Meta) -> Result<()> {
    if meta.segments.iter().any(|s| s.store) && meta.version < STORE_VERSION {
        let mut raised = meta.clone();
        raised.version = STORE_VERSION;
        return write_json_checked(&dir.join(META_FILE), &raised);
    }
    write_json_checked(&dir.join(META_FILE), meta)
}

/// Reads and checks the commit of the index folder `dir`: its checksum, format and
/// version, segment names (well-formed, unique, none newer than the commit's
/// generation) and tombstones (ascending, unique).
pub fn read_meta(dir: &Path) -> Result<Meta> {
    let path = dir.join(META_FILE);
    let meta: Meta = match read_json_checked(&path, "index commit") {
        Ok(m) => m,
        Err(IoError::Missing { .. }) => {
            bail!("{} is not a ksparse index (no {META_FILE})", dir.display())
        }
        Err(e) => return Err(e.into()),
    };
    // Each segment checks its own version on open; the commit's version is the one its
    // first segment was written in, or STORE_VERSION once a segment has a store.
    let readable = segment::OLDEST_READ..=STORE_VERSION;
    if meta.format != "ksparse-index" || !readable.contains(&meta.version) {
        bail!(
            "{}: format {:?} version {}; this build reads ksparse-index versions {} to {}",
            path.display(),
            meta.format,
            meta.version,
            segment::OLDEST_READ,
            STORE_VERSION
        );
    }
    if meta.hidden == 0 || meta.hidden > crate::base::MAX_HIDDEN {
        bail!(
            "{}: width {} is not between 1 and {}",
            path.display(),
            meta.hidden,
            crate::base::MAX_HIDDEN
        );
    }
    let mut seen = std::collections::HashSet::new();
    for entry in &meta.segments {
        let name = &entry.file;
        let generation = segment_generation(name)
            .with_context(|| format!("{}: bad segment name {name:?}", path.display()))?;
        if !seen.insert(name.as_str()) {
            bail!("{}: segment {name} is listed twice", path.display());
        }
        if generation > meta.generation {
            bail!(
                "{}: segment {name} is newer than the commit's generation {}",
                path.display(),
                meta.generation
            );
        }
        if !entry.deleted.windows(2).all(|w| w[0] < w[1]) {
            bail!(
                "{}: tombstones of {name} are not ascending and unique",
                path.display()
            );
        }
    }
    Ok(meta)
}

use std::io::Write as _;

impl Index {
    /// Opens the index folder `dir`, verifying the commit and every segment's checksums
    /// and structure. The open index keeps the commit it read (its segments stay mapped
    /// even when a later merge removes their files) until it is opened again.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_reusing(dir, None)
    }

    /// Opens the latest commit of `dir`, the folder this index was opened from, sharing
    /// the segments (and stores) it has in common with `self`: only new files are mapped
    /// and verified. Returns a copy of `self` when nothing was committed since.
    pub fn reopen(&self, dir: &Path) -> Result<Self> {
        Self::open_reusing(dir, Some(self))
    }

    fn open_reusing(dir: &Path, previous: Option<&Index>) -> Result<Self> {
        let mut meta = read_meta(dir)?;
        loop {
            match Self::open_commit(dir, meta.clone(), previous) {
                Ok(index) => return Ok(index),
                Err(e) => {
                    // A merge committed and removed this commit's segments between our
                    // read of meta.json and our opening of them: take the new commit.
                    let gone = meta.segments.iter().any(|s| {
                        !dir.join(&s.file).exists()
                            || (s.store && !dir.join(store::file_for(&s.file)).exists())
                    });
                    match read_meta(dir) {
                        Ok(newer) if gone && newer.generation > meta.generation => meta = newer,
                        _ => return Err(e),
                    }
                }
            }
        }
    }

    /// Opens the segments of the commit `meta`, taking those `previous` has open.
    fn open_commit(dir: &Path, meta: Meta, previous: Option<&Index>) -> Result<Self> {
        let meta_path = dir.join(META_FILE);
        let known = |name: &str| {
            let p = previous?;
            let s = p.meta.segments.iter().position(|e| e.file == name)?;
            Some((p.segments[s].clone(), p.stores[s].clone()))
        };
        let mut segments = Vec::new();
        let mut stores = Vec::new();
        let mut bases = Vec::new();
        let mut deleted = Vec::new();
        let mut base = 0;
        for entry in &meta.segments {
            let name = &entry.file;
            let (seg, store) = match known(name) {
                Some((seg, store)) if store.is_some() == entry.store => (seg, store),
                _ => {
                    let seg = Arc::new(Segment::open(&dir.join(name))?);
                    let store = if entry.store {
                        let path = dir.join(store::file_for(name));
                        Some(Arc::new(Store::open(&path, seg.docs)?))
                    } else {
                        None
                    };
                    (seg, store)
                }
            };
            let mut del = vec![false; seg.docs];
            for &d in &entry.deleted {
                *del.get_mut(d as usize).with_context(|| {
                    format!(
                        "{}: tombstone {d} outside segment {name}",
                        meta_path.display()
                    )
                })? = true;
            }
            deleted.push(del);
            if seg.hidden != meta.hidden {
                bail!(
                    "{}: width {} but the index is {} wide",
                    seg.path().display(),
                    seg.hidden,
                    meta.hidden
                );
            }
            bases.push(base);
            base += seg.docs;
            segments.push(seg);
            stores.push(store);
        }
        Ok(Self {
            meta,
            segments,
            stores,
            bases,
            deleted,
        })
    }

    /// Document slots in the index (live and deleted; global document numbers run
    /// below this).
    pub fn len(&self) -> usize {
        self.segments.iter().map(|s| s.docs).sum()
    }

    /// Live (not deleted) documents.
    pub fn live(&self) -> usize {
        self.deleted.iter().flatten().filter(|d| !**d).count()
    }

    /// Whether the index holds no documents.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Latents.
    pub fn hidden(&self) -> usize {
        self.meta.hidden
    }

    /// The external id of global document `doc`.
    pub fn id(&self, doc: u32) -> &str {
        let (s, local) = self.locate(doc);
        self.segments[s].id(local)
    }

    /// For each document number of the index, the row of its external id in `ids`: how a
    /// caller that built the index from rows maps hits back to them (segments store their
    /// documents in their own, clustered, order).
    pub fn rows_in(&self, ids: &[String]) -> Result<Vec<u32>> {
        let row_of: std::collections::HashMap<&str, u32> = ids
            .iter()
            .enumerate()
            .map(|(r, id)| (id.as_str(), r as u32))
            .collect();
        (0..self.len() as u32)
            .map(|d| {
                let id = self.id(d);
                row_of
                    .get(id)
                    .copied()
                    .with_context(|| format!("index document {id:?} is not in the id list"))
            })
            .collect()
    }

    /// Rewrites the document numbers of `hits` (from this index) into rows by `rows`, the
    /// table [`Index::rows_in`] returned.
    pub fn hits_to_rows(hits: &mut [Vec<Hit>], rows: &[u32]) {
        for h in hits.iter_mut().flatten() {
            h.doc = rows[h.doc as usize];
        }
    }

    /// (segment number, local row) of global document `doc`.
    pub fn locate(&self, doc: u32) -> (usize, usize) {
        let s = self.bases.partition_point(|&b| b <= doc as usize) - 1;
        (s, doc as usize - self.bases[s])
    }

    /// The segments, in document order, with their first global document number and
    /// their tombstones (true = deleted, per local row).
    pub fn segments(&self) -> impl Iterator<Item = (usize, &Segment, &[bool])> {
        self.bases
            .iter()
            .copied()
            .zip(&self.segments)
            .zip(&self.deleted)
            .map(|((b, s), d)| (b, s.as_ref(), d.as_slice()))
    }

    /// Each segment of the commit with its file name, first global document number,
    /// tombstones and document store: what a caller that keeps per-segment state (an id
    /// map, parsed records) needs to key it by file and reuse it across commits.
    pub fn segment_refs(&self) -> impl Iterator<Item = SegmentRef<'_>> {
        self.meta
            .segments
            .iter()
            .zip(self.segments())
            .zip(&self.stores)
            .map(|((entry, (base, segment, deleted)), store)| SegmentRef {
                file: &entry.file,
                base: base as u32,
                segment,
                deleted,
                store: store.as_deref(),
            })
    }

    /// The stored record of global document `doc` (empty when its segment has no store).
    pub fn stored(&self, doc: u32) -> &[u8] {
        let (s, local) = self.locate(doc);
        self.stores[s].as_ref().map_or(&[], |st| st.get(local))
    }

    /// Whether global document `doc` is deleted.
    pub fn is_deleted(&self, doc: u32) -> bool {
        let (s, local) = self.locate(doc);
        self.deleted[s][local]
    }

    /// The documents a search may return: the live ones for which `keep(doc)` holds
    /// (e.g. those a payload filter passes), as per-segment masks for
    /// [`Index::search_plan_excluding`].
    pub fn exclusion(&self, keep: impl Fn(u32) -> bool) -> Exclusion {
        Exclusion(
            self.segments()
                .map(|(base, _, deleted)| {
                    deleted
                        .iter()
                        .enumerate()
                        .map(|(i, &d)| d || !keep((base + i) as u32))
                        .collect()
                })
                .collect(),
        )
    }

    /// Checks a query's terms: latent ids below the width, finite weights.
    pub fn check_query(&self, query: &[(u32, f32)]) -> Result<()> {
        for &(j, w) in query {
            if j as usize >= self.hidden() {
                bail!(
                    "query latent {j} is not below the index width {}",
                    self.hidden()
                );
            }
            if !w.is_finite() {
                bail!("query weight {w} of latent {j} is not finite");
            }
        }
        Ok(())
    }

    /// The exact top `top` documents by Σ weight · stored value (quantised), ties by lower
    /// document number; with `rescore` = R > 0, the top max(R, top) are re-ranked by the
    /// exact f32 codes.
    pub fn search(&self, query: &[(u32, f32)], top: usize, rescore: usize) -> Result<Vec<Hit>> {
        self.search_excluding(query, top, rescore, None)
    }

    /// [`Index::search`] among the documents `excluded` leaves (every live one when
    /// `None`).
    pub fn search_excluding(
        &self,
        query: &[(u32, f32)],
        top: usize,
        rescore: usize,
        excluded: Option<&Exclusion>,
    ) -> Result<Vec<Hit>> {
        self.check_query(query)?;
        if let Some(e) = excluded {
            e.check(self)?;
        }
        let depth = if rescore > 0 { rescore.max(top) } else { top };
        let mut hits = query::search_excluding(self, query, depth, query::Strategy::Auto, excluded);
        if rescore > 0 {
            for h in &mut hits {
                h.score = self.exact_score(query, h.doc);
            }
            hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc)));
            hits.truncate(top);
        }
        Ok(hits)
    }

    /// The top `top` documents for a query plan ([`QueryPlan`]): the index's exact top
    /// [`QueryPlan::depth`] for its terms, finished by the plan (two-stage re-ranks them by
    /// their exact codes from the forward index, or by `vectors`: the documents' dense
    /// vectors in this index's document order).
    pub fn search_plan(
        &self,
        plan: &QueryPlan,
        top: usize,
        vectors: Option<&Int8Vectors>,
    ) -> Result<Vec<Hit>> {
        self.search_plan_excluding(plan, top, vectors, None)
    }

    /// [`Index::search_plan`] over the documents `excluded` leaves (none of it when
    /// `None`): still exact — the top `top` are the best among the documents that pass,
    /// and fewer only when fewer pass.
    pub fn search_plan_excluding(
        &self,
        plan: &QueryPlan,
        top: usize,
        vectors: Option<&Int8Vectors>,
        excluded: Option<&Exclusion>,
    ) -> Result<Vec<Hit>> {
        if let Some(v) = vectors {
            if v.len() != self.len() {
                bail!(
                    "{} dense vectors kept for an index of {} documents: they belong to another version of it",
                    v.len(),
                    self.len()
                );
            }
            if plan.reranks() && v.dim() != plan.dim() {
                bail!(
                    "the kept vectors have {} dimensions, the queries {}",
                    v.dim(),
                    plan.dim()
                );
            }
        }
        let candidates = self.search_excluding(&plan.terms, plan.depth(top), 0, excluded)?;
        Ok(plan.finish(
            candidates,
            top,
            &IndexDocs {
                index: self,
                vectors,
            },
        )?)
    }

    /// Document `doc`'s exact code (latent, value pairs, latents ascending) into `out`.
    pub fn code_into(&self, doc: u32, out: &mut Vec<(u32, f32)>) {
        let (s, local) = self.locate(doc);
        out.extend(self.segments[s].forward(local));
    }

    /// Document `doc`'s exact code.
    pub fn code(&self, doc: u32) -> SparseCode {
        let (s, local) = self.locate(doc);
        let (ids, values) = self.segments[s].forward(local).unzip();
        SparseCode { ids, values }
    }

    /// [`Index::search`] for many queries, spread over the thread pool; results in query
    /// order.
    pub fn search_batch(
        &self,
        queries: &[Vec<(u32, f32)>],
        top: usize,
        rescore: usize,
    ) -> Result<Vec<Vec<Hit>>> {
        use rayon::prelude::*;
        queries
            .par_iter()
            .map(|q| self.search(q, top, rescore))
            .collect()
    }

    /// Σ weight · value over the query terms with the exact f32 code of `doc`.
    pub fn exact_score(&self, query: &[(u32, f32)], doc: u32) -> f32 {
        let mut code = Vec::new();
        self.code_into(doc, &mut code);
        query
            .iter()
            .map(|&(j, w)| {
                code.binary_search_by_key(&j, |e| e.0)
                    .map_or(0.0, |p| w * code[p].1)
            })
            .sum()
    }

    /// Counts for `ksparse index stats`.
    pub fn stats(&self) -> Stats {
        let mut usage = vec![0usize; self.hidden()];
        let mut parts = [0usize; 7];
        for seg in &self.segments {
            for (j, u) in usage.iter_mut().enumerate() {
                *u += seg.term_len(j);
            }
            for (p, b) in parts.iter_mut().zip(seg.part_bytes()) {
                *p += b;
            }
        }
        let postings = usage.iter().sum();
        let stored: usize = self.stores.iter().flatten().map(|s| s.bytes()).sum();
        let file_bytes = self
            .segments
            .iter()
            .map(|s| std::fs::metadata(s.path()).map_or(0, |m| m.len() as usize))
            .sum::<usize>()
            + stored;
        Stats {
            docs: self.live(),
            deleted: self.len() - self.live(),
            hidden: self.hidden(),
            segments: self.segments.len(),
            postings,
            file_bytes,
            bytes: PartBytes {
                terms: parts[0],
                blocks: parts[1],
                postings: parts[2],
                forward: parts[3],
                ids: parts[4],
                block_max: parts[5],
                forward_quantised: parts[6],
                stored,
            },
            latent_usage: Histogram::of(&usage),
        }
    }
}

/// One segment of an open index, as [`Index::segment_refs`] lists them.
pub struct SegmentRef<'a> {
    /// Its file name in the index folder (unique within the folder's history).
    pub file: &'a str,
    /// Its first global document number.
    pub base: u32,
    /// The segment.
    pub segment: &'a Segment,
    /// Per local row, whether it is deleted.
    pub deleted: &'a [bool],
    /// Its document store, if it has one.
    pub store: Option<&'a Store>,
}

/// Documents a search may not return, per segment (true = excluded); always includes the
/// deleted ones. Made by [`Index::exclusion`] for that index.
#[derive(Debug)]
pub struct Exclusion(Vec<Vec<bool>>);

impl Exclusion {
    /// The mask of segment `s`.
    pub fn segment(&self, s: usize) -> &[bool] {
        &self.0[s]
    }

    fn check(&self, index: &Index) -> Result<()> {
        let fits = self.0.len() == index.segments.len()
            && self
                .0
                .iter()
                .zip(&index.segments)
                .all(|(m, s)| m.len() == s.docs);
        if !fits {
            bail!("the exclusion was made for another version of the index");
        }
        Ok(())
    }
}

/// An index's documents as a second stage reads them: codes from its forward index, and
/// dense vectors (in its document order) where kept.
pub struct IndexDocs<'a> {
    /// The index.
    pub index: &'a Index,
    /// Its documents' dense vectors, if kept.
    pub vectors: Option<&'a Int8Vectors>,
}

impl Forward for IndexDocs<'_> {
    fn code_into(&self, doc: u32, out: &mut Vec<(u32, f32)>) {
        self.index.code_into(doc, out)
    }

    fn dense_dot(&self, doc: u32, q: &[f32]) -> Option<f32> {
        self.vectors.map(|v| v.dot(doc as usize, q))
    }

    fn keeps_vectors(&self) -> bool {
        self.vectors.is_some()
    }
}

/// The index as one engine among others: its first stage is exact over the one-byte
/// quantised weights, so its scores and order can differ from an exact f32 engine's by the
/// quantisation (see [`Index::search`]). The encoder is recorded by the search folder, not
/// the index.
impl SparseEngine for Index {
    fn name(&self) -> String {
        "the on-disk index".to_string()
    }

    fn encoder_sha256(&self) -> Result<Option<String>> {
        Ok(None)
    }

    fn count(&self) -> Result<usize> {
        Ok(self.live())
    }

    fn top(&self, terms: &[(u32, f32)], depth: usize, fetch: Fetch) -> Result<Vec<EngineHit>> {
        Ok(self
            .search(terms, depth, 0)?
            .into_iter()
            .map(|h| EngineHit {
                id: self.id(h.doc).to_string(),
                score: h.score,
                code: fetch.codes.then(|| self.code(h.doc)),
                document: None,
            })
            .collect())
    }
}

/// Bytes per part of the index, summed over segments.
#[derive(Debug, Serialize)]
pub struct PartBytes {
    /// Term directory.
    pub terms: usize,
    /// Block directory (last doc, offset, length, bit width, max weight per block).
    pub blocks: usize,
    /// Compressed postings (doc deltas and quantised weights).
    pub postings: usize,
    /// Forward index (exact f32 codes, for rescoring).
    pub forward: usize,
    /// External id map.
    pub ids: usize,
    /// Per-block maxima of each latent (block-max search bounds).
    pub block_max: usize,
    /// Quantised weights of the forward index (block-max search scores).
    pub forward_quantised: usize,
    /// Document stores (records kept beside segments, e.g. a server's payloads).
    pub stored: usize,
}

/// `ksparse index stats` output.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// Live documents.
    pub docs: usize,
    /// Deleted documents still stored (until a merge).
    pub deleted: usize,
    /// Latents.
    pub hidden: usize,
    /// Segment files.
    pub segments: usize,
    /// Postings (non-zeros of all codes).
    pub postings: usize,
    /// Bytes of all segment files.
    pub file_bytes: usize,
    /// Bytes per part.
    pub bytes: PartBytes,
    /// How evenly the latents are used.
    pub latent_usage: Histogram,
}

/// Distribution of posting-list lengths over latents.
#[derive(Debug, Serialize)]
pub struct Histogram {
    /// Latents with no posting (dead).
    pub unused: usize,
    /// (upper bound of the length bucket, latents in it), buckets doubling in size.
    pub buckets: Vec<(usize, usize)>,
    /// Longest list.
    pub max: usize,
    /// Median list length.
    pub median: usize,
}

impl Histogram {
    fn of(lens: &[usize]) -> Self {
        let mut sorted = lens.to_vec();
        sorted.sort_unstable();
        let mut buckets: Vec<(usize, usize)> = Vec::new();
        for &l in sorted.iter().filter(|&&l| l > 0) {
            let upper = l.next_power_of_two();
            match buckets.last_mut() {
                Some((u, n)) if *u == upper => *n += 1,
                _ => buckets.push((upper, 1)),
            }
        }
        Self {
            unused: sorted.iter().filter(|&&l| l == 0).count(),
            buckets,
            max: sorted.last().copied().unwrap_or(0),
            median: sorted.get(sorted.len() / 2).copied().unwrap_or(0),
        }
    }
}

impl Stats {
    /// A human-readable summary.
    pub fn text(&self) -> String {
        let b = &self.bytes;
        let mut s = format!(
            "documents   {} ({} deleted)\nwidth       {}\nsegments    {}\npostings    {} ({:.1} per document)\nbytes       {} total: postings {}, block directory {}, terms {}, forward index {} (+ {} quantised), block maxima {}, ids {}\nlatents     {} unused, median list {}, longest {}\n",
            self.docs,
            self.deleted,
            self.hidden,
            self.segments,
            self.postings,
            self.postings as f64 / self.docs.max(1) as f64,
            self.file_bytes,
            b.postings,
            b.blocks,
            b.terms,
            b.forward,
            b.forward_quantised,
            b.block_max,
            b.ids,
            self.latent_usage.unused,
            self.latent_usage.median,
            self.latent_usage.max
        );
        s += "list length ≤  latents\n";
        for (upper, n) in &self.latent_usage.buckets {
            s += &format!("{upper:>13}  {n}\n");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::collections::{BTreeSet, HashMap};
    use std::path::PathBuf;

    /// Random codes with a skewed latent distribution (some latents much more common).
    fn random_codes(rng: &mut ChaCha8Rng, n: usize, hidden: usize, k: usize) -> Vec<SparseCode> {
        (0..n)
            .map(|_| {
                let mut ids: Vec<u32> = (0..rng.random_range(0..=k))
                    .map(|_| {
                        let r: f64 = rng.random();
                        ((r * r) * hidden as f64) as u32
                    })
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                let values = ids
                    .iter()
                    .map(|_| rng.random_range(0.001f32..3.0))
                    .collect();
                SparseCode { ids, values }
            })
            .collect()
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("doc-{i}")).collect()
    }

    #[test]
    fn search_equals_brute_force_on_random_data() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for case in 0..16 {
            let (n, hidden, k) =
                [(1, 4, 2), (300, 64, 8), (2000, 512, 32), (3000, 32, 4)][case % 4];
            let mut codes = random_codes(&mut rng, n, hidden, k);
            if case % 4 == 3 {
                // Two distinct values only: ties everywhere, inside and across blocks.
                for c in &mut codes {
                    for v in &mut c.values {
                        *v = if *v < 1.5 { 1.0 } else { 2.0 };
                    }
                }
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("idx");
            build(&path, &codes, &ids(n), hidden).unwrap();
            if case % 2 == 1 {
                // Tombstones: deleted documents are skipped by every path.
                let gone: Vec<String> = ids(n).into_iter().step_by(3).collect();
                writer::delete(&path, &gone).unwrap();
            }
            let index = Index::open(&path).unwrap();
            assert_eq!(index.len(), n);
            for _ in 0..20 {
                // Any number of terms, negative weights included.
                let terms = rng.random_range(0..=hidden.min(80));
                let query: Vec<(u32, f32)> = (0..terms)
                    .map(|_| {
                        (
                            rng.random_range(0..hidden as u32),
                            rng.random_range(-1.0f32..2.0),
                        )
                    })
                    .collect();
                let top = rng.random_range(1..=20);
                let want = query::search_brute_force(&index, &query, top);
                assert_eq!(index.search(&query, top, 0).unwrap(), want);
                // A filter (every fifth document passes, plus some by id) keeps every
                // path exact among the documents it leaves.
                let keep = |d: u32| d.is_multiple_of(5) || index.id(d).ends_with('7');
                let excluded = index.exclusion(keep);
                let want_kept =
                    query::search_brute_force_excluding(&index, &query, top, Some(&excluded));
                assert!(want_kept
                    .iter()
                    .all(|h| keep(h.doc) && !index.is_deleted(h.doc)));
                for strategy in [query::Strategy::TermAtATime, query::Strategy::BlockMax] {
                    let got = query::search(&index, &query, top, strategy);
                    assert_eq!(got, want, "case {case}, {strategy:?}, query {query:?}");
                    let got =
                        query::search_excluding(&index, &query, top, strategy, Some(&excluded));
                    assert_eq!(
                        got, want_kept,
                        "case {case}, {strategy:?}, filtered, query {query:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn rows_in_maps_document_numbers_back_to_input_rows() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let codes = random_codes(&mut rng, 500, 64, 8);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idx");
        build(&path, &codes, &ids(500), 64).unwrap();
        let index = Index::open(&path).unwrap();
        let rows = index.rows_in(&ids(500)).unwrap();
        assert_ne!(rows, (0..500).collect::<Vec<u32>>(), "stored clustered");
        for (d, &r) in rows.iter().enumerate() {
            assert_eq!(index.id(d as u32), ids(500)[r as usize]);
        }
        let err = index.rows_in(&ids(10)).unwrap_err().to_string();
        assert!(err.contains("is not in the id list"), "{err}");
    }

    #[test]
    fn rescoring_uses_exact_values_and_ids_round_trip() {
        let codes = vec![
            SparseCode {
                ids: vec![0],
                values: vec![1.0],
            },
            SparseCode {
                ids: vec![0],
                values: vec![1.001],
            },
            SparseCode {
                ids: vec![1],
                values: vec![2.55],
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idx");
        build(&path, &codes, &ids(3), 2).unwrap();
        let index = Index::open(&path).unwrap();
        // Scale 0.01: docs 0 and 1 store the same byte (100) and tie, the lower row
        // first; by exact values doc 1 wins.
        let quantised = index.search(&[(0, 1.0)], 2, 0).unwrap();
        assert_eq!(quantised[0].doc, 0);
        assert_eq!(quantised[0].score, quantised[1].score);
        let exact = index.search(&[(0, 1.0)], 1, 10).unwrap();
        assert_eq!((exact[0].doc, exact[0].score), (1, 1.001));
        assert_eq!(index.id(2), "doc-2");
        let stats = index.stats();
        assert_eq!(
            (stats.docs, stats.postings, stats.latent_usage.unused),
            (3, 3, 0)
        );
        assert!(index
            .search(&[(2, 1.0)], 1, 0)
            .unwrap_err()
            .to_string()
            .contains("width"));
    }

    /// A frozen index folder, `tests/fixtures/index-v{version}`: written once in segment
    /// format `version` with a commit as releases before checksums wrote it, and kept
    /// as it is, with the codes and ids it holds (`index-v{version}.kspc`, `.ids.txt`).
    pub(super) struct Fixture {
        pub(crate) dir: PathBuf,
        pub(crate) codes: Vec<SparseCode>,
        pub(crate) ids: Vec<String>,
        pub(crate) meta: Meta,
    }

    /// The fixture of segment format `version` (read only: copy it before changing it).
    pub(super) fn fixture(version: u32) -> Fixture {
        let root = ksparse_testkit::root().join("tests/fixtures");
        let codes_path = root.join(format!("index-v{version}.kspc"));
        let (codes, hidden) = crate::encoder::codes::read_codes(&codes_path).unwrap();
        let ids = crate::io::read_ids(&codes_path, codes.len()).unwrap();
        let dir = root.join(format!("index-v{version}"));
        let meta = read_meta(&dir).unwrap();
        assert_eq!(meta.hidden, hidden, "{}", dir.display());
        Fixture {
            dir,
            codes,
            ids,
            meta,
        }
    }

    /// The ids the fixture of `version` holds deleted (tombstones of its commit).
    fn fixture_tombstones(version: u32) -> BTreeSet<String> {
        match version {
            2 => BTreeSet::from(["doc-4".to_string()]),
            _ => BTreeSet::new(),
        }
    }

    /// Copies the files of the folder `from` into a new folder `to`.
    fn copy_files(from: &Path, to: &Path) {
        std::fs::create_dir(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }

    /// `code` as the (latent, value) pairs the forward index returns.
    pub(super) fn pairs(code: &SparseCode) -> Vec<(u32, f32)> {
        code.ids
            .iter()
            .copied()
            .zip(code.values.iter().copied())
            .collect()
    }

    /// Asserts that every document of `index` (deleted ones too) stores exactly the code
    /// `want` holds for its id, and that it holds every id of `want`.
    fn assert_codes(index: &Index, want: &HashMap<&str, &SparseCode>, what: &str) {
        let mut seen = BTreeSet::new();
        for (_, seg, _) in index.segments() {
            for i in 0..seg.docs {
                let id = seg.id(i);
                let code = want
                    .get(id)
                    .unwrap_or_else(|| panic!("{what}: unknown id {id:?}"));
                assert_eq!(
                    seg.forward(i).collect::<Vec<_>>(),
                    pairs(code),
                    "{what}: {id:?}"
                );
                assert!(seen.insert(id), "{what}: {id:?} stored twice");
            }
        }
        assert_eq!(seen.len(), want.len(), "{what}");
    }

    /// The ids of `index`'s deleted documents.
    fn deleted_ids(index: &Index) -> BTreeSet<String> {
        index
            .segments()
            .flat_map(|(_, seg, deleted)| {
                (0..seg.docs)
                    .filter(|&l| deleted[l])
                    .map(|l| seg.id(l).to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Random queries (negative weights too): every search path returns the brute-force
    /// reference's hits.
    fn assert_search_is_exact(index: &Index, rng: &mut ChaCha8Rng, what: &str) {
        let hidden = index.hidden();
        for _ in 0..40 {
            let terms = rng.random_range(1..=12);
            let query: Vec<(u32, f32)> = rand::seq::index::sample(rng, hidden, terms)
                .into_iter()
                .map(|j| (j as u32, rng.random_range(-1.0f32..2.0)))
                .collect();
            let top = rng.random_range(1..=20);
            let want = query::search_brute_force(index, &query, top);
            assert_eq!(want.len(), top.min(index.live()), "{what}");
            assert_eq!(
                index.search(&query, top, 0).unwrap(),
                want,
                "{what}: {query:?}"
            );
            for strategy in [query::Strategy::TermAtATime, query::Strategy::BlockMax] {
                let got = query::search(index, &query, top, strategy);
                assert_eq!(got, want, "{what}, {strategy:?}: {query:?}");
            }
        }
    }

    #[test]
    fn frozen_indexes_of_every_readable_version_hold_their_codes_and_search_exactly() {
        for version in segment::OLDEST_READ..=segment::VERSION {
            let f = fixture(version);
            let what = format!("index-v{version}");
            // The commit as releases before checksums wrote it: the bare content.
            let text = std::fs::read_to_string(f.dir.join(META_FILE)).unwrap();
            let bare: Meta = serde_json::from_str(&text).unwrap();
            assert_eq!(bare, f.meta, "{what}");
            assert_eq!((f.meta.version, f.meta.hidden), (version, 64), "{what}");
            let index = Index::open(&f.dir).unwrap();
            let tombstones = fixture_tombstones(version);
            assert_eq!(deleted_ids(&index), tombstones, "{what}");
            assert_eq!(
                (index.len(), index.live()),
                (f.codes.len(), f.codes.len() - tombstones.len()),
                "{what}"
            );
            let want: HashMap<&str, &SparseCode> =
                f.ids.iter().map(String::as_str).zip(&f.codes).collect();
            assert_codes(&index, &want, &what);

            // Stats count what the codes hold.
            let stats = index.stats();
            let mut lens = vec![0usize; 64];
            for c in &f.codes {
                for &j in &c.ids {
                    lens[j as usize] += 1;
                }
            }
            let nnz: usize = lens.iter().sum();
            let files: usize = f
                .meta
                .segments
                .iter()
                .map(|s| std::fs::metadata(f.dir.join(&s.file)).unwrap().len() as usize)
                .sum();
            let segments = f.meta.segments.len();
            let id_text: usize = f.ids.iter().map(String::len).sum();
            let latent_bytes = if version == 1 { 4 } else { 2 };
            let (block_max, forward_q) = if version >= 3 {
                (64 * f.codes.len().div_ceil(segment::DOC_BLOCK), nnz)
            } else {
                (0, 0)
            };
            let mut sorted = lens.clone();
            sorted.sort_unstable();
            assert_eq!(
                (stats.docs, stats.deleted, stats.segments, stats.postings),
                (index.live(), tombstones.len(), segments, nnz),
                "{what}"
            );
            assert_eq!(stats.file_bytes, files, "{what}");
            let b = &stats.bytes;
            assert_eq!(
                (b.terms, b.forward, b.ids, b.block_max, b.forward_quantised),
                (
                    segments * 65 * 4,
                    (f.codes.len() + segments) * 8 + nnz * (latent_bytes + 4),
                    (f.codes.len() + segments) * 8 + id_text,
                    block_max,
                    forward_q
                ),
                "{what}"
            );
            let usage = &stats.latent_usage;
            assert_eq!(
                (usage.unused, usage.max, usage.median),
                (
                    lens.iter().filter(|&&l| l == 0).count(),
                    sorted[63],
                    sorted[32]
                ),
                "{what}"
            );
            assert_eq!(
                lens[0],
                f.codes.len() - 1,
                "{what}: latent 0 in all codes but one"
            );

            let mut rng = ChaCha8Rng::seed_from_u64(version as u64);
            assert_search_is_exact(&index, &mut rng, &what);
            // Rescoring every document gives the exact f32 ranking of the fixture's codes.
            // Latent 0 with a positive weight gives every non-empty code a positive score,
            // so the ranking has no ties.
            for _ in 0..20 {
                let mut query = vec![(0u32, rng.random_range(0.1f32..2.0))];
                let others = rng.random_range(0..8);
                for j in rand::seq::index::sample(&mut rng, 63, others) {
                    query.push((j as u32 + 1, rng.random_range(0.1f32..2.0)));
                }
                let mut exact: Vec<(String, f32)> = f
                    .ids
                    .iter()
                    .zip(&f.codes)
                    .filter(|(id, _)| !tombstones.contains(*id))
                    .map(|(id, c)| {
                        let score: f32 = query
                            .iter()
                            .map(|&(j, w)| c.ids.binary_search(&j).map_or(0.0, |p| w * c.values[p]))
                            .sum();
                        (id.clone(), score)
                    })
                    .collect();
                exact.sort_by(|a, b| b.1.total_cmp(&a.1));
                let top = index.live() - 1;
                exact.truncate(top);
                let got: Vec<(String, f32)> = index
                    .search(&query, top, index.len())
                    .unwrap()
                    .iter()
                    .map(|h| (index.id(h.doc).to_string(), h.score))
                    .collect();
                assert_eq!(got, exact, "{what}: {query:?}");
            }
        }
    }

    #[test]
    fn old_indexes_take_new_segments_deletions_and_merges() {
        for version in segment::OLDEST_READ..segment::VERSION {
            let f = fixture(version);
            let what = format!("index-v{version}");
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("idx");
            copy_files(&f.dir, &path);
            let mut rng = ChaCha8Rng::seed_from_u64(50 + version as u64);
            let new_codes = random_codes(&mut rng, 10, 64, 6);
            let new_ids: Vec<String> = (0..10).map(|i| format!("new-{i}")).collect();
            let meta = writer::add(&path, &new_codes, &new_ids, 64).unwrap();
            // The commit keeps the version of its first segment.
            assert_eq!(meta.version, version, "{what}");
            assert_eq!(meta.generation, f.meta.generation + 1, "{what}");
            let index = Index::open(&path).unwrap();
            // The old segments read as before; the new one is in the current format.
            let block_max: Vec<bool> = index
                .segments()
                .map(|(_, seg, _)| seg.blocks_view().is_some())
                .collect();
            let mut want_kinds = vec![false; f.meta.segments.len()];
            want_kinds.push(true);
            assert_eq!(block_max, want_kinds, "{what}");
            let tombstones = fixture_tombstones(version);
            let live = f.codes.len() - tombstones.len();
            assert_eq!(index.live(), live + 10, "{what}");
            let mut want: HashMap<&str, &SparseCode> =
                f.ids.iter().map(String::as_str).zip(&f.codes).collect();
            want.extend(new_ids.iter().map(String::as_str).zip(&new_codes));
            assert_codes(&index, &want, &what);
            assert_search_is_exact(&index, &mut rng, &what);
            drop(index);

            // Delete an old and a new document, then merge everything into one segment
            // of the current format that holds exactly the live codes.
            let gone = ["doc-0".to_string(), "new-3".to_string()];
            assert_eq!(writer::delete(&path, &gone).unwrap(), 2, "{what}");
            let merged = writer::merge(&path).unwrap();
            assert_eq!(merged.segments.len(), 1, "{what}");
            let index = Index::open(&path).unwrap();
            assert_eq!((index.len(), index.live()), (live + 8, live + 8), "{what}");
            for id in tombstones.iter().chain(&gone) {
                want.remove(id.as_str());
            }
            assert_codes(&index, &want, &what);
            let (_, seg, _) = index.segments().next().unwrap();
            assert!(
                seg.blocks_view().is_some(),
                "{what}: merged in the current format"
            );
            assert_search_is_exact(&index, &mut rng, &what);
        }
    }

    #[test]
    fn bad_codes_are_rejected_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idx");
        let code = |ids: Vec<u32>, values: Vec<f32>| SparseCode { ids, values };
        let cases: Vec<(Vec<SparseCode>, Vec<String>, &str)> = vec![
            (
                vec![code(vec![9], vec![1.0])],
                ids(1),
                "not below the width",
            ),
            (
                vec![code(vec![1], vec![f32::NAN])],
                ids(1),
                "finite positive",
            ),
            (vec![code(vec![1], vec![-0.5])], ids(1), "finite positive"),
            (vec![code(vec![2, 1], vec![1.0, 1.0])], ids(1), "ascending"),
            (
                vec![code(vec![1], vec![1.0]), code(vec![1], vec![1.0])],
                vec!["a".into(), "a".into()],
                "appears twice",
            ),
        ];
        for (codes, ids, want) in cases {
            let err = build(&path, &codes, &ids, 4).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
            assert!(!path.exists());
        }
    }

    #[test]
    fn damaged_or_inconsistent_commits_are_refused() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idx");
        build(&path, &random_codes(&mut rng, 50, 64, 6), &ids(50), 64).unwrap();
        let more: Vec<String> = (50..60).map(|i| format!("doc-{i}")).collect();
        writer::add(&path, &random_codes(&mut rng, 10, 64, 6), &more, 64).unwrap();
        let good = read_meta(&path).unwrap();
        let open_err = || format!("{:#}", Index::open(&path).err().expect("refused"));
        // Edited by hand: the checksum no longer matches.
        let text = std::fs::read_to_string(path.join(META_FILE)).unwrap();
        std::fs::write(
            path.join(META_FILE),
            text.replace("\"generation\": 2", "\"generation\": 1"),
        )
        .unwrap();
        assert!(open_err().contains("checksum mismatch"), "{}", open_err());
        // Consistent checksums but impossible contents.
        let mut twice = good.clone();
        twice.segments.push(twice.segments[0].clone());
        write_meta(&path, &twice).unwrap();
        assert!(open_err().contains("listed twice"), "{}", open_err());
        let mut lowered = good.clone();
        lowered.generation = 1;
        write_meta(&path, &lowered).unwrap();
        assert!(
            open_err().contains("newer than the commit"),
            "{}",
            open_err()
        );
        // …so a writer cannot be led to overwrite a live segment.
        let err = writer::add(&path, &random_codes(&mut rng, 1, 64, 6), &["x".into()], 64)
            .unwrap_err()
            .to_string();
        assert!(err.contains("newer than the commit"), "{err}");
        let mut unsorted = good.clone();
        unsorted.segments[0].deleted = vec![3, 1];
        write_meta(&path, &unsorted).unwrap();
        assert!(open_err().contains("ascending"), "{}", open_err());
        // Not UTF-8, not a file: told apart from a missing commit.
        std::fs::write(path.join(META_FILE), b"{\"format\": \"\xff\"}").unwrap();
        assert!(open_err().contains("not UTF-8"), "{}", open_err());
        std::fs::remove_file(path.join(META_FILE)).unwrap();
        assert!(open_err().contains("not a ksparse index"), "{}", open_err());
        std::fs::create_dir(path.join(META_FILE)).unwrap();
        assert!(open_err().contains("cannot read"), "{}", open_err());
        std::fs::remove_dir(path.join(META_FILE)).unwrap();
        write_meta(&path, &good).unwrap();
        assert_eq!(Index::open(&path).unwrap().len(), 60);
    }

    #[test]
    fn corrupted_or_truncated_segments_are_refused() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let codes = random_codes(&mut rng, 500, 128, 16);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idx");
        build(&path, &codes, &ids(500), 128).unwrap();
        let seg = path.join(segment_file(1));
        let good = std::fs::read(&seg).unwrap();
        // Flip one bit at many positions, and truncate at many lengths: never a panic,
        // always an error naming the file.
        for step in 0..200 {
            let mut bad = good.clone();
            if step % 2 == 0 {
                let at = rng.random_range(0..bad.len());
                bad[at] ^= 1 << rng.random_range(0..8);
            } else {
                bad.truncate(rng.random_range(0..bad.len()));
            }
            std::fs::write(&seg, &bad).unwrap();
            match Index::open(&path).map(|i| i.len()) {
                Err(e) => assert!(format!("{e:#}").contains("seg-000001.ksx"), "{e:#}"),
                // A flip in alignment padding changes nothing that is read.
                Ok(len) => assert_eq!(len, 500),
            }
        }
        std::fs::write(&seg, &good).unwrap();
        assert_eq!(Index::open(&path).unwrap().len(), 500);
        std::fs::write(path.join(META_FILE), "{").unwrap();
        let err = Index::open(&path)
            .err()
            .expect("a broken commit file is refused");
        assert!(err.to_string().contains("meta.json"));
    }

    #[test]
    fn two_stage_equals_brute_force() {
        use crate::encoder::scoring::ScoringMode;
        use crate::encoder::SparseEncoder;
        let (d, hidden, k, n) = (16, 96, 6, 1500);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut gauss =
            |len: usize| -> Vec<f32> { (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
        let enc = SparseEncoder {
            dim: d,
            hidden,
            w_enc: gauss(hidden * d),
            b_enc: gauss(hidden).iter().map(|b| b * 0.1).collect(),
            w_dec: gauss(hidden * d),
            b_pre: vec![0.0; d],
        };
        let x = gauss(n * d);
        let codes = enc.encode(&x, n, k);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idx");
        // Two segments and tombstones: rows cross segment boundaries.
        build(&path, &codes[..900], &ids(n)[..900], hidden).unwrap();
        writer::add(&path, &codes[900..], &ids(n)[900..], hidden).unwrap();
        let gone: Vec<String> = ids(n).into_iter().step_by(7).collect();
        writer::delete(&path, &gone).unwrap();
        let idx = Index::open(&path).unwrap();
        let rows = idx.rows_in(&ids(n)).unwrap();
        let by_row = Int8Vectors::quantize(&x, d).unwrap();
        let vectors = by_row.reorder(&rows);
        let code_of = |doc: u32| &codes[rows[doc as usize] as usize];
        for case in 0..24 {
            let q = gauss(d);
            let candidates = [1, 10, 50, n][case % 4];
            let plan = enc.plan(&q, k, ScoringMode::TwoStage(candidates));
            assert!(plan.reranks());
            let found = idx.search_plan(&plan, 10, None).unwrap();
            // Brute force: every document's symmetric score, the top R, each scored by the
            // full u = W_decᵀ q over its exact code, sorted.
            let u = enc.latent_weights(&q);
            // The re-ranked set is the top max(R, 10): a search never answers with fewer
            // hits than asked for.
            let depth = candidates.max(10);
            let mut want: Vec<Hit> = query::search_brute_force(&idx, &plan.terms, depth)
                .into_iter()
                .map(|h| {
                    let c = code_of(h.doc);
                    let score = c
                        .ids
                        .iter()
                        .zip(&c.values)
                        .map(|(&j, &z)| u[j as usize] * z)
                        .sum();
                    Hit { doc: h.doc, score }
                })
                .collect();
            want.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc)));
            want.truncate(10);
            assert_eq!(found.len(), want.len().min(10), "case {case}");
            for (f, w) in found.iter().zip(&want) {
                assert_eq!(f.doc, w.doc, "case {case}: {found:?} vs {want:?}");
                assert!((f.score - w.score).abs() <= 1e-4 * w.score.abs().max(1.0));
            }
            // Re-ranked by the kept int8 vectors instead: the same candidates, each scored
            // by its own vector's dot product with q.
            let plan = enc.plan(&q, k, ScoringMode::TwoStageDense(candidates));
            let found = idx.search_plan(&plan, 10, Some(&vectors)).unwrap();
            let mut want: Vec<Hit> = query::search_brute_force(&idx, &plan.terms, depth)
                .into_iter()
                .map(|h| Hit {
                    doc: h.doc,
                    score: by_row.dot(rows[h.doc as usize] as usize, &q),
                })
                .collect();
            want.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc)));
            want.truncate(10);
            assert_eq!(found, want, "case {case}");
            let e = idx.search_plan(&plan, 10, None).unwrap_err().to_string();
            assert!(e.contains("dense vectors"), "{e}");
        }
        let other = Int8Vectors::quantize(&x[..10 * d], d).unwrap();
        let plan = enc.plan(&x[..d], k, ScoringMode::TwoStageDense(5));
        let e = idx
            .search_plan(&plan, 10, Some(&other))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("10 dense vectors kept for an index of 1500"),
            "{e}"
        );
    }
}
