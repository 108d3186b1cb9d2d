//! [`Searcher`]: query text → ranked documents over a search folder.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::build::{encoder_fingerprint, model_fingerprint, DOCS_FILE, FORMAT, VECTORS_FILE};
use super::{Manifest, ModelError, MANIFEST_FILE};
use crate::embed::int8::Int8Vectors;
use crate::embed::Embedder;
use crate::encoder::check_k;
use crate::encoder::scoring::{ScoringMode, SparseEngine, DEFAULT_CANDIDATES};
use crate::encoder::SparseEncoder;
use crate::index::Index;
use crate::io::{read_json_checked, IoError};
use crate::search::sparse::ExactEngine;

/// One search result.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    /// The document's external id.
    pub id: String,
    /// Its score under the scoring mode.
    pub score: f32,
    /// Its title (empty for plain-text corpora).
    pub title: String,
    /// The start of its text.
    pub snippet: String,
}

/// Characters of text shown per hit.
const SNIPPET_CHARS: usize = 200;

/// Query text → ranked documents over a search folder written by [`build`](super::build()).
pub struct Searcher {
    /// The folder's manifest.
    pub manifest: Manifest,
    embedder: Embedder,
    encoder: SparseEncoder,
    index: Index,
    /// The documents' dense vectors in the index's order, when the build kept them.
    vectors: Option<Int8Vectors>,
    /// Whether the encoder learnt judged (query, document) pairs with InfoNCE.
    supervised: bool,
    /// Title and text per document id.
    docs: HashMap<String, (String, String)>,
}

impl Searcher {
    /// Opens `dir`, loading its model (or `model`, which must be the same model) and
    /// verifying that model and encoder are the ones the documents were encoded with.
    pub fn open(dir: &Path, model: Option<&str>) -> Result<Self> {
        let manifest = read_manifest(dir)?;
        let spec = model.unwrap_or(&manifest.model);
        let mut embedder = Embedder::load(spec).map_err(|e| ModelError::Unavailable {
            model: spec.to_string(),
            folder: dir.to_path_buf(),
            source: e.into(),
        })?;
        let found = model_fingerprint(&embedder.model_dir().path)?;
        if found != manifest.model_sha256 {
            return Err(ModelError::Different {
                folder: dir.to_path_buf(),
                built: manifest.model,
                built_sha256: manifest.model_sha256,
                given: embedder.model_dir().path.clone(),
                found_sha256: found,
            }
            .into());
        }
        embedder.set_max_seq_length(manifest.max_seq_length)?;
        let enc_dir = dir.join("encoder");
        if encoder_fingerprint(&enc_dir)? != manifest.encoder_sha256 {
            bail!(
                "{}: the encoder's files changed after the build (checksum mismatch); rebuild the folder",
                enc_dir.display()
            );
        }
        let (encoder, encoder_config) = SparseEncoder::load(&enc_dir)?;
        let index = Index::open(&dir.join("index"))?;
        check_parts(dir, &manifest, &encoder, &index, embedder.dim())?;
        let vectors = match &manifest.vectors_sha256 {
            Some(want) => {
                let path = dir.join(VECTORS_FILE);
                // Read once: checksummed, then parsed.
                let bytes =
                    std::fs::read(&path).map_err(|e| IoError::at(&path, "cannot read", e))?;
                if format!("{:x}", Sha256::digest(&bytes)) != *want {
                    bail!(
                        "{}: SHA-256 does not match the manifest's: the file was damaged or replaced; rebuild the folder",
                        path.display()
                    );
                }
                let vectors = Int8Vectors::from_bytes(&bytes, &path)?;
                if manifest.vectors_generation != Some(index.meta.generation)
                    || vectors.len() != index.len()
                    || vectors.dim() != manifest.dim
                {
                    bail!(
                        "{}: {} vectors of {} dimensions kept for index commit {:?}, but the index holds {} documents at commit {} of {}-d vectors: the index changed after the build; rebuild the folder",
                        path.display(),
                        vectors.len(),
                        vectors.dim(),
                        manifest.vectors_generation,
                        index.len(),
                        index.meta.generation,
                        manifest.dim
                    );
                }
                Some(vectors)
            }
            None => None,
        };
        let docs_path = dir.join(DOCS_FILE);
        let bytes =
            std::fs::read(&docs_path).map_err(|e| IoError::at(&docs_path, "cannot read", e))?;
        let sha = format!("{:x}", Sha256::digest(&bytes));
        if manifest
            .docs_sha256
            .as_ref()
            .is_some_and(|want| *want != sha)
        {
            bail!(
                "{}: SHA-256 {sha} does not match the manifest's: the file was damaged or edited; rebuild the folder",
                docs_path.display()
            );
        }
        let docs = parse_docs(&bytes, &docs_path)?;
        Ok(Self {
            manifest,
            embedder,
            encoder,
            index,
            vectors,
            supervised: encoder_config.training.losses.nce > 0.0,
            docs,
        })
    }

    /// The best scoring mode for this folder: two-stage re-ranking by the kept dense
    /// vectors where the build kept them, by the reconstruction score otherwise (R =
    /// [`DEFAULT_CANDIDATES`], chosen on SciFact's training queries) — except for an
    /// encoder trained on judged pairs (InfoNCE), whose own sparse scores beat both
    /// re-rankings (SciFact test, k = 32: symmetric 0.762, two-stage 0.615, two-stage-dense
    /// 0.656): symmetric.
    pub fn default_mode(&self) -> ScoringMode {
        if self.supervised {
            ScoringMode::Symmetric(None)
        } else if self.vectors.is_some() {
            ScoringMode::TwoStageDense(DEFAULT_CANDIDATES)
        } else {
            ScoringMode::TwoStage(DEFAULT_CANDIDATES)
        }
    }

    /// [`Searcher::default_mode`] for a search on `engine` (`None`: the folder's own
    /// index). Engines hold codes but not the dense vectors, so through one two-stage
    /// re-ranks by the reconstruction score instead.
    pub fn default_mode_on(&self, engine: Option<&dyn SparseEngine>) -> ScoringMode {
        match (engine, self.default_mode()) {
            (Some(_), ScoringMode::TwoStageDense(r)) => ScoringMode::TwoStage(r),
            (_, mode) => mode,
        }
    }

    /// [`Searcher::search`] on the folder's own index when `engine` is `None`, else
    /// [`Searcher::search_through`] `engine`, which scores by the exact codes already
    /// (so `rescore` must be 0).
    pub fn search_on(
        &self,
        engine: Option<&dyn SparseEngine>,
        queries: &[String],
        top: usize,
        mode: ScoringMode,
        rescore: usize,
    ) -> Result<Vec<Vec<Found>>> {
        match engine {
            None => self.search(queries, top, mode, rescore),
            Some(engine) if rescore > 0 => bail!(
                "re-scoring by the exact codes applies to the on-disk index's one-byte weights; {} scores by the exact codes already",
                engine.name()
            ),
            Some(engine) => self.search_through(engine, queries, top, mode),
        }
    }

    /// The `top` best documents for each query text under `mode`; with `rescore` = R > 0
    /// the top R are re-ranked by the exact f32 codes (single-stage modes only: two-stage
    /// already re-ranks by the exact codes).
    pub fn search(
        &self,
        queries: &[String],
        top: usize,
        mode: ScoringMode,
        rescore: usize,
    ) -> Result<Vec<Vec<Found>>> {
        if rescore > 0 && mode.candidates().is_some() {
            bail!("re-scoring by the exact codes applies to single-stage modes; {mode} re-ranks its candidates itself: give a single-stage mode (symmetric, symmetric:M, reconstruction, projected:M) to re-score");
        }
        let vectors = self.embed_queries(queries)?;
        let hits = vectors
            .par_iter()
            .map(|q| {
                let plan = self.encoder.plan(q, self.manifest.k, mode);
                if plan.reranks() {
                    self.index.search_plan(&plan, top, self.vectors.as_ref())
                } else {
                    self.index.search(&plan.terms, top, rescore)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(hits
            .into_iter()
            .map(|hits| {
                hits.into_iter()
                    .map(|h| self.found(self.index.id(h.doc).to_string(), h.score, None))
                    .collect()
            })
            .collect())
    }

    /// [`Searcher::search`] through another engine holding this folder's codes (a
    /// database the folder was exported to, or [`Searcher::exact_engine`]): queries are
    /// embedded and planned here, the sparse query is answered by `engine`, and a
    /// two-stage plan re-ranks the engine's candidates by their codes. `two-stage-dense`
    /// needs the kept vectors, which engines do not hold. An engine whose codes were made
    /// by another encoder is refused ([`EngineError`]).
    pub fn search_through(
        &self,
        engine: &dyn SparseEngine,
        queries: &[String],
        top: usize,
        mode: ScoringMode,
    ) -> Result<Vec<Vec<Found>>> {
        self.check_engine(engine)?;
        let vectors = self.embed_queries(queries)?;
        vectors
            .par_iter()
            .map(|q| {
                let plan = self.encoder.plan(q, self.manifest.k, mode);
                Ok(plan
                    .run(engine, top, true)?
                    .into_iter()
                    .map(|h| self.found(h.id, h.score, h.document))
                    .collect())
            })
            .collect()
    }

    /// Refuses an engine whose codes were made by another encoder than this folder's
    /// (its documents would sit in another latent space than the queries).
    fn check_engine(&self, engine: &dyn SparseEngine) -> Result<()> {
        match engine.encoder_sha256()? {
            Some(sha) if sha != self.manifest.encoder_sha256 => Err(EngineError::OtherEncoder {
                engine: engine.name(),
                engine_sha256: sha,
                folder_sha256: self.manifest.encoder_sha256.clone(),
            }
            .into()),
            _ => Ok(()),
        }
    }

    /// The folder's codes (live documents, exact f32 from the forward index) in memory as
    /// an engine: the exact reference for the index and for databases.
    pub fn exact_engine(&self) -> ExactEngine {
        let (mut codes, mut ids) = (Vec::new(), Vec::new());
        for doc in 0..self.index.len() as u32 {
            if !self.index.is_deleted(doc) {
                codes.push(self.index.code(doc));
                ids.push(self.index.id(doc).to_string());
            }
        }
        ExactEngine::new(codes, ids, self.index.hidden())
    }

    /// The dense vectors of `queries`, one row each.
    pub fn embed_queries(&self, queries: &[String]) -> Result<Vec<Vec<f32>>> {
        let vectors = self.embedder.embed(queries, 16, |_| {})?;
        Ok(vectors.rows().into_iter().map(|q| q.to_vec()).collect())
    }

    /// A hit as shown: title and snippet from `document` where the engine kept it, from
    /// the folder's `docs.jsonl` otherwise.
    fn found(&self, id: String, score: f32, document: Option<(String, String)>) -> Found {
        let (title, text) = document
            .or_else(|| self.docs.get(&id).cloned())
            .unwrap_or_default();
        Found {
            snippet: snippet(&text),
            id,
            score,
            title,
        }
    }
}

/// An engine that does not hold this folder's codes.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine's codes were made by another encoder.
    #[error("{engine} holds codes of encoder {engine_sha256}, but this folder's encoder is {folder_sha256}: its documents are in another latent space than these queries")]
    OtherEncoder {
        /// The engine.
        engine: String,
        /// The encoder it records.
        engine_sha256: String,
        /// The folder's.
        folder_sha256: String,
    },
}

/// The manifest of search folder `dir`, checked (checksum, format).
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let manifest: Manifest = match read_json_checked(&path, "search folder manifest") {
        Ok(m) => m,
        Err(IoError::Missing { .. }) => bail!(
            "{} is not a ksparse search folder (no {MANIFEST_FILE})",
            dir.display()
        ),
        Err(e) => return Err(e.into()),
    };
    if manifest.format != FORMAT {
        bail!(
            "{}: manifest format {}; this build reads format {FORMAT}",
            path.display(),
            manifest.format
        );
    }
    Ok(manifest)
}

/// Title and text by document id, from the bytes of a search folder's `docs.jsonl`
/// (read from `path`, named in errors).
pub fn parse_docs(bytes: &[u8], path: &Path) -> Result<HashMap<String, (String, String)>> {
    let mut docs = HashMap::new();
    for (i, line) in bytes.lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: not UTF-8", path.display(), i + 1))?;
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: invalid JSON", path.display(), i + 1))?;
        let field = |f: &str| v[f].as_str().unwrap_or_default().to_string();
        docs.insert(field("_id"), (field("title"), field("text")));
    }
    Ok(docs)
}

/// Cross-checks the parts of the search folder `dir`: the widths of manifest, encoder and
/// index agree, the code length fits the width, and the encoder takes the model's vectors.
fn check_parts(
    dir: &Path,
    manifest: &Manifest,
    encoder: &SparseEncoder,
    index: &Index,
    model_dim: usize,
) -> Result<()> {
    let widths = [manifest.hidden, encoder.hidden, index.hidden()];
    if widths.iter().any(|&w| w != widths[0]) {
        bail!(
            "{}: the parts disagree on the width (manifest {}, encoder {}, index {}): the folder was altered; rebuild it",
            dir.display(),
            widths[0],
            widths[1],
            widths[2]
        );
    }
    check_k(manifest.k, manifest.hidden)
        .with_context(|| format!("{}: {MANIFEST_FILE}", dir.display()))?;
    if manifest.dim != encoder.dim || encoder.dim != model_dim {
        bail!(
            "{}: the manifest says {}-d vectors, the encoder takes {}-d and the model gives {}-d",
            dir.display(),
            manifest.dim,
            encoder.dim,
            model_dim
        );
    }
    Ok(())
}

/// The first [`SNIPPET_CHARS`] characters of `text`, cut at a word boundary, with "…"
/// when cut: what a hit shows of its document.
pub fn snippet(text: &str) -> String {
    if text.chars().count() <= SNIPPET_CHARS {
        return text.to_string();
    }
    let cut: String = text.chars().take(SNIPPET_CHARS).collect();
    let at_word = cut.rfind(' ').filter(|&i| i > SNIPPET_CHARS / 2);
    format!("{}…", &cut[..at_word.unwrap_or(cut.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_cut_at_a_word_and_keep_short_texts() {
        assert_eq!(snippet("short text"), "short text");
        let long = "word ".repeat(100);
        let s = snippet(&long);
        assert!(s.ends_with('…') && s.chars().count() <= SNIPPET_CHARS + 1);
        assert!(!s.trim_end_matches('…').ends_with("wor"));
        let accents = "é".repeat(300);
        assert_eq!(snippet(&accents).chars().count(), SNIPPET_CHARS + 1);
    }
}
