//! `ksparse bench search`: the sparse index against dense flat search and HNSW on the same
//! vectors, in one run, at several collection sizes.
//!
//! Collections larger than the real embeddings are drawn by [`generate`]: each extra vector
//! is a real one plus Gaussian noise, renormalised, so sparse codes keep a realistic latent
//! usage. Latency is single-threaded (one query at a time on the calling thread); QPS runs
//! all queries on all threads. recall@10 is the overlap with dense exact search's top 10.
//! The sparse index runs twice on the same index: as it searches by default
//! (`sparse-exact`, block-max) and term-at-a-time (`sparse-exact-taat`), the baseline its
//! pruning is measured against.
//!
//! Given a Python interpreter, the same run adds the engines users run today on the same
//! vectors and codes (`py_search.py`): faiss flat, hnswlib, SEISMIC and a SciPy sparse
//! product, each where its package imports (a missing one is reported as skipped).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use ndarray::{Array2, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::run_python_baseline;
use ksparse::base::stopwatch::{latencies, resident_bytes, timed};
use ksparse::base::Hit;
use ksparse::base::SparseCode;
use ksparse::embed::int8::Int8Vectors;
use ksparse::encoder::codes::write_codes;
use ksparse::encoder::scoring::{ModeSpec, QueryPlan, ScoringMode};
use ksparse::encoder::train::add_noise;
use ksparse::encoder::SparseEncoder;
use ksparse::index::query::{self, Strategy};
use ksparse::index::{self, Index, IndexDocs};
use ksparse::io::write_npy;
use ksparse::search::dense::FlatIndex;
use ksparse::search::hnsw::HnswIndex;
use ksparse::search::sparse::{RowDocs, SparseIndex};

/// Hits per query.
const TOP: usize = 10;

/// What to run.
pub struct Options {
    /// Collection sizes.
    pub ns: Vec<usize>,
    /// Code lengths of the sparse rows.
    pub ks: Vec<usize>,
    /// Scoring modes of the sparse queries (each measured with and without pruning).
    pub modes: Vec<ModeSpec>,
    /// Queries to time (taken from the front of the query set).
    pub queries: usize,
    /// HNSW links per node.
    pub hnsw_m: usize,
    /// HNSW candidates per insertion.
    pub hnsw_ef_construction: usize,
    /// HNSW candidates per search.
    pub hnsw_ef: usize,
    /// Seed of the generator.
    pub seed: u64,
    /// Relative noise of generated vectors (‖ε‖ ≈ noise · ‖x‖).
    pub noise: f32,
    /// Python for the baselines of other tools; `None` skips them.
    pub python: Option<PathBuf>,
}

/// One engine at one size (and k for sparse rows).
#[derive(Debug, Serialize)]
pub struct Row {
    /// "sparse-exact", "dense-flat" or "hnsw"; the Python baselines "faiss-flat",
    /// "hnswlib", "seismic" and "scipy-csr".
    pub engine: String,
    /// Documents.
    pub n: usize,
    /// Code length (sparse rows only).
    pub k: Option<usize>,
    /// Scoring mode of the queries (our sparse rows only; the Python engines search the
    /// symmetric query codes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Median single-threaded latency, milliseconds.
    pub p50_ms: f64,
    /// 99th-percentile single-threaded latency, milliseconds.
    pub p99_ms: f64,
    /// Queries per second on all threads.
    pub qps: f64,
    /// Bytes of the searchable structure (files for the sparse index, plus the int8 vectors
    /// for `two-stage-dense`; vectors for flat; resident-memory growth during the build for
    /// HNSW).
    pub bytes: usize,
    /// Build time, seconds (sparse: encoding + index build).
    pub build_s: f64,
    /// Mean overlap of the top 10 with dense exact search's top 10.
    #[serde(rename = "recall@10")]
    pub recall_at_10: f64,
    /// Sparse rows: mean overlap with the exact sparse top 10 at the same k (1 for an exact
    /// engine; below 1 for an approximate one such as SEISMIC).
    #[serde(rename = "sparse_recall@10", skip_serializing_if = "Option::is_none")]
    pub sparse_recall_at_10: Option<f64>,
}

/// A row as `py_search.py` prints it: measurements, or why the engine was skipped.
#[derive(Debug, Default, Deserialize)]
struct PythonRow {
    engine: String,
    k: Option<usize>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    qps: Option<f64>,
    bytes: Option<usize>,
    build_s: Option<f64>,
    hits: Option<Vec<Vec<u32>>>,
    skipped: Option<String>,
}

/// The report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Vector dimension.
    pub dim: usize,
    /// Real vectors the collections were drawn from.
    pub real_vectors: usize,
    /// Timed queries.
    pub queries: usize,
    /// Threads for QPS.
    pub threads: usize,
    /// Encoder width.
    pub hidden: usize,
    /// Rows.
    pub rows: Vec<Row>,
    /// Baselines that did not run, with why ("engine: reason").
    pub skipped: Vec<String>,
}

/// `n` unit vectors near `real`: its first rows, then real rows chosen at random plus
/// Gaussian noise of relative norm `noise`, renormalised (seeded).
pub fn generate(real: &Array2<f32>, n: usize, noise: f32, seed: u64) -> Array2<f32> {
    let (r, d) = real.dim();
    let mut out = Array2::<f32>::zeros((n, d));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (i, mut row) in out.axis_iter_mut(Axis(0)).enumerate() {
        if i < r {
            row.assign(&real.row(i));
            continue;
        }
        row.assign(&real.row(rng.random_range(0..r)));
        add_noise(
            row.as_slice_mut().expect("rows of a standard array"),
            d,
            noise,
            &mut rng,
        );
        let norm = row.dot(&row).sqrt().max(1e-12);
        row.mapv_inplace(|v| v / norm);
    }
    out
}

/// [`latencies`], and QPS with the queries spread over all threads.
fn measure<F>(queries: usize, search: F) -> (f64, f64, f64, Vec<Vec<Hit>>)
where
    F: Fn(usize) -> Vec<Hit> + Sync,
{
    let (p50, p99, hits) = latencies(queries, &search);
    let rounds = (2000 / queries.max(1)).max(1);
    let ((), secs) = timed(|| {
        (0..rounds * queries).into_par_iter().for_each(|i| {
            std::hint::black_box(search(i % queries));
        })
    });
    (p50, p99, (rounds * queries) as f64 / secs, hits)
}

/// Mean overlap of `found` (document numbers per query) with `exact`'s top lists.
fn recall(found: &[Vec<u32>], exact: &[Vec<u32>]) -> f64 {
    let common: usize = found
        .iter()
        .zip(exact)
        .map(|(h, e)| h.iter().filter(|x| e.contains(x)).count())
        .sum();
    common as f64 / exact.iter().map(Vec::len).sum::<usize>().max(1) as f64
}

/// The document numbers of each query's hits.
fn docs_of(hits: &[Vec<Hit>]) -> Vec<Vec<u32>> {
    hits.iter()
        .map(|h| h.iter().map(|x| x.doc).collect())
        .collect()
}

/// Runs the benchmark. `encoder_for(k)` gives the encoder used at code length k;
/// `scratch` holds the temporary index folders; `on_row` sees rows as they are measured.
pub fn run(
    real: &Array2<f32>,
    queries: &Array2<f32>,
    mut encoder_for: impl FnMut(usize) -> Result<SparseEncoder>,
    opts: &Options,
    scratch: &Path,
    mut on_row: impl FnMut(&Row),
) -> Result<Report> {
    if real.ncols() != queries.ncols() {
        bail!(
            "queries are {}-d but the embeddings {}-d",
            queries.ncols(),
            real.ncols()
        );
    }
    let nq = opts.queries.min(queries.nrows());
    if nq == 0 {
        bail!("no queries to time");
    }
    let d = real.ncols();
    let q: Vec<&[f32]> = (0..nq)
        .map(|i| {
            let row = queries.row(i);
            row.to_slice().expect("standard layout")
        })
        .collect();
    let encoders: Vec<(usize, SparseEncoder)> = opts
        .ks
        .iter()
        .map(|&k| Ok((k, encoder_for(k)?)))
        .collect::<Result<_>>()?;
    let mut report = Report {
        dim: d,
        real_vectors: real.nrows(),
        queries: nq,
        threads: rayon::current_num_threads(),
        hidden: encoders.first().map_or(0, |e| e.1.hidden),
        rows: Vec::new(),
        skipped: Vec::new(),
    };
    let mut push = |row: Row, report: &mut Report| {
        on_row(&row);
        report.rows.push(row);
    };
    for &n in &opts.ns {
        let x = generate(real, n, opts.noise, opts.seed);
        // What the Python baselines read: the same vectors and codes.
        let py_dir = scratch.join(format!("python-n{n}"));
        if opts.python.is_some() {
            std::fs::create_dir_all(&py_dir)?;
            write_npy(&py_dir.join("docs.npy"), &x)?;
            write_npy(
                &py_dir.join("queries.npy"),
                &queries.slice(ndarray::s![..nq, ..]).to_owned(),
            )?;
        }
        let flat = FlatIndex::new(x.clone());
        let (p50, p99, qps, exact) =
            measure(nq, |i| flat.search(ndarray::ArrayView1::from(q[i]), TOP));
        let exact = docs_of(&exact);
        push(
            Row {
                engine: "dense-flat".into(),
                n,
                k: None,
                mode: None,
                p50_ms: p50,
                p99_ms: p99,
                qps,
                bytes: flat.bytes(),
                build_s: 0.0,
                recall_at_10: 1.0,
                sparse_recall_at_10: None,
            },
            &mut report,
        );
        // `flat` stays alive while HNSW is built: memory freed before the build would be
        // reused by it and hide from the resident-growth measure.
        let before = resident_bytes();
        let (hnsw, build_s) =
            timed(|| HnswIndex::build(&x, opts.hnsw_m, opts.hnsw_ef_construction));
        let bytes = resident_bytes().saturating_sub(before);
        let (p50, p99, qps, hits) = measure(nq, |i| hnsw.search(q[i], TOP, opts.hnsw_ef));
        push(
            Row {
                engine: "hnsw".into(),
                n,
                k: None,
                mode: None,
                p50_ms: p50,
                p99_ms: p99,
                qps,
                bytes,
                build_s,
                recall_at_10: recall(&docs_of(&hits), &exact),
                sparse_recall_at_10: None,
            },
            &mut report,
        );
        drop((hnsw, flat));
        let xs = x.as_standard_layout();
        let xs = xs.as_slice().expect("standard layout");
        let mut sparse_exact = Vec::new();
        for (k, enc) in &encoders {
            let dir = scratch.join(format!("sparse-n{n}-k{k}"));
            let ids: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            let (codes, build_s) = timed(|| -> Result<Vec<SparseCode>> {
                let codes = enc.encode(xs, n, *k);
                index::build(&dir, &codes, &ids, enc.hidden)?;
                Ok(codes)
            });
            let codes = codes?;
            let query_codes: Vec<SparseCode> = q.iter().map(|v| enc.encode_one(v, *k)).collect();
            if opts.python.is_some() {
                write_codes(&py_dir.join(format!("docs-k{k}.npz")), &codes, enc.hidden)?;
                write_codes(
                    &py_dir.join(format!("queries-k{k}.npz")),
                    &query_codes,
                    enc.hidden,
                )?;
            }
            // The reference of sparse recall: exact f32 dot products (the index scores
            // quantised weights, so it may differ in near-ties).
            let reference = SparseIndex::new(&codes, enc.hidden);
            let idx = Index::open(&dir)?;
            let rows = idx.rows_in(&ids)?;
            // Two-stage re-ranks by the exact codes or the int8 vectors: by row for the
            // reference, in the index's document order for the index.
            let by_row = Int8Vectors::quantize(xs, x.ncols())?;
            let by_doc = by_row.reorder(&rows);
            let row_docs = RowDocs {
                codes: &codes,
                vectors: Some(&by_row),
            };
            let index_docs = IndexDocs {
                index: &idx,
                vectors: Some(&by_doc),
            };
            let exact_of = |plans: &[QueryPlan]| -> Result<Vec<Vec<u32>>> {
                let hits = plans
                    .iter()
                    .map(|p| p.finish(reference.search(&p.terms, p.depth(TOP)), TOP, &row_docs))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(docs_of(&hits))
            };
            // The Python engines search the symmetric query codes.
            let symmetric: Vec<QueryPlan> = q
                .iter()
                .map(|v| enc.plan(v, *k, ScoringMode::Symmetric(None)))
                .collect();
            sparse_exact.push((*k, exact_of(&symmetric)?));
            for spec in &opts.modes {
                let mode = spec.at(*k);
                let plans: Vec<QueryPlan> = q.iter().map(|v| enc.plan(v, *k, mode)).collect();
                let exact_sparse = exact_of(&plans)?;
                // The engine as it searches by default (`Auto`: block-max on these
                // queries), and term-at-a-time over the same index as the baseline of its
                // pruning. Timed: the index search and, for two-stage, the re-ranking.
                for (engine, strategy) in [
                    ("sparse-exact", Strategy::Auto),
                    ("sparse-exact-taat", Strategy::TermAtATime),
                ] {
                    let (p50, p99, qps, mut hits) = measure(nq, |i| {
                        let p = &plans[i];
                        let candidates = query::search(&idx, &p.terms, p.depth(TOP), strategy);
                        p.finish(candidates, TOP, &index_docs)
                            .expect("the vectors are kept")
                    });
                    Index::hits_to_rows(&mut hits, &rows);
                    push(
                        Row {
                            engine: engine.into(),
                            n,
                            k: Some(*k),
                            mode: Some(mode.to_string()),
                            p50_ms: p50,
                            p99_ms: p99,
                            qps,
                            bytes: idx.stats().file_bytes
                                + if mode.uses_vectors() {
                                    by_doc.bytes()
                                } else {
                                    0
                                },
                            build_s,
                            recall_at_10: recall(&docs_of(&hits), &exact),
                            sparse_recall_at_10: Some(recall(&docs_of(&hits), &exact_sparse)),
                        },
                        &mut report,
                    );
                }
            }
            drop(idx);
            std::fs::remove_dir_all(&dir).ok();
        }
        if let Some(python) = &opts.python {
            let args: Vec<OsString> = [
                py_dir.display().to_string(),
                rayon::current_num_threads().to_string(),
                TOP.to_string(),
                opts.hnsw_m.to_string(),
                opts.hnsw_ef_construction.to_string(),
                opts.hnsw_ef.to_string(),
                opts.ks
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ]
            .into_iter()
            .map(OsString::from)
            .collect();
            let rows: Vec<PythonRow> = match run_python_baseline(
                python,
                "numpy",
                "py_search.py",
                include_str!("py_search.py"),
                &args,
                scratch,
            )? {
                Ok(rows) => rows,
                Err(why) => vec![PythonRow {
                    engine: "python baselines".into(),
                    skipped: Some(why),
                    ..PythonRow::default()
                }],
            };
            for r in rows {
                let Some(found) = r.hits else {
                    let why = r.skipped.unwrap_or_default();
                    let line = format!("{}: {why}", r.engine);
                    if !report.skipped.contains(&line) {
                        report.skipped.push(line);
                    }
                    continue;
                };
                let sparse_recall_at_10 = r.k.and_then(|k| {
                    let (_, exact_sparse) = sparse_exact.iter().find(|e| e.0 == k)?;
                    Some(recall(&found, exact_sparse))
                });
                push(
                    Row {
                        engine: r.engine,
                        n,
                        k: r.k,
                        mode: None,
                        p50_ms: r.p50_ms.unwrap_or(f64::NAN),
                        p99_ms: r.p99_ms.unwrap_or(f64::NAN),
                        qps: r.qps.unwrap_or(f64::NAN),
                        bytes: r.bytes.unwrap_or(0),
                        build_s: r.build_s.unwrap_or(f64::NAN),
                        recall_at_10: recall(&found, &exact),
                        sparse_recall_at_10,
                    },
                    &mut report,
                );
            }
            std::fs::remove_dir_all(&py_dir).ok();
        }
    }
    Ok(report)
}

impl Report {
    /// The report as a Markdown table, with ratios to dense flat search at each size.
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "# ksparse bench search\n\n{} real {}-d vectors (larger collections generated near them), {} timed queries, top {TOP}; latency single-threaded, QPS on {} threads; sparse width {}. recall@10 = overlap with dense exact top 10; sparse recall@10 = overlap with the exact sparse top 10 at the same k.\n\n| engine | n | k | mode | p50 ms | p99 ms | QPS | bytes | build s | recall@10 | sparse recall@10 | p50 vs dense flat |\n|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            self.real_vectors, self.dim, self.queries, self.threads, self.hidden
        );
        for r in &self.rows {
            let flat = self
                .rows
                .iter()
                .find(|f| f.engine == "dense-flat" && f.n == r.n)
                .map_or(f64::NAN, |f| f.p50_ms);
            md += &format!(
                "| {} | {} | {} | {} | {:.3} | {:.3} | {:.0} | {} | {:.2} | {:.3} | {} | {:.1}× faster |\n",
                r.engine,
                r.n,
                r.k.map_or("–".into(), |k| k.to_string()),
                r.mode.as_deref().unwrap_or("–"),
                r.p50_ms,
                r.p99_ms,
                r.qps,
                r.bytes,
                r.build_s,
                r.recall_at_10,
                r.sparse_recall_at_10
                    .map_or("–".into(), |v| format!("{v:.3}")),
                flat / r.p50_ms
            );
        }
        for why in &self.skipped {
            md += &format!("\nSkipped {why}.");
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_vectors_are_unit_and_start_with_the_real_ones() {
        let real = Array2::from_shape_fn((3, 4), |(i, j)| if i == j { 1.0 } else { 0.0 });
        let x = generate(&real, 10, 0.2, 1);
        assert_eq!(x.dim(), (10, 4));
        assert_eq!(x.row(1), real.row(1));
        for r in x.rows() {
            assert!((r.dot(&r) - 1.0).abs() < 1e-5);
        }
        assert_eq!(generate(&real, 10, 0.2, 1), x, "seeded");
    }
}
