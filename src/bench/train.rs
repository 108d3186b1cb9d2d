//! `ksparse bench train`: encoder training throughput (samples/s) against the same step
//! in PyTorch on CPU, in one run, with the same shapes and thread count.
//!
//! The step: pre-activations (the one dense product, batch × d × h), TopK at k and 4k,
//! loss MSE(k) + MSE(4k)/8 (variance-normalised), gradients, Adam, decoder atoms projected
//! and renormalised. ksparse computes the backward pass only on the selected latents;
//! PyTorch (as public TopK autoencoder code does) scatters the codes into dense batch × h
//! matrices and lets autograd run dense products.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{run_python_baseline, timed};
use crate::encoder::loss::{step, Batch, LossWeights, Workspace};
use crate::encoder::train::{init_encoder, Optimizer};

/// Shapes and settings of the benchmark.
pub struct Options {
    /// Input dimension d.
    pub dim: usize,
    /// Latents h.
    pub hidden: usize,
    /// Active latents k.
    pub k: usize,
    /// Vectors per step.
    pub batch: usize,
    /// Timed steps (after one warm-up step).
    pub steps: usize,
    /// Threads on both sides.
    pub threads: usize,
    /// Python with torch for the baseline; `None` skips it.
    pub python: Option<PathBuf>,
}

/// The PyTorch side.
#[derive(Debug, Serialize)]
pub struct Baseline {
    /// Samples per second.
    pub samples_per_s: f64,
    /// PyTorch version.
    pub torch: String,
    /// ksparse samples/s divided by PyTorch samples/s.
    pub ratio: f64,
}

/// Benchmark results (`report.json`).
#[derive(Debug, Serialize)]
pub struct Report {
    /// d.
    pub dim: usize,
    /// h.
    pub hidden: usize,
    /// k.
    pub k: usize,
    /// Batch size.
    pub batch: usize,
    /// Timed steps.
    pub steps: usize,
    /// Threads.
    pub threads: usize,
    /// ksparse training samples per second.
    pub samples_per_s: f64,
    /// ksparse milliseconds per step.
    pub step_ms: f64,
    /// ksparse encoding throughput (vectors/s) at k.
    pub encode_vectors_per_s: f64,
    /// PyTorch on the same step, when available.
    pub torch: Option<Baseline>,
    /// Why the baseline did not run, when it did not.
    pub baseline_skipped: Option<String>,
}

/// Runs the benchmark; `scratch` holds the Python script.
pub fn run(opts: &Options, scratch: &Path) -> Result<Report> {
    if opts.k == 0 || 4 * opts.k > opts.hidden || opts.batch == 0 || opts.steps == 0 {
        bail!("need 1 ≤ 4k ≤ hidden and at least one vector and one step");
    }
    let d = opts.dim;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let rows = opts.batch * 4;
    let mut data: Vec<f32> = (0..rows * d)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    for r in data.chunks_mut(d) {
        let n = r.iter().map(|v| v * v).sum::<f32>().sqrt();
        r.iter_mut().for_each(|v| *v /= n);
    }
    let mut enc = init_encoder(d, opts.hidden, vec![0.0; d], &mut rng);
    let mut optimizer = Optimizer::new(d, opts.hidden, 1e-4);
    let weights = LossWeights {
        aux: 0.0,
        dist: 0.0,
        ..LossWeights::default()
    };
    let mut workspace = Workspace::default();
    let mut run_step = |i: usize| {
        let x = &data[(i % 4) * opts.batch * d..(i % 4 + 1) * opts.batch * d];
        let batch = Batch {
            x,
            recon: opts.batch,
            pairs: 0,
        };
        step(&enc, &batch, opts.k, &weights, 1.0, None, &mut workspace);
        optimizer.apply(&mut enc, &mut workspace.grads);
    };
    run_step(0);
    let ((), secs) = timed(|| (1..=opts.steps).for_each(&mut run_step));
    let samples_per_s = (opts.steps * opts.batch) as f64 / secs;
    let (codes, enc_secs) = timed(|| enc.encode(&data, rows, opts.k));
    let mut report = Report {
        dim: d,
        hidden: opts.hidden,
        k: opts.k,
        batch: opts.batch,
        steps: opts.steps,
        threads: opts.threads,
        samples_per_s,
        step_ms: 1000.0 * secs / opts.steps as f64,
        encode_vectors_per_s: codes.len() as f64 / enc_secs,
        torch: None,
        baseline_skipped: None,
    };
    let Some(python) = &opts.python else {
        report.baseline_skipped = Some("no Python interpreter given".into());
        return Ok(report);
    };
    let args: Vec<OsString> = [
        opts.dim,
        opts.hidden,
        opts.k,
        opts.batch,
        opts.steps,
        opts.threads,
    ]
    .iter()
    .map(|v| v.to_string().into())
    .collect();
    let py = match run_python_baseline(
        python,
        "torch",
        "torch_train.py",
        include_str!("torch_train.py"),
        &args,
        scratch,
    )? {
        Ok(t) => t,
        Err(why) => {
            report.baseline_skipped = Some(why);
            return Ok(report);
        }
    };
    let theirs = (opts.steps * opts.batch) as f64 / py.seconds;
    report.torch = Some(Baseline {
        samples_per_s: theirs,
        torch: py.torch,
        ratio: samples_per_s / theirs,
    });
    Ok(report)
}

impl Report {
    /// A short Markdown summary.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "# ksparse bench train\n\nd = {}, h = {}, k = {}, batch {}, {} timed steps, {} threads. Loss MSE(k) + MSE(4k)/8, Adam.\n\n\
             | engine | samples/s | ms/step |\n|---|---:|---:|\n| ksparse | {:.0} | {:.1} |\n",
            self.dim, self.hidden, self.k, self.batch, self.steps, self.threads, self.samples_per_s, self.step_ms
        );
        match (&self.torch, &self.baseline_skipped) {
            (Some(b), _) => {
                s += &format!(
                "| PyTorch {} (CPU) | {:.0} | {:.1} |\n\nRatio ksparse / PyTorch: **{:.2}×**.\n",
                b.torch,
                b.samples_per_s,
                1000.0 * self.batch as f64 / b.samples_per_s,
                b.ratio
            )
            }
            (None, Some(why)) => s += &format!("\nPyTorch baseline skipped: {why}.\n"),
            (None, None) => {}
        }
        s += &format!(
            "\nEncoding at k = {}: {:.0} vectors/s.\n",
            self.k, self.encode_vectors_per_s
        );
        s
    }
}
