//! `ksparse eval` (the report), `eval-dense`, `eval-sparse` and `eval-run`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use ksparse::encoder::scoring::{ModeSpec, ScoringMode};
use ksparse::encoder::Hidden;
use ksparse::eval;
use ksparse::pipeline;

use super::export::{engine_hint, open_search, Opened};
use crate::args::{positive_usize, width, ModelArgs};
use crate::output::{print_eval, print_json, print_text, Progress};

#[derive(Args)]
#[command(mut_arg("model", |a| a.required(false).required_unless_present("index")))]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// BEIR-layout folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv (each may be .gz).
    #[arg(long)]
    dataset: PathBuf,
    /// Qrels split to evaluate.
    #[arg(long, default_value = "test")]
    split: String,
    /// Code lengths, comma-separated.
    #[arg(long, value_parser = positive_usize, value_delimiter = ',', default_value = "16,32,64,128")]
    k: Vec<usize>,
    /// Encoder widths, comma-separated (numbers or multiples of d such as 4d). 8d with
    /// 200 epochs was chosen on SciFact's training queries (see the README's quality
    /// section); 4d trains in a quarter of the time at a few points less.
    #[arg(long, value_parser = width, value_delimiter = ',', default_value = "8d")]
    hidden: Vec<Hidden>,
    /// Scoring modes, comma-separated; m may be a multiple of k (symmetric:4k).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "symmetric,symmetric:4k,two-stage,two-stage-dense,reconstruction"
    )]
    modes: Vec<ModeSpec>,
    /// Training passes of each unsupervised encoder.
    #[arg(long, value_parser = positive_usize, default_value_t = 200)]
    epochs: usize,
    /// Training passes of each supervised encoder (InfoNCE on few pairs overfits sooner).
    #[arg(long, value_parser = positive_usize, default_value_t = 50)]
    supervised_epochs: usize,
    /// Seed of the encoders' training.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Train the encoders on these BEIR folders' corpora instead of the evaluated one
    /// (repeatable).
    #[arg(long)]
    train_on: Vec<PathBuf>,
    /// Also train each encoder with InfoNCE on (query, relevant document) pairs from the
    /// dataset's qrels/train.tsv, reported as supervised rows.
    #[arg(long)]
    supervised: bool,
    /// Train the unsupervised encoders on the documents alone, without pseudo-queries (see
    /// `ksparse build --help`).
    #[arg(long)]
    no_pseudo_queries: bool,
    /// Cache of embeddings and encoders.
    #[arg(long, default_value = ".ksparse-cache")]
    cache: PathBuf,
    /// Report folder.
    #[arg(long, default_value = "eval-report")]
    output: PathBuf,
    /// Print report.json to stdout (instead of report.md).
    #[arg(long)]
    json: bool,
    /// Evaluate this search folder (from `ksparse build` on the dataset's corpus) as it
    /// is, instead of training encoders: NDCG@10, Recall@100 and MRR@10 of its
    /// `ksparse search` on the judged queries. Prints the metrics; writes no report.
    /// --model is then only needed when the folder's model has moved.
    #[arg(long, value_name = "FOLDER")]
    index: Option<PathBuf>,
    /// With --index: search through this engine instead of the folder's index (a URL
    /// given to `ksparse export --to`, or `exact`; see `ksparse search --help`).
    #[arg(long, value_name = "URL|exact", requires = "index")]
    backend: Option<String>,
    /// With --index: the scoring mode (default: `ksparse search`'s for the folder, or
    /// through an engine).
    #[arg(long, requires = "index")]
    mode: Option<ScoringMode>,
}

#[derive(Args)]
pub struct EvalDenseArgs {
    /// BEIR-layout folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv (each may be .gz).
    #[arg(long)]
    dataset: PathBuf,
    /// Qrels split to evaluate.
    #[arg(long, default_value = "test")]
    split: String,
    #[command(flatten)]
    model: ModelArgs,
    /// Precomputed corpus vectors (.npy with .ids.txt or .ids.json beside it) instead of embedding.
    #[arg(long, requires = "query_embeddings")]
    corpus_embeddings: Option<PathBuf>,
    /// Precomputed query vectors, as for --corpus-embeddings.
    #[arg(long, requires = "corpus_embeddings")]
    query_embeddings: Option<PathBuf>,
    /// Drop hits whose doc id equals the query id (BEIR's rule for ArguAna and Quora).
    #[arg(long)]
    ignore_identical_ids: bool,
    /// Also write the ranked top 100 per query as a TREC run file.
    #[arg(long)]
    run_output: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct EvalSparseArgs {
    /// BEIR-layout folder.
    #[arg(long)]
    dataset: PathBuf,
    /// Qrels split to evaluate.
    #[arg(long, default_value = "test")]
    split: String,
    /// Encoder folder written by `ksparse train`.
    #[arg(long)]
    encoder: PathBuf,
    /// Corpus vectors (.npy with ids beside).
    #[arg(long)]
    corpus_embeddings: PathBuf,
    /// Query vectors (.npy with ids beside).
    #[arg(long)]
    query_embeddings: PathBuf,
    /// Non-zeros per document code (default: the encoder's k).
    #[arg(long, value_parser = positive_usize)]
    k: Option<usize>,
    /// two-stage[:R], two-stage-dense[:R], symmetric, symmetric:M, reconstruction or
    /// projected:M.
    #[arg(long, default_value = "two-stage")]
    mode: ScoringMode,
    /// Drop hits whose doc id equals the query id.
    #[arg(long)]
    ignore_identical_ids: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct EvalRunArgs {
    /// qrels TSV (query-id, corpus-id, score).
    #[arg(long)]
    qrels: PathBuf,
    /// Run file: `qid Q0 docid rank score tag` per line.
    #[arg(long)]
    run: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn eval(a: EvalArgs) -> Result<()> {
    if let Some(dir) = &a.index {
        return eval_folder(&a, dir);
    }
    let embedder = a.model.load()?;
    let opts = pipeline::EvalOptions {
        dataset: &a.dataset,
        split: &a.split,
        ks: a.k,
        hidden: a.hidden,
        modes: a.modes,
        epochs: a.epochs,
        supervised_epochs: a.supervised_epochs,
        seed: a.seed,
        train_on: &a.train_on,
        supervised: a.supervised,
        pseudo_queries: !a.no_pseudo_queries,
        cache: &a.cache,
        batch_size: a.model.batch_size,
    };
    let report = pipeline::evaluate(&embedder, &opts, &Progress::new())?;
    report.write(&a.output)?;
    if a.json {
        print_json(&report)?;
    } else {
        print_text(&report.markdown())?;
    }
    tracing::info!(output = %a.output.display(), "wrote report.json, report.md and three SVG plots");
    Ok(())
}

/// `eval --index`: one search folder, through its index or `--backend`.
fn eval_folder(a: &EvalArgs, dir: &std::path::Path) -> Result<()> {
    let Opened {
        searcher,
        engine,
        mode,
    } = open_search(dir, a.model.model.as_deref(), a.backend.as_deref(), a.mode)?;
    let result =
        pipeline::evaluate_folder(&searcher, engine.as_deref(), &a.dataset, &a.split, mode)
            .map_err(engine_hint)?;
    print_eval(
        &result,
        a.json,
        serde_json::json!({
            "dataset": a.dataset,
            "split": a.split,
            "index": dir,
            "backend": engine.as_ref().map_or_else(|| "index".to_string(), |e| e.name()),
            "mode": mode.to_string(),
        }),
    )
}

pub fn dense(a: EvalDenseArgs) -> Result<()> {
    let opts = pipeline::DenseEvalOptions {
        dataset: &a.dataset,
        split: &a.split,
        vectors: a
            .corpus_embeddings
            .as_deref()
            .zip(a.query_embeddings.as_deref()),
        batch_size: a.model.batch_size,
        ignore_identical_ids: a.ignore_identical_ids,
        run_output: a.run_output.as_deref(),
    };
    let result = pipeline::evaluate_dense(&opts, || a.model.load(), &Progress::new())?;
    print_eval(
        &result,
        a.json,
        serde_json::json!({ "dataset": a.dataset, "model": a.model.name(), "split": a.split }),
    )
}

pub fn sparse(a: EvalSparseArgs) -> Result<()> {
    let result = pipeline::evaluate_sparse(&pipeline::SparseEvalOptions {
        dataset: &a.dataset,
        split: &a.split,
        encoder: &a.encoder,
        corpus_vectors: &a.corpus_embeddings,
        query_vectors: &a.query_embeddings,
        k: a.k,
        mode: a.mode,
        ignore_identical_ids: a.ignore_identical_ids,
    })?;
    print_eval(
        &result.evaluation,
        a.json,
        serde_json::json!({ "dataset": a.dataset, "encoder": a.encoder, "k": result.k, "hidden": result.hidden, "mode": a.mode.to_string(), "split": a.split, "scorer": eval::Scorer::ExactF32 }),
    )
}

pub fn run(a: EvalRunArgs) -> Result<()> {
    let result = eval::evaluate_checked(
        &ksparse::data::read_qrels(&a.qrels)?,
        &eval::read_trec_run(&a.run)?,
        &a.qrels.display().to_string(),
        &a.run.display().to_string(),
    )?;
    print_eval(&result, a.json, serde_json::json!({}))
}
