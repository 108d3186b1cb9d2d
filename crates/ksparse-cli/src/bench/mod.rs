//! Benchmarks that compare a ksparse stage with the tool users run today, in one run, on
//! the same data and thread count, and report the ratio.

pub mod backends;
pub mod embed;
pub mod quality;
pub mod search;
pub mod serve;
pub mod train;

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use ksparse::io::write_atomic;

/// What a Python baseline script prints as its last line.
#[derive(Debug, Deserialize)]
pub struct PythonTiming {
    /// Seconds of the timed section.
    pub seconds: f64,
    /// PyTorch version the baseline ran on.
    pub torch: String,
}

/// Runs a baseline script (`source`, saved as `name` in `scratch`) with `python` and
/// `args`, and parses the last line it prints as `T` (JSON). Returns `Ok(Err(reason))`
/// when `python` cannot import `module`, so the benchmark can report the baseline as
/// skipped rather than fail.
pub fn run_python_baseline<T: DeserializeOwned>(
    python: &Path,
    module: &str,
    name: &str,
    source: &str,
    args: &[OsString],
    scratch: &Path,
) -> Result<std::result::Result<T, String>> {
    let probe = Command::new(python)
        .args(["-c", &format!("import {module}")])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        return Ok(Err(format!("{} cannot import {module}", python.display())));
    }
    let script = scratch.join(name);
    write_atomic(&script, |w| {
        Ok(std::io::Write::write_all(w, source.as_bytes())?)
    })?;
    let out = Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .with_context(|| format!("cannot run the {module} baseline"))?;
    if !out.status.success() {
        bail!(
            "{module} baseline failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let timing = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .with_context(|| format!("unexpected baseline output: {stdout}"))?;
    Ok(Ok(timing))
}

/// The CPU's model name (Linux), for reports: figures depend on it.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Where an engine benchmark's workload comes from: a search folder, the corpus it was
/// built from and query texts (flags of `bench serve` and `bench backends`).
#[derive(clap::Args)]
pub struct WorkloadArgs {
    /// A search folder written by `ksparse build` (its model and encoder make the codes).
    #[arg(long)]
    pub folder: std::path::PathBuf,
    /// The corpus it was built from.
    #[arg(long, default_value = "data/scifact/corpus.jsonl.gz")]
    pub corpus: std::path::PathBuf,
    /// Query texts (BEIR queries.jsonl or one per line).
    #[arg(long, default_value = "data/scifact/queries.jsonl.gz")]
    pub queries: std::path::PathBuf,
    /// Embedding cache (shared with `ksparse build`).
    #[arg(long, default_value = ".ksparse-cache")]
    pub cache: std::path::PathBuf,
}

/// A search folder's encoder with SciFact's corpus vectors and queries as codes: what the
/// engine benchmarks (`serve`, `backends`) search, at any size — the corpus's own codes
/// first, then codes of vectors generated near them ([`search::generate`]).
pub struct CodeWorkload {
    /// The folder's encoder.
    pub encoder: ksparse::encoder::SparseEncoder,
    /// Its documents' code length.
    pub k: usize,
    /// The corpus texts.
    pub corpus: ksparse::data::Texts,
    /// The query texts.
    pub queries: ksparse::data::Texts,
    /// The corpus vectors.
    pub vectors: ndarray::Array2<f32>,
    /// The queries' codes (symmetric, at k).
    pub query_codes: Vec<ksparse::base::SparseCode>,
}

impl CodeWorkload {
    /// Embeds the corpus and the queries with the folder's model (through the cache) and
    /// encodes the queries with its encoder.
    pub fn load(paths: &WorkloadArgs, progress: &crate::output::Progress) -> Result<Self> {
        use ksparse::pipeline::{embed_through_cache, read_manifest};
        let manifest = read_manifest(&paths.folder)?;
        let embedder = ksparse::embed::Embedder::load(&manifest.model)?;
        let (encoder, _) = ksparse::encoder::SparseEncoder::load(&paths.folder.join("encoder"))?;
        let corpus = ksparse::data::read_texts(&paths.corpus)?;
        let queries = ksparse::data::read_texts(&paths.queries)?;
        let cache = paths.cache.join("embeddings");
        let vectors = embed_through_cache(&embedder, &corpus, &cache, 32, "corpus", progress)?;
        let q = embed_through_cache(&embedder, &queries, &cache, 32, "queries", progress)?;
        let query_codes = q
            .rows()
            .into_iter()
            .map(|r| encoder.encode_one(r.as_slice().expect("standard rows"), manifest.k))
            .collect();
        Ok(Self {
            encoder,
            k: manifest.k,
            corpus,
            queries,
            vectors,
            query_codes,
        })
    }

    /// `n` document codes: the corpus's, then codes of vectors generated near them (with
    /// `seed`).
    pub fn codes(&self, n: usize, seed: u64) -> Vec<ksparse::base::SparseCode> {
        let vectors = search::generate(&self.vectors, n, 0.3, seed);
        self.encoder
            .encode(vectors.as_slice().expect("standard layout"), n, self.k)
    }

    /// The queries' codes as (latent, weight) terms.
    pub fn query_terms(&self) -> Vec<Vec<(u32, f32)>> {
        self.query_codes
            .iter()
            .map(|c| {
                c.ids
                    .iter()
                    .copied()
                    .zip(c.values.iter().copied())
                    .collect()
            })
            .collect()
    }
}
