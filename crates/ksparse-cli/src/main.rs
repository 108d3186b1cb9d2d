//! The `ksparse` command line: a thin layer over the library's stages.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Array2;

use ksparse::bench;
use ksparse::bench::quality::LossPreset;
use ksparse::data::{read_texts, text_lines, Dataset, Texts};
use ksparse::embed::cache::embed_cached;
use ksparse::embed::Embedder;
use ksparse::encoder::codes::{read_codes, write_codes, MAX_HIDDEN};
use ksparse::encoder::loss::LossWeights;
use ksparse::encoder::scoring::{ModeSpec, ScoringMode};
use ksparse::encoder::train::{Pairs, TrainConfig, SUPERVISED_NCE_WEIGHT};
use ksparse::encoder::{EncoderConfig, Hidden, SparseEncoder};
use ksparse::eval::{self, Evaluation};
use ksparse::index::writer::Writer;
use ksparse::index::{self, Index};
use ksparse::io::{
    ids_path, read_ids, read_npy, read_npy_aligned, write_atomic, write_ids, write_npy,
};
use ksparse::pipeline;
use std::io::{BufRead as _, Write as _};

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
    Build(BuildArgs),
    /// Search a folder written by `ksparse build` with query text.
    ///
    /// Queries come from the arguments, or one per line from --queries FILE (- for stdin).
    /// Prints rank, id, score, title and a snippet per hit; --json prints one JSON object
    /// per query.
    ///
    /// Example: ksparse search scifact.ks "vitamin D and bone density" --top 5
    Search(SearchArgs),
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
    Eval(EvalArgs),
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
    /// Sparse exact search on a BEIR dataset with a trained encoder: NDCG@10, Recall@100, MRR@10.
    ///
    /// Documents are encoded at --k; queries become sparse queries by --mode. Takes
    /// precomputed vectors (from `ksparse embed`), with their id lists beside them.
    ///
    /// Example: ksparse eval-sparse --dataset data/scifact --encoder enc --corpus-embeddings corpus.npy --query-embeddings queries.npy --mode symmetric
    EvalSparse {
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
        /// symmetric, reconstruction or projected:M.
        #[arg(long, default_value = "symmetric")]
        mode: ScoringMode,
        /// Drop hits whose doc id equals the query id.
        #[arg(long)]
        ignore_identical_ids: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
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
    /// Train a K-sparse encoder on dense vectors.
    ///
    /// Learns z = ReLU(TopK_k(W_enc (x − b_pre) + b_enc)), x̂ = W_dec z + b_pre with the chosen
    /// loss terms and writes OUTPUT/config.json, OUTPUT/model.safetensors and
    /// OUTPUT/train-log.jsonl (one line per epoch). The folder appears only when training
    /// succeeds.
    ///
    /// Example: ksparse train --input corpus.npy --output enc --hidden 4d --k 32
    Train(TrainArgs),
    /// Encode dense vectors into sparse codes with a trained encoder.
    ///
    /// OUTPUT ending in .npz is a SciPy CSR matrix (scipy.sparse.load_npz); anything else is
    /// ksparse's checksummed codes format (.kspc). The ids are copied beside it (.ids.txt).
    ///
    /// Example: ksparse encode --encoder enc --input corpus.npy --output corpus.kspc --k 32
    Encode {
        /// Encoder folder written by `ksparse train`.
        #[arg(long)]
        encoder: PathBuf,
        /// Dense vectors (.npy, float32, N × d).
        #[arg(long)]
        input: PathBuf,
        /// Output codes file (.kspc or .npz).
        #[arg(long)]
        output: PathBuf,
        /// Non-zeros per code (default: the k the encoder was trained with).
        #[arg(long, value_parser = positive_usize)]
        k: Option<usize>,
    },
    /// Build, inspect and search the on-disk inverted index of sparse codes.
    #[command(subcommand)]
    Index(IndexCommand),
    /// Benchmarks that compare ksparse with the usual tools in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum IndexCommand {
    /// Build an index folder from sparse codes (.kspc from `ksparse encode`) and their ids.
    ///
    /// Posting lists are stored in blocks of 128 (bit-packed document deltas, one-byte
    /// quantised weights, per-block maxima), with a forward index of the exact codes and
    /// the id map; the folder appears complete or not at all.
    ///
    /// Example: ksparse index build --codes corpus.kspc --output corpus.idx
    Build {
        /// Codes of the documents (.kspc).
        #[arg(long)]
        codes: PathBuf,
        /// Document ids, one per line (default: the .ids.txt beside --codes).
        #[arg(long)]
        ids: Option<PathBuf>,
        /// Index folder to create (must not exist).
        #[arg(long)]
        output: PathBuf,
    },
    /// Add documents (codes + ids new to the index) as a new segment.
    ///
    /// The change commits atomically: after a crash the index opens at its last commit.
    Add {
        /// Index folder.
        index: PathBuf,
        /// Codes of the new documents (.kspc).
        #[arg(long)]
        codes: PathBuf,
        /// Their ids, one per line (default: the .ids.txt beside --codes).
        #[arg(long)]
        ids: Option<PathBuf>,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Delete documents by id (tombstones; `index merge` reclaims the space).
    Delete {
        /// Index folder.
        index: PathBuf,
        /// Ids to delete.
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Merge all segments into one, dropping deleted documents.
    Merge {
        /// Index folder.
        index: PathBuf,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Documents, postings, bytes per part and the latent usage histogram of an index.
    Stats {
        /// Index folder.
        index: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Exact top-k for each row of a codes file used as sparse queries.
    ///
    /// Example: ksparse index search corpus.idx --queries queries.kspc --top 10 --json
    Search {
        /// Index folder.
        index: PathBuf,
        /// Query codes (.kspc); query ids are read from the .ids.txt beside it when present.
        #[arg(long)]
        queries: PathBuf,
        /// Hits per query.
        #[arg(long, value_parser = positive_usize, default_value_t = 10)]
        top: usize,
        /// Re-rank the top R (≥ --top) by the exact f32 codes (0 = off).
        #[arg(long, default_value_t = 0)]
        rescore: usize,
        /// Print JSON lines ({"query", "hits": [{"id", "score"}]}) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ModelArgs {
    /// Model: a sentence-transformers folder, a name under models/ (e.g. all-MiniLM-L6-v2),
    /// or a Hugging Face id in the local cache.
    #[arg(long)]
    model: String,
    /// Texts per batch (inputs are sorted by length first, so padding stays small; one
    /// batch runs per thread). 16 measured fastest on SciFact passages with MiniLM.
    #[arg(long, value_parser = positive_usize, default_value_t = 16)]
    batch_size: usize,
    /// Truncate inputs at this many tokens (default: the model's max_seq_length).
    #[arg(long, value_parser = positive_usize)]
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

/// Width, code length and training length of an encoder (`train`, `build`).
#[derive(Args)]
struct EncoderShapeArgs {
    /// Latents h: a number, or a multiple of the input dimension such as 4d.
    #[arg(long, value_parser = width, default_value = "4d")]
    hidden: Hidden,
    /// Active latents per code.
    #[arg(long, value_parser = positive_usize, default_value_t = 32)]
    k: usize,
    /// Passes over the data (100 with lr 5e-4 beat 50 with 1e-3 and 200 with 3e-4 on
    /// SciFact's training queries at h = 4d, k = 32).
    #[arg(long, value_parser = positive_usize, default_value_t = 100)]
    epochs: usize,
}

#[derive(Args)]
struct BuildArgs {
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
    /// Print the manifest as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    lock: LockArgs,
}

/// One writer at a time: what a writing command does when another holds the lock.
#[derive(Args)]
struct LockArgs {
    /// Wait for another writer of the same index or search folder to finish instead of
    /// failing at once (the error names the process that holds the lock).
    #[arg(long)]
    wait: bool,
}

impl LockArgs {
    fn wait(&self) -> ksparse::io::Wait {
        if self.wait {
            ksparse::io::Wait::Yes
        } else {
            ksparse::io::Wait::No
        }
    }
}

#[derive(Args)]
struct EvalArgs {
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
        default_value = "symmetric,symmetric:4k,reconstruction"
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
    /// Cache of embeddings and encoders.
    #[arg(long, default_value = ".ksparse-cache")]
    cache: PathBuf,
    /// Report folder.
    #[arg(long, default_value = "eval-report")]
    output: PathBuf,
    /// Print report.json to stdout (instead of report.md).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SearchArgs {
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
    /// Scoring mode: symmetric, symmetric:M, reconstruction or projected:M.
    #[arg(long, default_value = "symmetric")]
    mode: ScoringMode,
    /// Re-rank the top R by the exact f32 codes (0 = off).
    #[arg(long, default_value_t = 0)]
    rescore: usize,
    /// The model, when it has moved since the build (must be the same model).
    #[arg(long)]
    model: Option<String>,
    /// One JSON object per query.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TrainArgs {
    /// Training vectors (.npy, float32); repeat to concatenate several files.
    #[arg(long, required = true)]
    input: Vec<PathBuf>,
    /// Output encoder folder.
    #[arg(long)]
    output: PathBuf,
    #[command(flatten)]
    shape: EncoderShapeArgs,
    /// Vectors per step.
    #[arg(long, value_parser = positive_usize, default_value_t = 512)]
    batch_size: usize,
    /// Adam learning rate.
    #[arg(long, value_parser = positive_f32, allow_hyphen_values = true, default_value_t = 5e-4)]
    lr: f32,
    /// Seed for initialisation and shuffling (same seed and threads → same model).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of vectors held out for the validation FVU.
    #[arg(long, value_parser = fraction_f32, allow_hyphen_values = true, default_value_t = 0.05)]
    validation_fraction: f32,
    /// Weight of the reconstruction MSE at k (variance-normalised).
    #[arg(long, value_parser = non_negative_f32, allow_hyphen_values = true, default_value_t = 1.0)]
    mse: f32,
    /// Weight of the Multi-TopK reconstruction (CSR: 1/8).
    #[arg(long, value_parser = non_negative_f32, allow_hyphen_values = true, default_value_t = 0.125)]
    multi: f32,
    /// Multi-TopK uses this many times k latents.
    #[arg(long, value_parser = positive_usize, default_value_t = 4)]
    multi_k_factor: usize,
    /// Weight of AuxK, the dead-latent residual loss (1/32).
    #[arg(long, value_parser = non_negative_f32, allow_hyphen_values = true, default_value_t = 0.03125)]
    aux: f32,
    /// Dead latents used by AuxK per vector.
    #[arg(long, value_parser = positive_usize, default_value_t = 512)]
    aux_k: usize,
    /// A latent counts as dead after this many training vectors without firing (default: one epoch).
    #[arg(long, value_parser = positive_usize)]
    dead_after: Option<usize>,
    /// Weight of Dobrynin's relative-distance loss L_dist (1 raised symmetric NDCG@10 on
    /// SciFact's training queries from 0.457 to 0.501 at k = 32 without lowering the others).
    #[arg(long, value_parser = non_negative_f32, allow_hyphen_values = true, default_value_t = 1.0)]
    dist: f32,
    /// Weight of InfoNCE on --pairs (query, relevant document). With --pairs it defaults to
    /// 1, the weight `ksparse eval --supervised` trains its supervised encoders with (0 is
    /// refused: the pairs would be ignored); without --pairs it must be unset or 0.
    #[arg(long, value_parser = non_negative_f32, allow_hyphen_values = true)]
    nce: Option<f32>,
    /// InfoNCE temperature.
    #[arg(long, value_parser = positive_f32, allow_hyphen_values = true, default_value_t = 0.2)]
    temperature: f32,
    /// Training pairs: QUERIES.npy CORPUS.npy QRELS.tsv (ids beside each .npy; training qrels
    /// only), learnt with InfoNCE at weight --nce (default 1 when pairs are given).
    #[arg(long, num_args = 3, value_names = ["QUERIES", "CORPUS", "QRELS"])]
    pairs: Option<Vec<PathBuf>>,
    /// Pairs per step for InfoNCE.
    #[arg(long, value_parser = positive_usize, default_value_t = 256)]
    pair_batch_size: usize,
    /// Start at this k and anneal linearly to --k by 70 % of training.
    #[arg(long, value_parser = positive_usize)]
    k_anneal_from: Option<usize>,
    /// Gaussian noise added to each training vector per step, as a fraction of its norm
    /// (augmentation for small corpora; 0 = off). 0.3 raised symmetric NDCG@10 on SciFact's
    /// training queries from 0.509 to 0.525 (0.15: 0.511, 0.45: 0.523, 0.6: 0.506).
    #[arg(long, value_parser = non_negative_f32, allow_hyphen_values = true, default_value_t = TrainConfig::default().input_noise)]
    input_noise: f32,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Encoder training samples/s vs the same step in PyTorch (CPU), on random unit vectors.
    ///
    /// Writes report.json and report.md to --output. The baseline runs where --python can
    /// import torch; otherwise the report says it was skipped.
    Train {
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
    },
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
    },
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
    Search {
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
    },
    /// The encoder quality table: NDCG@10 for k × loss × width × scoring mode per dataset.
    ///
    /// For each --dataset: embeds the corpus and queries (cached under --cache), evaluates
    /// dense exact search as the reference row, then trains one encoder on the corpus per
    /// width × loss × k and evaluates every --mode. Datasets with qrels/train.tsv also get
    /// supervised rows (InfoNCE on the training pairs; --nce 0 turns them off). Writes
    /// report.md and report.json to --output.
    ///
    /// Example: ksparse bench quality --model all-MiniLM-L6-v2 --dataset data/scifact --k 16,32,64
    Quality {
        #[command(flatten)]
        model: ModelArgs,
        /// BEIR-layout dataset folders (repeat the flag for several).
        #[arg(long, required = true)]
        dataset: Vec<PathBuf>,
        /// Qrels split to evaluate.
        #[arg(long, default_value = "test")]
        split: String,
        /// Code lengths, comma-separated.
        #[arg(long, value_parser = positive_usize, value_delimiter = ',', default_value = "16,32,64,128,256")]
        k: Vec<usize>,
        /// Widths, comma-separated (numbers of latents or multiples of d such as 4d).
        #[arg(long, value_parser = width, value_delimiter = ',', default_value = "4d,8d")]
        hidden: Vec<Hidden>,
        /// Loss combinations, comma-separated: mse, mse+dist, csr, csr+dist.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "mse,mse+dist,csr,csr+dist"
        )]
        losses: Vec<LossPreset>,
        /// Scoring modes, comma-separated; m may be a multiple of k (symmetric:4k).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "symmetric,symmetric:4k,reconstruction,projected:64"
        )]
        modes: Vec<ModeSpec>,
        /// InfoNCE weight of the supervised rows (0: no supervised rows).
        #[arg(long, value_parser = non_negative_f32, allow_hyphen_values = true, default_value_t = SUPERVISED_NCE_WEIGHT)]
        nce: f32,
        /// Training epochs per encoder.
        #[arg(long, value_parser = positive_usize, default_value_t = TrainConfig::default().epochs)]
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
    },
}

/// mimalloc reuses the large per-batch activation buffers instead of returning them to the
/// kernel after every op (glibc's mmap threshold), which cost a page fault per touched page.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// clap value parsers: every number is checked where it enters, so NaN, infinities and
// values out of a flag's range never reach a computation or a config file.

/// A finite float.
fn finite_f32(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("{s} is not a finite number")),
        Err(_) => Err(format!("{s:?} is not a number")),
    }
}

/// A finite float ≥ 0 (a weight, a noise level).
fn non_negative_f32(s: &str) -> Result<f32, String> {
    let v = finite_f32(s)?;
    if v < 0.0 {
        return Err(format!("{s} must be ≥ 0"));
    }
    Ok(v.abs())
}

/// A finite float > 0 (a learning rate, a temperature).
fn positive_f32(s: &str) -> Result<f32, String> {
    let v = finite_f32(s)?;
    if v <= 0.0 {
        return Err(format!("{s} must be > 0"));
    }
    Ok(v)
}

/// A fraction in [0, 1).
fn fraction_f32(s: &str) -> Result<f32, String> {
    let v = non_negative_f32(s)?;
    if v >= 1.0 {
        return Err(format!("{s} must be in [0, 1)"));
    }
    Ok(v)
}

/// A count of at least 1.
fn positive_usize(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("0 is not allowed: give at least 1".to_string()),
        Ok(v) => Ok(v),
        Err(_) => Err(format!("{s:?} is not a whole number ≥ 1")),
    }
}

/// An encoder width of at least one latent (a number or a multiple of d such as 4d), at
/// most the widest codes files hold.
fn width(s: &str) -> Result<Hidden, String> {
    match s.trim().parse::<Hidden>()? {
        Hidden::Latents(0) | Hidden::TimesDim(0) => {
            Err(format!("{s:?} is no width: give at least 1 latent"))
        }
        Hidden::Latents(n) | Hidden::TimesDim(n) if n > MAX_HIDDEN => Err(format!(
            "{s:?} is wider than the {MAX_HIDDEN} latents codes files hold"
        )),
        h => Ok(h),
    }
}

/// Standard output for results. A reader that stops early (`ksparse search … | head`)
/// closes the pipe; the output then ends quietly instead of failing the command.
struct Stdout {
    w: std::io::BufWriter<std::io::StdoutLock<'static>>,
    closed: bool,
}

impl Stdout {
    fn new() -> Self {
        Self {
            w: std::io::BufWriter::new(std::io::stdout().lock()),
            closed: false,
        }
    }

    /// Writes `text`; false once the reader has gone (what follows is dropped).
    fn write(&mut self, text: &str) -> Result<bool> {
        if self.closed {
            return Ok(false);
        }
        match self.w.write_all(text.as_bytes()) {
            Ok(()) => Ok(true),
            Err(e) => self.failed(e),
        }
    }

    /// Writes `text` and a line break; false once the reader has gone.
    fn line(&mut self, text: &str) -> Result<bool> {
        Ok(self.write(text)? && self.write("\n")?)
    }

    fn failed(&mut self, e: std::io::Error) -> Result<bool> {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            self.closed = true;
            Ok(false)
        } else {
            Err(anyhow::Error::new(e).context("cannot write to standard output"))
        }
    }

    /// Flushes the output (a reader that has gone is not an error).
    fn finish(mut self) -> Result<()> {
        if !self.closed {
            if let Err(e) = self.w.flush() {
                self.failed(e)?;
            }
        }
        Ok(())
    }
}

/// Prints `text` and a line break to standard output through [`Stdout`].
fn print_out(text: &str) -> Result<()> {
    let mut out = Stdout::new();
    out.line(text)?;
    out.finish()
}

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

fn print_eval(e: &Evaluation, json: bool, extra: serde_json::Value) -> Result<()> {
    if json {
        let mut v = serde_json::json!({ "mean": e.mean, "queries": e.queries });
        if let (Some(obj), serde_json::Value::Object(x)) = (v.as_object_mut(), extra) {
            obj.extend(x);
        }
        print_out(&serde_json::to_string_pretty(&v)?)
    } else {
        print_out(&format!(
            "queries     {}\nNDCG@10     {:.4}\nRecall@100  {:.4}\nMRR@10      {:.4}",
            e.queries, e.mean.ndcg_at_10, e.mean.recall_at_100, e.mean.mrr_at_10
        ))
    }
}

/// Writes a benchmark's report.json and report.md into `dir` and prints one of them.
fn write_report(
    dir: &Path,
    report: &impl serde::Serialize,
    markdown: &str,
    json: bool,
) -> Result<()> {
    write_atomic(&dir.join("report.json"), |w| {
        Ok(serde_json::to_writer_pretty(w, report)?)
    })?;
    write_atomic(&dir.join("report.md"), |w| {
        Ok(std::io::Write::write_all(w, markdown.as_bytes())?)
    })?;
    if json {
        print_out(&serde_json::to_string_pretty(report)?)
    } else {
        print_out(markdown)
    }
}

fn index_command(c: IndexCommand) -> Result<()> {
    match c {
        IndexCommand::Build { codes, ids, output } => {
            let (codes_v, hidden, ids) = read_codes_with_ids(&codes, ids.as_deref())?;
            let start = std::time::Instant::now();
            index::build(&output, &codes_v, &ids, hidden)
                .with_context(|| format!("cannot build an index from {}", codes.display()))?;
            let stats = Index::open(&output)?.stats();
            tracing::info!(
                docs = stats.docs,
                postings = stats.postings,
                bytes = stats.file_bytes,
                secs = start.elapsed().as_secs_f64(),
                "wrote {}",
                output.display()
            );
        }
        IndexCommand::Add {
            index,
            codes,
            ids,
            lock,
        } => {
            let (codes_v, hidden, ids) = read_codes_with_ids(&codes, ids.as_deref())?;
            let meta = Writer::open(&index, lock.wait())?.add(&codes_v, &ids, hidden)?;
            tracing::info!(
                added = ids.len(),
                segments = meta.segments.len(),
                "committed {}",
                index.display()
            );
        }
        IndexCommand::Delete { index, ids, lock } => {
            let n = Writer::open(&index, lock.wait())?.delete(&ids)?;
            tracing::info!(
                deleted = n,
                not_found = ids.len() - n,
                "committed {}",
                index.display()
            );
        }
        IndexCommand::Merge { index, lock } => {
            let meta = Writer::open(&index, lock.wait())?.merge()?;
            tracing::info!(
                segments = meta.segments.len(),
                "committed {}",
                index.display()
            );
        }
        IndexCommand::Stats { index, json } => {
            let stats = Index::open(&index)?.stats();
            if json {
                print_out(&serde_json::to_string_pretty(&stats)?)?;
            } else {
                let mut out = Stdout::new();
                out.write(&stats.text())?;
                out.finish()?;
            }
        }
        IndexCommand::Search {
            index,
            queries,
            top,
            rescore,
            json,
        } => {
            check_rescore(rescore, top)?;
            let idx = Index::open(&index)?;
            let (codes, hidden) = read_codes(&queries)?;
            if hidden != idx.hidden() {
                anyhow::bail!(
                    "{} holds {hidden}-wide codes but the index is {} wide",
                    queries.display(),
                    idx.hidden()
                );
            }
            let qids = read_ids(&queries, codes.len())
                .unwrap_or_else(|_| (0..codes.len()).map(|i| i.to_string()).collect());
            let mut out = Stdout::new();
            let queries: Vec<Vec<(u32, f32)>> = codes
                .into_iter()
                .map(|c| c.ids.into_iter().zip(c.values).collect())
                .collect();
            // All queries across the threads, printed in input order.
            let results = idx.search_batch(&queries, top, rescore)?;
            'queries: for (qid, hits) in qids.iter().zip(&results) {
                if json {
                    let hits: Vec<_> = hits
                        .iter()
                        .map(|h| serde_json::json!({ "id": idx.id(h.doc), "score": h.score }))
                        .collect();
                    if !out.line(&serde_json::json!({ "query": qid, "hits": hits }).to_string())? {
                        break 'queries;
                    }
                } else {
                    for (rank, h) in hits.iter().enumerate() {
                        let line =
                            format!("{qid}\t{}\t{}\t{:.6}", rank + 1, idx.id(h.doc), h.score);
                        if !out.line(&line)? {
                            break 'queries;
                        }
                    }
                }
            }
            out.finish()?;
        }
    }
    Ok(())
}

/// `--rescore R` re-ranks the top R ≥ `--top` hits (0 = off).
fn check_rescore(rescore: usize, top: usize) -> Result<()> {
    if rescore > 0 && rescore < top {
        anyhow::bail!("--rescore {rescore} must be 0 (off) or at least --top {top}");
    }
    Ok(())
}

/// Codes, their width and their ids: from `ids` (one per line) when given, otherwise the
/// `.ids.txt` beside the codes.
fn read_codes_with_ids(
    codes: &Path,
    ids: Option<&Path>,
) -> Result<(Vec<ksparse::encoder::SparseCode>, usize, Vec<String>)> {
    let (read, hidden) = read_codes(codes)?;
    let ids = match ids {
        Some(p) => text_lines(p)?
            .map(|l| l.map(|(_, id)| id))
            .collect::<Result<_>>()?,
        None => read_ids(codes, read.len())?,
    };
    Ok((read, hidden, ids))
}

fn train(a: TrainArgs) -> Result<()> {
    let nce = match (a.nce, a.pairs.is_some()) {
        (None, true) => {
            tracing::info!(
                "--pairs without --nce: InfoNCE weight {SUPERVISED_NCE_WEIGHT}, as for the supervised encoders of `ksparse eval --supervised`"
            );
            SUPERVISED_NCE_WEIGHT
        }
        (Some(0.0), true) => anyhow::bail!(
            "pairs given but InfoNCE weight 0 (--nce 0): they would be ignored; give --nce > 0 or drop --pairs"
        ),
        (Some(w), false) if w > 0.0 => {
            anyhow::bail!("--nce {w} needs training pairs: --pairs QUERIES CORPUS QRELS")
        }
        (w, _) => w.unwrap_or(0.0),
    };
    // Refuse an output that is not an encoder folder before hours of training.
    ksparse::io::dir::check_output(&a.output, &ksparse::encoder::FOLDER)?;
    let mut data = Vec::new();
    let mut dim = None;
    let mut sources = std::collections::HashMap::new();
    for path in &a.input {
        let m = read_npy(path)?;
        if m.nrows() == 0 {
            anyhow::bail!("{} holds no vectors", path.display());
        }
        if *dim.get_or_insert(m.ncols()) != m.ncols() {
            anyhow::bail!(
                "{} is {}-d but the first input is {}-d",
                path.display(),
                m.ncols(),
                dim.unwrap_or(0)
            );
        }
        sources.insert(path.display().to_string(), m.nrows());
        data.extend(m.as_standard_layout().iter());
    }
    let dim = dim.context("no --input given")?;
    let hidden = a.shape.hidden.resolve(dim);
    let pairs = match &a.pairs {
        Some(p) => Some(Pairs::from_files(&p[0], &p[1], &p[2])?),
        None => None,
    };
    if let Some(p) = &pairs {
        if !p.queries.len().is_multiple_of(dim) {
            anyhow::bail!("pair vectors are not {dim}-d like the training vectors");
        }
        tracing::info!(pairs = p.len(dim), "training pairs loaded");
    }
    let config = TrainConfig {
        hidden,
        k: a.shape.k,
        losses: LossWeights {
            mse: a.mse,
            multi: a.multi,
            multi_k_factor: a.multi_k_factor,
            aux: a.aux,
            aux_k: a.aux_k,
            dist: a.dist,
            nce,
            temperature: a.temperature,
        },
        epochs: a.shape.epochs,
        batch_size: a.batch_size,
        pair_batch_size: a.pair_batch_size,
        learning_rate: a.lr,
        seed: a.seed,
        validation_fraction: a.validation_fraction,
        k_anneal_from: a.k_anneal_from,
        dead_after: a.dead_after,
        input_noise: a.input_noise,
    };
    let bar = progress(0, "training");
    let (enc, stats, log) = ksparse::encoder::train::train(
        &data,
        dim,
        pairs.as_ref(),
        &config,
        |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
        |e| {
            bar.suspend(|| {
                tracing::info!(epoch = e.epoch, k = e.k, mse = %format!("{:.4}", e.train.mse), multi = %format!("{:.4}", e.train.multi), aux = %format!("{:.4}", e.train.aux), dist = %format!("{:.4}", e.train.dist), nce = %format!("{:.4}", e.train.nce), val_fvu = %format!("{:.4}", e.validation_fvu), dead = %format!("{:.3}", e.dead_fraction), secs = %format!("{:.1}", e.seconds), "epoch")
            })
        },
    )?;
    bar.finish_and_clear();
    let meta = EncoderConfig {
        version: env!("CARGO_PKG_VERSION").to_string(),
        dim,
        hidden,
        k: a.shape.k,
        training: config,
        data: stats,
        sources,
        weights_sha256: None,
    };
    ksparse::io::write_dir_atomic(&a.output, &ksparse::encoder::FOLDER, |dir| {
        enc.save(dir, &meta)?;
        write_atomic(&dir.join("train-log.jsonl"), |w| {
            for e in &log {
                serde_json::to_writer(&mut *w, e)?;
                std::io::Write::write_all(w, b"\n")?;
            }
            Ok(())
        })
    })?;
    let last = log.last().context("no epoch ran")?;
    print_out(&serde_json::to_string(
        &serde_json::json!({ "output": a.output, "validation_fvu": last.validation_fvu, "dead_fraction": last.dead_fraction, "hidden": hidden, "k": a.shape.k }),
    )?)
}

fn build(a: BuildArgs) -> Result<()> {
    let embedder = a.model.load()?;
    let hidden = a.shape.hidden.resolve(embedder.dim());
    let opts = pipeline::BuildOptions {
        corpus: &a.corpus,
        output: &a.output,
        encoder: a.encoder.as_deref(),
        train: TrainConfig {
            hidden,
            k: a.shape.k,
            epochs: a.shape.epochs,
            seed: a.seed,
            ..TrainConfig::default()
        },
        k: a.encoder.is_some().then_some(a.shape.k),
        cache: &a.cache,
        batch_size: a.model.batch_size,
        wait: a.lock.wait(),
    };
    let mut bar: Option<(pipeline::Stage, ProgressBar)> = None;
    let manifest = pipeline::build(&embedder, &opts, |stage, done, total| {
        if bar.as_ref().is_none_or(|b| b.0 != stage) {
            let what = match stage {
                pipeline::Stage::Embed => "embedding",
                pipeline::Stage::Train => "training",
            };
            if let Some((_, old)) = bar.take() {
                old.finish_and_clear();
            }
            bar = Some((stage, progress(total, what)));
        }
        if let Some((_, b)) = &bar {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
    })?;
    if let Some((_, b)) = bar {
        b.finish_and_clear();
    }
    if a.json {
        print_out(&serde_json::to_string_pretty(&manifest)?)
    } else {
        print_out(&format!(
            "{}: {} documents, k = {} of {} latents, model {}",
            a.output.display(),
            manifest.documents,
            manifest.k,
            manifest.hidden,
            manifest.model
        ))
    }
}

fn eval_command(a: EvalArgs) -> Result<()> {
    let embedder = a.model.load()?;
    let ds = Dataset::load(&a.dataset, &a.split)?;
    let embeddings = a.cache.join("embeddings");
    let embed = |texts: &Texts, what: &str| {
        embed_cached(&embedder, texts, &embeddings, |t| {
            embed_texts(&embedder, t, a.model.batch_size, what)
        })
    };
    let corpus = embed(&ds.corpus, "corpus")?;
    let queries = embed(&ds.queries, "queries")?;
    // Training vectors: the evaluated corpus, or the corpora of --train-on.
    let (train_vectors, data_key, source) = if a.train_on.is_empty() {
        (
            corpus.clone(),
            ksparse::embed::cache::cache_key(&embedder, &ds.corpus)?,
            a.dataset.display().to_string(),
        )
    } else {
        let mut parts = Vec::new();
        let mut keys = String::new();
        for dir in &a.train_on {
            let texts = read_texts(&ksparse::data::find_file(dir, "corpus.jsonl")?)?;
            keys += &ksparse::embed::cache::cache_key(&embedder, &texts)?;
            parts.push(embed(&texts, "training corpus")?);
        }
        let views: Vec<_> = parts.iter().map(|m| m.view()).collect();
        let names: Vec<String> = a.train_on.iter().map(|p| p.display().to_string()).collect();
        (
            ndarray::concatenate(ndarray::Axis(0), &views)?,
            keys,
            names.join(","),
        )
    };
    // Training pairs for the supervised rows: the training split's judged queries.
    let pairs = if a.supervised {
        let train = Dataset::load(&a.dataset, "train")
            .context("--supervised needs the dataset's qrels/train.tsv (training judgements)")?;
        let train_queries = embed(&train.queries, "training queries")?;
        let pairs = Pairs::from_vectors(
            (&train_queries, &train.queries.ids, "training queries"),
            (&corpus, &ds.corpus.ids, "corpus"),
            &train.qrels,
            "qrels/train.tsv",
        )?;
        // The pairs' own bytes identify them in the encoder cache (texts and judgements).
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        for v in pairs.queries.iter().chain(&pairs.docs) {
            sha2::Digest::update(&mut h, v.to_le_bytes());
        }
        let key = format!("{:x}", sha2::Digest::finalize(h));
        Some((pairs, key))
    } else {
        None
    };
    let dim = corpus.ncols();
    let opts = ksparse::eval::report::Options {
        ks: a.k.clone(),
        hidden: a.hidden.iter().map(|h| h.resolve(dim)).collect(),
        modes: a.modes.clone(),
        hnsw: (16, 200, 64),
        supervised: a.supervised,
    };
    let encoder_for = |hidden: usize, k: usize, supervised: bool| -> Result<(SparseEncoder, f64)> {
        let mut cfg = TrainConfig {
            hidden,
            k,
            epochs: a.epochs,
            seed: a.seed,
            ..TrainConfig::default()
        };
        let (pairs, key) = match (&pairs, supervised) {
            (Some((p, qkey)), true) => {
                cfg.losses.nce = SUPERVISED_NCE_WEIGHT;
                cfg.epochs = a.supervised_epochs;
                (Some(p), format!("{data_key}+pairs:{qkey}"))
            }
            _ => (None, data_key.clone()),
        };
        let bar = progress(0, &format!("training h={hidden} k={k}"));
        let (enc, _, secs) = pipeline::train_cached(
            &a.cache,
            &key,
            &train_vectors,
            pairs,
            &cfg,
            (&source, train_vectors.nrows()),
            |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            },
        )?;
        bar.finish_and_clear();
        Ok((enc, secs))
    };
    let name = a.dataset.file_name().map_or_else(
        || a.dataset.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let model = embedder.model_dir().path.display().to_string();
    let scratch = tempfile::tempdir()?;
    let report = ksparse::eval::report::run(
        &ds,
        (&name, &model),
        &corpus,
        &queries,
        &opts,
        encoder_for,
        scratch.path(),
    )?;
    report.write(&a.output)?;
    if a.json {
        print_out(&serde_json::to_string_pretty(&report)?)?;
    } else {
        let mut out = Stdout::new();
        out.write(&report.markdown())?;
        out.finish()?;
    }
    tracing::info!(output = %a.output.display(), "wrote report.json, report.md and three SVG plots");
    Ok(())
}

fn search(a: SearchArgs) -> Result<()> {
    check_rescore(a.rescore, a.top)?;
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
    let searcher = pipeline::Searcher::open(&a.index, a.model.as_deref())?;
    let results = searcher.search(&queries, a.top, a.mode, a.rescore)?;
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
            if let Some(p) = &a.run_output {
                // Refused now rather than after the embedding: TREC runs are whitespace-separated.
                for (what, ids) in [("query", &ds.queries.ids), ("document", &ds.corpus.ids)] {
                    if let Some(id) = ids.iter().find(|id| !eval::trec_safe(id)) {
                        anyhow::bail!(
                            "cannot write the TREC run {}: {what} id {id:?} is empty or contains whitespace (TREC runs are whitespace-separated)",
                            p.display()
                        );
                    }
                }
            }
            tracing::info!(
                docs = ds.corpus.len(),
                queries = ds.queries.len(),
                "dataset loaded"
            );
            let (corpus, queries) = match (&a.corpus_embeddings, &a.query_embeddings) {
                (Some(c), Some(q)) => (
                    read_npy_aligned(c, &ds.corpus.ids)?,
                    read_npy_aligned(q, &ds.queries.ids)?,
                ),
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
        Command::Train(a) => train(a)?,
        Command::Build(a) => build(a)?,
        Command::Search(a) => search(a)?,
        Command::Eval(a) => eval_command(a)?,
        Command::Encode {
            encoder,
            input,
            output,
            k,
        } => {
            let (enc, config) = SparseEncoder::load(&encoder)?;
            let x = read_npy(&input)?;
            if x.ncols() != enc.dim {
                anyhow::bail!(
                    "{} has {}-d vectors but the encoder expects {}-d",
                    input.display(),
                    x.ncols(),
                    enc.dim
                );
            }
            let k = k.unwrap_or(config.k);
            if k == 0 || k > enc.hidden {
                anyhow::bail!(
                    "--k {k} must be between 1 and the encoder width {}",
                    enc.hidden
                );
            }
            let ids = read_ids(&input, x.nrows())?;
            let start = std::time::Instant::now();
            let data = x.as_standard_layout();
            let codes = enc.encode(data.as_slice().expect("standard layout"), x.nrows(), k);
            let secs = start.elapsed().as_secs_f64();
            if let Some(row) = ksparse::encoder::codes::first_non_finite(&codes) {
                anyhow::bail!(
                    "{}: row {row} (id {:?}) encodes to an infinite or NaN value: the vector is too large for the encoder (overflow); nothing was written",
                    input.display(),
                    ids[row]
                );
            }
            write_codes(&output, &codes, enc.hidden)?;
            write_ids(&ids_path(&output), &ids)?;
            let nnz: usize = codes.iter().map(|c| c.len()).sum();
            tracing::info!(
                rows = codes.len(),
                k,
                mean_nnz = nnz as f64 / codes.len().max(1) as f64,
                vectors_per_s = codes.len() as f64 / secs,
                "wrote {}",
                output.display()
            );
        }
        Command::EvalSparse {
            dataset,
            split,
            encoder,
            corpus_embeddings,
            query_embeddings,
            k,
            mode,
            ignore_identical_ids,
            json,
        } => {
            let ds = Dataset::load(&dataset, &split)?;
            let (enc, config) = SparseEncoder::load(&encoder)?;
            let k = k.unwrap_or(config.k);
            if k > enc.hidden {
                anyhow::bail!(
                    "--k {k} must be between 1 and the encoder width {}",
                    enc.hidden
                );
            }
            let corpus = read_npy_aligned(&corpus_embeddings, &ds.corpus.ids)?;
            let queries = read_npy_aligned(&query_embeddings, &ds.queries.ids)?;
            let (result, _) =
                eval::sparse_exact(&ds, &corpus, &queries, &enc, k, mode, ignore_identical_ids)?;
            print_eval(
                &result,
                json,
                serde_json::json!({ "dataset": dataset, "encoder": encoder, "k": k, "hidden": enc.hidden, "mode": mode.to_string(), "split": split }),
            )?;
        }
        Command::EvalRun { qrels, run, json } => {
            let result = eval::evaluate_checked(
                &ksparse::data::read_qrels(&qrels)?,
                &eval::read_trec_run(&run)?,
                &qrels.display().to_string(),
                &run.display().to_string(),
            )?;
            print_eval(&result, json, serde_json::json!({}))?;
        }
        Command::Bench(BenchCommand::Train {
            dim,
            hidden,
            k,
            batch,
            steps,
            rounds,
            python,
            output,
            json,
        }) => {
            let scratch = tempfile::tempdir()?;
            let opts = bench::train::Options {
                dim,
                hidden,
                k,
                batch,
                steps,
                rounds,
                threads,
                python: Some(python),
            };
            let report = bench::train::run(&opts, scratch.path())?;
            write_report(&output, &report, &report.markdown(), json)?;
        }
        Command::Index(c) => index_command(c)?,
        Command::Bench(BenchCommand::Search {
            embeddings,
            queries,
            encoder,
            n,
            k,
            modes,
            query_count,
            hnsw_m,
            hnsw_ef_construction,
            hnsw_ef,
            noise,
            seed,
            python,
            output,
            json,
        }) => {
            let real = read_npy(&embeddings)?;
            let opts = bench::search::Options {
                ns: n,
                ks: k,
                modes,
                queries: query_count,
                hnsw_m,
                hnsw_ef_construction,
                hnsw_ef,
                seed,
                noise,
                python: (!python.as_os_str().is_empty()).then_some(python),
            };
            let queries = match &queries {
                Some(p) => read_npy(p)?,
                // Distinct from the collection's own rows: other seed, more noise.
                None => bench::search::generate(&real, query_count, 0.5, seed + 1),
            };
            let loaded = match &encoder {
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
                Ok(ksparse::encoder::train::train(
                    &data,
                    real.ncols(),
                    None,
                    &cfg,
                    |_, _| {},
                    |_| {},
                )?
                .0)
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
            write_report(&output, &report, &report.markdown(), json)?;
        }
        Command::Bench(BenchCommand::Quality {
            model,
            dataset,
            split,
            k,
            hidden,
            losses,
            modes,
            nce,
            epochs,
            seed,
            cache,
            output,
            json,
        }) => {
            let embedder = model.load()?;
            let opts = bench::quality::Options {
                datasets: dataset,
                split,
                ks: k,
                hidden,
                losses,
                modes,
                nce,
                train: TrainConfig {
                    epochs,
                    seed,
                    ..TrainConfig::default()
                },
            };
            let embed = |texts: &Texts, what: &str| {
                embed_cached(&embedder, texts, &cache, |t| {
                    embed_texts(&embedder, t, model.batch_size, what)
                })
            };
            let report = bench::quality::run(
                &model.model,
                &opts,
                |dir, ds| {
                    let train_queries = match Dataset::load(dir, "train") {
                        Ok(tr) if dir.join("qrels/train.tsv").is_file() => Some((
                            tr.queries.ids.clone(),
                            embed(&tr.queries, "training queries")?,
                        )),
                        _ => None,
                    };
                    Ok(bench::quality::Vectors {
                        corpus: embed(&ds.corpus, "corpus")?,
                        queries: embed(&ds.queries, "queries")?,
                        train_queries,
                    })
                },
                |r| {
                    tracing::info!(
                        dataset = %r.dataset, hidden = r.hidden, k = r.k, loss = %r.loss,
                        supervised = r.supervised, mode = %r.mode,
                        ndcg10 = %format!("{:.4}", r.metrics.ndcg_at_10),
                        train_s = %format!("{:.1}", r.train_s), "row"
                    )
                },
            )?;
            write_report(&output, &report, &report.markdown(), json)?;
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
            write_report(&output, &report, &report.markdown(), json)?;
        }
    }
    Ok(())
}
