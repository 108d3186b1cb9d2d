//! Stage 2: the K-sparse encoder (a TopK sparse autoencoder over frozen dense embeddings).
//!
//! ```text
//! pre = W_enc (x − b_pre) + b_enc        W_enc: hidden × dim
//! z   = ReLU(TopK_k(pre))                at most k non-zeros
//! x̂   = W_dec z + b_pre                  W_dec: dim × hidden, unit-norm columns
//! ```
//!
//! The decoder is stored transposed (`hidden × dim`, row j = decoder column j, the
//! "atom" of latent j), so decoding a sparse code reads k contiguous rows. k is a
//! parameter of [`SparseEncoder::encode`], not of the model: a model trained at one k can
//! encode at another (adaptive length).

pub mod codes;
mod linalg;
pub mod loss;
pub mod scoring;
pub mod train;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::base::SparseCode;

/// Model file names inside an encoder folder.
pub const CONFIG_FILE: &str = "config.json";
/// Weights file inside an encoder folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Training log inside an encoder folder: one JSON line per epoch ([`train::EpochLog`]).
pub const TRAIN_LOG_FILE: &str = "train-log.jsonl";
/// Training wall time inside an encoder folder, seconds as text.
pub const TRAIN_SECONDS_FILE: &str = "train-seconds.txt";

/// Encoder folders, as [`crate::io::write_dir_atomic`] knows them: one written before
/// folders carried a marker is recognised by a config that reads as an encoder's.
pub const FOLDER: crate::io::FolderKind = crate::io::FolderKind {
    name: "encoder",
    legacy: |dir| {
        crate::io::read_json_checked::<EncoderConfig>(&dir.join(CONFIG_FILE), "encoder config")
            .is_ok()
    },
};

/// Checks that `k` active latents fit a code of `hidden` latents: 1 ≤ k ≤ hidden.
pub fn check_k(k: usize, hidden: usize) -> Result<()> {
    if k == 0 {
        bail!("k = 0 is not allowed: a code has at least 1 active latent");
    }
    if k > hidden {
        bail!("k = {k} is larger than the width {hidden}: a code cannot have more active latents than the encoder has");
    }
    Ok(())
}

/// SHA-256 of a weights file's bytes, as hex.
fn weights_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// The trained parameters of a K-sparse autoencoder.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseEncoder {
    /// Input (dense embedding) dimension d.
    pub dim: usize,
    /// Number of latents h.
    pub hidden: usize,
    /// Encoder weights, hidden × dim, row-major.
    pub w_enc: Vec<f32>,
    /// Encoder bias, hidden.
    pub b_enc: Vec<f32>,
    /// Decoder weights transposed, hidden × dim: row j is latent j's unit-norm atom.
    pub w_dec: Vec<f32>,
    /// Pre-encoder bias, subtracted before encoding and added back after decoding, dim.
    pub b_pre: Vec<f32>,
}

impl SparseEncoder {
    /// Checks that every parameter has the size its dimensions imply and is finite.
    pub fn validate(&self) -> Result<()> {
        let (d, h) = (self.dim, self.hidden);
        for (name, v, want) in [
            ("w_enc", &self.w_enc, h * d),
            ("b_enc", &self.b_enc, h),
            ("w_dec", &self.w_dec, h * d),
            ("b_pre", &self.b_pre, d),
        ] {
            if v.len() != want {
                bail!(
                    "{name} has {} values, expected {want} for dim {d}, hidden {h}",
                    v.len()
                );
            }
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                bail!("{name}[{i}] is NaN or infinite");
            }
        }
        Ok(())
    }

    /// Pre-activations of `n` row-major inputs: n × hidden.
    pub fn pre_activations(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut pre = Vec::new();
        self.pre_activations_into(&linalg::sub_rows(x, n, &self.b_pre), n, &mut pre);
        pre
    }

    /// Pre-activations of inputs that already had `b_pre` subtracted, into `pre`
    /// (training reuses both buffers from step to step).
    pub(crate) fn pre_activations_into(&self, centred: &[f32], n: usize, pre: &mut Vec<f32>) {
        linalg::matmul_bt_into(centred, n, self.dim, &self.w_enc, self.hidden, pre);
        pre.par_chunks_mut(self.hidden)
            .for_each(|row| row.iter_mut().zip(&self.b_enc).for_each(|(p, b)| *p += b));
    }

    /// Sparse codes of `n` row-major inputs with at most `k` non-zeros each.
    pub fn encode(&self, x: &[f32], n: usize, k: usize) -> Vec<SparseCode> {
        let pre = self.pre_activations(x, n);
        pre.par_chunks(self.hidden)
            .map(|row| SparseCode::top_k_relu(row, k))
            .collect()
    }

    /// The sparse code of one vector.
    pub fn encode_one(&self, x: &[f32], k: usize) -> SparseCode {
        self.encode(x, 1, k).pop().expect("one row")
    }

    /// Reconstruction x̂ = W_dec z + b_pre of one code.
    pub fn decode(&self, code: &SparseCode) -> Vec<f32> {
        let mut out = self.b_pre.clone();
        for (&j, &v) in code.ids.iter().zip(&code.values) {
            linalg::axpy(v, self.atom(j as usize), &mut out);
        }
        out
    }

    /// Decoder column (atom) of latent `j`.
    pub fn atom(&self, j: usize) -> &[f32] {
        &self.w_dec[j * self.dim..(j + 1) * self.dim]
    }

    /// u = W_decᵀ q: the per-latent weights that make `u · z_d` equal `q · (x̂_d − b_pre)`
    /// (the reconstruction scoring mode).
    pub fn latent_weights(&self, q: &[f32]) -> Vec<f32> {
        linalg::matmul_bt(q, 1, self.dim, &self.w_dec, self.hidden)
    }

    /// Writes `config.json` (with `meta`, the weights' SHA-256 and its own checksum) and
    /// `model.safetensors` into `dir`, each atomically.
    pub fn save(&self, dir: &Path, meta: &EncoderConfig) -> Result<()> {
        self.validate()?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let shapes = [
            ("w_enc", &self.w_enc, vec![self.hidden, self.dim]),
            ("b_enc", &self.b_enc, vec![self.hidden]),
            ("w_dec", &self.w_dec, vec![self.hidden, self.dim]),
            ("b_pre", &self.b_pre, vec![self.dim]),
        ];
        let bytes: Vec<(&str, Vec<u8>, Vec<usize>)> = shapes
            .iter()
            .map(|(n, v, s)| {
                (
                    *n,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    s.clone(),
                )
            })
            .collect();
        let views: Vec<(&str, safetensors::tensor::TensorView)> = bytes
            .iter()
            .map(|(n, b, s)| {
                Ok((
                    *n,
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)?,
                ))
            })
            .collect::<Result<_>>()?;
        let blob = safetensors::serialize(views, None)?;
        crate::io::write_atomic(&dir.join(WEIGHTS_FILE), |w| {
            Ok(std::io::Write::write_all(w, &blob)?)
        })?;
        let meta = EncoderConfig {
            weights_sha256: Some(weights_sha256(&blob)),
            ..meta.clone()
        };
        crate::io::write_json_checked(&dir.join(CONFIG_FILE), &meta)
    }

    /// Loads an encoder folder, verifying the config's checksum, the weights against the
    /// SHA-256 the config records, and the config's dimensions against the weights.
    pub fn load(dir: &Path) -> Result<(Self, EncoderConfig)> {
        let config: EncoderConfig =
            crate::io::read_json_checked(&dir.join(CONFIG_FILE), "encoder config")?;
        let weights_path = dir.join(WEIGHTS_FILE);
        let blob = std::fs::read(&weights_path)
            .map_err(|e| crate::io::IoError::at(&weights_path, "cannot read", e))?;
        Self::from_parts(&config, &blob, &weights_path).map(|enc| (enc, config))
    }

    /// The encoder of `config` from the bytes of its weights file (`weights_path` names
    /// it in errors): the SHA-256 recorded in the config is checked first (configs
    /// written before it was recorded have none), then tensor names, shapes and values.
    pub fn from_parts(config: &EncoderConfig, blob: &[u8], weights_path: &Path) -> Result<Self> {
        if let Some(want) = &config.weights_sha256 {
            let got = weights_sha256(blob);
            if *want != got {
                bail!(
                    "{}: SHA-256 {got} does not match the {want} recorded in {CONFIG_FILE}: the weights were damaged or replaced",
                    weights_path.display()
                );
            }
        }
        let (d, h) = (config.dim, config.hidden);
        let max = crate::base::MAX_HIDDEN;
        if d == 0
            || h == 0
            || h > max
            || d > max
            || h.checked_mul(d).is_none_or(|n| n > blob.len() / 4)
        {
            bail!(
                "{}: dimensions {d} × {h} do not fit its {} bytes",
                weights_path.display(),
                blob.len()
            );
        }
        let tensors = safetensors::SafeTensors::deserialize(blob).with_context(|| {
            format!(
                "{}: corrupt or truncated safetensors file",
                weights_path.display()
            )
        })?;
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = tensors
                .tensor(name)
                .with_context(|| format!("{}: tensor {name} missing", weights_path.display()))?;
            if t.dtype() != safetensors::Dtype::F32 || t.shape() != shape {
                bail!(
                    "{}: tensor {name} is {:?} {:?}, expected F32 {shape:?}",
                    weights_path.display(),
                    t.dtype(),
                    t.shape()
                );
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let enc = Self {
            dim: d,
            hidden: h,
            w_enc: get("w_enc", &[h, d])?,
            b_enc: get("b_enc", &[h])?,
            w_dec: get("w_dec", &[h, d])?,
            b_pre: get("b_pre", &[d])?,
        };
        enc.validate()
            .with_context(|| format!("{}: invalid weights", weights_path.display()))?;
        Ok(enc)
    }
}

/// `config.json` of an encoder folder: dimensions, training settings and data statistics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EncoderConfig {
    /// ksparse version that wrote the folder.
    pub version: String,
    /// Input dimension.
    pub dim: usize,
    /// Number of latents.
    pub hidden: usize,
    /// k the encoder was trained for (the default k at encode time).
    pub k: usize,
    /// Loss weights and optimiser settings used for training.
    pub training: train::TrainConfig,
    /// Statistics of the training data.
    pub data: DataStats,
    /// Free-form provenance (input files and their row counts).
    #[serde(default)]
    pub sources: HashMap<String, usize>,
    /// SHA-256 of `model.safetensors`, filled in by [`SparseEncoder::save`] and checked by
    /// [`SparseEncoder::load`] (absent in folders written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_sha256: Option<String>,
}

/// Statistics of the training vectors.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DataStats {
    /// Training rows.
    pub train_rows: usize,
    /// Validation rows.
    pub validation_rows: usize,
    /// Mean squared distance to the mean vector (the MSE normaliser).
    pub variance: f64,
    /// Mean L2 norm of the vectors.
    pub mean_norm: f64,
}

/// Width of the sparse layer: a number of latents, or a multiple of the input dimension
/// written like `4d` (the papers give widths as multiples of d).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hidden {
    /// This many latents.
    Latents(usize),
    /// This multiple of the input dimension.
    TimesDim(usize),
}

impl Hidden {
    /// The number of latents for `dim`-d inputs.
    pub fn resolve(self, dim: usize) -> usize {
        match self {
            Self::Latents(h) => h,
            Self::TimesDim(m) => m * dim,
        }
    }
}

impl std::str::FromStr for Hidden {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || {
            format!("{s:?} is not a width: give a number of latents (1536) or a multiple of d (4d)")
        };
        match s.strip_suffix('d') {
            Some(m) => m.parse().map(Self::TimesDim).map_err(|_| bad()),
            None => s.parse().map(Self::Latents).map_err(|_| bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(dir: &Path) -> SparseEncoder {
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        let enc = train::init_encoder(8, 32, vec![0.1; 8], &mut rng);
        let config = EncoderConfig {
            version: "test".into(),
            dim: 8,
            hidden: 32,
            k: 4,
            training: train::TrainConfig::default(),
            data: DataStats::default(),
            sources: HashMap::new(),
            weights_sha256: None,
        };
        enc.save(dir, &config).unwrap();
        enc
    }

    #[test]
    fn k_must_fit_the_width() {
        assert!(check_k(1, 1).is_ok() && check_k(32, 1536).is_ok());
        let e = check_k(0, 8).unwrap_err().to_string();
        assert!(e.contains("k = 0"), "{e}");
        let e = check_k(9, 8).unwrap_err().to_string();
        assert!(
            e.contains("k = 9") && e.contains("larger than the width 8"),
            "{e}"
        );
    }

    #[test]
    fn damaged_weights_or_config_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let enc = saved(dir.path());
        assert_eq!(SparseEncoder::load(dir.path()).unwrap().0, enc);
        let weights = dir.path().join(WEIGHTS_FILE);
        let good = std::fs::read(&weights).unwrap();
        // A flipped bit in a weight value: still valid safetensors, other codes.
        let mut bad = good.clone();
        let last = bad.len() - 3;
        bad[last] ^= 0x10;
        std::fs::write(&weights, &bad).unwrap();
        let err = format!("{:#}", SparseEncoder::load(dir.path()).unwrap_err());
        assert!(
            err.contains("SHA-256") && err.contains("model.safetensors"),
            "{err}"
        );
        std::fs::write(&weights, &good).unwrap();
        // An edited config: the checksum no longer matches.
        let config = dir.path().join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, text.replace("\"k\": 4", "\"k\": 5")).unwrap();
        let err = format!("{:#}", SparseEncoder::load(dir.path()).unwrap_err());
        assert!(
            err.contains("checksum mismatch") && err.contains("config.json"),
            "{err}"
        );
    }
}
