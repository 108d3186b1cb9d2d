//! `ksparse bench embed`: passages per second of [`Embedder`] against sentence-transformers.
//!
//! Both sides embed the same texts with the same batch size and thread count, after one
//! warm-up batch. ksparse's time is split into tokenization and the transformer forward
//! pass, so the report shows where the time goes. The sentence-transformers side runs
//! only where `python` can import it; its vectors are also compared with ours (cosine).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Serialize;

use super::{run_python_baseline, PythonTiming};
use ksparse::base::stopwatch::timed;
use ksparse::embed::Embedder;
use ksparse::io::{read_npy, write_atomic};

/// What to benchmark.
pub struct Options {
    /// Texts to embed (already sampled).
    pub texts: Vec<String>,
    /// Texts per batch.
    pub batch_size: usize,
    /// Threads for both sides.
    pub threads: usize,
    /// Python interpreter with sentence-transformers; `None` skips the baseline.
    pub python: Option<PathBuf>,
}

/// The sentence-transformers side of the comparison.
#[derive(Debug, Serialize)]
pub struct Baseline {
    /// Passages per second.
    pub passages_per_s: f64,
    /// PyTorch version used.
    pub torch: String,
    /// ksparse passages/s divided by sentence-transformers passages/s.
    pub ratio: f64,
    /// Smallest cosine between a ksparse vector and the sentence-transformers one.
    pub min_cosine: f64,
}

/// Benchmark results (`report.json`).
#[derive(Debug, Serialize)]
pub struct Report {
    /// Model folder.
    pub model: String,
    /// Number of texts embedded.
    pub texts: usize,
    /// Total tokens after truncation, special tokens included.
    pub tokens: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Threads.
    pub threads: usize,
    /// ksparse passages per second (tokenization included).
    pub passages_per_s: f64,
    /// ksparse tokens per second.
    pub tokens_per_s: f64,
    /// Seconds spent tokenizing.
    pub tokenize_s: f64,
    /// Seconds of the whole embed call (tokenization + forward + pooling).
    pub total_s: f64,
    /// sentence-transformers on the same texts, when available.
    pub sentence_transformers: Option<Baseline>,
    /// Why the baseline did not run, when it did not.
    pub baseline_skipped: Option<String>,
}

/// Runs the benchmark; `scratch` holds the files exchanged with Python.
pub fn run(embedder: &Embedder, opts: &Options, scratch: &Path) -> Result<Report> {
    if opts.texts.is_empty() {
        bail!("no texts to benchmark");
    }
    let warm: Vec<&String> = opts.texts.iter().take(opts.batch_size).collect();
    embedder.embed(&warm, opts.batch_size, |_| {})?;
    let (tokens, tokenize_s) = timed(|| {
        opts.texts
            .iter()
            .map(|t| embedder.tokenize(t).map(|v| v.len()))
            .sum::<Result<usize>>()
    });
    let tokens = tokens?;
    let (ours, total_s) = timed(|| embedder.embed(&opts.texts, opts.batch_size, |_| {}));
    let ours = ours?;
    let passages_per_s = opts.texts.len() as f64 / total_s;
    let mut report = Report {
        model: embedder.model_dir().path.display().to_string(),
        texts: opts.texts.len(),
        tokens,
        batch_size: opts.batch_size,
        threads: opts.threads,
        passages_per_s,
        tokens_per_s: tokens as f64 / total_s,
        tokenize_s,
        total_s,
        sentence_transformers: None,
        baseline_skipped: None,
    };
    let Some(python) = &opts.python else {
        report.baseline_skipped = Some("no Python interpreter given".into());
        return Ok(report);
    };
    let texts_json = scratch.join("texts.json");
    let out_npy = scratch.join("st_vectors.npy");
    write_atomic(&texts_json, |w| Ok(serde_json::to_writer(w, &opts.texts)?))?;
    let args: Vec<OsString> = vec![
        embedder.model_dir().path.clone().into(),
        texts_json.into(),
        opts.batch_size.to_string().into(),
        opts.threads.to_string().into(),
        out_npy.clone().into(),
    ];
    let py: PythonTiming = match run_python_baseline(
        python,
        "sentence_transformers",
        "st_embed.py",
        include_str!("st_embed.py"),
        &args,
        scratch,
    )? {
        Ok(t) => t,
        Err(why) => {
            report.baseline_skipped = Some(why);
            return Ok(report);
        }
    };
    let theirs = read_npy(&out_npy)?;
    let min_cosine = ours
        .rows()
        .into_iter()
        .zip(theirs.rows())
        .map(|(a, b)| {
            let dot: f64 = a
                .iter()
                .zip(b)
                .map(|(x, y)| (*x as f64) * (*y as f64))
                .sum();
            let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            dot / (na * nb).max(1e-30)
        })
        .fold(f64::INFINITY, f64::min);
    let st_rate = opts.texts.len() as f64 / py.seconds;
    report.sentence_transformers = Some(Baseline {
        passages_per_s: st_rate,
        torch: py.torch,
        ratio: passages_per_s / st_rate,
        min_cosine,
    });
    Ok(report)
}

impl Report {
    /// A short Markdown summary.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "# ksparse bench embed\n\nModel `{}`, {} texts ({} tokens), batch {}, {} threads.\n\n\
             | engine | passages/s | tokens/s |\n|---|---:|---:|\n| ksparse | {:.1} | {:.0} |\n",
            self.model,
            self.texts,
            self.tokens,
            self.batch_size,
            self.threads,
            self.passages_per_s,
            self.tokens_per_s
        );
        match (&self.sentence_transformers, &self.baseline_skipped) {
            (Some(b), _) => s += &format!(
                "| sentence-transformers (torch {}) | {:.1} | {:.0} |\n\nRatio ksparse / sentence-transformers: **{:.2}×**. \
                 Smallest cosine between the two outputs: {:.6}.\n",
                b.torch, b.passages_per_s, self.tokens as f64 / (self.texts as f64 / b.passages_per_s), b.ratio, b.min_cosine
            ),
            (None, Some(why)) => s += &format!("\nsentence-transformers baseline skipped: {why}.\n"),
            (None, None) => {}
        }
        s += &format!(
            "\nWhere the time goes (ksparse): tokenization {:.2} s of {:.2} s ({:.1} %); the rest is the transformer forward pass and pooling.\n",
            self.tokenize_s,
            self.total_s,
            100.0 * self.tokenize_s / self.total_s
        );
        s
    }
}
