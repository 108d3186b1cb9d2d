//! `ksparse eval`: the experiments of both papers on one BEIR dataset — dense exact search,
//! HNSW, and the on-disk sparse index at each width × k × scoring mode — with quality
//! (NDCG@10, Recall@100, MRR@10), single-threaded latency (p50/p99 of a top-10 search),
//! bytes and training time, written as `report.json`, `report.md` and three SVG plots.

use std::io::Write as _;
use std::path::Path;

use anyhow::{bail, Result};
use ndarray::{Array2, ArrayView1};
use rayon::prelude::*;
use serde::Serialize;

use super::plot::{Chart, Series};
use super::{score_at_depths, score_hits, Metrics, Scorer, EVAL_DEPTH};
use crate::base::stopwatch::{latencies, timed};
use crate::base::Hit;
use crate::data::Dataset;
use crate::embed::int8::Int8Vectors;
use crate::encoder::codes::first_non_finite;
use crate::encoder::scoring::{mode_family, ModeSpec};
use crate::encoder::SparseEncoder;
use crate::index::{self, Index};
use crate::io::write_atomic;
use crate::search::dense::FlatIndex;
use crate::search::hnsw::HnswIndex;

/// Hits per query in the latency measurement.
const LATENCY_TOP: usize = 10;

/// What to run besides the dense baselines.
pub struct Options {
    /// Code lengths.
    pub ks: Vec<usize>,
    /// Encoder widths (latents).
    pub hidden: Vec<usize>,
    /// Scoring modes (m may be a multiple of k).
    pub modes: Vec<ModeSpec>,
    /// HNSW links per node, candidates per insertion, candidates per search.
    pub hnsw: (usize, usize, usize),
    /// Also train each encoder with InfoNCE on training pairs (supervised rows).
    pub supervised: bool,
}

/// A dense engine's row.
#[derive(Debug, Serialize)]
pub struct DenseRow {
    /// Mean metrics.
    #[serde(flatten)]
    pub metrics: Metrics,
    /// Median single-threaded top-10 latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Bytes of the searchable structure: the f32 vectors; for HNSW also its graph's
    /// links, 4 bytes each ([`HnswIndex::bytes`]).
    pub bytes: usize,
    /// Build time, seconds.
    pub build_s: f64,
}

/// One sparse configuration's row.
#[derive(Debug, Serialize)]
pub struct SparseRow {
    /// Active latents per document code.
    pub k: usize,
    /// Latents.
    pub hidden: usize,
    /// Whether the encoder was trained with InfoNCE on training pairs.
    pub supervised: bool,
    /// Scoring mode, m resolved.
    pub mode: String,
    /// Mean metrics.
    #[serde(flatten)]
    pub metrics: Metrics,
    /// Median single-threaded top-10 latency over the on-disk index, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Index files, bytes (for `two-stage-dense`, plus the int8 vectors it re-ranks by).
    pub bytes: usize,
    /// Encoder training time, seconds (as recorded when the encoder came from a cache).
    pub train_s: f64,
}

/// `report.json`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Dataset folder name.
    pub dataset: String,
    /// Embedding model.
    pub model: String,
    /// Documents.
    pub documents: usize,
    /// Evaluated queries (judged in the split).
    pub queries: usize,
    /// Dense exact search.
    pub dense: DenseRow,
    /// HNSW over the same vectors.
    pub hnsw: DenseRow,
    /// How the sparse rows were scored (always the on-disk index here).
    pub scorer: Scorer,
    /// Sparse rows in width, k, mode order.
    pub sparse: Vec<SparseRow>,
}

/// The mean metrics of the queries' hits, documents named by `id_of`.
fn mean_metrics<'a>(
    dataset: &Dataset,
    hits: &[Vec<Hit>],
    id_of: impl Fn(u32) -> &'a str,
) -> Result<Metrics> {
    Ok(score_hits(dataset, hits, id_of, false)?.0.mean)
}

/// Runs the evaluation. `encoder_for(hidden, k, supervised)` gives a trained encoder and
/// its training seconds; `scratch` holds the temporary index folders.
pub fn run(
    dataset: &Dataset,
    names: (&str, &str),
    corpus: &Array2<f32>,
    queries: &Array2<f32>,
    opts: &Options,
    mut encoder_for: impl FnMut(usize, usize, bool) -> Result<(SparseEncoder, f64)>,
    scratch: &Path,
) -> Result<Report> {
    if opts.ks.is_empty() || opts.hidden.is_empty() || opts.modes.is_empty() {
        bail!("give at least one k, width and mode");
    }
    for &k in &opts.ks {
        for &h in &opts.hidden {
            crate::encoder::check_k(k, h)?;
        }
    }
    let nq = queries.nrows();
    if nq == 0 || corpus.nrows() == 0 {
        bail!(
            "{}: nothing to evaluate ({} judged queries, {} documents)",
            dataset.qrels_path.display(),
            nq,
            corpus.nrows()
        );
    }
    let q: Vec<Vec<f32>> = queries.rows().into_iter().map(|r| r.to_vec()).collect();
    let row_id = |d: u32| dataset.corpus.ids[d as usize].as_str();

    let flat = FlatIndex::new(corpus.clone());
    let deep = flat.search_batch(queries, EVAL_DEPTH);
    let (p50, p99, _) = latencies(nq, |i| flat.search(ArrayView1::from(&q[i]), LATENCY_TOP));
    let dense = DenseRow {
        metrics: mean_metrics(dataset, &deep, row_id)?,
        p50_ms: p50,
        p99_ms: p99,
        bytes: flat.bytes(),
        build_s: 0.0,
    };
    tracing::info!(ndcg10 = dense.metrics.ndcg_at_10, "dense exact");

    let (m, ef_construction, ef) = opts.hnsw;
    let (graph, build_s) = timed(|| HnswIndex::build(corpus, m, ef_construction));
    let deep: Vec<Vec<Hit>> = q
        .iter()
        .map(|v| graph.search(v, EVAL_DEPTH, ef.max(EVAL_DEPTH)))
        .collect();
    let (p50, p99, _) = latencies(nq, |i| graph.search(&q[i], LATENCY_TOP, ef));
    let hnsw = DenseRow {
        metrics: mean_metrics(dataset, &deep, row_id)?,
        p50_ms: p50,
        p99_ms: p99,
        bytes: graph.bytes(),
        build_s,
    };
    tracing::info!(ndcg10 = hnsw.metrics.ndcg_at_10, "hnsw");
    drop((graph, flat));

    let data = corpus.as_standard_layout();
    let data = data.as_slice().expect("standard layout");
    let vectors = Int8Vectors::quantize(data, corpus.ncols())?;
    let mut sparse = Vec::new();
    let supervision: &[bool] = if opts.supervised {
        &[false, true]
    } else {
        &[false]
    };
    for &hidden in &opts.hidden {
        for &supervised in supervision {
            for &k in &opts.ks {
                let (enc, train_s) = encoder_for(hidden, k, supervised)?;
                let dir = scratch.join(format!("index-h{hidden}-k{k}-{supervised}"));
                let codes = enc.encode(data, corpus.nrows(), k);
                if let Some(row) = first_non_finite(&codes) {
                    bail!(
                        "document {:?} (corpus row {row}) encodes to an infinite or NaN value at h = {hidden}, k = {k} (overflow: its vector is too large)",
                        dataset.corpus.ids[row]
                    );
                }
                index::build(&dir, &codes, &dataset.corpus.ids, enc.hidden)?;
                let idx = Index::open(&dir)?;
                // The corpus vectors in the index's document order, for two-stage-dense.
                let vectors = vectors.reorder(&idx.rows_in(&dataset.corpus.ids)?);
                for spec in &opts.modes {
                    let mode = spec.at(k);
                    let plans: Vec<_> = q.iter().map(|v| enc.plan(v, k, mode)).collect();
                    let search = |top: usize| -> Vec<Vec<Hit>> {
                        plans
                            .par_iter()
                            .map(|p| {
                                idx.search_plan(p, top, Some(&vectors))
                                    .expect("queries come from the index's encoder")
                            })
                            .collect()
                    };
                    let (evaluation, _) =
                        score_at_depths(dataset, mode, search, |d| idx.id(d), false)?;
                    let (p50, p99, _) = latencies(nq, |i| {
                        idx.search_plan(&plans[i], LATENCY_TOP, Some(&vectors))
                            .expect("queries come from the index's encoder")
                    });
                    let kept = if mode.uses_vectors() {
                        vectors.bytes()
                    } else {
                        0
                    };
                    let row = SparseRow {
                        k,
                        hidden,
                        supervised,
                        mode: mode.to_string(),
                        metrics: evaluation.mean,
                        p50_ms: p50,
                        p99_ms: p99,
                        bytes: idx.stats().file_bytes + kept,
                        train_s,
                    };
                    tracing::info!(hidden, k, supervised, mode = %row.mode, ndcg10 = row.metrics.ndcg_at_10, p50_ms = row.p50_ms, "sparse");
                    sparse.push(row);
                }
                drop(idx);
                std::fs::remove_dir_all(&dir).ok();
            }
        }
    }
    Ok(Report {
        dataset: names.0.to_string(),
        model: names.1.to_string(),
        documents: corpus.nrows(),
        queries: nq,
        dense,
        hnsw,
        scorer: Scorer::Index,
        sparse,
    })
}

impl Report {
    /// Tables like the papers': the dense baselines, then one row per sparse configuration.
    pub fn markdown(&self) -> String {
        let mb = |b: usize| format!("{:.1}", b as f64 / 1e6);
        let mut md = format!(
            "# ksparse eval: {} ({} documents, {} queries), {}\n\nLatency: one top-{LATENCY_TOP} search at a time on one thread. Sparse rows are scored by {}; their bytes are its files (two-stage-dense rows add the int8 vectors they re-rank by). Dense bytes are the f32 vectors; HNSW's add its graph's links, 4 bytes each.\n\n\
             | engine | NDCG@10 | Recall@100 | MRR@10 | p50 ms | p99 ms | MB | build / train s |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
            self.dataset, self.documents, self.queries, self.model, self.scorer
        );
        for (name, r) in [("dense exact", &self.dense), ("HNSW", &self.hnsw)] {
            md += &format!(
                "| {name} | {:.4} | {:.4} | {:.4} | {:.3} | {:.3} | {} | {:.1} |\n",
                r.metrics.ndcg_at_10,
                r.metrics.recall_at_100,
                r.metrics.mrr_at_10,
                r.p50_ms,
                r.p99_ms,
                mb(r.bytes),
                r.build_s
            );
        }
        md += "\n| h | k | mode | NDCG@10 | Recall@100 | MRR@10 | p50 ms | p99 ms | MB | train s |\n|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n";
        let supervised_mark = |r: &SparseRow| if r.supervised { " (supervised)" } else { "" };
        for r in &self.sparse {
            md += &format!(
                "| {} | {} | {}{} | {:.4} | {:.4} | {:.4} | {:.3} | {:.3} | {} | {:.1} |\n",
                r.hidden,
                r.k,
                r.mode,
                supervised_mark(r),
                r.metrics.ndcg_at_10,
                r.metrics.recall_at_100,
                r.metrics.mrr_at_10,
                r.p50_ms,
                r.p99_ms,
                mb(r.bytes),
                r.train_s
            );
        }
        md += "\n![NDCG@10 vs k](ndcg_vs_k.svg)\n![latency vs NDCG@10](latency_vs_ndcg.svg)\n![index bytes vs k](bytes_vs_k.svg)\n";
        md
    }

    /// The three plots: (file name, SVG).
    pub fn plots(&self) -> Vec<(&'static str, String)> {
        // One series per width, supervision and mode family (`symmetric:4k` across k).
        let mut groups: Vec<(String, Vec<&SparseRow>)> = Vec::new();
        for r in &self.sparse {
            let sup = if r.supervised { " sup" } else { "" };
            let key = format!("h={}{sup} {}", r.hidden, mode_family(&r.mode, r.k));
            match groups.iter_mut().find(|g| g.0 == key) {
                Some(g) => g.1.push(r),
                None => groups.push((key, vec![r])),
            }
        }
        let series = |f: &dyn Fn(&SparseRow) -> (f64, f64), line: bool| -> Vec<Series> {
            groups
                .iter()
                .map(|(key, g)| Series {
                    name: key.clone(),
                    points: g.iter().map(|r| f(r)).collect(),
                    line,
                })
                .collect()
        };
        let ndcg = Chart {
            title: format!("{}: NDCG@10 vs k", self.dataset),
            x_label: "k (active latents per document)".into(),
            y_label: "NDCG@10".into(),
            log2_x: true,
            log10_y: false,
            series: series(&|r| (r.k as f64, r.metrics.ndcg_at_10), true),
            references: vec![
                ("dense exact".into(), self.dense.metrics.ndcg_at_10),
                ("HNSW".into(), self.hnsw.metrics.ndcg_at_10),
            ],
        };
        let mut latency_series = series(&|r| (r.metrics.ndcg_at_10, r.p50_ms), true);
        for (name, r) in [("dense exact", &self.dense), ("HNSW", &self.hnsw)] {
            latency_series.push(Series {
                name: name.into(),
                points: vec![(r.metrics.ndcg_at_10, r.p50_ms)],
                line: false,
            });
        }
        let latency = Chart {
            title: format!("{}: p50 latency vs NDCG@10", self.dataset),
            x_label: "NDCG@10".into(),
            y_label: "p50 ms (log scale)".into(),
            log2_x: false,
            log10_y: true,
            series: latency_series,
            references: Vec::new(),
        };
        let mut by_width: Vec<Series> = Vec::new();
        // The index's size; two-stage-dense rows add the kept vectors to it.
        for r in self
            .sparse
            .iter()
            .filter(|r| !r.mode.starts_with("two-stage-dense"))
        {
            let name = format!("sparse index, h={}", r.hidden);
            let point = (r.k as f64, r.bytes as f64 / 1e6);
            match by_width.iter_mut().find(|s| s.name == name) {
                Some(s) if !s.points.contains(&point) => s.points.push(point),
                Some(_) => {}
                None => by_width.push(Series {
                    name,
                    points: vec![point],
                    line: true,
                }),
            }
        }
        let bytes = Chart {
            title: format!("{}: index size vs k", self.dataset),
            x_label: "k (active latents per document)".into(),
            y_label: "MB".into(),
            log2_x: true,
            log10_y: false,
            series: by_width,
            references: vec![
                ("dense vectors".into(), self.dense.bytes as f64 / 1e6),
                ("HNSW".into(), self.hnsw.bytes as f64 / 1e6),
            ],
        };
        vec![
            ("ndcg_vs_k.svg", ndcg.svg()),
            ("latency_vs_ndcg.svg", latency.svg()),
            ("bytes_vs_k.svg", bytes.svg()),
        ]
    }

    /// Writes report.json, report.md and the plots into `dir`, each atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        write_atomic(&dir.join("report.json"), |w| {
            Ok(serde_json::to_writer_pretty(w, self)?)
        })?;
        let md = self.markdown();
        write_atomic(&dir.join("report.md"), |w| Ok(w.write_all(md.as_bytes())?))?;
        for (name, svg) in self.plots() {
            write_atomic(&dir.join(name), |w| Ok(w.write_all(svg.as_bytes())?))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::plot::tests::{circles, legend_labels};
    use super::*;

    fn metrics(ndcg: f64) -> Metrics {
        Metrics {
            ndcg_at_10: ndcg,
            recall_at_100: 0.9,
            mrr_at_10: ndcg - 0.04,
        }
    }

    fn dense(bytes: usize) -> DenseRow {
        DenseRow {
            metrics: metrics(0.6451),
            p50_ms: 0.39,
            p99_ms: 0.61,
            bytes,
            build_s: 2.3,
        }
    }

    fn sparse(k: usize, supervised: bool, mode: &str, ndcg: f64, bytes: usize) -> SparseRow {
        SparseRow {
            k,
            hidden: 3072,
            supervised,
            mode: mode.into(),
            metrics: metrics(ndcg),
            p50_ms: 0.002 * k as f64,
            p99_ms: 0.5,
            bytes,
            train_s: 100.0,
        }
    }

    fn report() -> Report {
        Report {
            dataset: "scifact".into(),
            model: "all-MiniLM-L6-v2".into(),
            documents: 5183,
            queries: 300,
            dense: dense(7_960_000),
            hnsw: dense(8_730_000),
            scorer: Scorer::Index,
            sparse: vec![
                sparse(32, false, "symmetric", 0.5517, 1_900_000),
                sparse(32, false, "symmetric:128", 0.5765, 1_900_000),
                sparse(64, false, "symmetric", 0.58, 3_400_000),
                sparse(64, false, "symmetric:256", 0.6, 3_400_000),
                sparse(32, true, "symmetric:128", 0.74, 2_000_000),
                sparse(64, true, "symmetric:256", 0.76, 3_500_000),
            ],
        }
    }

    #[test]
    fn markdown_rows_hold_the_values() {
        let md = report().markdown();
        for row in [
            "| dense exact | 0.6451 | 0.9000 | 0.6051 | 0.390 | 0.610 | 8.0 | 2.3 |\n",
            "| HNSW | 0.6451 | 0.9000 | 0.6051 | 0.390 | 0.610 | 8.7 | 2.3 |\n",
            "| 3072 | 32 | symmetric | 0.5517 | 0.9000 | 0.5117 | 0.064 | 0.500 | 1.9 | 100.0 |\n",
            "| 3072 | 64 | symmetric:256 (supervised) | 0.7600 | 0.9000 | 0.7200 | 0.128 | 0.500 | 3.5 | 100.0 |\n",
        ] {
            assert!(md.contains(row), "{row} in\n{md}");
        }
        assert_eq!(md.matches("\n| 3072 |").count(), 6);
    }

    #[test]
    fn plots_have_one_series_per_width_supervision_and_mode_family() {
        let plots = report().plots();
        let names: Vec<&str> = plots.iter().map(|p| p.0).collect();
        assert_eq!(
            names,
            ["ndcg_vs_k.svg", "latency_vs_ndcg.svg", "bytes_vs_k.svg"]
        );
        let labels =
            |svg: &str| -> Vec<String> { legend_labels(svg).into_iter().map(|l| l.2).collect() };
        let families = [
            "h=3072 symmetric",
            "h=3072 symmetric:4k",
            "h=3072 sup symmetric:4k",
        ];
        let mut want = vec!["dense exact", "HNSW"];
        want.extend(families);
        assert_eq!(labels(&plots[0].1), want);
        assert_eq!(circles(&plots[0].1).len(), 6);
        let mut want = families.to_vec();
        want.extend(["dense exact", "HNSW"]);
        assert_eq!(labels(&plots[1].1), want);
        assert_eq!(circles(&plots[1].1).len(), 6 + 2);
        // One point per (k, size): rows that share an index share its point.
        assert_eq!(
            labels(&plots[2].1),
            ["dense vectors", "HNSW", "sparse index, h=3072"]
        );
        assert_eq!(circles(&plots[2].1).len(), 4);
    }
}
