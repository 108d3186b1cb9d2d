//! One stage on files: texts → vectors ([`embed_file`]) and vectors → codes
//! ([`encode_file`]).

use std::path::Path;

use anyhow::{bail, Result};

use super::{embed_texts, Progress};
use crate::base::stopwatch::timed;
use crate::data::{read_texts, Shard};
use crate::embed::Embedder;
use crate::encoder::codes::{first_non_finite, write_codes};
use crate::encoder::{check_k, SparseEncoder};
use crate::io::{ids_path, read_ids, read_npy, write_ids, write_npy};

/// Embeds the texts of `input` (a BEIR corpus or queries `.jsonl`, or a text file with one
/// passage per line) and writes their vectors to `output` (`.npy`) with the ids beside it
/// (`.ids.txt`); with `shard`, only that part's texts. Returns the rows and the dimension
/// written.
pub fn embed_file(
    embedder: &Embedder,
    input: &Path,
    output: &Path,
    batch_size: usize,
    shard: Option<Shard>,
    progress: &impl Progress,
) -> Result<(usize, usize)> {
    let mut texts = read_texts(input)?;
    if let Some(shard) = shard {
        texts = texts.shard(shard);
        if texts.is_empty() {
            bail!("part {shard} of {} holds no texts", input.display());
        }
    }
    let m = embed_texts(embedder, &texts, batch_size, "texts", progress)?;
    write_npy(output, &m)?;
    write_ids(&ids_path(output), &texts.ids)?;
    Ok(m.dim())
}

/// What [`encode_file`] wrote.
#[derive(Debug)]
pub struct Encoded {
    /// Codes written.
    pub rows: usize,
    /// Active latents per code, at most.
    pub k: usize,
    /// Mean non-zeros per code.
    pub mean_nnz: f64,
    /// Encoding speed, vectors per second.
    pub vectors_per_s: f64,
}

/// Encodes the vectors of `input` (`.npy` with its ids beside it) with the encoder folder
/// `encoder` at `k` active latents (default: the encoder's k) and writes the codes to
/// `output` (SciPy CSR for `.npz`, ksparse's checksummed codes otherwise) with the ids
/// beside it; with `shard`, only the rows of that part. Nothing is written when a vector
/// encodes to an infinite or NaN value.
pub fn encode_file(
    encoder: &Path,
    input: &Path,
    output: &Path,
    k: Option<usize>,
    shard: Option<Shard>,
) -> Result<Encoded> {
    let (enc, config) = SparseEncoder::load(encoder)?;
    let x = read_npy(input)?;
    if x.ncols() != enc.dim {
        bail!(
            "{} has {}-d vectors but the encoder expects {}-d",
            input.display(),
            x.ncols(),
            enc.dim
        );
    }
    let k = k.unwrap_or(config.k);
    check_k(k, enc.hidden)?;
    let mut ids = read_ids(input, x.nrows())?;
    let x = match shard {
        Some(shard) => {
            let rows: Vec<usize> = (0..ids.len()).filter(|&r| shard.holds(&ids[r])).collect();
            if rows.is_empty() {
                bail!("part {shard} of {} holds no vectors", input.display());
            }
            ids = rows.iter().map(|&r| std::mem::take(&mut ids[r])).collect();
            x.select(ndarray::Axis(0), &rows)
        }
        None => x,
    };
    let data = x.as_standard_layout();
    let (codes, secs) =
        timed(|| enc.encode(data.as_slice().expect("standard layout"), x.nrows(), k));
    if let Some(row) = first_non_finite(&codes) {
        bail!(
            "{}: row {row} (id {:?}) encodes to an infinite or NaN value: the vector is too large for the encoder (overflow); nothing was written",
            input.display(),
            ids[row]
        );
    }
    write_codes(output, &codes, enc.hidden)?;
    write_ids(&ids_path(output), &ids)?;
    let nnz: usize = codes.iter().map(|c| c.len()).sum();
    Ok(Encoded {
        rows: codes.len(),
        k,
        mean_nnz: nnz as f64 / codes.len().max(1) as f64,
        vectors_per_s: codes.len() as f64 / secs,
    })
}
