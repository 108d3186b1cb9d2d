//! `ksparse bench train`: encoder training throughput (samples/s) against the same step
//! in PyTorch on CPU, in one run, with the same shapes and thread count.
//!
//! The step: pre-activations (the one dense product, batch × d × h), TopK at k and 4k,
//! loss MSE(k) + MSE(4k)/8 (variance-normalised), gradients, Adam, decoder atoms projected
//! and renormalised. ksparse computes the backward pass only on the selected latents;
//! PyTorch (as public TopK autoencoder code does) scatters the codes into dense batch × h
//! matrices and lets autograd run dense products.
//!
//! The two sides alternate for several rounds (ksparse's timed steps, then PyTorch's) and
//! the report gives the median of the per-round ratios: on a shared machine a slow spell
//! then hits both sides of a round rather than one side of the whole comparison.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{run_python_baseline, PythonTiming};
use ksparse::base::stopwatch::timed;
use ksparse::encoder::loss::{step, Batch, LossWeights, Workspace};
use ksparse::encoder::train::{init_encoder, Optimizer};

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
    /// Timed steps per round (after one warm-up step).
    pub steps: usize,
    /// Alternating rounds of both sides.
    pub rounds: usize,
    /// Threads on both sides.
    pub threads: usize,
    /// Python with torch for the baseline; `None` skips it.
    pub python: Option<PathBuf>,
}

/// The PyTorch side.
#[derive(Debug, Serialize)]
pub struct Baseline {
    /// Samples per second, median over rounds.
    pub samples_per_s: f64,
    /// PyTorch version.
    pub torch: String,
    /// ksparse samples/s divided by PyTorch samples/s: the median of the rounds' ratios.
    pub ratio: f64,
    /// Each round's ratio, in order.
    pub round_ratios: Vec<f64>,
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
    /// Timed steps per round.
    pub steps: usize,
    /// Rounds.
    pub rounds: usize,
    /// Threads.
    pub threads: usize,
    /// ksparse training samples per second, median over rounds.
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
    let rounds = opts.rounds.max(1);
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
    let samples = (opts.steps * opts.batch) as f64;
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
    let (mut ours, mut theirs, mut torch_version) = (Vec::new(), Vec::new(), None);
    let mut baseline_skipped = opts
        .python
        .is_none()
        .then(|| "no Python interpreter given".to_string());
    for round in 0..rounds {
        let ((), secs) = timed(|| (1..=opts.steps).for_each(|i| run_step(round * opts.steps + i)));
        ours.push(samples / secs);
        let (Some(python), None) = (&opts.python, &baseline_skipped) else {
            continue;
        };
        match run_python_baseline::<PythonTiming>(
            python,
            "torch",
            "torch_train.py",
            include_str!("torch_train.py"),
            &args,
            scratch,
        )? {
            Ok(py) => {
                theirs.push(samples / py.seconds);
                torch_version = Some(py.torch);
            }
            Err(why) => baseline_skipped = Some(why),
        }
    }
    let (codes, enc_secs) = timed(|| enc.encode(&data, rows, opts.k));
    let torch = torch_version.map(|torch| {
        let round_ratios: Vec<f64> = ours.iter().zip(&theirs).map(|(a, b)| a / b).collect();
        Baseline {
            samples_per_s: median(&theirs),
            torch,
            ratio: median(&round_ratios),
            round_ratios,
        }
    });
    let samples_per_s = median(&ours);
    Ok(Report {
        dim: d,
        hidden: opts.hidden,
        k: opts.k,
        batch: opts.batch,
        steps: opts.steps,
        rounds,
        threads: opts.threads,
        samples_per_s,
        step_ms: 1000.0 * opts.batch as f64 / samples_per_s,
        encode_vectors_per_s: codes.len() as f64 / enc_secs,
        torch,
        baseline_skipped,
    })
}

/// The median of non-empty `v` (mean of the middle two for an even count).
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

impl Report {
    /// A short Markdown summary.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "# ksparse bench train\n\nd = {}, h = {}, k = {}, batch {}, {} rounds of {} timed steps per side (alternating), {} threads. Loss MSE(k) + MSE(4k)/8, Adam. Medians over rounds.\n\n\
             | engine | samples/s | ms/step |\n|---|---:|---:|\n| ksparse | {:.0} | {:.1} |\n",
            self.dim, self.hidden, self.k, self.batch, self.rounds, self.steps, self.threads, self.samples_per_s, self.step_ms
        );
        match (&self.torch, &self.baseline_skipped) {
            (Some(b), _) => {
                s += &format!(
                "| PyTorch {} (CPU) | {:.0} | {:.1} |\n\nRatio ksparse / PyTorch: **{:.2}×** (median; rounds: {}).\n",
                b.torch,
                b.samples_per_s,
                1000.0 * self.batch as f64 / b.samples_per_s,
                b.ratio,
                b.round_ratios
                    .iter()
                    .map(|r| format!("{r:.2}×"))
                    .collect::<Vec<_>>()
                    .join(", ")
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
