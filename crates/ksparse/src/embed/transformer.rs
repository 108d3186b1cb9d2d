//! The transformer encoders (BERT and MPNet) as explicit candle ops.
//!
//! Both are post-LayerNorm encoders that differ only in their embeddings (BERT adds
//! token-type embeddings and numbers positions from 0; MPNet numbers them from
//! `pad_token_id + 1`) and in MPNet's learned relative-position attention bias, which is
//! shared by all layers. One implementation with those two switches keeps the code path
//! the same for both families.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::kernels::{AttentionSoftmax, Gelu};
use super::model_dir::{Architecture, TransformerConfig};

/// A linear layer `y = x Wᵀ + b` applied to a 2-D (tokens × features) input.
struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    fn load(vb: &VarBuilder, inp: usize, out: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.get((out, inp), "weight")?,
            bias: vb.get(out, "bias")?,
        })
    }
}

impl Module for Dense {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(vb: &VarBuilder, size: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            bias: vb.get(size, "bias")?,
            eps: eps as f32,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

struct Layer {
    query: Dense,
    key: Dense,
    value: Dense,
    attn_out: Dense,
    attn_norm: LayerNorm,
    intermediate: Dense,
    output: Dense,
    out_norm: LayerNorm,
}

impl Layer {
    fn load(vb: &VarBuilder, c: &TransformerConfig, arch: Architecture) -> Result<Self> {
        let h = c.hidden_size;
        let i = c.intermediate_size;
        let eps = c.layer_norm_eps;
        let a = vb.pp("attention");
        let (query, key, value, attn_out, attn_norm) = match arch {
            Architecture::Bert => (
                Dense::load(&a.pp("self.query"), h, h)?,
                Dense::load(&a.pp("self.key"), h, h)?,
                Dense::load(&a.pp("self.value"), h, h)?,
                Dense::load(&a.pp("output.dense"), h, h)?,
                LayerNorm::load(&a.pp("output.LayerNorm"), h, eps)?,
            ),
            Architecture::MpNet => (
                Dense::load(&a.pp("attn.q"), h, h)?,
                Dense::load(&a.pp("attn.k"), h, h)?,
                Dense::load(&a.pp("attn.v"), h, h)?,
                Dense::load(&a.pp("attn.o"), h, h)?,
                LayerNorm::load(&a.pp("LayerNorm"), h, eps)?,
            ),
        };
        Ok(Self {
            query,
            key,
            value,
            attn_out,
            attn_norm,
            intermediate: Dense::load(&vb.pp("intermediate.dense"), h, i)?,
            output: Dense::load(&vb.pp("output.dense"), i, h)?,
            out_norm: LayerNorm::load(&vb.pp("output.LayerNorm"), h, eps)?,
        })
    }

    /// `x`: (batch·len) × hidden; `softmax` adds the padding mask (and MPNet's
    /// relative-position bias) to the attention scores before normalising them.
    fn forward(
        &self,
        x: &Tensor,
        softmax: &AttentionSoftmax,
        batch: usize,
        len: usize,
        heads: usize,
    ) -> Result<Tensor> {
        let hidden = x.dim(1)?;
        let head_dim = hidden / heads;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((batch, len, heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        // Scaling q before the product is the same as scaling the scores, with fewer multiplies.
        let q = split((self.query.forward(x)? * (1.0 / (head_dim as f64).sqrt()))?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        let probs = q.matmul(&k.t()?)?.apply_op1_no_bwd(softmax)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch * len, hidden))?;
        let attn = self
            .attn_norm
            .forward(&(self.attn_out.forward(&context)? + x)?)?;
        let inter = self.intermediate.forward(&attn)?.apply_op1_no_bwd(&Gelu)?;
        Ok(self
            .out_norm
            .forward(&(self.output.forward(&inter)? + attn)?)?)
    }
}

/// A transformer encoder with weights loaded from `model.safetensors`.
pub struct Transformer {
    arch: Architecture,
    config: TransformerConfig,
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    /// BERT only: row 0 of the token-type table (every input is a single segment).
    token_type: Option<Tensor>,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    /// MPNet only: buckets × heads table of the relative-position bias.
    relative_bias: Option<Tensor>,
    device: Device,
}

/// Large negative bias that removes padding keys from the softmax.
const MASKED: f32 = -1.0e30;

impl Transformer {
    /// Loads the weights (memory-mapped) and checks every tensor's shape against the config.
    pub fn load(weights: &Path, config: &TransformerConfig, arch: Architecture) -> Result<Self> {
        let device = Device::Cpu;
        // SAFETY: the file is memory-mapped read-only; ksparse never writes model files
        // while they are open.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &device) }
            .with_context(|| format!("cannot read weights {}", weights.display()))?;
        // Some exports prefix every key with the architecture name; these folders do not.
        let vb = match arch {
            Architecture::Bert if vb.contains_tensor("bert.embeddings.word_embeddings.weight") => {
                vb.pp("bert")
            }
            Architecture::MpNet
                if vb.contains_tensor("mpnet.embeddings.word_embeddings.weight") =>
            {
                vb.pp("mpnet")
            }
            _ => vb,
        };
        let h = config.hidden_size;
        let e = vb.pp("embeddings");
        let load = || -> Result<Self> {
            let word_embeddings = e.get_unchecked_dtype("word_embeddings.weight", DType::F32)?;
            ensure!(
                word_embeddings.dim(1)? == h,
                "word_embeddings width {} != hidden_size {h}",
                word_embeddings.dim(1)?
            );
            let position_embeddings = e.get(
                (config.max_position_embeddings, h),
                "position_embeddings.weight",
            )?;
            let token_type = match arch {
                Architecture::Bert => Some(
                    e.get_unchecked_dtype("token_type_embeddings.weight", DType::F32)?
                        .get(0)?,
                ),
                Architecture::MpNet => None,
            };
            let relative_bias = match arch {
                Architecture::Bert => None,
                Architecture::MpNet => Some(vb.get(
                    (
                        config.relative_attention_num_buckets,
                        config.num_attention_heads,
                    ),
                    "encoder.relative_attention_bias.weight",
                )?),
            };
            let layers = (0..config.num_hidden_layers)
                .map(|i| Layer::load(&vb.pp(format!("encoder.layer.{i}")), config, arch))
                .collect::<Result<Vec<_>>>()?;
            Ok(Self {
                arch,
                config: config.clone(),
                word_embeddings,
                position_embeddings,
                token_type,
                embed_norm: LayerNorm::load(&e.pp("LayerNorm"), h, config.layer_norm_eps)?,
                layers,
                relative_bias,
                device: device.clone(),
            })
        };
        load().with_context(|| {
            format!(
                "weights in {} do not match the model's config.json",
                weights.display()
            )
        })
    }

    /// Runs the encoder on a padded batch. `ids`: batch × len token ids; `mask`: 1 for real
    /// tokens, 0 for padding (padding only at the end of a row). Returns batch × len × hidden.
    pub fn forward(&self, ids: &[u32], mask: &[u8], batch: usize, len: usize) -> Result<Tensor> {
        let heads = self.config.num_attention_heads;
        let ids_t = Tensor::from_slice(ids, batch * len, &self.device)?;
        let mut x = self.word_embeddings.index_select(&ids_t, 0)?;
        let positions: Vec<u32> = match self.arch {
            Architecture::Bert => (0..batch).flat_map(|_| 0..len as u32).collect(),
            // MPNet: real tokens get pad+1, pad+2, …; padding gets pad itself.
            Architecture::MpNet => {
                let pad = self.config.pad_token_id as u32;
                mask.chunks(len)
                    .flat_map(|row| {
                        let mut n = 0u32;
                        row.iter()
                            .map(move |&m| {
                                n += m as u32;
                                if m == 1 {
                                    pad + n
                                } else {
                                    pad
                                }
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect()
            }
        };
        let pos_t = Tensor::from_vec(positions, batch * len, &self.device)?;
        x = (x + self.position_embeddings.index_select(&pos_t, 0)?)?;
        if let Some(tt) = &self.token_type {
            x = x.broadcast_add(tt)?;
        }
        x = self.embed_norm.forward(&x)?;

        let key_bias: Vec<f32> = mask
            .iter()
            .map(|&m| if m == 1 { 0.0 } else { MASKED })
            .collect();
        let position_bias = self
            .relative_bias
            .as_ref()
            .map(|table| self.position_bias(table, len))
            .transpose()?;
        let softmax = AttentionSoftmax {
            key_bias: &key_bias,
            position_bias: position_bias.as_deref(),
        };
        for layer in &self.layers {
            x = layer.forward(&x, &softmax, batch, len, heads)?;
        }
        Ok(x.reshape((batch, len, self.config.hidden_size))?)
    }

    /// MPNet's relative-position bias for a sequence of `len`: heads × len × len, row-major.
    fn position_bias(&self, table: &Tensor, len: usize) -> Result<Vec<f32>> {
        let buckets = self.config.relative_attention_num_buckets;
        let heads = self.config.num_attention_heads;
        let table: Vec<Vec<f32>> = table.to_vec2()?; // buckets × heads
        let mut out = vec![0.0f32; heads * len * len];
        for q in 0..len {
            for k in 0..len {
                let bucket = relative_position_bucket(k as i64 - q as i64, buckets, 128) as usize;
                for (h, v) in table[bucket].iter().enumerate() {
                    out[(h * len + q) * len + k] = *v;
                }
            }
        }
        Ok(out)
    }

    /// Width of the token vectors.
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }
}

/// T5/MPNet bucketing of a relative position (key − query): half the buckets for each
/// direction, exact for distances below a quarter of `buckets`, logarithmic up to
/// `max_distance`, clamped beyond. The logarithm is taken in f32, as the reference does,
/// so bucket edges match.
fn relative_position_bucket(relative: i64, buckets: usize, max_distance: usize) -> u32 {
    let half = buckets as i64 / 2;
    let n = -relative;
    let mut bucket = if n < 0 { half } else { 0 };
    let n = n.abs();
    let max_exact = half / 2;
    if n < max_exact {
        bucket += n;
    } else {
        let scale = (max_distance as f64 / max_exact as f64).ln() as f32;
        let large = max_exact
            + ((n as f32 / max_exact as f32).ln() / scale * (half - max_exact) as f32) as i64;
        bucket += large.min(half - 1);
    }
    bucket as u32
}

#[cfg(test)]
mod tests {
    use super::relative_position_bucket as b;

    #[test]
    fn relative_buckets_follow_the_t5_scheme() {
        // Keys before the query (relative < 0) use the first half; keys after it the second.
        assert_eq!(b(0, 32, 128), 0);
        assert_eq!(b(-1, 32, 128), 1);
        assert_eq!(b(1, 32, 128), 17);
        assert_eq!(b(-7, 32, 128), 7);
        // Logarithmic range: 8 → 8, 16 → 10, 32 → 12, 64 → 14, ≥128 → 15 (clamped).
        assert_eq!(b(-8, 32, 128), 8);
        assert_eq!(b(-16, 32, 128), 10);
        assert_eq!(b(-32, 32, 128), 12);
        assert_eq!(b(-64, 32, 128), 14);
        assert_eq!(b(-500, 32, 128), 15);
        assert_eq!(b(500, 32, 128), 31);
    }
}
