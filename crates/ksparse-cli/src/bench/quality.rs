//! `ksparse bench quality`: the encoder quality table. For each BEIR dataset: dense exact
//! search as the reference row, then one encoder trained on the corpus per width × loss ×
//! k, each evaluated in every scoring mode (NDCG@10, Recall@100, MRR@10 on one split).
//! Where the dataset has training qrels, each loss is also trained with InfoNCE on
//! (training query, relevant document) pairs and reported as supervised.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use ndarray::Array2;
use serde::Serialize;

use ksparse::base::stopwatch::timed;
use ksparse::data::{read_qrels, Dataset};
use ksparse::encoder::loss::LossWeights;
use ksparse::encoder::scoring::{mode_family, ModeSpec, ScoringMode};
use ksparse::encoder::train::{train, Pairs, TrainConfig};
use ksparse::encoder::{check_k, Hidden};
use ksparse::eval::{dense_exact, sparse_exact_modes, Metrics, Scorer};
use ksparse::pipeline::{Progress, Stage};

/// A named combination of loss terms (the columns of the papers' ablations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossPreset {
    /// Reconstruction MSE at k only.
    Mse,
    /// MSE + Dobrynin's relative-distance loss.
    MseDist,
    /// CSR's reconstruction losses: MSE + Multi-TopK (4k, 1/8) + AuxK (1/32).
    Csr,
    /// CSR + L_dist (the training default).
    CsrDist,
}

impl LossPreset {
    /// The loss weights of this preset (terms not in it at 0, the others at their defaults).
    pub fn weights(self) -> LossWeights {
        let d = LossWeights::default();
        let (csr, dist) = match self {
            Self::Mse => (false, false),
            Self::MseDist => (false, true),
            Self::Csr => (true, false),
            Self::CsrDist => (true, true),
        };
        LossWeights {
            multi: if csr { d.multi } else { 0.0 },
            aux: if csr { d.aux } else { 0.0 },
            dist: if dist { d.dist } else { 0.0 },
            nce: 0.0,
            ..d
        }
    }
}

impl std::str::FromStr for LossPreset {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "mse" => Ok(Self::Mse),
            "mse+dist" => Ok(Self::MseDist),
            "csr" => Ok(Self::Csr),
            "csr+dist" => Ok(Self::CsrDist),
            _ => Err(format!(
                "unknown loss {s:?}: use mse, mse+dist, csr or csr+dist"
            )),
        }
    }
}

impl std::fmt::Display for LossPreset {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            Self::Mse => "mse",
            Self::MseDist => "mse+dist",
            Self::Csr => "csr",
            Self::CsrDist => "csr+dist",
        })
    }
}

/// What to run.
pub struct Options {
    /// BEIR-layout dataset folders.
    pub datasets: Vec<PathBuf>,
    /// The qrels split that is evaluated (e.g. `test`).
    pub split: String,
    /// Code lengths.
    pub ks: Vec<usize>,
    /// Widths.
    pub hidden: Vec<Hidden>,
    /// Loss combinations.
    pub losses: Vec<LossPreset>,
    /// Scoring modes.
    pub modes: Vec<ModeSpec>,
    /// InfoNCE weight for the supervised rows (0 = no supervised rows).
    pub nce: f32,
    /// Everything else about training (epochs, learning rate, seed, noise, …).
    pub train: TrainConfig,
}

/// Dense vectors of one dataset: corpus, evaluated queries, and training queries when
/// the dataset has `qrels/train.tsv`.
pub struct Vectors {
    /// Corpus rows, in the dataset's corpus order.
    pub corpus: Array2<f32>,
    /// Rows of the evaluated split's queries.
    pub queries: Array2<f32>,
    /// Training queries (ids, rows) for InfoNCE pairs.
    pub train_queries: Option<(Vec<String>, Array2<f32>)>,
}

/// Dense exact search on one dataset (the reference row).
#[derive(Debug, Serialize)]
pub struct DenseRow {
    /// Dataset folder name.
    pub dataset: String,
    /// Mean metrics over the split's queries.
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// One sparse configuration on one dataset.
#[derive(Debug, Serialize)]
pub struct SparseRow {
    /// Dataset folder name.
    pub dataset: String,
    /// Latents.
    pub hidden: usize,
    /// Active latents per document code.
    pub k: usize,
    /// Loss combination.
    pub loss: String,
    /// Whether InfoNCE on training pairs was used (supervised).
    pub supervised: bool,
    /// Scoring mode, with m resolved.
    pub mode: String,
    /// Mean metrics over the split's queries.
    #[serde(flatten)]
    pub metrics: Metrics,
    /// Encoder training wall time, seconds.
    pub train_s: f64,
}

/// The whole table.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Embedding model.
    pub model: String,
    /// Evaluated split.
    pub split: String,
    /// Training epochs of every encoder.
    pub epochs: usize,
    /// Dense reference rows.
    pub dense: Vec<DenseRow>,
    /// How the sparse rows were scored: the encoder's f32 codes, exactly, in memory (the
    /// on-disk index's one-byte weights are `ksparse eval`'s table).
    pub scorer: Scorer,
    /// Sparse rows.
    pub sparse: Vec<SparseRow>,
}

/// Runs the table. `vectors(dataset, train_query_ids)` supplies each dataset's dense
/// vectors (the caller embeds, with a cache); `on_row` sees each row as it is measured;
/// `progress` follows each encoder's training.
pub fn run(
    model: &str,
    opts: &Options,
    mut vectors: impl FnMut(&Path, &Dataset) -> Result<Vectors>,
    mut on_row: impl FnMut(&SparseRow),
    progress: &impl Progress,
) -> Result<Report> {
    if opts.ks.is_empty()
        || opts.hidden.is_empty()
        || opts.losses.is_empty()
        || opts.modes.is_empty()
    {
        bail!("give at least one k, width, loss and mode");
    }
    let mut report = Report {
        model: model.to_string(),
        split: opts.split.clone(),
        epochs: opts.train.epochs,
        dense: Vec::new(),
        scorer: Scorer::ExactF32,
        sparse: Vec::new(),
    };
    for dir in &opts.datasets {
        let name = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let ds = Dataset::load(dir, &opts.split)?;
        let v = vectors(dir, &ds)?;
        let (dense, _) = dense_exact(&ds, v.corpus.clone(), &v.queries, false)?;
        tracing::info!(dataset = %name, ndcg10 = dense.mean.ndcg_at_10, "dense exact");
        report.dense.push(DenseRow {
            dataset: name.clone(),
            metrics: dense.mean,
        });
        let pairs = match (&v.train_queries, opts.nce > 0.0) {
            (Some((ids, rows)), true) => Some(Pairs::from_vectors(
                (rows, ids, "training queries"),
                (&v.corpus, &ds.corpus.ids, "corpus"),
                &read_qrels(&dir.join("qrels/train.tsv"))?,
                "qrels/train.tsv",
            )?),
            _ => None,
        };
        let dim = v.corpus.ncols();
        let corpus = v
            .corpus
            .as_standard_layout()
            .iter()
            .copied()
            .collect::<Vec<f32>>();
        for &hidden in &opts.hidden {
            for &loss in &opts.losses {
                for supervised in [false, true] {
                    if supervised && pairs.is_none() {
                        continue;
                    }
                    for &k in &opts.ks {
                        let h = hidden.resolve(dim);
                        check_k(k, h)?;
                        let mut losses = loss.weights();
                        if supervised {
                            losses.nce = opts.nce;
                        }
                        let cfg = TrainConfig {
                            hidden: h,
                            k,
                            losses,
                            ..opts.train.clone()
                        };
                        let p = if supervised { pairs.as_ref() } else { None };
                        let (trained, train_s) = timed(|| {
                            progress.stage(Stage::train(&cfg, supervised), 0, |report| {
                                train(&corpus, dim, p, &cfg, report, |_| {})
                            })
                        });
                        let (enc, _, _) = trained?;
                        let modes: Vec<ScoringMode> = opts.modes.iter().map(|m| m.at(k)).collect();
                        let evals =
                            sparse_exact_modes(&ds, &v.corpus, &v.queries, &enc, k, &modes, false)?;
                        for (mode, (e, _)) in modes.iter().zip(evals) {
                            let row = SparseRow {
                                dataset: name.clone(),
                                hidden: h,
                                k,
                                loss: loss.to_string(),
                                supervised,
                                mode: mode.to_string(),
                                metrics: e.mean,
                                train_s,
                            };
                            on_row(&row);
                            report.sparse.push(row);
                        }
                    }
                }
            }
        }
    }
    Ok(report)
}

impl Report {
    /// The report as Markdown: per dataset, the dense row, then NDCG@10 with one column
    /// per k, one row per (width, loss, supervision, mode).
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "# ksparse bench quality\n\nModel {}, split `{}`, {} training epochs per encoder. \
             NDCG@10, sparse rows scored by {}; supervised rows used InfoNCE on the training \
             qrels' pairs. Full metrics (Recall@100, MRR@10, training time) are in \
             report.json.\n",
            self.model, self.split, self.epochs, self.scorer
        );
        for dense in &self.dense {
            let rows: Vec<&SparseRow> = self
                .sparse
                .iter()
                .filter(|r| r.dataset == dense.dataset)
                .collect();
            let mut ks: Vec<usize> = rows.iter().map(|r| r.k).collect();
            ks.sort_unstable();
            ks.dedup();
            md += &format!(
                "\n## {}\n\nDense exact: NDCG@10 **{:.4}**, Recall@100 {:.4}, MRR@10 {:.4}.\n\n",
                dense.dataset,
                dense.metrics.ndcg_at_10,
                dense.metrics.recall_at_100,
                dense.metrics.mrr_at_10
            );
            md += "| h | loss | mode |";
            ks.iter().for_each(|k| md += &format!(" k={k} |"));
            md += "\n|---|---|---|";
            ks.iter().for_each(|_| md += "---:|");
            md += "\n";
            let mut keys: Vec<(usize, String, bool, String)> = Vec::new();
            for r in &rows {
                // Modes with m tied to k print differently per k; group them by their spec.
                let key = (
                    r.hidden,
                    r.loss.clone(),
                    r.supervised,
                    mode_family(&r.mode, r.k),
                );
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            for (h, loss, sup, family) in keys {
                let label = if sup {
                    format!("{loss}+nce")
                } else {
                    loss.clone()
                };
                md += &format!("| {h} | {label} | {family} |");
                for &k in &ks {
                    let cell = rows
                        .iter()
                        .find(|r| {
                            r.hidden == h
                                && r.loss == loss
                                && r.supervised == sup
                                && r.k == k
                                && mode_family(&r.mode, r.k) == family
                        })
                        .map_or("–".to_string(), |r| {
                            format!("{:.4}", r.metrics.ndcg_at_10)
                        });
                    md += &format!(" {cell} |");
                }
                md += "\n";
            }
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_switch_terms() {
        assert_eq!(
            "csr+dist".parse::<LossPreset>().unwrap(),
            LossPreset::CsrDist
        );
        let mse = LossPreset::Mse.weights();
        assert_eq!((mse.multi, mse.aux, mse.dist), (0.0, 0.0, 0.0));
        let all = LossPreset::CsrDist.weights();
        assert!(all.multi > 0.0 && all.aux > 0.0 && all.dist > 0.0 && all.nce == 0.0);
        assert!("l1".parse::<LossPreset>().is_err());
    }

    #[test]
    fn modes_follow_k() {
        let m: ModeSpec = "symmetric:4k".parse().unwrap();
        assert_eq!(m.at(32), ScoringMode::Symmetric(Some(128)));
        let p: ModeSpec = "projected:64".parse().unwrap();
        assert_eq!(p.at(16), ScoringMode::Projected(64));
        assert!("symmetric:xk".parse::<ModeSpec>().is_err());
        assert_eq!(mode_family("symmetric:128", 32), "symmetric:4k");
        assert_eq!(mode_family("projected:64", 32), "projected:64");
    }
}
