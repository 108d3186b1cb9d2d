//! `ksparse bench search`: the sparse index against dense flat search and HNSW on the same
//! vectors, in one run, at several collection sizes.
//!
//! Collections larger than the real embeddings are drawn by [`generate`]: each extra vector
//! is a real one plus Gaussian noise, renormalised, so sparse codes keep a realistic latent
//! usage. Latency is single-threaded (one query at a time on the calling thread); QPS runs
//! all queries on all threads. recall@10 is the overlap with dense exact search's top 10.

use std::path::Path;

use anyhow::{bail, Result};
use ndarray::{Array2, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use super::timed;
use crate::encoder::train::add_noise;
use crate::encoder::SparseEncoder;
use crate::index::{self, Index};
use crate::search::dense::FlatIndex;
use crate::search::hnsw::HnswIndex;
use crate::search::Hit;

/// Hits per query.
const TOP: usize = 10;

/// What to run.
pub struct Options {
    /// Collection sizes.
    pub ns: Vec<usize>,
    /// Code lengths of the sparse rows.
    pub ks: Vec<usize>,
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
}

/// One engine at one size (and k for sparse rows).
#[derive(Debug, Serialize)]
pub struct Row {
    /// "sparse-exact", "dense-flat" or "hnsw".
    pub engine: String,
    /// Documents.
    pub n: usize,
    /// Code length (sparse rows only).
    pub k: Option<usize>,
    /// Median single-threaded latency, milliseconds.
    pub p50_ms: f64,
    /// 99th-percentile single-threaded latency, milliseconds.
    pub p99_ms: f64,
    /// Queries per second on all threads.
    pub qps: f64,
    /// Bytes of the searchable structure (files for the sparse index, vectors for flat,
    /// resident-memory growth during the build for HNSW).
    pub bytes: usize,
    /// Build time, seconds (sparse: encoding + index build).
    pub build_s: f64,
    /// Mean overlap of the top 10 with dense exact search's top 10.
    #[serde(rename = "recall@10")]
    pub recall_at_10: f64,
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

/// Latency percentiles (ms) of `search` run once per query on this thread, and QPS with
/// the queries spread over all threads.
fn measure<F>(queries: usize, search: F) -> (f64, f64, f64, Vec<Vec<Hit>>)
where
    F: Fn(usize) -> Vec<Hit> + Sync,
{
    let mut ms = Vec::with_capacity(queries);
    let mut hits = Vec::with_capacity(queries);
    for i in 0..queries {
        let (h, s) = timed(|| search(i));
        ms.push(s * 1e3);
        hits.push(h);
    }
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    let rounds = (2000 / queries.max(1)).max(1);
    let ((), secs) = timed(|| {
        (0..rounds * queries).into_par_iter().for_each(|i| {
            std::hint::black_box(search(i % queries));
        })
    });
    (pct(0.5), pct(0.99), (rounds * queries) as f64 / secs, hits)
}

fn recall(hits: &[Vec<Hit>], exact: &[Vec<Hit>]) -> f64 {
    let found: usize = hits
        .iter()
        .zip(exact)
        .map(|(h, e)| {
            h.iter()
                .filter(|x| e.iter().any(|y| y.doc == x.doc))
                .count()
        })
        .sum();
    found as f64 / exact.iter().map(Vec::len).sum::<usize>().max(1) as f64
}

/// Resident memory of this process, bytes (Linux; 0 elsewhere).
fn resident_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
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
    };
    let mut push = |row: Row, report: &mut Report| {
        on_row(&row);
        report.rows.push(row);
    };
    for &n in &opts.ns {
        let x = generate(real, n, opts.noise, opts.seed);
        let flat = FlatIndex::new(x.clone());
        let (p50, p99, qps, exact) =
            measure(nq, |i| flat.search(ndarray::ArrayView1::from(q[i]), TOP));
        push(
            Row {
                engine: "dense-flat".into(),
                n,
                k: None,
                p50_ms: p50,
                p99_ms: p99,
                qps,
                bytes: flat.bytes(),
                build_s: 0.0,
                recall_at_10: 1.0,
            },
            &mut report,
        );
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
                p50_ms: p50,
                p99_ms: p99,
                qps,
                bytes,
                build_s,
                recall_at_10: recall(&hits, &exact),
            },
            &mut report,
        );
        drop(hnsw);
        let xs = x.as_standard_layout();
        let xs = xs.as_slice().expect("standard layout");
        for (k, enc) in &encoders {
            let dir = scratch.join(format!("sparse-n{n}-k{k}"));
            let (built, build_s) = timed(|| -> Result<()> {
                let codes = enc.encode(xs, n, *k);
                let ids: Vec<String> = (0..n).map(|i| i.to_string()).collect();
                index::build(&dir, &codes, &ids, enc.hidden)?;
                Ok(())
            });
            built?;
            let idx = Index::open(&dir)?;
            let sparse_q: Vec<Vec<(u32, f32)>> = q
                .iter()
                .map(|v| {
                    let c = enc.encode_one(v, *k);
                    c.ids.into_iter().zip(c.values).collect()
                })
                .collect();
            let (p50, p99, qps, hits) = measure(nq, |i| {
                idx.search(&sparse_q[i], TOP, 0).expect("checked query")
            });
            push(
                Row {
                    engine: "sparse-exact".into(),
                    n,
                    k: Some(*k),
                    p50_ms: p50,
                    p99_ms: p99,
                    qps,
                    bytes: idx.stats().file_bytes,
                    build_s,
                    recall_at_10: recall(&hits, &exact),
                },
                &mut report,
            );
            drop(idx);
            std::fs::remove_dir_all(&dir).ok();
        }
    }
    Ok(report)
}

impl Report {
    /// The report as a Markdown table, with ratios to dense flat search at each size.
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "# ksparse bench search\n\n{} real {}-d vectors (larger collections generated near them), {} timed queries, top {TOP}; latency single-threaded, QPS on {} threads; sparse width {}. recall@10 = overlap with dense exact top 10.\n\n| engine | n | k | p50 ms | p99 ms | QPS | bytes | build s | recall@10 | p50 vs dense flat |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            self.real_vectors, self.dim, self.queries, self.threads, self.hidden
        );
        for r in &self.rows {
            let flat = self
                .rows
                .iter()
                .find(|f| f.engine == "dense-flat" && f.n == r.n)
                .map_or(f64::NAN, |f| f.p50_ms);
            md += &format!(
                "| {} | {} | {} | {:.3} | {:.3} | {:.0} | {} | {:.2} | {:.3} | {:.1}× faster |\n",
                r.engine,
                r.n,
                r.k.map_or("–".into(), |k| k.to_string()),
                r.p50_ms,
                r.p99_ms,
                r.qps,
                r.bytes,
                r.build_s,
                r.recall_at_10,
                flat / r.p50_ms
            );
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
