//! `ksparse train`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use ksparse::encoder::loss::LossWeights;
use ksparse::encoder::train::{TrainConfig, TrainFiles, SUPERVISED_NCE_WEIGHT};
use ksparse::pipeline::train_encoder;

use crate::args::{
    fraction_f32, non_negative_f32, output_hint, positive_f32, positive_usize, EncoderShapeArgs,
};
use crate::output::{print_line, Progress};

#[derive(Args)]
pub struct TrainArgs {
    /// Training vectors (.npy, float32); repeat to concatenate several files.
    #[arg(long, required = true)]
    input: Vec<PathBuf>,
    /// Output encoder folder.
    #[arg(long)]
    output: PathBuf,
    #[command(flatten)]
    shape: EncoderShapeArgs,
    /// Vectors per step.
    #[arg(long, value_parser = positive_usize, default_value_t = 512)]
    batch_size: usize,
    /// Adam learning rate.
    #[arg(long, value_parser = positive_f32, allow_hyphen_values = true, default_value_t = 5e-4)]
    lr: f32,
    /// Seed for initialisation and shuffling (same seed and threads → same model).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of vectors held out for the validation FVU.
    #[arg(long, value_parser = fraction_f32, allow_hyphen_values = true, default_value_t = 0.05)]
    validation_fraction: f32,
    /// Weight of the reconstruction MSE at k (variance-normalised).
    #[arg(long, value_parser = non_negative_f32, allow_hyphen_values = true, default_value_t = 1.0)]
    mse: f32,
    /// Weight of the Multi-TopK reconstruction (CSR: 1/8).
    #[arg(long, value_parser = non_negative_f32, allow_hyphen_values = true, default_value_t = 0.125)]
    multi: f32,
    /// Multi-TopK uses this many times k latents.
    #[arg(long, value_parser = positive_usize, default_value_t = 4)]
    multi_k_factor: usize,
    /// Weight of AuxK, the dead-latent residual loss (1/32).
    #[arg(long, value_parser = non_negative_f32, allow_hyphen_values = true, default_value_t = 0.03125)]
    aux: f32,
    /// Dead latents used by AuxK per vector.
    #[arg(long, value_parser = positive_usize, default_value_t = 512)]
    aux_k: usize,
    /// A latent counts as dead after this many training vectors without firing (default: one epoch).
    #[arg(long, value_parser = positive_usize)]
    dead_after: Option<usize>,
    /// Weight of Dobrynin's relative-distance loss L_dist (1 raised symmetric NDCG@10 on
    /// SciFact's training queries from 0.457 to 0.501 at k = 32 without lowering the others).
    #[arg(long, value_parser = non_negative_f32, allow_hyphen_values = true, default_value_t = 1.0)]
    dist: f32,
    /// Weight of InfoNCE on --pairs (query, relevant document). With --pairs it defaults to
    /// 1, the weight `ksparse eval --supervised` trains its supervised encoders with (0 is
    /// refused: the pairs would be ignored); without --pairs it must be unset or 0.
    #[arg(long, value_parser = non_negative_f32, allow_hyphen_values = true)]
    nce: Option<f32>,
    /// InfoNCE temperature.
    #[arg(long, value_parser = positive_f32, allow_hyphen_values = true, default_value_t = 0.2)]
    temperature: f32,
    /// Training pairs: QUERIES.npy CORPUS.npy QRELS.tsv (ids beside each .npy; training qrels
    /// only), learnt with InfoNCE at weight --nce (default 1 when pairs are given).
    #[arg(long, num_args = 3, value_names = ["QUERIES", "CORPUS", "QRELS"])]
    pairs: Option<Vec<PathBuf>>,
    /// Pairs per step for InfoNCE.
    #[arg(long, value_parser = positive_usize, default_value_t = 256)]
    pair_batch_size: usize,
    /// Start at this k and anneal linearly to --k by 70 % of training.
    #[arg(long, value_parser = positive_usize)]
    k_anneal_from: Option<usize>,
    /// Gaussian noise added to each training vector per step, as a fraction of its norm
    /// (augmentation for small corpora; 0 = off). 0.3 raised symmetric NDCG@10 on SciFact's
    /// training queries from 0.509 to 0.525 (0.15: 0.511, 0.45: 0.523, 0.6: 0.506).
    #[arg(long, value_parser = non_negative_f32, allow_hyphen_values = true, default_value_t = TrainConfig::default().input_noise)]
    input_noise: f32,
}

impl TrainArgs {
    /// The InfoNCE weight: --nce, or the supervised weight when --pairs comes alone.
    fn nce(&self) -> Result<f32> {
        match (self.nce, self.pairs.is_some()) {
            (None, true) => {
                tracing::info!(
                    "--pairs without --nce: InfoNCE weight {SUPERVISED_NCE_WEIGHT}, as for the supervised encoders of `ksparse eval --supervised`"
                );
                Ok(SUPERVISED_NCE_WEIGHT)
            }
            (Some(0.0), true) => anyhow::bail!(
                "pairs given but InfoNCE weight 0 (--nce 0): they would be ignored; give --nce > 0 or drop --pairs"
            ),
            (Some(w), false) if w > 0.0 => {
                anyhow::bail!("--nce {w} needs training pairs: --pairs QUERIES CORPUS QRELS")
            }
            (w, _) => Ok(w.unwrap_or(0.0)),
        }
    }

    /// The training settings for `dim`-d vectors with InfoNCE weight `nce`.
    fn config(&self, dim: usize, nce: f32) -> TrainConfig {
        TrainConfig {
            hidden: self.shape.hidden.resolve(dim),
            k: self.shape.k,
            losses: LossWeights {
                mse: self.mse,
                multi: self.multi,
                multi_k_factor: self.multi_k_factor,
                aux: self.aux,
                aux_k: self.aux_k,
                dist: self.dist,
                nce,
                temperature: self.temperature,
                ..LossWeights::default()
            },
            epochs: self.shape.epochs,
            batch_size: self.batch_size,
            pair_batch_size: self.pair_batch_size,
            learning_rate: self.lr,
            seed: self.seed,
            validation_fraction: self.validation_fraction,
            k_anneal_from: self.k_anneal_from,
            dead_after: self.dead_after,
            input_noise: self.input_noise,
        }
    }
}

pub fn run(a: TrainArgs) -> Result<()> {
    let nce = a.nce()?;
    let pairs = a.pairs.as_deref().map(|p| [&*p[0], &*p[1], &*p[2]]);
    let files = TrainFiles::read(&a.input, pairs)?;
    let config = a.config(files.vectors.ncols(), nce);
    let progress = Progress::new();
    let trained = train_encoder(&a.output, &files.data(), &config, &progress, |e| {
        progress.suspend(|| {
            tracing::info!(epoch = e.epoch, k = e.k, mse = %format!("{:.4}", e.train.mse), multi = %format!("{:.4}", e.train.multi), aux = %format!("{:.4}", e.train.aux), dist = %format!("{:.4}", e.train.dist), nce = %format!("{:.4}", e.train.nce), val_fvu = %format!("{:.4}", e.validation_fvu), dead = %format!("{:.3}", e.dead_fraction), secs = %format!("{:.1}", e.seconds), "epoch")
        })
    })
    .map_err(|e| output_hint(e, &a.output, "--output"))?;
    let last = trained.log.last().context("no epoch ran")?;
    print_line(&serde_json::to_string(
        &serde_json::json!({ "output": a.output, "validation_fvu": last.validation_fvu, "dead_fraction": last.dead_fraction, "hidden": config.hidden, "k": config.k }),
    )?)
}
