//! The `ksparse` command line: a thin layer over the library's stages. Each command parses
//! its flags, calls the library and prints; `commands/` holds one file per command group.

mod args;
mod bench;
mod commands;
mod output;

use anyhow::Result;
use clap::{Parser, Subcommand};

use commands::{embed, encode, eval, export, index, search, serve, train};

/// Single-stage semantic search with K-sparse codes.
///
/// The whole path in two commands: `build` (texts → search folder) and `search` (query
/// text → ranked documents). Step by step: text → dense vectors (`embed`) → K-sparse
/// encoder (`train`) → sparse codes (`encode`) → inverted index (`index build`) →
/// evaluation against qrels (`eval-dense` for the dense baseline, `eval-sparse` for the
/// codes). Models are sentence-transformers folders; fetch the two
/// supported ones with `scripts/fetch-models.sh`.
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
    /// Build a search folder from a corpus: embed, train the encoder, encode, index.
    ///
    /// The corpus is a BEIR corpus.jsonl(.gz) or a text file with one passage per line.
    /// Embeddings and trained encoders are cached under --cache by content, so an
    /// interrupted or repeated build skips the finished stages. The folder records the
    /// model and encoder with their SHA-256, and `ksparse search` refuses another model.
    ///
    /// Example: ksparse build --model all-MiniLM-L6-v2 --corpus data/scifact/corpus.jsonl.gz --output scifact.ks
    Build(search::BuildArgs),
    /// Search a folder written by `ksparse build` with query text.
    ///
    /// Queries come from the arguments, or one per line from --queries FILE (- for stdin).
    /// Prints rank, id, score, title and a snippet per hit; --json prints one JSON object
    /// per query.
    ///
    /// Example: ksparse search scifact.ks "vitamin D and bone density" --top 5
    Search(search::SearchArgs),
    /// Both papers' experiments on one BEIR dataset, with a report and plots.
    ///
    /// Dense exact search, HNSW over the same vectors, and the on-disk sparse index at each
    /// --hidden × --k × --mode: NDCG@10, Recall@100, MRR@10, p50/p99 latency (one top-10
    /// search at a time on one thread), bytes, build and training time. Writes report.json,
    /// report.md and SVG plots (NDCG@10 vs k with the dense line, latency vs NDCG@10,
    /// index bytes vs k) to --output. Embeddings and encoders are cached under --cache, so a
    /// second run only searches.
    ///
    /// Example: ksparse eval --dataset data/scifact --model all-MiniLM-L6-v2 --k 16,32,64,128 --output scifact-report
    Eval(eval::EvalArgs),
    /// Embed texts with a sentence-transformers model into an .npy matrix.
    ///
    /// The input is a BEIR corpus.jsonl (text = title + " " + text), a queries.jsonl, or a
    /// plain text file with one passage per line (ids = line numbers). Writes OUTPUT
    /// (float32, N × d, C order) and OUTPUT with extension .ids.txt (one id per line).
    ///
    /// Example: ksparse embed --model all-MiniLM-L6-v2 --input data/scifact/corpus.jsonl.gz --output corpus.npy
    Embed(embed::EmbedArgs),
    /// Dense exact search on a BEIR dataset: NDCG@10, Recall@100, MRR@10.
    ///
    /// Embeds the corpus and the judged queries with MODEL (or reads precomputed vectors),
    /// searches every query exactly by inner product and scores the top 100 with
    /// trec_eval's conventions.
    ///
    /// Example: ksparse eval-dense --dataset data/scifact --model all-MiniLM-L6-v2
    EvalDense(eval::EvalDenseArgs),
    /// Sparse exact search on a BEIR dataset with a trained encoder: NDCG@10, Recall@100, MRR@10.
    ///
    /// Documents are encoded at --k; queries become sparse queries by --mode. Takes
    /// precomputed vectors (from `ksparse embed`), with their id lists beside them.
    ///
    /// Example: ksparse eval-sparse --dataset data/scifact --encoder enc --corpus-embeddings corpus.npy --query-embeddings queries.npy --mode symmetric
    EvalSparse(eval::EvalSparseArgs),
    /// Score a TREC run file against qrels (trec_eval conventions).
    EvalRun(eval::EvalRunArgs),
    /// Train a K-sparse encoder on dense vectors.
    ///
    /// Learns z = ReLU(TopK_k(W_enc (x − b_pre) + b_enc)), x̂ = W_dec z + b_pre with the chosen
    /// loss terms and writes OUTPUT/config.json, OUTPUT/model.safetensors,
    /// OUTPUT/train-log.jsonl (one line per epoch) and OUTPUT/train-seconds.txt (the
    /// training time). The folder appears only when training succeeds.
    ///
    /// Example: ksparse train --input corpus.npy --output enc --hidden 4d --k 32
    Train(train::TrainArgs),
    /// Encode dense vectors into sparse codes with a trained encoder.
    ///
    /// OUTPUT ending in .npz is a SciPy CSR matrix (scipy.sparse.load_npz); anything else is
    /// ksparse's checksummed codes format (.kspc). The ids are copied beside it (.ids.txt).
    ///
    /// Example: ksparse encode --encoder enc --input corpus.npy --output corpus.kspc --k 32
    Encode(encode::EncodeArgs),
    /// Copy a search folder's documents and codes into Milvus or Postgres (pgvector).
    ///
    /// Creates the collection (or table) with the documents' ids, codes, titles and texts
    /// and records the model and encoder they came from; inserts in batches; on a re-run
    /// or after an interruption skips documents already there unchanged and replaces
    /// changed ones; checks the count at the end. Then search through it with `ksparse
    /// search FOLDER "…" --backend URL` (exact: Milvus's inverted index, pgvector's
    /// sequential scan).
    ///
    /// Example: ksparse export scifact.ks --to milvus://127.0.0.1:19530/scifact
    Export(export::ExportArgs),
    /// Build, inspect and search the on-disk inverted index of sparse codes.
    #[command(subcommand)]
    Index(index::IndexCommand),
    /// Serve collections over HTTP: a Qdrant-shaped REST API, a search page, metrics.
    ///
    /// Collections live in DATA/collections; create one with PUT /collections/NAME and a
    /// body {"from": "scifact.ks"} (a folder from `ksparse build`), {"model": M,
    /// "encoder": ENC} (text in), or {"sparse_vectors": {"text": {}}} (codes only). Points
    /// go in with PUT /collections/NAME/points, queries with POST
    /// /collections/NAME/points/query ({"query": {"text": "…"}} or a sparse vector). Every
    /// write is on disk before it is acknowledged. The search page is at /, the API
    /// description at /openapi.json, Prometheus metrics at /metrics. Stops on SIGTERM or
    /// Ctrl-C after the requests in flight.
    ///
    /// Example: ksparse serve --data ksparse-data --listen 127.0.0.1:6333
    Serve(serve::ServeArgs),
    /// Benchmarks that compare ksparse with the usual tools in the same run.
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
}

/// mimalloc reuses the large per-batch activation buffers instead of returning them to the
/// kernel after every op (glibc's mmap threshold), which cost a page fault per touched page.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Command::Build(a) => search::build(a),
        Command::Search(a) => search::search(a),
        Command::Eval(a) => eval::eval(a),
        Command::Embed(a) => embed::run(a),
        Command::EvalDense(a) => eval::dense(a),
        Command::EvalSparse(a) => eval::sparse(a),
        Command::EvalRun(a) => eval::run(a),
        Command::Train(a) => train::run(a),
        Command::Encode(a) => encode::run(a),
        Command::Export(a) => export::run(a),
        Command::Index(c) => index::run(c),
        Command::Serve(a) => serve::run(a),
        Command::Bench(c) => commands::bench::run(c, threads),
    }
}
