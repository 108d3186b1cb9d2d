//! `ksparse bench quality`: the encoder quality table. For each BEIR dataset: dense exact
//! search as the reference row, then one encoder trained on the corpus per width × loss ×
//! k, each evaluated in every scoring mode (NDCG@10, Recall@100, MRR@10 on one split, and
//! NDCG@10's retention against dense), and the mean over datasets. Where the dataset has
//! training qrels, each loss is also trained with InfoNCE on (training query, relevant
//! document) pairs and reported as supervised. At one k (`focus_k`) it adds the ablation of
//! label-free training signals, transfer between corpora (and from their union), and the
//! latency of each mode over a grown on-disk index.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use ndarray::Array2;
use serde::Serialize;

use ksparse::base::stopwatch::{latencies, timed};
use ksparse::data::{read_qrels, Dataset};
use ksparse::embed::int8::Int8Vectors;
use ksparse::encoder::loss::LossWeights;
use ksparse::encoder::scoring::{mode_family, ModeSpec, ScoringMode};
use ksparse::encoder::train::{
    train, Pairs, TrainConfig, PSEUDO_DISTILL_WEIGHT, PSEUDO_NCE_WEIGHT,
};
use ksparse::encoder::{check_k, Hidden, SparseEncoder};
use ksparse::eval::{dense_exact, sparse_exact_modes, Metrics, Scorer};
use ksparse::index::{self, Index};
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

/// Where an encoder's query-shaped training signal comes from, beside the documents'
/// reconstruction (the ablation's rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Documents only: the loss preset's terms.
    Docs,
    /// + InfoNCE on pseudo-query pairs (the pseudo-query's own document as the positive).
    PseudoNce,
    /// + KL to the dense model's scores on pseudo-query pairs.
    PseudoDistill,
    /// + both.
    PseudoNceDistill,
}

impl Signal {
    /// Sets this signal's terms in `w`, at the weights of `p`.
    pub fn apply(self, w: &mut LossWeights, p: &PseudoWeights) {
        let (nce, distill) = match self {
            Self::Docs => (0.0, 0.0),
            Self::PseudoNce => (p.nce, 0.0),
            Self::PseudoDistill => (0.0, p.distill),
            Self::PseudoNceDistill => (p.nce, p.distill),
        };
        w.nce = nce;
        w.distill = distill;
        w.teacher_temperature = p.teacher_temperature;
    }

    /// Whether it trains on pseudo-query pairs.
    pub fn needs_pseudo_queries(self) -> bool {
        self != Self::Docs
    }
}

impl std::str::FromStr for Signal {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "docs" => Ok(Self::Docs),
            "pseudo-nce" => Ok(Self::PseudoNce),
            "pseudo-distill" => Ok(Self::PseudoDistill),
            "pseudo-nce+distill" => Ok(Self::PseudoNceDistill),
            _ => Err(format!(
                "unknown signal {s:?}: use docs, pseudo-nce, pseudo-distill or pseudo-nce+distill"
            )),
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            Self::Docs => "docs",
            Self::PseudoNce => "pseudo-nce",
            Self::PseudoDistill => "pseudo-distill",
            Self::PseudoNceDistill => "pseudo-nce+distill",
        })
    }
}

/// Weights of the pseudo-query terms.
#[derive(Debug, Clone, Copy)]
pub struct PseudoWeights {
    /// InfoNCE.
    pub nce: f32,
    /// KL to the dense teacher.
    pub distill: f32,
    /// The teacher's temperature.
    pub teacher_temperature: f32,
}

impl Default for PseudoWeights {
    fn default() -> Self {
        Self {
            nce: PSEUDO_NCE_WEIGHT,
            distill: PSEUDO_DISTILL_WEIGHT,
            teacher_temperature: LossWeights::default().teacher_temperature,
        }
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
    /// Training signals: the first gives the main table at every k; the others are the
    /// ablation, at `focus_k`.
    pub signals: Vec<Signal>,
    /// Weights of the pseudo-query signals.
    pub pseudo: PseudoWeights,
    /// Scoring modes.
    pub modes: Vec<ModeSpec>,
    /// InfoNCE weight for the supervised rows (0 = no supervised rows).
    pub nce: f32,
    /// The code length of the ablation, transfer and latency rows (default: 32 where it
    /// is among `ks`, else the first of them).
    pub focus_k: Option<usize>,
    /// Also apply each dataset's encoder (at `focus_k`, first signal) to the other
    /// datasets, and train one on the union of their corpora.
    pub transfer: bool,
    /// Collection size of the latency rows (0: none): the first dataset's corpus grown by
    /// [`super::search::generate`], searched by its queries.
    pub latency_docs: usize,
    /// Everything else about training (epochs, learning rate, seed, noise, …).
    pub train: TrainConfig,
}

/// Dense vectors of one dataset: corpus, evaluated queries, training queries when the
/// dataset has `qrels/train.tsv`, and pseudo-queries when a signal needs them.
pub struct Vectors {
    /// Corpus rows, in the dataset's corpus order.
    pub corpus: Array2<f32>,
    /// Rows of the evaluated split's queries.
    pub queries: Array2<f32>,
    /// Training queries (ids, rows) for InfoNCE pairs.
    pub train_queries: Option<(Vec<String>, Array2<f32>)>,
    /// Pseudo-queries cut from the corpus ([`ksparse::data::pseudo_queries`]) and the
    /// corpus row of each.
    pub pseudo_queries: Option<(Array2<f32>, Vec<usize>)>,
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
    /// Training signal beside the documents.
    pub signal: String,
    /// Whether InfoNCE on training pairs was used (supervised).
    pub supervised: bool,
    /// The corpus the encoder was trained on: `self`, another dataset's name, or `union`.
    pub trained_on: String,
    /// Scoring mode, with m resolved.
    pub mode: String,
    /// Mean metrics over the split's queries.
    #[serde(flatten)]
    pub metrics: Metrics,
    /// NDCG@10 as a fraction of dense exact search's on the same queries.
    pub retention: f64,
    /// Encoder training wall time, seconds.
    pub train_s: f64,
}

/// Single-threaded latency of one scoring mode over the on-disk index at `docs` documents.
#[derive(Debug, Serialize)]
pub struct LatencyRow {
    /// Documents in the index.
    pub docs: usize,
    /// Scoring mode.
    pub mode: String,
    /// Median top-10 latency from the dense query vector (query plan, index search,
    /// re-ranking), ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// p50 relative to the first mode's.
    pub vs_first: f64,
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
    /// Code length of the ablation, transfer and latency rows.
    pub focus_k: usize,
    /// Dense reference rows.
    pub dense: Vec<DenseRow>,
    /// How the sparse rows were scored: the encoder's f32 codes, exactly, in memory (the
    /// on-disk index's one-byte weights are `ksparse eval`'s table).
    pub scorer: Scorer,
    /// Sparse rows.
    pub sparse: Vec<SparseRow>,
    /// Latency rows.
    pub latency: Vec<LatencyRow>,
    /// The CPU the latency rows were measured on.
    pub cpu: String,
}

/// One dataset, loaded.
struct Loaded {
    name: String,
    dataset: Dataset,
    vectors: Vectors,
    /// Training pairs from the training qrels (supervised rows).
    pairs: Option<Pairs>,
    /// Pseudo-query pairs.
    pseudo: Option<Pairs>,
    dense_ndcg: f64,
}

/// Runs the table. `vectors(dataset, needs_pseudo_queries)` supplies each dataset's dense
/// vectors (the caller embeds, with a cache); `on_row` sees each row as it is measured;
/// `progress` follows each encoder's training.
pub fn run(
    model: &str,
    opts: &Options,
    mut vectors: impl FnMut(&Path, &Dataset, bool) -> Result<Vectors>,
    mut on_row: impl FnMut(&SparseRow),
    progress: &impl Progress,
) -> Result<Report> {
    if opts.ks.is_empty()
        || opts.hidden.is_empty()
        || opts.losses.is_empty()
        || opts.modes.is_empty()
        || opts.signals.is_empty()
    {
        bail!("give at least one k, width, loss, signal and mode");
    }
    let focus_k = match opts.focus_k {
        Some(k) if !opts.ks.contains(&k) => bail!(
            "the ablation, transfer and latency rows are at k = {k}, which is not among the code lengths"
        ),
        Some(k) => k,
        None if opts.ks.contains(&32) => 32,
        None => opts.ks[0],
    };
    let main = opts.signals[0];
    let pseudo_needed = opts.signals.iter().any(|s| s.needs_pseudo_queries());
    let mut report = Report {
        model: model.to_string(),
        split: opts.split.clone(),
        epochs: opts.train.epochs,
        focus_k,
        dense: Vec::new(),
        scorer: Scorer::ExactF32,
        sparse: Vec::new(),
        latency: Vec::new(),
        cpu: super::cpu_name(),
    };
    let mut loaded = Vec::new();
    for dir in &opts.datasets {
        let name = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let ds = Dataset::load(dir, &opts.split)?;
        let v = vectors(dir, &ds, pseudo_needed)?;
        let (dense, _) = dense_exact(&ds, v.corpus.clone(), &v.queries, false)?;
        tracing::info!(dataset = %name, ndcg10 = dense.mean.ndcg_at_10, "dense exact");
        let pairs = match (&v.train_queries, opts.nce > 0.0) {
            (Some((ids, rows)), true) => Some(Pairs::from_vectors(
                (rows, ids, "training queries"),
                (&v.corpus, &ds.corpus.ids, "corpus"),
                &read_qrels(&dir.join("qrels/train.tsv"))?,
                "qrels/train.tsv",
            )?),
            _ => None,
        };
        let pseudo = match &v.pseudo_queries {
            Some((_, rows)) if rows.len() < 2 => bail!(
                "{name}: fewer than two documents have a title, two sentences or 20 words to cut pseudo-queries from; leave the pseudo-query signals out (--signals docs)"
            ),
            Some((q, rows)) => Some(Pairs::from_rows(q, &v.corpus, rows)?),
            None => None,
        };
        report.dense.push(DenseRow {
            dataset: name.clone(),
            metrics: dense.mean,
        });
        loaded.push(Loaded {
            name,
            dataset: ds,
            vectors: v,
            pairs,
            pseudo,
            dense_ndcg: dense.mean.ndcg_at_10,
        });
    }
    let dim = loaded[0].vectors.corpus.ncols();
    if let Some(l) = loaded.iter().find(|l| l.vectors.corpus.ncols() != dim) {
        bail!(
            "{} has {}-d vectors, the others {dim}-d",
            l.name,
            l.vectors.corpus.ncols()
        );
    }
    // Trains one encoder on `corpus` (row-major) with these terms.
    let train_one = |corpus: &[f32],
                     pairs: Option<&Pairs>,
                     hidden: usize,
                     k: usize,
                     losses: LossWeights,
                     supervised: bool|
     -> Result<(SparseEncoder, f64)> {
        check_k(k, hidden)?;
        let cfg = TrainConfig {
            hidden,
            k,
            losses,
            ..opts.train.clone()
        };
        let (trained, train_s) = timed(|| {
            progress.stage(Stage::train(&cfg, supervised), 0, |report| {
                train(corpus, dim, pairs, &cfg, report, |_| {})
            })
        });
        Ok((trained?.0, train_s))
    };
    // Evaluates `enc` on dataset `l` in every mode: one row each.
    let mut evaluate = |l: &Loaded,
                        enc: &SparseEncoder,
                        k: usize,
                        labels: (&str, &str, bool, &str),
                        train_s: f64,
                        report: &mut Report|
     -> Result<()> {
        let (loss, signal, supervised, trained_on) = labels;
        let modes: Vec<ScoringMode> = opts.modes.iter().map(|m| m.at(k)).collect();
        let v = &l.vectors;
        let evals = sparse_exact_modes(&l.dataset, &v.corpus, &v.queries, enc, k, &modes, false)?;
        for (mode, (e, _)) in modes.iter().zip(evals) {
            let row = SparseRow {
                dataset: l.name.clone(),
                hidden: enc.hidden,
                k,
                loss: loss.to_string(),
                signal: signal.to_string(),
                supervised,
                trained_on: trained_on.to_string(),
                mode: mode.to_string(),
                retention: e.mean.ndcg_at_10 / l.dense_ndcg.max(1e-12),
                metrics: e.mean,
                train_s,
            };
            on_row(&row);
            report.sparse.push(row);
        }
        Ok(())
    };
    let flat = |m: &Array2<f32>| m.as_standard_layout().iter().copied().collect::<Vec<f32>>();
    // Per dataset, the focus encoder (first width and loss, main signal, unsupervised, at
    // the focus k) and its training seconds, kept for transfer and latency.
    let mut focus: Vec<Option<(SparseEncoder, f64)>> = Vec::new();
    for l in &loaded {
        focus.push(None);
        let corpus = flat(&l.vectors.corpus);
        for &hidden in &opts.hidden {
            let h = hidden.resolve(dim);
            for &loss in &opts.losses {
                for (si, &signal) in opts.signals.iter().enumerate() {
                    for supervised in [false, true] {
                        if supervised && (l.pairs.is_none() || signal != main) {
                            continue;
                        }
                        for &k in &opts.ks {
                            if si > 0 && k != focus_k {
                                continue;
                            }
                            let mut losses = loss.weights();
                            signal.apply(&mut losses, &opts.pseudo);
                            let pairs = if supervised {
                                losses.nce = opts.nce;
                                losses.distill = 0.0;
                                l.pairs.as_ref()
                            } else if signal.needs_pseudo_queries() {
                                l.pseudo.as_ref()
                            } else {
                                None
                            };
                            let (enc, train_s) =
                                train_one(&corpus, pairs, h, k, losses, supervised)?;
                            // Supervised rows learn the qrels' pairs, not the signal.
                            let signal = if supervised {
                                "qrels".to_string()
                            } else {
                                signal.to_string()
                            };
                            let labels = (&*loss.to_string(), &*signal, supervised, "self");
                            evaluate(l, &enc, k, labels, train_s, &mut report)?;
                            let slot = focus.last_mut().expect("pushed above");
                            let is_focus = hidden == opts.hidden[0]
                                && loss == opts.losses[0]
                                && si == 0
                                && !supervised
                                && k == focus_k;
                            if is_focus && slot.is_none() {
                                *slot = Some((enc, train_s));
                            }
                        }
                    }
                }
            }
        }
    }
    let labels = |from: &str| {
        (
            opts.losses[0].to_string(),
            main.to_string(),
            false,
            from.to_string(),
        )
    };
    let focus: Vec<(SparseEncoder, f64)> = focus
        .into_iter()
        .map(|f| f.expect("every dataset trains its focus encoder"))
        .collect();
    if opts.transfer && loaded.len() > 1 {
        let k = focus_k;
        for (from, (enc, train_s)) in loaded.iter().zip(&focus) {
            for l in loaded.iter().filter(|l| l.name != from.name) {
                let (loss, signal, sup, on) = labels(&from.name);
                evaluate(l, enc, k, (&loss, &signal, sup, &on), *train_s, &mut report)?;
            }
        }
        let union: Vec<f32> = loaded
            .iter()
            .flat_map(|l| flat(&l.vectors.corpus))
            .collect();
        let pseudo = main
            .needs_pseudo_queries()
            .then(|| Pairs::concat(loaded.iter().filter_map(|l| l.pseudo.as_ref())));
        let mut losses = opts.losses[0].weights();
        main.apply(&mut losses, &opts.pseudo);
        let (enc, train_s) = train_one(
            &union,
            pseudo.as_ref(),
            opts.hidden[0].resolve(dim),
            k,
            losses,
            false,
        )?;
        for l in &loaded {
            let (loss, signal, sup, on) = labels("union");
            evaluate(l, &enc, k, (&loss, &signal, sup, &on), train_s, &mut report)?;
        }
    }
    if opts.latency_docs > 0 {
        report.latency = latency(&loaded[0].vectors, &focus[0].0, focus_k, opts)?;
    }
    Ok(report)
}

/// Single-threaded top-10 latency of each mode over an on-disk index of
/// `opts.latency_docs` documents grown from `v`'s corpus, queried by `v`'s queries (a
/// warm-up pass, then a timed one).
fn latency(v: &Vectors, enc: &SparseEncoder, k: usize, opts: &Options) -> Result<Vec<LatencyRow>> {
    let n = opts.latency_docs;
    // Grown as `bench search` grows its collections (noise 0.2 of each vector's norm).
    let docs = super::search::generate(&v.corpus, n, 0.2, opts.train.seed);
    let data = docs.as_standard_layout();
    let codes = enc.encode(data.as_slice().expect("standard layout"), n, k);
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path().join("index");
    let ids: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    index::build(&dir, &codes, &ids, enc.hidden)?;
    drop(codes);
    let idx = Index::open(&dir)?;
    let vectors = Int8Vectors::quantize(data.as_slice().expect("standard layout"), enc.dim)?
        .reorder(&idx.rows_in(&ids)?);
    drop(docs);
    let q: Vec<Vec<f32>> = v.queries.rows().into_iter().map(|r| r.to_vec()).collect();
    let mut rows: Vec<LatencyRow> = Vec::new();
    for spec in &opts.modes {
        let mode = spec.at(k);
        let search = |i: usize| {
            let plan = enc.plan(&q[i], k, mode);
            idx.search_plan(&plan, 10, Some(&vectors))
                .expect("queries come from the index's encoder")
        };
        latencies(q.len(), search);
        let (p50, p99, _) = latencies(q.len(), search);
        let first = rows.first().map_or(p50, |r| r.p50_ms);
        tracing::info!(docs = n, mode = %mode, p50_ms = p50, "latency");
        rows.push(LatencyRow {
            docs: n,
            mode: mode.to_string(),
            p50_ms: p50,
            p99_ms: p99,
            vs_first: p50 / first,
        });
    }
    Ok(rows)
}

impl Report {
    /// The report as Markdown: the mean over datasets, each dataset's table (NDCG@10 and
    /// retention per mode and k), the ablation of training signals, transfer and latency.
    pub fn markdown(&self) -> String {
        let main_signal = self.sparse.first().map_or("docs", |r| r.signal.as_str());
        let names: Vec<&str> = self.dense.iter().map(|d| d.dataset.as_str()).collect();
        let mut ks: Vec<usize> = self.sparse.iter().map(|r| r.k).collect();
        ks.sort_unstable();
        ks.dedup();
        let pct =
            |r: &SparseRow| format!("{:.4} ({:.1} %)", r.metrics.ndcg_at_10, 100.0 * r.retention);
        // The mean over the datasets' rows, or "–" unless every dataset has one.
        let mean_cell = |rows: &[&SparseRow]| -> String {
            if rows.len() != names.len() {
                return "–".into();
            }
            let n = rows.len() as f64;
            format!(
                "{:.4} ({:.1} %)",
                rows.iter().map(|r| r.metrics.ndcg_at_10).sum::<f64>() / n,
                100.0 * rows.iter().map(|r| r.retention).sum::<f64>() / n
            )
        };
        let mut md = format!(
            "# ksparse bench quality\n\nModel {}, split `{}`, {} training epochs per encoder, \
             training signal `{main_signal}` unless a table says otherwise. NDCG@10 and, in \
             brackets, its retention: the fraction of dense exact search's NDCG@10 on the same \
             queries. Sparse rows scored by {}. Full metrics (Recall@100, MRR@10, training \
             time) are in report.json.\n",
            self.model, self.split, self.epochs, self.scorer
        );
        // Families in first-seen order (modes tied to k print per k).
        let families = |rows: &mut dyn Iterator<Item = &SparseRow>| {
            let mut out: Vec<String> = Vec::new();
            for r in rows {
                let f = mode_family(&r.mode, r.k);
                if !out.contains(&f) {
                    out.push(f);
                }
            }
            out
        };
        let unsup_self =
            |r: &SparseRow| !r.supervised && r.trained_on == "self" && r.signal == main_signal;
        if names.len() > 1 {
            md += &format!("\n## Mean over {}\n\n", names.join(", "));
            let mean_dense =
                self.dense.iter().map(|d| d.metrics.ndcg_at_10).sum::<f64>() / names.len() as f64;
            md += &format!("Dense exact: NDCG@10 **{mean_dense:.4}** (mean).\n\n| mode |");
            ks.iter().for_each(|k| md += &format!(" k={k} |"));
            md += "\n|---|";
            ks.iter().for_each(|_| md += "---:|");
            md += "\n";
            for fam in families(&mut self.sparse.iter().filter(|r| unsup_self(r))) {
                md += &format!("| {fam} |");
                for &k in &ks {
                    let rows: Vec<&SparseRow> = self
                        .sparse
                        .iter()
                        .filter(|r| unsup_self(r) && r.k == k && mode_family(&r.mode, r.k) == fam)
                        .collect();
                    md += &format!(" {} |", mean_cell(&rows));
                }
                md += "\n";
            }
        }
        for dense in &self.dense {
            md += &format!(
                "\n## {}\n\nDense exact: NDCG@10 **{:.4}**, Recall@100 {:.4}, MRR@10 {:.4}.\n\n| h | training | mode |",
                dense.dataset,
                dense.metrics.ndcg_at_10,
                dense.metrics.recall_at_100,
                dense.metrics.mrr_at_10
            );
            ks.iter().for_each(|k| md += &format!(" k={k} |"));
            md += "\n|---|---|---|";
            ks.iter().for_each(|_| md += "---:|");
            md += "\n";
            let rows: Vec<&SparseRow> = self
                .sparse
                .iter()
                .filter(|r| {
                    r.dataset == dense.dataset
                        && r.trained_on == "self"
                        && (r.signal == main_signal || r.supervised)
                })
                .collect();
            let mut keys: Vec<(usize, String, bool, String)> = Vec::new();
            for r in &rows {
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
                    format!("{loss} + InfoNCE on training qrels")
                } else {
                    format!("{loss} + {main_signal}")
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
                        .map_or("–".to_string(), |r| pct(r));
                    md += &format!(" {cell} |");
                }
                md += "\n";
            }
        }
        // Ablation and transfer: one column per dataset plus the mean, at the focus k.
        let across =
            |title: &str, intro: &str, label: &dyn Fn(&SparseRow) -> Option<String>| -> String {
                let labelled: Vec<(String, &SparseRow)> = self
                    .sparse
                    .iter()
                    .filter(|r| r.k == self.focus_k && !r.supervised)
                    .filter_map(|r| label(r).map(|l| (l, r)))
                    .collect();
                let mut keys: Vec<(String, String)> = Vec::new();
                for (l, r) in &labelled {
                    let key = (l.clone(), r.mode.clone());
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
                if keys
                    .iter()
                    .map(|k| &k.0)
                    .collect::<std::collections::BTreeSet<_>>()
                    .len()
                    < 2
                {
                    return String::new();
                }
                let mut t = format!("\n## {title}\n\n{intro}\n\n| | mode |");
                names.iter().for_each(|n| t += &format!(" {n} |"));
                t += " mean |\n|---|---|";
                names.iter().for_each(|_| t += "---:|");
                t += "---:|\n";
                for (l, mode) in keys {
                    t += &format!("| {l} | {mode} |");
                    let mut got = Vec::new();
                    for n in &names {
                        match labelled
                            .iter()
                            .find(|(x, r)| *x == l && r.mode == mode && r.dataset == *n)
                        {
                            Some((_, r)) => {
                                got.push(*r);
                                t += &format!(" {} |", pct(r));
                            }
                            None => t += " – |",
                        }
                    }
                    t += &format!(" {} |\n", mean_cell(&got));
                }
                t
            };
        md += &across(
            &format!("Ablation: training signal at k = {}", self.focus_k),
            "Each encoder trained on its own corpus; `docs` = reconstruction and L_dist only; pseudo-queries are cut from the corpus (a title, a sentence or a run of words of each document), no judgement is used.",
            &|r| (r.trained_on == "self").then(|| r.signal.clone()),
        );
        md += &across(
            &format!("Transfer at k = {}", self.focus_k),
            "Rows: the corpus the encoder was trained on (`self`: the evaluated one; `union`: all of them).",
            &|r| (r.signal == main_signal).then(|| r.trained_on.clone()),
        );
        if !self.latency.is_empty() {
            md += &format!(
                "\n## Latency at {} documents, k = {}\n\n{}; one top-10 search at a time on one thread, from the dense query vector to hits (query plan, index search, re-ranking). Documents: the first dataset's corpus grown with noisy copies; its queries.\n\n| mode | p50 ms | p99 ms | p50 vs {} |\n|---|---:|---:|---:|\n",
                self.latency[0].docs, self.focus_k, self.cpu, self.latency[0].mode
            );
            for r in &self.latency {
                md += &format!(
                    "| {} | {:.3} | {:.3} | {:.2}× |\n",
                    r.mode, r.p50_ms, r.p99_ms, r.vs_first
                );
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
