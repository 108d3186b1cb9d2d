//! The whole path in two calls: [`build`] turns a corpus file into a search folder
//! (texts → embeddings → encoder → codes → inverted index), and [`Searcher`] answers query
//! text from that folder.
//!
//! A search folder holds:
//!
//! ```text
//! ksparse.json   the manifest: model folder and its SHA-256, encoder SHA-256, dim, hidden, k
//! index/         the inverted index (meta.json + segments, see `index`)
//! encoder/       the encoder the codes came from (config.json + model.safetensors)
//! docs.jsonl     {"_id", "title", "text"} per document, for titles and snippets in results
//! ```
//!
//! A searcher recomputes both fingerprints on open and refuses a model or encoder that is
//! not the one the codes were made with (their queries would land in another space); it
//! also cross-checks the parts (manifest checksum, index width = encoder width = the
//! manifest's, 1 ≤ k ≤ width), so a swapped or edited part is an error, not silent
//! zero scores. A rebuild swaps the whole folder in atomically under its writer lock.
//! Building is resumable: embeddings and trained encoders go to a content-addressed cache,
//! so a build that was interrupted, or repeated with the same inputs, skips what is done.

use std::collections::HashMap;
use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::read_texts;
use crate::embed::cache::{cache_key, embed_cached};
use crate::embed::Embedder;
use crate::encoder::scoring::ScoringMode;
use crate::encoder::train::{train, Pairs, TrainConfig};
use crate::encoder::{EncoderConfig, SparseEncoder, CONFIG_FILE, WEIGHTS_FILE};
use crate::index::{self, Index};
use crate::io::dir::check_output;
use crate::io::{
    read_json_checked, write_atomic, write_dir_atomic, write_json_checked, FolderKind, IoError,
    Wait, WriterLock,
};

/// The manifest's file name inside a search folder.
pub const MANIFEST_FILE: &str = "ksparse.json";
/// Manifest format this build writes and reads.
const FORMAT: u32 = 1;

/// What a search folder was built from (`ksparse.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Manifest format version.
    pub format: u32,
    /// ksparse version that built the folder.
    pub version: String,
    /// The model folder used for the documents, absolute (queries must use the same model).
    pub model: String,
    /// SHA-256 of the model's files (see [`model_fingerprint`]).
    pub model_sha256: String,
    /// Tokens per input the documents were embedded with.
    pub max_seq_length: usize,
    /// SHA-256 of `encoder/` (config and weights).
    pub encoder_sha256: String,
    /// Embedding dimension d.
    pub dim: usize,
    /// Latents h.
    pub hidden: usize,
    /// Active latents per document code.
    pub k: usize,
    /// Documents indexed.
    pub documents: usize,
    /// The corpus file, as given.
    pub corpus: String,
    /// SHA-256 of `docs.jsonl` (absent in folders built before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs_sha256: Option<String>,
}

/// The documents' ids, titles and texts inside a search folder, one JSON object a line.
const DOCS_FILE: &str = "docs.jsonl";

/// Search folders, as [`write_dir_atomic`] knows them.
pub const FOLDER: FolderKind = FolderKind {
    name: "search folder",
    legacy: |dir| dir.join(MANIFEST_FILE).is_file(),
};

/// Settings of [`build`].
pub struct BuildOptions<'a> {
    /// corpus.jsonl(.gz) or a text file with one passage per line.
    pub corpus: &'a Path,
    /// The search folder to write (replaced atomically when it exists).
    pub output: &'a Path,
    /// A trained encoder to use instead of training one on the corpus.
    pub encoder: Option<&'a Path>,
    /// Training settings when no encoder is given.
    pub train: TrainConfig,
    /// Code length of the documents (default: the encoder's k).
    pub k: Option<usize>,
    /// Cache folder for embeddings and encoders.
    pub cache: &'a Path,
    /// Texts per embedding batch.
    pub batch_size: usize,
    /// Whether to wait for another writer of an existing output folder.
    pub wait: Wait,
}

/// A long stage of [`build`], for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Embedding the corpus (units: documents).
    Embed,
    /// Training the encoder (units: steps).
    Train,
}

/// SHA-256 over a model folder's configuration, tokenizer and weights (each file's name,
/// length and bytes). Two folders with equal fingerprints embed identically.
pub fn model_fingerprint(dir: &Path) -> Result<String> {
    fingerprint(
        dir,
        &[
            "config.json",
            "tokenizer.json",
            "modules.json",
            "sentence_bert_config.json",
            "1_Pooling/config.json",
            "model.safetensors",
            "pytorch_model.bin",
        ],
    )
}

/// SHA-256 of an encoder folder's config and weights.
fn encoder_fingerprint(dir: &Path) -> Result<String> {
    fingerprint(dir, &[CONFIG_FILE, WEIGHTS_FILE])
}

fn fingerprint(dir: &Path, names: &[&str]) -> Result<String> {
    let mut h = Sha256::new();
    for name in names {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Builds a search folder from a corpus file: embeds it (cached), trains an encoder on the
/// embeddings (cached) or loads `opts.encoder`, encodes every document, and writes the
/// folder atomically. `progress(stage, done, total)` follows the long stages.
pub fn build(
    embedder: &Embedder,
    opts: &BuildOptions,
    mut progress: impl FnMut(Stage, usize, usize),
) -> Result<Manifest> {
    check_output(opts.output, &FOLDER)?;
    // An existing folder is replaced whole: hold its writer lock, and its index's, so no
    // change to the old folder is lost in the swap.
    let _locks = if opts.output.is_dir() {
        let index_dir = opts.output.join("index");
        let index_lock = index_dir
            .is_dir()
            .then(|| WriterLock::acquire(&index_dir, opts.wait))
            .transpose()?;
        Some((WriterLock::acquire(opts.output, opts.wait)?, index_lock))
    } else {
        None
    };
    let texts = read_texts(opts.corpus)?;
    if texts.is_empty() {
        bail!("{} holds no documents", opts.corpus.display());
    }
    let n = texts.len();
    let vectors = embed_cached(embedder, &texts, &opts.cache.join("embeddings"), |t| {
        embedder.embed(&t.texts, opts.batch_size, |done| {
            progress(Stage::Embed, done, n)
        })
    })?;
    let (encoder, config) = match opts.encoder {
        Some(dir) => {
            let (enc, config) = SparseEncoder::load(dir)?;
            if enc.dim != vectors.ncols() {
                bail!(
                    "the encoder {} takes {}-d vectors but the model {} gives {}-d: use an encoder trained on this model's embeddings, or leave out --encoder to train one",
                    dir.display(),
                    enc.dim,
                    embedder.model_dir().path.display(),
                    vectors.ncols()
                );
            }
            (enc, config)
        }
        None => {
            let (enc, config, _) = train_cached(
                opts.cache,
                &cache_key(embedder, &texts)?,
                &vectors,
                None,
                &opts.train,
                (&opts.corpus.display().to_string(), n),
                |done, total| progress(Stage::Train, done, total),
            )?;
            (enc, config)
        }
    };
    let k = opts.k.unwrap_or(config.k);
    if k == 0 || k > encoder.hidden {
        bail!(
            "k = {k} must be between 1 and the encoder's {} latents",
            encoder.hidden
        );
    }
    let data = vectors.as_standard_layout();
    let codes = encoder.encode(data.as_slice().expect("standard layout"), n, k);
    let mut manifest = Manifest {
        format: FORMAT,
        version: env!("CARGO_PKG_VERSION").to_string(),
        // Absolute, so that a search from another folder finds the model.
        model: std::fs::canonicalize(&embedder.model_dir().path)
            .unwrap_or_else(|_| embedder.model_dir().path.clone())
            .display()
            .to_string(),
        model_sha256: model_fingerprint(&embedder.model_dir().path)?,
        max_seq_length: embedder.max_seq_length(),
        encoder_sha256: String::new(),
        dim: encoder.dim,
        hidden: encoder.hidden,
        k,
        documents: n,
        corpus: opts.corpus.display().to_string(),
        docs_sha256: None,
    };
    write_dir_atomic(opts.output, &FOLDER, |dir| {
        index::build(&dir.join("index"), &codes, &texts.ids, encoder.hidden)?;
        let enc_dir = dir.join("encoder");
        encoder.save(&enc_dir, &config)?;
        manifest.encoder_sha256 = encoder_fingerprint(&enc_dir)?;
        let mut docs = Vec::new();
        for ((id, title), text) in texts.ids.iter().zip(&texts.titles).zip(&texts.texts) {
            // The embedded text is title + " " + text; keep the text alone.
            let text = text
                .strip_prefix(title.as_str())
                .unwrap_or(text)
                .trim_start();
            serde_json::to_writer(
                &mut docs,
                &serde_json::json!({ "_id": id, "title": title, "text": text }),
            )?;
            docs.push(b'\n');
        }
        manifest.docs_sha256 = Some(format!("{:x}", Sha256::digest(&docs)));
        write_atomic(&dir.join(DOCS_FILE), |w| Ok(w.write_all(&docs)?))?;
        write_json_checked(&dir.join(MANIFEST_FILE), &manifest)
    })?;
    Ok(manifest)
}

/// The encoder for `vectors` (and training `pairs`, if any; `data_key` identifies both,
/// e.g. their embedding cache keys) under `cfg`, with its training seconds: from
/// `cache/encoders/` when an identical run (same data, settings and ksparse version)
/// finished before, otherwise trained and stored there. `source` names the data in the
/// encoder's config.
pub fn train_cached(
    cache: &Path,
    data_key: &str,
    vectors: &Array2<f32>,
    pairs: Option<&Pairs>,
    cfg: &TrainConfig,
    source: (&str, usize),
    mut progress: impl FnMut(usize, usize),
) -> Result<(SparseEncoder, EncoderConfig, f64)> {
    let mut h = Sha256::new();
    h.update(data_key.as_bytes());
    h.update(serde_json::to_vec(cfg)?);
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    let dir: PathBuf = cache.join("encoders").join(format!("{:x}", h.finalize()));
    let seconds_file = dir.join(TRAIN_SECONDS_FILE);
    if dir.join(CONFIG_FILE).exists() {
        let seconds = std::fs::read_to_string(&seconds_file)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok());
        match (SparseEncoder::load(&dir), seconds) {
            (Ok((enc, config)), Some(seconds)) => {
                tracing::info!(path = %dir.display(), "encoder from cache");
                return Ok((enc, config, seconds));
            }
            (Err(e), _) => tracing::warn!("unusable cached encoder, training again: {e:#}"),
            (Ok(_), None) => {
                tracing::warn!("cached encoder without its training time, training again")
            }
        }
    }
    let data = vectors.as_standard_layout();
    let (trained, seconds) = crate::bench::timed(|| {
        train(
            data.as_slice().expect("standard layout"),
            vectors.ncols(),
            pairs,
            cfg,
            &mut progress,
            |e| tracing::debug!(epoch = e.epoch, val_fvu = e.validation_fvu, "epoch"),
        )
    });
    let (enc, stats, _) = trained?;
    let config = EncoderConfig {
        version: env!("CARGO_PKG_VERSION").to_string(),
        dim: enc.dim,
        hidden: enc.hidden,
        k: cfg.k,
        training: cfg.clone(),
        data: stats,
        sources: HashMap::from([(source.0.to_string(), source.1)]),
        weights_sha256: None,
    };
    write_dir_atomic(&dir, &crate::encoder::FOLDER, |tmp| {
        enc.save(tmp, &config)?;
        write_atomic(&tmp.join(TRAIN_SECONDS_FILE), |w| {
            Ok(w.write_all(seconds.to_string().as_bytes())?)
        })
    })?;
    Ok((enc, config, seconds))
}

/// Training wall time of a cached encoder, seconds, beside its config.
const TRAIN_SECONDS_FILE: &str = "train-seconds.txt";

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

/// Query text → ranked documents over a search folder written by [`build`].
pub struct Searcher {
    /// The folder's manifest.
    pub manifest: Manifest,
    embedder: Embedder,
    encoder: SparseEncoder,
    index: Index,
    /// Title and text per document id.
    docs: HashMap<String, (String, String)>,
}

impl Searcher {
    /// Opens `dir`, loading its model (or `model`, which must be the same model) and
    /// verifying that model and encoder are the ones the documents were encoded with.
    pub fn open(dir: &Path, model: Option<&str>) -> Result<Self> {
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
        let spec = model.unwrap_or(&manifest.model);
        let mut embedder = Embedder::load(spec).with_context(|| {
            format!(
                "cannot load the model {spec} that {} needs: pass --model with the path of that model",
                dir.display()
            )
        })?;
        let found = model_fingerprint(&embedder.model_dir().path)?;
        if found != manifest.model_sha256 {
            bail!(
                "{} was built with the model {} but {} is a different model (SHA-256 {}… ≠ {}…): search with the model the folder was built with, or rebuild it with `ksparse build --model {spec}`",
                dir.display(),
                manifest.model,
                embedder.model_dir().path.display(),
                found.chars().take(12).collect::<String>(),
                manifest.model_sha256.chars().take(12).collect::<String>()
            );
        }
        embedder.set_max_seq_length(manifest.max_seq_length)?;
        let enc_dir = dir.join("encoder");
        if encoder_fingerprint(&enc_dir)? != manifest.encoder_sha256 {
            bail!(
                "{}: the encoder's files changed after the build (checksum mismatch); rebuild the folder",
                enc_dir.display()
            );
        }
        let (encoder, _) = SparseEncoder::load(&enc_dir)?;
        let index = Index::open(&dir.join("index"))?;
        check_parts(dir, &manifest, &encoder, &index, embedder.dim())?;
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
        let mut docs = HashMap::new();
        for (i, line) in bytes.lines().enumerate() {
            let line =
                line.with_context(|| format!("{}:{}: not UTF-8", docs_path.display(), i + 1))?;
            let v: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: invalid JSON", docs_path.display(), i + 1))?;
            let field = |f: &str| v[f].as_str().unwrap_or_default().to_string();
            docs.insert(field("_id"), (field("title"), field("text")));
        }
        Ok(Self {
            manifest,
            embedder,
            encoder,
            index,
            docs,
        })
    }

    /// The `top` best documents for each query text under `mode`; with `rescore` = R > 0
    /// the top R are re-ranked by the exact f32 codes.
    pub fn search(
        &self,
        queries: &[String],
        top: usize,
        mode: ScoringMode,
        rescore: usize,
    ) -> Result<Vec<Vec<Found>>> {
        let vectors = self.embedder.embed(queries, 16, |_| {})?;
        let sparse: Vec<Vec<(u32, f32)>> = vectors
            .rows()
            .into_iter()
            .map(|q| {
                let q = q.to_vec();
                self.encoder.query(&q, self.manifest.k, mode)
            })
            .collect();
        let hits = self.index.search_batch(&sparse, top, rescore)?;
        Ok(hits
            .into_iter()
            .map(|hits| {
                hits.into_iter()
                    .map(|h| {
                        let id = self.index.id(h.doc).to_string();
                        let (title, text) = self.docs.get(&id).cloned().unwrap_or_default();
                        Found {
                            snippet: snippet(&text),
                            id,
                            score: h.score,
                            title,
                        }
                    })
                    .collect()
            })
            .collect())
    }
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
    if manifest.k == 0 || manifest.k > manifest.hidden {
        bail!(
            "{}: k = {} in {MANIFEST_FILE} is not between 1 and the width {}",
            dir.display(),
            manifest.k,
            manifest.hidden
        );
    }
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
/// when cut.
fn snippet(text: &str) -> String {
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

    #[test]
    fn fingerprints_change_with_any_byte() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        std::fs::write(dir.path().join("model.safetensors"), b"abc").unwrap();
        let a = model_fingerprint(dir.path()).unwrap();
        std::fs::write(dir.path().join("model.safetensors"), b"abd").unwrap();
        assert_ne!(model_fingerprint(dir.path()).unwrap(), a);
    }
}
