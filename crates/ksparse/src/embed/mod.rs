//! Stage 1: text → dense sentence embeddings, the same as sentence-transformers computes.
//!
//! [`Embedder`] = tokenizer (the model folder's `tokenizer.json`, truncated at the model's
//! `max_seq_length`) → [`Transformer`](transformer) → pooling → optional L2 normalisation.
//! [`Embedder::embed`] sorts inputs by token count so each padded batch wastes little
//! work on padding, then writes every vector back at its input's row.

pub mod cache;
pub mod int8;
mod kernels;
pub mod model_dir;
mod transformer;

use anyhow::{anyhow, bail, Context, Result};
use ndarray::Array2;
use rayon::prelude::*;
use tokenizers::{Tokenizer, TruncationParams};

pub use model_dir::{Architecture, ModelDir, Pooling};
use transformer::Transformer;

/// A loaded sentence-embedding model.
pub struct Embedder {
    dir: ModelDir,
    tokenizer: Tokenizer,
    model: Transformer,
}

impl Embedder {
    /// Loads a model named by folder, by name under `models/`, or by Hugging Face id in the
    /// local cache (see [`ModelDir::resolve`]).
    pub fn load(spec: &str) -> Result<Self> {
        let path = ModelDir::resolve(spec)?;
        Self::from_dir(ModelDir::open(&path)?)
    }

    /// Loads the tokenizer and weights of an opened model folder.
    pub fn from_dir(dir: ModelDir) -> Result<Self> {
        let tok_path = dir.path.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| anyhow!("cannot load {}: {e}", tok_path.display()))?;
        // The shipped tokenizer.json files carry a fixed padding/truncation of 128 tokens:
        // padding is done per batch here, truncation at the model's max_seq_length.
        tokenizer.with_padding(None);
        let model = Transformer::load(
            &dir.path.join("model.safetensors"),
            &dir.config,
            dir.architecture,
        )?;
        let mut e = Self {
            dir,
            tokenizer,
            model,
        };
        e.set_max_seq_length(e.dir.max_seq_length)?;
        Ok(e)
    }

    /// Dimension of the output vectors.
    pub fn dim(&self) -> usize {
        self.model.hidden_size()
    }

    /// The model folder this embedder was loaded from.
    pub fn model_dir(&self) -> &ModelDir {
        &self.dir
    }

    /// Tokens per input (special tokens included) before truncation.
    pub fn max_seq_length(&self) -> usize {
        self.dir.max_seq_length
    }

    /// Changes the truncation length; it cannot exceed the model's position table.
    pub fn set_max_seq_length(&mut self, n: usize) -> Result<()> {
        if n < 2 || n > self.position_limit() {
            bail!(
                "max_seq_length {n} out of range 2..={}",
                self.position_limit()
            );
        }
        self.dir.max_seq_length = n;
        self.tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: n,
                ..Default::default()
            }))
            .map_err(|e| anyhow!("cannot set truncation to {n}: {e}"))?;
        Ok(())
    }

    fn position_limit(&self) -> usize {
        let c = &self.dir.config;
        match self.dir.architecture {
            Architecture::Bert => c.max_position_embeddings,
            Architecture::MpNet => c.max_position_embeddings.saturating_sub(c.pad_token_id + 1),
        }
    }

    /// Token ids of one text, special tokens included, truncated at `max_seq_length`.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tokenize_all(&[text])?.pop().unwrap_or_default())
    }

    fn tokenize_all<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        let inputs: Vec<String> = texts
            .iter()
            .map(|t| {
                if self.dir.do_lower_case {
                    t.as_ref().to_lowercase()
                } else {
                    t.as_ref().to_string()
                }
            })
            .collect();
        let enc = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| anyhow!("tokenizer failed: {e}"))?;
        Ok(enc.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Embeds one padded batch of token-id sequences; returns one vector per sequence.
    pub fn embed_tokens(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let n = batch.len();
        let len = batch.iter().map(|t| t.len()).max().unwrap_or(0);
        if n == 0 || len == 0 {
            return Ok(vec![vec![0.0; self.dim()]; n]);
        }
        let pad = self.dir.config.pad_token_id as u32;
        let mut ids = vec![pad; n * len];
        let mut mask = vec![0u8; n * len];
        for (row, toks) in batch.iter().enumerate() {
            ids[row * len..row * len + toks.len()].copy_from_slice(toks);
            mask[row * len..row * len + toks.len()].fill(1);
        }
        let hidden = self.model.forward(&ids, &mask, n, len)?;
        let flat: Vec<f32> = hidden.flatten_all()?.to_vec1()?;
        let h = self.dim();
        Ok((0..n)
            .map(|row| {
                let tokens = &flat[row * len * h..(row + 1) * len * h];
                let mut v = pool(
                    tokens,
                    &mask[row * len..(row + 1) * len],
                    h,
                    self.dir.pooling,
                );
                if self.dir.normalize {
                    normalize(&mut v);
                }
                v
            })
            .collect())
    }

    /// Embeds many texts in length-sorted batches of `batch_size`; row i of the result is
    /// text i's vector. `on_batch(done)` is called after each batch with the texts done so far.
    pub fn embed<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        batch_size: usize,
        mut on_batch: impl FnMut(usize),
    ) -> Result<Array2<f32>> {
        if batch_size == 0 {
            bail!("batch size must be at least 1");
        }
        let tokens = self.tokenize_all(texts)?;
        let mut order: Vec<usize> = (0..tokens.len()).collect();
        // Longest first: the peak memory shows at once and the ETA only improves.
        order.sort_by_key(|&i| std::cmp::Reverse(tokens[i].len()));
        let mut out = Array2::<f32>::zeros((texts.len(), self.dim()));
        let mut done = 0;
        let workers = rayon::current_num_threads().max(1);
        for group in order.chunks(batch_size * workers) {
            let results: Vec<Result<Vec<Vec<f32>>>> = group
                .par_chunks(batch_size)
                .map(|chunk| {
                    let batch: Vec<&[u32]> = chunk.iter().map(|&i| tokens[i].as_slice()).collect();
                    self.embed_tokens(&batch)
                        .with_context(|| format!("embedding batch of {} texts", batch.len()))
                })
                .collect();
            for (chunk, vectors) in group.chunks(batch_size).zip(results) {
                for (&i, v) in chunk.iter().zip(vectors?) {
                    out.row_mut(i).assign(&ndarray::ArrayView1::from(&v));
                }
            }
            done += group.len();
            on_batch(done);
        }
        Ok(out)
    }
}

/// Pools `len × h` token vectors (row-major) over the tokens whose mask is 1.
fn pool(tokens: &[f32], mask: &[u8], h: usize, mode: Pooling) -> Vec<f32> {
    let rows = tokens
        .chunks(h)
        .zip(mask)
        .filter(|(_, &m)| m == 1)
        .map(|(r, _)| r);
    match mode {
        Pooling::Cls => tokens[..h].to_vec(),
        Pooling::Mean => {
            let mut sum = vec![0.0f32; h];
            let mut count = 0usize;
            for r in rows {
                sum.iter_mut().zip(r).for_each(|(s, x)| *s += x);
                count += 1;
            }
            let denom = (count as f32).max(1e-9);
            sum.iter_mut().for_each(|s| *s /= denom);
            sum
        }
        Pooling::Max => {
            let mut max = vec![f32::NEG_INFINITY; h];
            for r in rows {
                max.iter_mut().zip(r).for_each(|(m, x)| *m = m.max(*x));
            }
            max
        }
    }
}

/// Scales `v` to unit L2 norm (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_pooling_ignores_padding() {
        let tokens = [1.0, 2.0, 3.0, 4.0, 100.0, 100.0];
        assert_eq!(pool(&tokens, &[1, 1, 0], 2, Pooling::Mean), vec![2.0, 3.0]);
        assert_eq!(pool(&tokens, &[1, 1, 0], 2, Pooling::Max), vec![3.0, 4.0]);
        assert_eq!(pool(&tokens, &[1, 1, 0], 2, Pooling::Cls), vec![1.0, 2.0]);
    }

    #[test]
    fn normalize_gives_unit_norm() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }
}
