//! `ksparse build` and `ksparse search`: a corpus file → a search folder → ranked hits.

use std::io::BufRead as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use ksparse::data::{text_lines, Shard};
use ksparse::encoder::loss::LossWeights;
use ksparse::encoder::scoring::{MissingVectors, ScoringMode};
use ksparse::encoder::train::{TrainConfig, PSEUDO_DISTILL_WEIGHT};
use ksparse::pipeline::{self, ModelError};

use super::export::{engine_hint, open_search, Opened};
use crate::args::{
    cause, check_rescore, output_hint, positive_usize, EncoderShapeArgs, LockArgs, ModelArgs,
};
use crate::output::{print_json, print_line, Progress, Stdout};

#[derive(Args)]
pub struct BuildArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// corpus.jsonl(.gz) (BEIR) or a text file with one passage per line.
    #[arg(long)]
    corpus: PathBuf,
    /// The search folder to write.
    #[arg(long)]
    output: PathBuf,
    /// Use this trained encoder instead of training one on the corpus.
    #[arg(long)]
    encoder: Option<PathBuf>,
    #[command(flatten)]
    shape: EncoderShapeArgs,
    /// Seed of the encoder's training.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Cache of embeddings and encoders.
    #[arg(long, default_value = ".ksparse-cache")]
    cache: PathBuf,
    /// Train the encoder on the documents alone, without pseudo-queries (by default one
    /// title or sentence per document is embedded too, and the encoder learns the dense
    /// model's scores for them: +1.8 points of symmetric NDCG@10 on SciFact's training
    /// queries, for about 15 % more embedding and 35 % more training time).
    #[arg(long)]
    no_pseudo_queries: bool,
    /// Also keep the documents' dense vectors, one byte per dimension (d bytes a
    /// document), so that `search --mode two-stage-dense` can re-rank by them.
    #[arg(long)]
    keep_vectors: bool,
    /// Build only part I of N (counted from 0) of the corpus, so that N machines share the
    /// work: a document belongs to the part given by a hash of its id. Needs --encoder
    /// (every part must share one encoder: train it once, e.g. by a build of a sample).
    /// Export each part into one collection with `ksparse export`.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    /// Print the manifest as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    lock: LockArgs,
}

#[derive(Args)]
pub struct SearchArgs {
    /// Search folder written by `ksparse build`.
    index: PathBuf,
    /// Query texts.
    query: Vec<String>,
    /// Read queries, one per line, from this file (- for stdin).
    #[arg(long)]
    queries: Option<PathBuf>,
    /// Hits per query.
    #[arg(long, value_parser = positive_usize, default_value_t = 10)]
    top: usize,
    /// Scoring mode: two-stage[:R] (the symmetric top R, default 100, re-ranked by the
    /// reconstruction score), two-stage-dense[:R] (re-ranked by the kept dense vectors:
    /// build with --keep-vectors), symmetric, symmetric:M, reconstruction or projected:M.
    /// Default: two-stage-dense where the folder kept vectors, two-stage otherwise;
    /// symmetric for an encoder trained on judged pairs (`train --pairs`), whose own
    /// scores beat both re-rankings.
    #[arg(long)]
    mode: Option<ScoringMode>,
    /// Single-stage modes: re-rank the top R by the exact f32 codes (0 = off).
    #[arg(long, default_value_t = 0)]
    rescore: usize,
    /// The model, when it has moved since the build (must be the same model).
    #[arg(long)]
    model: Option<String>,
    /// Search through another engine holding this folder's codes: a URL given to `ksparse
    /// export --to` (milvus://…, postgres://…; add search=hnsw&ef_search=N to a Postgres
    /// URL for pgvector's approximate index), or `exact` for the folder's codes in memory
    /// with exact f32 scores. Queries are still embedded and encoded here. Default mode
    /// through an engine: two-stage (engines keep codes, not dense vectors).
    #[arg(long, value_name = "URL|exact")]
    backend: Option<String>,
    /// One JSON object per query.
    #[arg(long)]
    json: bool,
}

pub fn build(a: BuildArgs) -> Result<()> {
    let embedder = a.model.load()?;
    let opts = pipeline::BuildOptions {
        corpus: &a.corpus,
        output: &a.output,
        encoder: a.encoder.as_deref(),
        train: TrainConfig {
            hidden: a.shape.hidden.resolve(embedder.dim()),
            k: a.shape.k,
            epochs: a.shape.epochs,
            seed: a.seed,
            losses: LossWeights {
                distill: if a.no_pseudo_queries {
                    0.0
                } else {
                    PSEUDO_DISTILL_WEIGHT
                },
                ..LossWeights::default()
            },
            ..TrainConfig::default()
        },
        k: a.encoder.is_some().then_some(a.shape.k),
        cache: &a.cache,
        batch_size: a.model.batch_size,
        wait: a.lock.wait(),
        keep_vectors: a.keep_vectors,
        shard: a.shard,
    };
    let manifest = pipeline::build(&embedder, &opts, &Progress::new()).map_err(|e| {
        let e = output_hint(a.lock.hint(e), &a.output, "--output");
        match cause::<ModelError>(&e) {
            Some(ModelError::EncoderDim { .. }) => {
                e.context("--encoder does not fit --model: leave out --encoder to train one")
            }
            Some(ModelError::ShardWithoutEncoder { .. }) => e.context(
                "give --encoder: the encoder of a build of the whole corpus or of a sample (its encoder/ folder)",
            ),
            _ => e,
        }
    })?;
    if a.json {
        print_json(&manifest)
    } else {
        print_line(&format!(
            "{}: {} documents, k = {} of {} latents, model {}",
            a.output.display(),
            manifest.documents,
            manifest.k,
            manifest.hidden,
            manifest.model
        ))
    }
}

pub fn search(a: SearchArgs) -> Result<()> {
    check_rescore(a.rescore, a.top)?;
    if a.rescore > 0 && a.backend.is_some() {
        anyhow::bail!("--rescore re-ranks the on-disk index's quantised scores; engines score exactly: leave out --rescore with --backend");
    }
    let queries = read_queries(&a)?;
    let Opened {
        searcher,
        engine,
        mode,
    } = open_search(&a.index, a.model.as_deref(), a.backend.as_deref(), a.mode)?;
    let results = searcher
        .search_on(engine.as_deref(), &queries, a.top, mode, a.rescore)
        .map_err(|e| match cause::<MissingVectors>(&e) {
            Some(_) if engine.is_some() => {
                e.context("engines keep codes, not dense vectors: search with --mode two-stage")
            }
            Some(_) => e.context(format!(
                "rebuild {} with `ksparse build --keep-vectors`, or search with --mode two-stage",
                a.index.display()
            )),
            None => engine_hint(e),
        })?;
    let mut out = Stdout::new();
    for (q, hits) in queries.iter().zip(&results) {
        let mut text = String::new();
        if a.json {
            text = serde_json::json!({ "query": q, "hits": hits }).to_string();
        } else {
            text += &format!("query: {q}\n");
            for (rank, h) in hits.iter().enumerate() {
                let title = if h.title.is_empty() {
                    String::new()
                } else {
                    format!("{} — ", h.title)
                };
                text += &format!(
                    "{:>3}. {}  {:.4}  {title}{}\n",
                    rank + 1,
                    h.id,
                    h.score,
                    h.snippet
                );
            }
        }
        if !out.line(&text)? {
            break;
        }
    }
    out.finish()
}

/// Opens search folder `dir` (with `model` when it moved), with the flag to change when
/// the model is missing or another.
pub fn open_searcher(dir: &std::path::Path, model: Option<&str>) -> Result<pipeline::Searcher> {
    pipeline::Searcher::open(dir, model).map_err(|e| {
        let hint = match cause::<ModelError>(&e) {
            Some(ModelError::Unavailable { .. }) => {
                "give the path of the folder's model with --model".to_string()
            }
            Some(ModelError::Different { given, .. }) => format!(
                "search with the folder's model (--model PATH), or rebuild the folder with `ksparse build --model {}`",
                given.display()
            ),
            _ => return e,
        };
        e.context(hint)
    })
}

/// The query texts: the arguments, then the non-empty lines of --queries (- for stdin).
fn read_queries(a: &SearchArgs) -> Result<Vec<String>> {
    let mut queries = a.query.clone();
    match &a.queries {
        Some(path) if path.as_os_str() == "-" => {
            for (i, line) in std::io::stdin().lock().lines().enumerate() {
                let line = line.with_context(|| {
                    format!("cannot read queries from standard input (line {})", i + 1)
                })?;
                if !line.trim().is_empty() {
                    queries.push(line.trim().to_string());
                }
            }
        }
        Some(path) => {
            for line in text_lines(path)? {
                let (_, line) = line?;
                if !line.trim().is_empty() {
                    queries.push(line.trim().to_string());
                }
            }
        }
        None => {}
    }
    if queries.is_empty() {
        anyhow::bail!("no query: give query text as arguments or --queries FILE (- for stdin)");
    }
    Ok(queries)
}
