//! ksparse's codes in other engines. A search folder's codes are plain sparse vectors,
//! and databases store and search sparse vectors exactly: [`export`] copies a folder's
//! documents (id, code, title, text) into a Milvus collection or a Postgres table with
//! pgvector, and the same [`Destination`] is a [`SparseEngine`], so
//! `pipeline::Searcher::search_through` searches it with the folder's model and encoder
//! — the query is embedded and encoded here, the sparse query answered there, and a
//! two-stage plan re-ranks the engine's candidates by their codes.
//!
//! An engine is named by a URL ([`connect`]):
//!
//! ```text
//! milvus://[USER:PASSWORD@]HOST:PORT/COLLECTION[?db=NAME]
//! postgres://USER[:PASSWORD]@HOST:PORT/DB?table=T[&search=exact|hnsw][&ef_search=N][&index=hnsw]
//! ```
//!
//! Each collection records which model and encoder its codes came from ([`Provenance`]:
//! Milvus keeps it as the collection's description, Postgres as the table's comment); an
//! export into, or a search through, a collection of another encoder is refused.

mod folder;
pub mod milvus;
pub mod postgres;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use ksparse::base::SparseCode;
use ksparse::encoder::scoring::SparseEngine;

pub use folder::FolderRows;

/// What ksparse records in an engine about the codes it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Format of this record.
    pub ksparse: u32,
    /// The model the documents were embedded with (as the search folder names it).
    pub model: String,
    /// Its fingerprint.
    pub model_sha256: String,
    /// The fingerprint of the encoder the codes were made with.
    pub encoder_sha256: String,
    /// Latents (the codes' width).
    pub hidden: usize,
    /// Active latents per document code.
    pub k: usize,
}

/// The [`Provenance`] format this release writes.
pub const PROVENANCE_FORMAT: u32 = 1;

impl Provenance {
    /// What a search folder's manifest says its codes were made with.
    pub fn of(manifest: &ksparse::pipeline::Manifest) -> Self {
        Self {
            ksparse: PROVENANCE_FORMAT,
            model: manifest.model.clone(),
            model_sha256: manifest.model_sha256.clone(),
            encoder_sha256: manifest.encoder_sha256.clone(),
            hidden: manifest.hidden,
            k: manifest.k,
        }
    }

    /// Parses a record read back from `engine`'s `place` (where the engine keeps it),
    /// refusing one that is not ksparse's.
    pub fn parse(text: &str, engine: &str, place: &str) -> Result<Self> {
        let p: Self = serde_json::from_str(text).map_err(|_| {
            anyhow::anyhow!("{engine} exists but was not written by `ksparse export` (no ksparse record in its {place}): choose another name")
        })?;
        if p.ksparse != PROVENANCE_FORMAT {
            bail!(
                "{engine}: written by a ksparse export of format {}; this release reads format {PROVENANCE_FORMAT}",
                p.ksparse
            );
        }
        Ok(p)
    }

    /// Refuses to add codes of `self` to an engine holding codes of `existing`.
    pub fn check_same_encoder(&self, existing: &Self, engine: &str) -> Result<()> {
        if existing.encoder_sha256 != self.encoder_sha256 || existing.hidden != self.hidden {
            bail!(
                "{engine} holds codes of encoder {} ({} latents), this folder's are of encoder {} ({} latents): their latent spaces differ; export into a new collection",
                existing.encoder_sha256,
                existing.hidden,
                self.encoder_sha256,
                self.hidden
            );
        }
        Ok(())
    }
}

/// One document as exported.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The document's external id (the engine's primary key).
    pub id: String,
    /// Its code.
    pub code: SparseCode,
    /// Its title.
    pub title: String,
    /// Its text.
    pub text: String,
    /// A digest of all of the above: a re-run skips rows whose digest is unchanged and
    /// replaces the others.
    pub digest: i64,
}

impl Row {
    /// The row of a document, with its digest.
    pub fn new(id: String, code: SparseCode, title: String, text: String) -> Self {
        let digest = folder::digest(&id, &code, &title, &text);
        Self {
            id,
            code,
            title,
            text,
            digest,
        }
    }
}

/// A database collection that ksparse exports codes to and searches through.
pub trait Destination: SparseEngine {
    /// Creates the collection (or table) for codes of `provenance`, or checks that the
    /// existing one holds codes of the same encoder.
    fn prepare(&self, provenance: &Provenance) -> Result<()>;
    /// The digests of those of `ids` that are present.
    fn present(&self, ids: &[&str]) -> Result<HashMap<String, i64>>;
    /// Adds `rows`, none of which is present.
    fn insert(&self, rows: &[Row]) -> Result<()>;
    /// Replaces the present rows with `rows`' ids by `rows`.
    fn replace(&self, rows: &[Row]) -> Result<()>;
    /// Makes every row written so far durable and searchable (and builds what the URL
    /// asked for, such as an approximate index).
    fn seal(&self) -> Result<()>;
    /// The longest title or text the engine keeps, in bytes (longer ones are cut at a
    /// character boundary); `None` when unlimited.
    fn longest_string(&self) -> Option<usize> {
        None
    }
}

/// Opens the engine collection named by `url` (see the crate's documentation). Nothing is
/// created until [`Destination::prepare`].
pub fn connect(url: &str) -> Result<Box<dyn Destination>> {
    match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("milvus") => Ok(Box::new(milvus::Milvus::connect(url)?)),
        Some("postgres" | "postgresql") => Ok(Box::new(postgres::Postgres::connect(url)?)),
        _ => bail!(
            "{url:?} names no engine: give milvus://HOST:PORT/COLLECTION or postgres://USER@HOST:PORT/DB?table=T"
        ),
    }
}

/// An export that ended with another number of documents in the engine than expected.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The engine holds fewer documents than were exported (some were not stored), or
    /// more while the export was to be the whole collection: documents deleted from the
    /// folder since an earlier export, or another folder's documents.
    #[error("{engine} holds {holds} documents after the export of {exported}: {}", if holds < exported { "some were not stored" } else { "it also holds documents this folder does not (deleted from the folder since an earlier export, or another folder's)" })]
    Count {
        /// The engine.
        engine: String,
        /// Documents it holds.
        holds: usize,
        /// Documents exported.
        exported: usize,
    },
}

/// Settings of [`export`].
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Rows per insert.
    pub batch: usize,
    /// The collection gathers several folders (the parts of a sharded build): at the end
    /// it must hold at least this folder's documents, not exactly them.
    pub partial: bool,
}

/// What [`export`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    /// The engine, as named in messages.
    pub engine: String,
    /// The folder's live documents.
    pub documents: usize,
    /// Rows added.
    pub inserted: usize,
    /// Rows replaced (present with another code, title or text).
    pub replaced: usize,
    /// Rows already present and unchanged (an interrupted export resumed, or a re-run).
    pub unchanged: usize,
    /// Rows the engine holds at the end.
    pub engine_count: usize,
    /// Texts cut to the engine's longest string (Milvus: 65,535 bytes).
    pub truncated: usize,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// Copies the live documents of search folder `folder` into `dest` ([`export_rows`]
/// over [`FolderRows`]): the index is mapped and `docs.jsonl` read line by line, so
/// memory holds a batch, not the corpus.
pub fn export(
    folder: &Path,
    dest: &dyn Destination,
    opts: &ExportOptions,
    progress: &dyn Fn(usize, usize),
) -> Result<Exported> {
    let mut rows = FolderRows::open(folder)?;
    let provenance = rows.provenance().clone();
    let total = rows.len();
    let batch = opts.batch.max(1);
    export_rows(
        &provenance,
        total,
        || rows.next_batch(batch),
        dest,
        opts,
        progress,
    )
}

/// Copies `total` rows of codes of `provenance`, given a batch at a time by `next_batch`
/// (`None` after the last), into `dest`: creates the collection (or checks it holds codes
/// of the same encoder), then per batch skips rows already present with the same digest,
/// inserts new ones and replaces changed ones, reporting `(done, total)` to `progress`;
/// finally seals the collection and checks its count.
pub fn export_rows(
    provenance: &Provenance,
    total: usize,
    mut next_batch: impl FnMut() -> Result<Option<Vec<Row>>>,
    dest: &dyn Destination,
    opts: &ExportOptions,
    progress: &dyn Fn(usize, usize),
) -> Result<Exported> {
    let started = std::time::Instant::now();
    dest.prepare(provenance)?;
    let (mut inserted, mut replaced, mut unchanged, mut truncated) = (0, 0, 0, 0);
    let mut done = 0;
    progress(0, total);
    while let Some(batch) = next_batch()? {
        let ids: Vec<&str> = batch.iter().map(|r| r.id.as_str()).collect();
        let present = dest.present(&ids)?;
        let n = ids.len();
        let (mut new, mut changed) = (Vec::new(), Vec::new());
        for row in batch {
            match present.get(&row.id) {
                Some(&d) if d == row.digest => unchanged += 1,
                Some(_) => changed.push(row),
                None => new.push(row),
            }
        }
        if let Some(max) = dest.longest_string() {
            truncated += new
                .iter()
                .chain(&changed)
                .filter(|r| r.title.len() > max || r.text.len() > max)
                .count();
        }
        if !new.is_empty() {
            dest.insert(&new)
                .with_context(|| format!("inserting {} rows into {}", new.len(), dest.name()))?;
        }
        if !changed.is_empty() {
            dest.replace(&changed)
                .with_context(|| format!("replacing {} rows of {}", changed.len(), dest.name()))?;
        }
        inserted += new.len();
        replaced += changed.len();
        done += n;
        progress(done, total);
        ksparse::io::fault::point("export:after-batch");
    }
    dest.seal()?;
    let engine_count = dest.count()?;
    if engine_count < total || (!opts.partial && engine_count != total) {
        return Err(ExportError::Count {
            engine: dest.name(),
            holds: engine_count,
            exported: total,
        }
        .into());
    }
    Ok(Exported {
        engine: dest.name(),
        documents: total,
        inserted,
        replaced,
        unchanged,
        engine_count,
        truncated,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The engine's name for messages: `url` without its password (in the user part or as a
/// `password=` parameter).
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let rest = match rest.rsplit_once('@') {
        Some((auth, host)) => {
            let user = auth.split(':').next().unwrap_or_default();
            format!("{user}@{host}")
        }
        None => rest.to_string(),
    };
    match query {
        Some(query) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| !p.starts_with("password="))
                .collect();
            format!("{scheme}://{rest}?{}", kept.join("&"))
        }
        None => format!("{scheme}://{rest}"),
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_hide_passwords_and_cuts_keep_characters_whole() {
        assert_eq!(
            redacted("postgres://me:secret@db:5432/x?table=t"),
            "postgres://me@db:5432/x?table=t"
        );
        assert_eq!(redacted("milvus://h:19530/c"), "milvus://h:19530/c");
        assert_eq!(redacted("milvus://u:p@ss@h:1/c"), "milvus://u@h:1/c");
        assert_eq!(
            redacted("postgres://u@h/db?password=x&table=t"),
            "postgres://u@h/db?table=t"
        );
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(cut("aé", 3), "aé");
        assert!(connect("http://x").is_err());
    }

    #[test]
    fn provenance_refuses_other_encoders_and_foreign_records() {
        let p = Provenance {
            ksparse: PROVENANCE_FORMAT,
            model: "m".into(),
            model_sha256: "a".into(),
            encoder_sha256: "b".into(),
            hidden: 64,
            k: 8,
        };
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(Provenance::parse(&text, "e", "description").unwrap(), p);
        assert!(Provenance::parse("some user's description", "e", "description").is_err());
        let other = Provenance {
            encoder_sha256: "c".into(),
            ..p.clone()
        };
        assert!(p.check_same_encoder(&p, "e").is_ok());
        let e = p.check_same_encoder(&other, "e").unwrap_err().to_string();
        assert!(e.contains("latent spaces differ"), "{e}");
    }
}
