//! The `ksparse` command line: a thin layer over the library's stages.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Array2;

use ksparse::bench;
use ksparse::data::{read_texts, Dataset, Texts};
use ksparse::embed::Embedder;
use ksparse::eval::{self, Evaluation};
use ksparse::io::{ids_path, read_ids, read_npy, write_atomic, write_ids, write_npy};

/// Single-stage semantic search with K-sparse codes.
///
/// The data's path: text → dense vectors (`embed`) → evaluation against qrels
/// (`eval-dense`). Models are sentence-transformers folders; fetch the two supported ones
/// with `scripts/fetch-models.sh`.
#[derive(Parser)]
#[command(name = "ksparse", version, about, long_about)]
struct Cli {
    /// Worker threads for all parallel work (0 = all cores).
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
    /// Log more (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Embed texts with a sentence-transformers model into an .npy matrix.
    ///
    /// The input is a BEIR corpus.jsonl (text = title + " " + text), a queries.jsonl, or a
    /// plain text file with one passage per line (ids = line numbers). Writes OUTPUT
    /// (float32, N × d, C order) and OUTPUT with extension .ids.txt (one id per line).
    ///
    /// Example: ksparse embed --model all-MiniLM-L6-v2 --input data/scifact/corpus.jsonl.gz --output corpus.npy
    Embed(EmbedArgs),
    /// Dense exact search on a BEIR dataset: NDCG@10, Recall@100, MRR@10.
    ///
    /// Embeds the corpus and the judged queries with MODEL (or reads precomputed vectors),
    /// searches every query exactly by inner product and scores the top 100 with
    /// trec_eval's conventions.
    ///
    /// Example: ksparse eval-dense --dataset data/scifact --model all-MiniLM-L6-v2
    EvalDense(EvalDenseArgs),
    /// Score a TREC run file against qrels (trec_eval conventions).
    EvalRun {
        /// qrels TSV (query-id, corpus-id, score).
        #[arg(long)]
        qrels: PathBuf,
        /// Run file: `qid Q0 docid rank score tag` per line.
        #[arg(long)]
        run: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks that compare ksparse with the usual tools in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Args)]
struct ModelArgs {
    /// Model: a sentence-transformers folder, a name under models/ (e.g. all-MiniLM-L6-v2),
    /// or a Hugging Face id in the local cache.
    #[arg(long)]
    model: String,
    /// Texts per batch (inputs are sorted by length first, so padding stays small; one
    /// batch runs per thread). 16 measured fastest on SciFact passages with MiniLM.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Truncate inputs at this many tokens (default: the model's max_seq_length).
    #[arg(long)]
    max_seq_length: Option<usize>,
}

impl ModelArgs {
    fn load(&self) -> Result<Embedder> {
        let mut e = Embedder::load(&self.model)?;
        if let Some(n) = self.max_seq_length {
            e.set_max_seq_length(n)?;
        }
        tracing::info!(model = %e.model_dir().path.display(), dim = e.dim(), max_seq_length = e.max_seq_length(), "model loaded");
        Ok(e)
    }
}

#[derive(Args)]
struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// corpus.jsonl, queries.jsonl (optionally .gz) or a text file with one passage per line.
    #[arg(long)]
    input: PathBuf,
    /// Output .npy file; the ids go beside it as .ids.txt.
    #[arg(long)]
    output: PathBuf,
}

#[derive(Args)]
struct EvalDenseArgs {
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

#[derive(Subcommand)]
enum BenchCommand {
    /// Passages/s of ksparse's embedder vs sentence-transformers on a fixed SciFact sample.
    ///
    /// Writes report.json and report.md to --output. The baseline runs where --python can
    /// import sentence_transformers; otherwise the report says it was skipped.
    Embed {
        #[command(flatten)]
        model: ModelArgs,
        /// Texts to sample from (the first --n entries, in file order).
        #[arg(long, default_value = "data/scifact/corpus.jsonl.gz")]
        input: PathBuf,
        /// Number of texts.
        #[arg(long, default_value_t = 512)]
        n: usize,
        /// Python interpreter for the sentence-transformers baseline.
        #[arg(long, default_value = "python3")]
        python: PathBuf,
        /// Report folder.
        #[arg(long, default_value = "bench-results/embed")]
        output: PathBuf,
        /// Print report.json to stdout.
        #[arg(long)]
        json: bool,
    },
}

/// mimalloc reuses the large per-batch activation buffers instead of returning them to the
/// kernel after every op (glibc's mmap threshold), which cost a page fault per touched page.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn embed_texts(e: &Embedder, texts: &Texts, batch_size: usize, what: &str) -> Result<Array2<f32>> {
    let bar = progress(texts.len(), what);
    let m = e.embed(&texts.texts, batch_size, |done| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    tracing::info!(rows = m.nrows(), rate = %format!("{:.1}/s", texts.len() as f64 / bar.elapsed().as_secs_f64()), "embedded {what}");
    Ok(m)
}

/// Reads precomputed vectors and reorders their rows to match `want` ids.
fn read_aligned(path: &Path, want: &Texts) -> Result<Array2<f32>> {
    let m = read_npy(path)?;
    let ids = read_ids(path, m.nrows())?;
    let row: std::collections::HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let mut out = Array2::zeros((want.len(), m.ncols()));
    for (i, id) in want.ids.iter().enumerate() {
        let r = *row
            .get(id.as_str())
            .with_context(|| format!("{}: no vector for id {id:?}", path.display()))?;
        out.row_mut(i).assign(&m.row(r));
    }
    Ok(out)
}

fn print_eval(e: &Evaluation, json: bool, extra: serde_json::Value) -> Result<()> {
    if json {
        let mut v = serde_json::json!({ "mean": e.mean, "queries": e.queries });
        if let (Some(obj), serde_json::Value::Object(x)) = (v.as_object_mut(), extra) {
            obj.extend(x);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("queries     {}", e.queries);
        println!("NDCG@10     {:.4}", e.mean.ndcg_at_10);
        println!("Recall@100  {:.4}", e.mean.recall_at_100);
        println!("MRR@10      {:.4}", e.mean.mrr_at_10);
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let level = ["info", "debug", "trace"][cli.verbose.min(2) as usize];
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let threads = ksparse::set_threads(cli.threads)?;
    match cli.command {
        Command::Embed(a) => {
            let e = a.model.load()?;
            let texts = read_texts(&a.input)?;
            let m = embed_texts(&e, &texts, a.model.batch_size, "embedding")?;
            write_npy(&a.output, &m)?;
            write_ids(&ids_path(&a.output), &texts.ids)?;
            tracing::info!(output = %a.output.display(), "wrote {} × {}", m.nrows(), m.ncols());
        }
        Command::EvalDense(a) => {
            let ds = Dataset::load(&a.dataset, &a.split)?;
            tracing::info!(
                docs = ds.corpus.len(),
                queries = ds.queries.len(),
                "dataset loaded"
            );
            let (corpus, queries) = match (&a.corpus_embeddings, &a.query_embeddings) {
                (Some(c), Some(q)) => (read_aligned(c, &ds.corpus)?, read_aligned(q, &ds.queries)?),
                _ => {
                    let e = a.model.load()?;
                    (
                        embed_texts(&e, &ds.corpus, a.model.batch_size, "corpus")?,
                        embed_texts(&e, &ds.queries, a.model.batch_size, "queries")?,
                    )
                }
            };
            let (result, run) = eval::dense_exact(&ds, corpus, &queries, a.ignore_identical_ids)?;
            if let Some(p) = &a.run_output {
                eval::write_trec_run(p, &run, "ksparse-dense")?;
            }
            print_eval(
                &result,
                a.json,
                serde_json::json!({ "dataset": a.dataset, "model": a.model.model, "split": a.split }),
            )?;
        }
        Command::EvalRun { qrels, run, json } => {
            let result = eval::evaluate(
                &ksparse::data::read_qrels(&qrels)?,
                &eval::read_trec_run(&run)?,
            );
            print_eval(&result, json, serde_json::json!({}))?;
        }
        Command::Bench(BenchCommand::Embed {
            model,
            input,
            n,
            python,
            output,
            json,
        }) => {
            let mut texts = read_texts(&input)?.texts;
            texts.truncate(n);
            let scratch = tempfile::tempdir()?;
            let embedder = model.load()?;
            let opts = bench::embed::Options {
                texts,
                batch_size: model.batch_size,
                threads,
                python: Some(python),
            };
            let report = bench::embed::run(&embedder, &opts, scratch.path())?;
            write_atomic(&output.join("report.json"), |w| {
                Ok(serde_json::to_writer_pretty(w, &report)?)
            })?;
            let md = report.markdown();
            write_atomic(&output.join("report.md"), |w| {
                Ok(std::io::Write::write_all(w, md.as_bytes())?)
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{md}");
            }
        }
    }
    Ok(())
}
