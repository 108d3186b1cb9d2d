//! Training loop: Adam over shuffled mini-batches, decoder atoms kept at unit norm,
//! dead-latent tracking for AuxK, optional k-annealing and InfoNCE pairs.
//!
//! Deterministic for a given seed: the shuffles come from a seeded ChaCha generator and
//! every gradient reduction runs in a fixed order (see `loss::backward`).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ndarray::{Array2, ArrayView2};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::loss::{step, Batch, Grads, LossValues, LossWeights, Workspace};
use super::{DataStats, EncoderConfig, SparseEncoder, FOLDER, TRAIN_LOG_FILE, TRAIN_SECONDS_FILE};
use crate::base::stopwatch::timed;
use crate::base::{dot, MAX_HIDDEN};
use crate::data::{read_qrels, Qrels};
use crate::io::dir::check_output;
use crate::io::{read_ids, read_npy, write_atomic, write_dir_atomic};

/// Everything that defines a training run (saved in the encoder's `config.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    /// Number of latents h.
    pub hidden: usize,
    /// Active latents per code.
    pub k: usize,
    /// Loss weights.
    pub losses: LossWeights,
    /// Passes over the training rows.
    pub epochs: usize,
    /// Reconstruction rows per step.
    pub batch_size: usize,
    /// (query, document) pairs per step when pairs are given.
    pub pair_batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f32,
    /// Seed of initialisation and shuffling.
    pub seed: u64,
    /// Fraction of rows held out to measure validation FVU.
    pub validation_fraction: f32,
    /// k at the first step, decreased linearly to `k` by 70 % of training (None = constant k).
    pub k_anneal_from: Option<usize>,
    /// A latent is dead after this many training rows without firing (None = one epoch).
    pub dead_after: Option<usize>,
    /// Augmentation: each training row is seen as x + ε with ε ~ N(0, (σ‖x‖)²/d · I),
    /// σ = this value (noise norm relative to the row's norm; 0 = off). A fresh draw per
    /// step: a small corpus then covers the space around each vector, which is where
    /// queries fall, instead of being memorised.
    #[serde(default)]
    pub input_noise: f32,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            hidden: 1536,
            k: 32,
            losses: LossWeights::default(),
            epochs: 100,
            batch_size: 512,
            pair_batch_size: 256,
            learning_rate: 5e-4,
            seed: 0,
            validation_fraction: 0.05,
            k_anneal_from: None,
            dead_after: None,
            input_noise: 0.3,
        }
    }
}

/// InfoNCE weight on pseudo-query pairs ([`crate::data::pseudo_queries`]) in the
/// ablation (on SciFact's training queries it lowered symmetric NDCG@10 from 0.546 to
/// 0.519, so no default uses it).
pub const PSEUDO_NCE_WEIGHT: f32 = 0.25;

/// Weight of the dense teacher's KL on pseudo-query pairs, the default label-free signal
/// of `ksparse build` and `ksparse eval` (chosen on SciFact's training queries).
pub const PSEUDO_DISTILL_WEIGHT: f32 = 1.0;

/// InfoNCE weight of supervised encoders: `ksparse eval --supervised`, the supervised rows
/// of `ksparse bench quality`, and `ksparse train --pairs` without `--nce`.
pub const SUPERVISED_NCE_WEIGHT: f32 = 1.0;

impl TrainConfig {
    /// Checks every setting, naming the field: sizes at least 1, k within the width, loss
    /// weights finite and ≥ 0 with at least one of them > 0, learning rate and temperature
    /// finite and > 0, validation fraction in [0, 1), input noise finite and ≥ 0.
    /// [`train`] calls it first; a setting out of range would otherwise train a silently
    /// wrong encoder (or write `null` into its config.json).
    pub fn validate(&self) -> Result<()> {
        let w = &self.losses;
        if self.hidden == 0 || self.hidden > MAX_HIDDEN {
            bail!(
                "hidden = {} must be between 1 and {MAX_HIDDEN} latents (the widest codes files hold)",
                self.hidden
            );
        }
        super::check_k(self.k, self.hidden)?;
        for (field, v) in [("epochs", self.epochs), ("batch_size", self.batch_size)] {
            if v == 0 {
                bail!("{field} = 0 must be at least 1");
            }
        }
        for (field, v) in [
            ("losses.mse", w.mse),
            ("losses.multi", w.multi),
            ("losses.aux", w.aux),
            ("losses.dist", w.dist),
            ("losses.nce", w.nce),
            ("losses.distill", w.distill),
            ("input_noise", self.input_noise),
        ] {
            if !v.is_finite() || v < 0.0 {
                bail!("{field} = {v} must be a finite number ≥ 0");
            }
        }
        if [w.mse, w.multi, w.aux, w.dist, w.nce, w.distill]
            .iter()
            .all(|&v| v == 0.0)
        {
            bail!("every loss weight (losses.mse, multi, aux, dist, nce, distill) is 0: nothing to train");
        }
        for (field, v) in [
            ("learning_rate", self.learning_rate),
            ("losses.temperature", w.temperature),
            ("losses.teacher_temperature", w.teacher_temperature),
        ] {
            if !v.is_finite() || v <= 0.0 {
                bail!("{field} = {v} must be a finite number > 0");
            }
        }
        if !(0.0..1.0).contains(&self.validation_fraction) {
            bail!(
                "validation_fraction = {} must be in [0, 1)",
                self.validation_fraction
            );
        }
        if w.multi > 0.0
            && (w.multi_k_factor == 0 || self.k.checked_mul(w.multi_k_factor).is_none())
        {
            bail!(
                "losses.multi_k_factor = {} must be at least 1 (and k × it a valid count) when losses.multi > 0",
                w.multi_k_factor
            );
        }
        if w.aux > 0.0 && w.aux_k == 0 {
            bail!("losses.aux_k = 0 must be at least 1 when losses.aux > 0");
        }
        if w.uses_pairs() && self.pair_batch_size == 0 {
            bail!("pair_batch_size = 0 must be at least 1 when losses.nce or losses.distill > 0");
        }
        if let Some(k0) = self.k_anneal_from {
            if k0 < self.k || k0 > self.hidden {
                bail!(
                    "k_anneal_from = {k0} must be between k = {} and hidden = {}",
                    self.k,
                    self.hidden
                );
            }
        }
        if self.dead_after == Some(0) {
            bail!("dead_after = 0 must be at least 1 (every latent would always count as dead)");
        }
        Ok(())
    }
}

/// Training (query, positive document) pairs: row i of `queries` matches row i of `docs`.
pub struct Pairs {
    /// Query vectors, row-major.
    pub queries: Vec<f32>,
    /// Document vectors, row-major.
    pub docs: Vec<f32>,
}

impl Pairs {
    /// SHA-256 of the pairs' vectors: identifies them (their texts and judgements) in the
    /// encoder cache.
    pub fn key(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for v in self.queries.iter().chain(&self.docs) {
            h.update(v.to_le_bytes());
        }
        format!("{:x}", h.finalize())
    }

    /// Pairs from query and corpus embeddings (each `.npy` with its id list beside it) and a
    /// qrels file: one pair per judgement with a grade ≥ 1. Use training qrels only.
    pub fn from_files(queries: &Path, corpus: &Path, qrels: &Path) -> Result<Self> {
        let q = read_npy(queries)?;
        let c = read_npy(corpus)?;
        let q_ids = read_ids(queries, q.nrows())?;
        let c_ids = read_ids(corpus, c.nrows())?;
        Self::from_vectors(
            (&q, &q_ids, &queries.display().to_string()),
            (&c, &c_ids, &corpus.display().to_string()),
            &read_qrels(qrels)?,
            &qrels.display().to_string(),
        )
    }

    /// Pairs from (vectors, row ids, name for errors) of the queries and of the corpus and
    /// the judgements `judged` (named `qrels_name` in errors): one pair per judgement with
    /// a grade ≥ 1, in sorted (query, document) order.
    pub fn from_vectors(
        (q, q_ids, q_name): (&Array2<f32>, &[String], &str),
        (c, c_ids, c_name): (&Array2<f32>, &[String], &str),
        judged: &Qrels,
        qrels_name: &str,
    ) -> Result<Self> {
        if q.ncols() != c.ncols() {
            bail!(
                "{q_name} is {}-d but {c_name} is {}-d",
                q.ncols(),
                c.ncols()
            );
        }
        let row_of = |ids: &[String]| -> HashMap<String, usize> {
            ids.iter()
                .enumerate()
                .map(|(i, s)| (s.clone(), i))
                .collect()
        };
        let (q_row, c_row) = (row_of(q_ids), row_of(c_ids));
        let mut keys: Vec<(&String, &String)> = judged
            .iter()
            .flat_map(|(q, docs)| {
                docs.iter()
                    .filter(|(_, &g)| g > 0)
                    .map(move |(d, _)| (q, d))
            })
            .collect();
        keys.sort();
        let (mut queries_out, mut docs_out) = (Vec::new(), Vec::new());
        for (qid, did) in keys {
            let qi = *q_row.get(qid).with_context(|| {
                format!("{qrels_name}: query {qid:?} has no vector in {q_name}")
            })?;
            let di = *c_row.get(did).with_context(|| {
                format!("{qrels_name}: document {did:?} has no vector in {c_name}")
            })?;
            queries_out.extend(q.row(qi).iter());
            docs_out.extend(c.row(di).iter());
        }
        if queries_out.is_empty() {
            bail!("{qrels_name}: no relevant (query, document) pairs");
        }
        Ok(Self {
            queries: queries_out,
            docs: docs_out,
        })
    }

    /// Pairs of query row i and corpus row `rows[i]` (pseudo-queries, which name their
    /// documents by row).
    pub fn from_rows(queries: &Array2<f32>, corpus: &Array2<f32>, rows: &[usize]) -> Result<Self> {
        if queries.nrows() != rows.len() || queries.ncols() != corpus.ncols() {
            bail!(
                "{} × {} query vectors for {} documents of {} dimensions",
                queries.nrows(),
                queries.ncols(),
                rows.len(),
                corpus.ncols()
            );
        }
        if let Some(&r) = rows.iter().find(|&&r| r >= corpus.nrows()) {
            bail!(
                "document row {r} is past the corpus's {} rows",
                corpus.nrows()
            );
        }
        if rows.is_empty() {
            bail!("no (query, document) pairs");
        }
        Ok(Self {
            queries: queries.iter().copied().collect(),
            docs: rows.iter().flat_map(|&r| corpus.row(r).to_vec()).collect(),
        })
    }

    /// The pairs of `parts` one after the other (training on several corpora at once).
    pub fn concat<'a>(parts: impl IntoIterator<Item = &'a Pairs>) -> Self {
        let mut all = Self {
            queries: Vec::new(),
            docs: Vec::new(),
        };
        for p in parts {
            all.queries.extend_from_slice(&p.queries);
            all.docs.extend_from_slice(&p.docs);
        }
        all
    }

    /// Number of pairs, given the vector dimension.
    pub fn len(&self, dim: usize) -> usize {
        self.queries.len() / dim.max(1)
    }
}

/// One line of the training log.
#[derive(Debug, Clone, Serialize)]
pub struct EpochLog {
    /// 1-based epoch.
    pub epoch: usize,
    /// k used in the epoch's last step.
    pub k: usize,
    /// Mean of each loss term over the epoch's steps.
    pub train: LossValues,
    /// Fraction of variance unexplained on the validation rows at the final k.
    pub validation_fvu: f64,
    /// Fraction of latents dead at the end of the epoch.
    pub dead_fraction: f64,
    /// Wall time of the epoch, seconds.
    pub seconds: f64,
}

struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Adam {
    const B1: f32 = 0.9;
    const B2: f32 = 0.999;
    const EPS: f32 = 6.25e-10;

    fn new(n: usize) -> Self {
        Self {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    fn update(&mut self, param: &mut [f32], grad: &[f32], lr: f32, t: i32) {
        let c1 = 1.0 - Self::B1.powi(t);
        let c2 = 1.0 - Self::B2.powi(t);
        for (((p, g), m), v) in param.iter_mut().zip(grad).zip(&mut self.m).zip(&mut self.v) {
            *m = Self::B1 * *m + (1.0 - Self::B1) * g;
            *v = Self::B2 * *v + (1.0 - Self::B2) * g * g;
            *p -= lr * (*m / c1) / ((*v / c2).sqrt() + Self::EPS);
        }
    }
}

fn normalize_rows(m: &mut [f32], dim: usize) {
    for row in m.chunks_mut(dim) {
        let n = dot(row, row).sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= n);
    }
}

/// Statistics of `rows` of `data` (the MSE normaliser is `variance`).
pub fn data_stats(data: &[f32], dim: usize, rows: &[usize]) -> (Vec<f32>, DataStats) {
    let n = rows.len().max(1) as f64;
    let mut mean = vec![0.0f64; dim];
    for &r in rows {
        data[r * dim..(r + 1) * dim]
            .iter()
            .zip(&mut mean)
            .for_each(|(x, m)| *m += *x as f64 / n);
    }
    let mut variance = 0.0;
    let mut norm = 0.0;
    for &r in rows {
        let x = &data[r * dim..(r + 1) * dim];
        variance += x
            .iter()
            .zip(&mean)
            .map(|(a, b)| (*a as f64 - b).powi(2))
            .sum::<f64>()
            / n;
        norm += (dot(x, x) as f64).sqrt() / n;
    }
    let median = (0..dim)
        .map(|c| {
            let mut col: Vec<f32> = rows
                .iter()
                .take(20_000)
                .map(|&r| data[r * dim + c])
                .collect();
            let mid = col.len() / 2;
            col.select_nth_unstable_by(mid, f32::total_cmp);
            col[mid]
        })
        .collect();
    (
        median,
        DataStats {
            train_rows: rows.len(),
            validation_rows: 0,
            variance,
            mean_norm: norm,
        },
    )
}

/// Fraction of variance unexplained when `rows` are encoded at `k` and decoded.
pub fn fvu(enc: &SparseEncoder, data: &[f32], rows: &[usize], k: usize, variance: f64) -> f64 {
    if rows.is_empty() {
        return 0.0;
    }
    let d = enc.dim;
    let x: Vec<f32> = rows
        .iter()
        .flat_map(|&r| data[r * d..(r + 1) * d].iter().copied())
        .collect();
    let codes = enc.encode(&x, rows.len(), k);
    let err: f64 = codes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            enc.decode(c)
                .iter()
                .zip(&x[i * d..(i + 1) * d])
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
        })
        .sum();
    err / (rows.len() as f64 * variance)
}

/// Trains an encoder on `data` (rows × dim, row-major). `on_step(done, total)` reports
/// progress after each step. Returns the encoder, the data statistics and the epoch log.
pub fn train(
    data: &[f32],
    dim: usize,
    pairs: Option<&Pairs>,
    cfg: &TrainConfig,
    mut on_step: impl FnMut(usize, usize),
    mut on_epoch: impl FnMut(&EpochLog),
) -> Result<(SparseEncoder, DataStats, Vec<EpochLog>)> {
    if dim == 0 || !data.len().is_multiple_of(dim) {
        bail!(
            "{} training values are not whole rows of dim = {dim}",
            data.len()
        );
    }
    let rows = data.len() / dim;
    if rows < 2 {
        bail!("need at least 2 training vectors, got {rows}");
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        bail!("training row {} holds a NaN or infinite value", i / dim);
    }
    cfg.validate()?;
    if cfg.losses.uses_pairs() && pairs.is_none() {
        bail!(
            "losses.nce = {} and losses.distill = {} but no training pairs were given",
            cfg.losses.nce,
            cfg.losses.distill
        );
    }
    if let Some(p) = pairs {
        if p.queries.len() != p.docs.len() || !p.queries.len().is_multiple_of(dim) {
            bail!(
                "training pairs hold {} query and {} document values, not whole {dim}-d rows of equal count",
                p.queries.len(),
                p.docs.len()
            );
        }
        if p.queries.is_empty() {
            bail!("the training pairs are empty");
        }
        if let Some(i) = p.queries.iter().chain(&p.docs).position(|v| !v.is_finite()) {
            bail!(
                "training pair {} holds a NaN or infinite value",
                (i % p.queries.len()) / dim
            );
        }
        if !cfg.losses.uses_pairs() {
            bail!("training pairs were given but losses.nce = losses.distill = 0, so they would be ignored");
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..rows).collect();
    order.shuffle(&mut rng);
    let n_val = ((rows as f64 * cfg.validation_fraction as f64).round() as usize).min(rows - 1);
    let (val_rows, train_rows) = order.split_at(n_val);
    let mut train_rows = train_rows.to_vec();
    let (median, mut stats) = data_stats(data, dim, &train_rows);
    stats.validation_rows = n_val;
    let variance = stats.variance.max(1e-12) as f32;

    let h = cfg.hidden;
    let mut enc = init_encoder(dim, h, median, &mut rng);
    let mut optimizer = Optimizer::new(dim, h, cfg.learning_rate);
    let mut workspace = Workspace::default();

    let steps_per_epoch = train_rows.len().div_ceil(cfg.batch_size);
    let total_steps = steps_per_epoch * cfg.epochs;
    let dead_after = cfg.dead_after.unwrap_or(train_rows.len());
    let mut since_fired = vec![0usize; h];
    let n_pairs = pairs.map_or(0, |p| p.queries.len() / dim);
    let mut pair_order: Vec<usize> = (0..n_pairs).collect();
    let mut pair_cursor = n_pairs;
    let mut log = Vec::new();
    let mut t = 0usize;
    let mut k_now = cfg.k;
    for epoch in 1..=cfg.epochs {
        let start = Instant::now();
        train_rows.shuffle(&mut rng);
        let mut sum = LossValues::default();
        for chunk in train_rows.chunks(cfg.batch_size) {
            k_now = match cfg.k_anneal_from {
                Some(k0) if k0 > cfg.k => {
                    let frac = (t as f64 / (0.7 * total_steps as f64)).min(1.0);
                    (k0 as f64 - frac * (k0 - cfg.k) as f64).round() as usize
                }
                _ => cfg.k,
            };
            let mut x: Vec<f32> = chunk
                .iter()
                .flat_map(|&r| data[r * dim..(r + 1) * dim].iter().copied())
                .collect();
            if cfg.input_noise > 0.0 {
                add_noise(&mut x, dim, cfg.input_noise, &mut rng);
            }
            let mut p = 0;
            if let (Some(pairs), true) = (pairs, cfg.losses.uses_pairs()) {
                p = cfg.pair_batch_size.min(n_pairs);
                let mut picked = Vec::with_capacity(p);
                while picked.len() < p {
                    if pair_cursor == n_pairs {
                        pair_order.shuffle(&mut rng);
                        pair_cursor = 0;
                    }
                    picked.push(pair_order[pair_cursor]);
                    pair_cursor += 1;
                }
                for src in [&pairs.queries, &pairs.docs] {
                    picked
                        .iter()
                        .for_each(|&i| x.extend_from_slice(&src[i * dim..(i + 1) * dim]));
                }
            }
            let dead: Vec<bool> = since_fired.iter().map(|&s| s >= dead_after).collect();
            let batch = Batch {
                x: &x,
                recon: chunk.len(),
                pairs: p,
            };
            let result = step(
                &enc,
                &batch,
                k_now,
                &cfg.losses,
                variance,
                Some(&dead),
                &mut workspace,
            );
            since_fired.iter_mut().for_each(|s| *s += chunk.len());
            result
                .fired
                .iter()
                .for_each(|&j| since_fired[j as usize] = 0);
            t += 1;
            optimizer.apply(&mut enc, &mut workspace.grads);
            let l = result.loss;
            for (acc, v) in [
                (&mut sum.mse, l.mse),
                (&mut sum.multi, l.multi),
                (&mut sum.aux, l.aux),
                (&mut sum.dist, l.dist),
                (&mut sum.nce, l.nce),
                (&mut sum.distill, l.distill),
                (&mut sum.total, l.total),
            ] {
                *acc += v / steps_per_epoch as f64;
            }
            on_step(t, total_steps);
        }
        let entry = EpochLog {
            epoch,
            k: k_now,
            train: sum,
            validation_fvu: fvu(&enc, data, val_rows, cfg.k, stats.variance),
            dead_fraction: since_fired.iter().filter(|&&s| s >= dead_after).count() as f64
                / h as f64,
            seconds: start.elapsed().as_secs_f64(),
        };
        on_epoch(&entry);
        log.push(entry);
    }
    if let Some(i) = enc
        .w_enc
        .iter()
        .chain(&enc.w_dec)
        .position(|v| !v.is_finite())
    {
        bail!("training diverged (non-finite weight at {i}); lower the learning rate");
    }
    Ok((enc, stats, log))
}

/// What an encoder is trained on.
pub struct TrainData<'a> {
    /// Training vectors, one per row.
    pub vectors: ArrayView2<'a, f32>,
    /// (query, relevant document) pairs for InfoNCE, if any.
    pub pairs: Option<&'a Pairs>,
    /// Where the vectors came from (a file or data set, and the rows it gave), recorded in
    /// the encoder's config.
    pub sources: HashMap<String, usize>,
}

/// Training vectors and pairs read from files (see [`TrainFiles::read`]).
pub struct TrainFiles {
    /// The vectors of every file, concatenated in order.
    pub vectors: Array2<f32>,
    /// The training pairs, if any.
    pub pairs: Option<Pairs>,
    /// Each file and its rows.
    pub sources: HashMap<String, usize>,
}

impl TrainFiles {
    /// Reads the training vectors of `inputs` (`.npy` files of one dimension, none empty)
    /// and, when given, the pairs of (query `.npy`, corpus `.npy`, qrels file), as
    /// [`Pairs::from_files`] reads them.
    pub fn read(inputs: &[PathBuf], pairs: Option<[&Path; 3]>) -> Result<Self> {
        let mut data = Vec::new();
        let mut dim = None;
        let mut sources = HashMap::new();
        for path in inputs {
            let m = read_npy(path)?;
            if m.nrows() == 0 {
                bail!("{} holds no vectors", path.display());
            }
            let first = *dim.get_or_insert(m.ncols());
            if first != m.ncols() {
                bail!(
                    "{} is {}-d but the first input is {first}-d",
                    path.display(),
                    m.ncols()
                );
            }
            sources.insert(path.display().to_string(), m.nrows());
            data.extend(m.as_standard_layout().iter());
        }
        let dim = dim.context("no training vectors: give at least one .npy file")?;
        let vectors = Array2::from_shape_vec((data.len() / dim, dim), data)?;
        let pairs = pairs
            .map(|[queries, corpus, qrels]| Pairs::from_files(queries, corpus, qrels))
            .transpose()?;
        if let Some(p) = &pairs {
            if !p.queries.len().is_multiple_of(dim) {
                bail!("pair vectors are not {dim}-d like the training vectors");
            }
            tracing::info!(pairs = p.len(dim), "training pairs loaded");
        }
        Ok(Self {
            vectors,
            pairs,
            sources,
        })
    }

    /// The files' data, to train on.
    pub fn data(&self) -> TrainData<'_> {
        TrainData {
            vectors: self.vectors.view(),
            pairs: self.pairs.as_ref(),
            sources: self.sources.clone(),
        }
    }
}

/// A trained encoder with what its folder records.
pub struct Trained {
    /// The encoder.
    pub encoder: SparseEncoder,
    /// Its `config.json` (without the weights' SHA-256, which saving adds).
    pub config: EncoderConfig,
    /// One entry per epoch.
    pub log: Vec<EpochLog>,
    /// Training wall time, seconds.
    pub seconds: f64,
}

/// Trains an encoder on `data` under `cfg` (see [`train`] for `on_step` and `on_epoch`)
/// and writes it as the encoder folder `output`, atomically: `config.json`,
/// `model.safetensors`, `train-log.jsonl` (one line per epoch) and `train-seconds.txt`
/// (the training wall time). An existing `output` that is not an encoder folder is
/// refused before training starts.
pub fn train_folder(
    output: &Path,
    data: &TrainData,
    cfg: &TrainConfig,
    on_step: impl FnMut(usize, usize),
    on_epoch: impl FnMut(&EpochLog),
) -> Result<Trained> {
    check_output(output, &FOLDER)?;
    let vectors = data.vectors.as_standard_layout();
    let (trained, seconds) = timed(|| {
        train(
            vectors.as_slice().expect("standard layout"),
            vectors.ncols(),
            data.pairs,
            cfg,
            on_step,
            on_epoch,
        )
    });
    let (encoder, stats, log) = trained?;
    let config = EncoderConfig {
        version: env!("CARGO_PKG_VERSION").to_string(),
        dim: encoder.dim,
        hidden: encoder.hidden,
        k: cfg.k,
        training: cfg.clone(),
        data: stats,
        sources: data.sources.clone(),
        weights_sha256: None,
    };
    write_dir_atomic(output, &FOLDER, |dir| {
        encoder.save(dir, &config)?;
        write_atomic(&dir.join(TRAIN_LOG_FILE), |w| {
            for e in &log {
                serde_json::to_writer(&mut *w, e)?;
                w.write_all(b"\n")?;
            }
            Ok(())
        })?;
        write_atomic(&dir.join(TRAIN_SECONDS_FILE), |w| {
            Ok(w.write_all(seconds.to_string().as_bytes())?)
        })
    })?;
    Ok(Trained {
        encoder,
        config,
        log,
        seconds,
    })
}

/// The training wall time an encoder folder records, seconds (`None` when it records none).
pub fn recorded_seconds(dir: &Path) -> Option<f64> {
    std::fs::read_to_string(dir.join(TRAIN_SECONDS_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
}

/// Adds ε ~ N(0, (σ‖x‖)²/d · I) to each row x of `x` (so ‖ε‖ ≈ σ‖x‖).
pub fn add_noise(x: &mut [f32], dim: usize, sigma: f32, rng: &mut ChaCha8Rng) {
    for row in x.chunks_mut(dim) {
        let scale = sigma * dot(row, row).sqrt() / (dim as f32).sqrt();
        row.iter_mut()
            .for_each(|v| *v += scale * rng.sample::<f32, _>(StandardNormal));
    }
}

/// Adam over all encoder parameters, keeping decoder atoms at unit norm.
pub struct Optimizer {
    adam: [Adam; 4],
    learning_rate: f32,
    t: i32,
}

impl Optimizer {
    /// Zeroed moments for an encoder of `dim` × `hidden`.
    pub fn new(dim: usize, hidden: usize, learning_rate: f32) -> Self {
        Self {
            adam: [
                Adam::new(hidden * dim),
                Adam::new(hidden),
                Adam::new(hidden * dim),
                Adam::new(dim),
            ],
            learning_rate,
            t: 0,
        }
    }

    /// One step: project the decoder gradient off each atom (so the unit-norm constraint
    /// holds to first order), Adam on every parameter, then renormalise the atoms.
    pub fn apply(&mut self, enc: &mut SparseEncoder, g: &mut Grads) {
        self.t += 1;
        let (lr, t, d) = (self.learning_rate, self.t, enc.dim);
        for (gj, aj) in g.w_dec.chunks_mut(d).zip(enc.w_dec.chunks(d)) {
            let along = dot(gj, aj);
            gj.iter_mut().zip(aj).for_each(|(g, a)| *g -= along * a);
        }
        self.adam[0].update(&mut enc.w_enc, &g.w_enc, lr, t);
        self.adam[1].update(&mut enc.b_enc, &g.b_enc, lr, t);
        self.adam[2].update(&mut enc.w_dec, &g.w_dec, lr, t);
        self.adam[3].update(&mut enc.b_pre, &g.b_pre, lr, t);
        normalize_rows(&mut enc.w_dec, d);
    }
}

/// A freshly initialised encoder: random unit-norm atoms, W_enc = W_decᵀ (tied init),
/// b_enc = 0, b_pre = `b_pre`.
pub fn init_encoder(
    dim: usize,
    hidden: usize,
    b_pre: Vec<f32>,
    rng: &mut ChaCha8Rng,
) -> SparseEncoder {
    let mut w_dec: Vec<f32> = (0..hidden * dim)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    normalize_rows(&mut w_dec, dim);
    SparseEncoder {
        dim,
        hidden,
        w_enc: w_dec.clone(),
        b_enc: vec![0.0; hidden],
        w_dec,
        b_pre,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Data with a planted sparse structure: each vector is a sum of 3 of 32 random atoms.
    fn planted(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let atoms: Vec<f32> = (0..32 * d)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        (0..n)
            .flat_map(|_| {
                let mut v = vec![0.0f32; d];
                for _ in 0..3 {
                    let a = rng.random_range(0..32);
                    let w = rng.random_range(0.5f32..1.5);
                    v.iter_mut()
                        .zip(&atoms[a * d..(a + 1) * d])
                        .for_each(|(x, y)| *x += w * y);
                }
                v
            })
            .collect()
    }

    fn small_config() -> TrainConfig {
        TrainConfig {
            hidden: 64,
            k: 4,
            epochs: 30,
            batch_size: 64,
            learning_rate: 3e-3,
            validation_fraction: 0.2,
            ..TrainConfig::default()
        }
    }

    #[test]
    fn training_reconstructs_held_out_vectors() {
        let d = 16;
        let data = planted(2000, d, 3);
        let cfg = small_config();
        let (enc, stats, log) = train(&data, d, None, &cfg, |_, _| {}, |_| {}).unwrap();
        let last = log.last().unwrap();
        assert!(
            last.validation_fvu < 0.2,
            "validation FVU {}",
            last.validation_fvu
        );
        assert!(last.validation_fvu < log[0].validation_fvu);
        assert_eq!(stats.validation_rows, 400);
        for code in enc.encode(&data[..10 * d], 10, cfg.k) {
            assert!(code.len() <= cfg.k);
        }
    }

    #[test]
    fn training_is_deterministic_for_a_seed() {
        let d = 8;
        let data = planted(300, d, 5);
        let cfg = TrainConfig {
            epochs: 3,
            ..small_config()
        };
        let a = train(&data, d, None, &cfg, |_, _| {}, |_| {}).unwrap().0;
        let b = train(&data, d, None, &cfg, |_, _| {}, |_| {}).unwrap().0;
        assert_eq!(a, b);
    }

    #[test]
    fn bad_settings_are_rejected() {
        let data = planted(10, 4, 1);
        let bad_k = TrainConfig {
            k: 100,
            ..small_config()
        };
        assert!(format!(
            "{:#}",
            train(&data, 4, None, &bad_k, |_, _| {}, |_| {}).unwrap_err()
        )
        .contains("k = 100"));
        let nce = TrainConfig {
            losses: LossWeights {
                nce: 1.0,
                ..LossWeights::default()
            },
            ..small_config()
        };
        assert!(format!(
            "{:#}",
            train(&data, 4, None, &nce, |_, _| {}, |_| {}).unwrap_err()
        )
        .contains("losses.nce = 1 and losses.distill = 0 but no training pairs"));
    }

    #[test]
    fn every_setting_is_validated_by_field_name() {
        let data = planted(10, 4, 1);
        let check = |cfg: TrainConfig, field: &str| {
            let e = format!(
                "{:#}",
                train(&data, 4, None, &cfg, |_, _| {}, |_| {}).unwrap_err()
            );
            assert!(e.contains(field) && !e.contains("--"), "{field}: {e}");
            assert!(cfg.validate().is_err());
        };
        let losses = |f: fn(&mut LossWeights)| {
            let mut w = LossWeights::default();
            f(&mut w);
            TrainConfig {
                losses: w,
                ..small_config()
            }
        };
        check(
            TrainConfig {
                input_noise: f32::NAN,
                ..small_config()
            },
            "input_noise = NaN",
        );
        check(
            losses(|w| w.temperature = f32::INFINITY),
            "losses.temperature = inf",
        );
        check(losses(|w| w.temperature = 0.0), "losses.temperature = 0");
        check(losses(|w| w.dist = -1.0), "losses.dist = -1");
        check(losses(|w| w.mse = f32::NAN), "losses.mse");
        check(
            losses(|w| {
                w.mse = 0.0;
                w.multi = 0.0;
                w.aux = 0.0;
                w.dist = 0.0;
            }),
            "every loss weight",
        );
        check(losses(|w| w.multi_k_factor = 0), "losses.multi_k_factor");
        check(losses(|w| w.aux_k = 0), "losses.aux_k");
        check(
            TrainConfig {
                hidden: MAX_HIDDEN + 1,
                ..small_config()
            },
            "hidden = 16777217",
        );
        for lr in [0.0, -1e-3, f32::NAN, f32::INFINITY] {
            check(
                TrainConfig {
                    learning_rate: lr,
                    ..small_config()
                },
                "learning_rate",
            );
        }
        for fraction in [1.0, -0.1, f32::NAN] {
            check(
                TrainConfig {
                    validation_fraction: fraction,
                    ..small_config()
                },
                "validation_fraction",
            );
        }
        check(
            TrainConfig {
                epochs: 0,
                ..small_config()
            },
            "epochs = 0",
        );
        check(
            TrainConfig {
                batch_size: 0,
                ..small_config()
            },
            "batch_size = 0",
        );
        check(
            TrainConfig {
                k_anneal_from: Some(2),
                ..small_config()
            },
            "k_anneal_from = 2",
        );
        check(
            TrainConfig {
                dead_after: Some(0),
                ..small_config()
            },
            "dead_after = 0",
        );
        assert!(small_config().validate().is_ok());
        assert!(TrainConfig::default().validate().is_ok());
    }

    #[test]
    fn train_folder_writes_every_file_of_an_encoder_folder() {
        let d = 8;
        let data = planted(200, d, 4);
        let vectors = Array2::from_shape_vec((200, d), data).unwrap();
        let cfg = TrainConfig {
            epochs: 2,
            ..small_config()
        };
        let dir = tempfile::tempdir().unwrap();
        let train_data = TrainData {
            vectors: vectors.view(),
            pairs: None,
            sources: HashMap::from([("planted".to_string(), 200)]),
        };
        // A folder that is not an encoder's is refused before any training.
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("notes.txt"), "keep").unwrap();
        let mut steps = 0;
        let err = train_folder(&other, &train_data, &cfg, |_, _| steps += 1, |_| {});
        assert!(err.is_err() && steps == 0);

        let out = dir.path().join("enc");
        let trained = train_folder(&out, &train_data, &cfg, |_, _| {}, |_| {}).unwrap();
        let (enc, config) = SparseEncoder::load(&out).unwrap();
        assert_eq!(enc, trained.encoder);
        assert_eq!(config.sources["planted"], 200);
        assert_eq!(
            (config.k, config.hidden, config.dim),
            (cfg.k, cfg.hidden, d)
        );
        let log = std::fs::read_to_string(out.join(TRAIN_LOG_FILE)).unwrap();
        assert_eq!(log.lines().count(), 2);
        assert_eq!(recorded_seconds(&out), Some(trained.seconds));
        std::fs::remove_file(out.join(TRAIN_SECONDS_FILE)).unwrap();
        assert_eq!(recorded_seconds(&out), None);
    }

    #[test]
    fn pairs_need_an_infonce_weight() {
        let d = 4;
        let data = planted(20, d, 2);
        let pairs = Pairs {
            queries: data[..2 * d].to_vec(),
            docs: data[2 * d..4 * d].to_vec(),
        };
        let cfg = TrainConfig {
            epochs: 1,
            ..small_config()
        };
        let e = format!(
            "{:#}",
            train(&data, d, Some(&pairs), &cfg, |_, _| {}, |_| {}).unwrap_err()
        );
        assert!(e.contains("losses.nce = losses.distill = 0"), "{e}");
        let with_nce = TrainConfig {
            losses: LossWeights {
                nce: SUPERVISED_NCE_WEIGHT,
                ..LossWeights::default()
            },
            ..cfg
        };
        assert!(train(&data, d, Some(&pairs), &with_nce, |_, _| {}, |_| {}).is_ok());
        let ragged = Pairs {
            queries: data[..2 * d].to_vec(),
            docs: data[..d].to_vec(),
        };
        assert!(train(&data, d, Some(&ragged), &with_nce, |_, _| {}, |_| {}).is_err());
        // Training rows must be whole rows of `dim` values.
        assert!(train(
            &data[..d * 5 + 1],
            d,
            None,
            &small_config(),
            |_, _| {},
            |_| {}
        )
        .is_err());
    }
}
