//! [`build`]: a corpus file → a search folder, resumable through the cache.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{embed_through_cache, train_encoder, ModelError, Progress};
use crate::data::{read_texts, Shard, Texts};
use crate::embed::cache::cache_key;
use crate::embed::int8::Int8Vectors;
use crate::embed::Embedder;
use crate::encoder::train::{recorded_seconds, Pairs, TrainConfig, TrainData};
use crate::encoder::{check_k, EncoderConfig, SparseEncoder, CONFIG_FILE, WEIGHTS_FILE};
use crate::index;
use crate::io::dir::check_output;
use crate::io::{write_atomic, write_dir_atomic, write_json_checked, FolderKind, Wait, WriterLock};

/// The manifest's file name inside a search folder.
pub const MANIFEST_FILE: &str = "ksparse.json";
/// Manifest format this build writes and reads.
pub(super) const FORMAT: u32 = 1;
/// The documents' ids, titles and texts inside a search folder, one JSON object a line.
pub const DOCS_FILE: &str = "docs.jsonl";
/// The documents' dense vectors, int8, in the index's document order (`--keep-vectors`).
pub(super) const VECTORS_FILE: &str = "vectors.i8";

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
    /// SHA-256 of `vectors.i8`, when the documents' dense vectors were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vectors_sha256: Option<String>,
    /// The index commit the kept vectors are numbered for (any later change to the index
    /// renumbers its documents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vectors_generation: Option<u64>,
    /// The part of the corpus this folder holds (`I/N`, see [`Shard`]); absent for a whole
    /// corpus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
}

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
    /// Training settings when no encoder is given. With `losses.distill` > 0 the encoder
    /// also learns the dense model's scores on pseudo-queries cut from the corpus
    /// ([`super::pseudo_query_pairs`]).
    pub train: TrainConfig,
    /// Code length of the documents (default: the encoder's k).
    pub k: Option<usize>,
    /// Cache folder for embeddings and encoders.
    pub cache: &'a Path,
    /// Texts per embedding batch.
    pub batch_size: usize,
    /// Whether to wait for another writer of an existing output folder.
    pub wait: Wait,
    /// Keep the documents' dense vectors (int8, one byte per dimension) for the
    /// `two-stage-dense` scoring mode.
    pub keep_vectors: bool,
    /// Build only this part of the corpus. Every part must share one encoder, so a
    /// sharded build takes `encoder` rather than training one on its part.
    pub shard: Option<Shard>,
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

/// SHA-256 of an encoder folder's config and weights (what a manifest records as
/// `encoder_sha256`).
pub fn encoder_fingerprint(dir: &Path) -> Result<String> {
    fingerprint(dir, &[CONFIG_FILE, WEIGHTS_FILE])
}

/// SHA-256 of one file's bytes, as hex.
fn file_sha256(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
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
/// folder atomically.
pub fn build(
    embedder: &Embedder,
    opts: &BuildOptions,
    progress: &impl Progress,
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
    let mut texts = read_texts(opts.corpus)?;
    if texts.is_empty() {
        bail!("{} holds no documents", opts.corpus.display());
    }
    if let Some(shard) = opts.shard {
        if opts.encoder.is_none() {
            return Err(ModelError::ShardWithoutEncoder { shard }.into());
        }
        texts = texts.shard(shard);
        if texts.is_empty() {
            bail!(
                "part {shard} of {} holds no documents (too few documents for {} parts)",
                opts.corpus.display(),
                shard.count()
            );
        }
    }
    let n = texts.len();
    let vectors = embed_through_cache(
        embedder,
        &texts,
        &opts.cache.join("embeddings"),
        opts.batch_size,
        "corpus",
        progress,
    )?;
    let (encoder, config) = match opts.encoder {
        Some(dir) => {
            let (enc, config) = SparseEncoder::load(dir)?;
            if enc.dim != vectors.ncols() {
                return Err(ModelError::EncoderDim {
                    encoder: dir.to_path_buf(),
                    encoder_dim: enc.dim,
                    model: embedder.model_dir().path.clone(),
                    model_dim: vectors.ncols(),
                }
                .into());
            }
            (enc, config)
        }
        None => {
            let source = opts.corpus.display().to_string();
            let (enc, config, _) = train_for_corpus(
                embedder,
                &texts,
                &vectors,
                &opts.train,
                (opts.cache, opts.batch_size, &source),
                progress,
            )?;
            (enc, config)
        }
    };
    let k = opts.k.unwrap_or(config.k);
    check_k(k, encoder.hidden)?;
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
        vectors_sha256: None,
        vectors_generation: None,
        shard: opts.shard.map(|s| s.to_string()),
    };
    write_dir_atomic(opts.output, &FOLDER, |dir| {
        index::build(&dir.join("index"), &codes, &texts.ids, encoder.hidden)?;
        if opts.keep_vectors {
            let index = index::Index::open(&dir.join("index"))?;
            let order = index.rows_in(&texts.ids)?;
            manifest.vectors_generation = Some(index.meta.generation);
            let path = dir.join(VECTORS_FILE);
            Int8Vectors::quantize(data.as_slice().expect("standard layout"), encoder.dim)?
                .reorder(&order)
                .write(&path)?;
            manifest.vectors_sha256 = Some(file_sha256(&path)?);
        }
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

/// An encoder trained as `ksparse build` trains one for a corpus: on the documents'
/// `vectors` (rows of `texts`, embedded by `embedder`) and, when `cfg` weighs the
/// distillation term, the pseudo-queries cut from `texts` (falling back to documents
/// alone when too few can be cut), through the caches under `cache`. `source` names the
/// corpus in the encoder's config. Also returns the encoder's folder in the cache.
pub fn train_for_corpus(
    embedder: &Embedder,
    texts: &Texts,
    vectors: &Array2<f32>,
    cfg: &TrainConfig,
    (cache, batch_size, source): (&Path, usize, &str),
    progress: &impl Progress,
) -> Result<(SparseEncoder, EncoderConfig, PathBuf)> {
    let mut key = cache_key(embedder, texts)?;
    let mut cfg = cfg.clone();
    let pairs = if cfg.losses.distill > 0.0 {
        let found = super::pseudo_query_pairs(
            embedder,
            texts,
            vectors,
            (&cache.join("embeddings"), batch_size, cfg.seed),
            progress,
        )?;
        if found.is_none() {
            cfg.losses.distill = 0.0;
        }
        found.map(|(pairs, pairs_key)| {
            key += &pairs_key;
            pairs
        })
    } else {
        None
    };
    let (enc, config, _) = train_cached(
        cache,
        &key,
        vectors,
        pairs.as_ref(),
        &cfg,
        (source, texts.len()),
        progress,
    )?;
    let dir = encoder_cache_dir(cache, &key, &cfg)?;
    Ok((enc, config, dir))
}

/// The folder [`train_cached`] keeps the encoder for `data_key` and `cfg` in.
fn encoder_cache_dir(cache: &Path, data_key: &str, cfg: &TrainConfig) -> Result<PathBuf> {
    let mut h = Sha256::new();
    h.update(data_key.as_bytes());
    h.update(serde_json::to_vec(cfg)?);
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    Ok(cache.join("encoders").join(format!("{:x}", h.finalize())))
}

/// The encoder for `vectors` (and training `pairs`, if any; `data_key` identifies both,
/// e.g. their embedding cache keys) under `cfg`, with its training seconds: from
/// `cache/encoders/` when an identical run (same data, settings and ksparse version)
/// finished before, otherwise trained there into an encoder folder. `source` names the
/// data in the encoder's config.
pub fn train_cached(
    cache: &Path,
    data_key: &str,
    vectors: &Array2<f32>,
    pairs: Option<&Pairs>,
    cfg: &TrainConfig,
    source: (&str, usize),
    progress: &impl Progress,
) -> Result<(SparseEncoder, EncoderConfig, f64)> {
    let dir = encoder_cache_dir(cache, data_key, cfg)?;
    if dir.join(CONFIG_FILE).exists() {
        match (SparseEncoder::load(&dir), recorded_seconds(&dir)) {
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
    let data = TrainData {
        vectors: vectors.view(),
        pairs,
        sources: HashMap::from([(source.0.to_string(), source.1)]),
    };
    let trained = train_encoder(&dir, &data, cfg, progress, |e| {
        tracing::debug!(epoch = e.epoch, val_fvu = e.validation_fvu, "epoch")
    })?;
    Ok((trained.encoder, trained.config, trained.seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

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
