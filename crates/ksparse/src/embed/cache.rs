//! A content-addressed cache of embeddings, so that experiments that revisit a dataset
//! (the quality table, repeated evaluations) embed each text once per model.
//!
//! The key is a SHA-256 over the model folder's `config.json` and weights file size and
//! every (id, text) pair; the entry is `<key>.npy` with `<key>.ids.txt` beside it, written
//! atomically, and re-checked (ids, shape) when read back. Any change to a text or to the
//! model gives a new key, so a stale entry is never returned.

use std::path::Path;

use anyhow::{Context, Result};
use ndarray::Array2;
use sha2::{Digest, Sha256};

use super::Embedder;
use crate::data::Texts;
use crate::io::{ids_path, read_ids, read_npy, write_ids, write_npy};

/// The cache key of `texts` embedded by `embedder` (hex SHA-256).
pub fn cache_key(embedder: &Embedder, texts: &Texts) -> Result<String> {
    let dir = &embedder.model_dir().path;
    let mut h = Sha256::new();
    let config = std::fs::read(dir.join("config.json"))
        .with_context(|| format!("cannot read {}/config.json", dir.display()))?;
    h.update(&config);
    for name in ["model.safetensors", "pytorch_model.bin"] {
        if let Ok(m) = std::fs::metadata(dir.join(name)) {
            h.update(name.as_bytes());
            h.update(m.len().to_le_bytes());
        }
    }
    h.update(embedder.max_seq_length().to_le_bytes());
    for (id, text) in texts.ids.iter().zip(&texts.texts) {
        for part in [id.as_bytes(), text.as_bytes()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The embeddings of `texts` (rows in `texts` order): read from `cache_dir` when present
/// and valid, otherwise computed with `embed` and stored there.
pub fn embed_cached(
    embedder: &Embedder,
    texts: &Texts,
    cache_dir: &Path,
    embed: impl FnOnce(&Texts) -> Result<Array2<f32>>,
) -> Result<Array2<f32>> {
    let path = cache_dir.join(format!("{}.npy", cache_key(embedder, texts)?));
    if path.exists() {
        let m = read_npy(&path)?;
        let ids = read_ids(&path, m.nrows())?;
        if ids == texts.ids {
            tracing::info!(path = %path.display(), rows = m.nrows(), "embeddings from cache");
            return Ok(m);
        }
        tracing::warn!(path = %path.display(), "cache entry does not match its texts; embedding again");
    }
    let m = embed(texts)?;
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("cannot create cache folder {}", cache_dir.display()))?;
    write_ids(&ids_path(&path), &texts.ids)?;
    write_npy(&path, &m)?;
    Ok(m)
}
