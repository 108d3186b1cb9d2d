//! Evaluations on a BEIR dataset's judgements: [`evaluate`] (both papers' experiments, with
//! encoders trained through the cache), [`evaluate_dense`] and [`evaluate_sparse`] (one
//! engine each).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ndarray::Array2;

use super::{embed_texts, embed_through_cache, train_cached, Progress, Searcher};
use crate::data::{find_file, read_texts, Dataset, Texts};
use crate::embed::cache::cache_key;
use crate::embed::Embedder;
use crate::encoder::scoring::{ModeSpec, ScoringMode, SparseEngine};
use crate::encoder::train::{Pairs, TrainConfig, PSEUDO_DISTILL_WEIGHT, SUPERVISED_NCE_WEIGHT};
use crate::encoder::{check_k, Hidden, SparseEncoder};
use crate::eval::report::{self, Report};
use crate::eval::{self, Evaluation};
use crate::io::read_npy_aligned;

/// HNSW links per node, candidates per insertion and candidates per search of [`evaluate`].
const HNSW: (usize, usize, usize) = (16, 200, 64);

/// Settings of [`evaluate`].
pub struct EvalOptions<'a> {
    /// BEIR-layout folder: `corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`.
    pub dataset: &'a Path,
    /// Qrels split to evaluate.
    pub split: &'a str,
    /// Code lengths.
    pub ks: Vec<usize>,
    /// Encoder widths.
    pub hidden: Vec<Hidden>,
    /// Scoring modes (m may be a multiple of k).
    pub modes: Vec<ModeSpec>,
    /// Training passes of each unsupervised encoder.
    pub epochs: usize,
    /// Training passes of each supervised encoder.
    pub supervised_epochs: usize,
    /// Seed of the encoders' training.
    pub seed: u64,
    /// BEIR folders whose corpora the encoders are trained on instead of the evaluated one
    /// (none: the evaluated corpus).
    pub train_on: &'a [PathBuf],
    /// Also train each encoder with InfoNCE on (query, relevant document) pairs from the
    /// dataset's training qrels, reported as supervised rows.
    pub supervised: bool,
    /// Unsupervised encoders also learn the dense model's scores on pseudo-queries cut
    /// from their training corpora (`losses.distill`, [`super::pseudo_query_pairs`]).
    pub pseudo_queries: bool,
    /// Cache folder for embeddings and encoders.
    pub cache: &'a Path,
    /// Texts per embedding batch.
    pub batch_size: usize,
}

/// Both papers' experiments on one BEIR dataset ([`report::run`]): embeds the corpus,
/// queries and training texts through the cache, and trains each (width, k, supervision)
/// encoder through the encoder cache ([`train_cached`]) on the evaluated corpus, or on the
/// corpora of `train_on`; supervised encoders also learn the training qrels' pairs.
pub fn evaluate(
    embedder: &Embedder,
    opts: &EvalOptions,
    progress: &impl Progress,
) -> Result<Report> {
    let dim = embedder.dim();
    let hidden: Vec<usize> = opts.hidden.iter().map(|h| h.resolve(dim)).collect();
    // Refused before hours of embedding and training.
    for &h in &hidden {
        for &k in &opts.ks {
            check_k(k, h)?;
        }
    }
    let ds = Dataset::load(opts.dataset, opts.split)?;
    let embeddings = opts.cache.join("embeddings");
    let embed = |texts: &Texts, what: &'static str| {
        embed_through_cache(
            embedder,
            texts,
            &embeddings,
            opts.batch_size,
            what,
            progress,
        )
    };
    let corpus = embed(&ds.corpus, "corpus")?;
    let queries = embed(&ds.queries, "queries")?;
    // Pseudo-query pairs of one training corpus, when asked for.
    let pseudo = |texts: &Texts, vectors: &Array2<f32>| -> Result<Option<(Pairs, String)>> {
        if !opts.pseudo_queries {
            return Ok(None);
        }
        super::pseudo_query_pairs(
            embedder,
            texts,
            vectors,
            (&embeddings, opts.batch_size, opts.seed),
            progress,
        )
    };
    // Training vectors: the evaluated corpus, or the corpora of `train_on`; with their
    // pseudo-query pairs.
    let (train_vectors, data_key, source, pseudo_pairs) = if opts.train_on.is_empty() {
        (
            corpus.clone(),
            cache_key(embedder, &ds.corpus)?,
            opts.dataset.display().to_string(),
            pseudo(&ds.corpus, &corpus)?,
        )
    } else {
        let mut parts = Vec::new();
        let mut keys = String::new();
        let mut pseudo_parts: Vec<(Pairs, String)> = Vec::new();
        for dir in opts.train_on {
            let texts = read_texts(&find_file(dir, "corpus.jsonl")?)?;
            keys += &cache_key(embedder, &texts)?;
            let vectors = embed(&texts, "training corpus")?;
            pseudo_parts.extend(pseudo(&texts, &vectors)?);
            parts.push(vectors);
        }
        let joined = (!pseudo_parts.is_empty()).then(|| {
            (
                Pairs::concat(pseudo_parts.iter().map(|p| &p.0)),
                pseudo_parts
                    .iter()
                    .map(|p| p.1.as_str())
                    .collect::<String>(),
            )
        });
        let views: Vec<_> = parts.iter().map(|m| m.view()).collect();
        let names: Vec<String> = opts
            .train_on
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        (
            ndarray::concatenate(ndarray::Axis(0), &views)?,
            keys,
            names.join(","),
            joined,
        )
    };
    // Training pairs for the supervised rows: the training split's judged queries.
    let pairs = if opts.supervised {
        let train = Dataset::load(opts.dataset, "train").context(
            "supervised encoders need the dataset's qrels/train.tsv (training judgements)",
        )?;
        let train_queries = embed(&train.queries, "training queries")?;
        let pairs = Pairs::from_vectors(
            (&train_queries, &train.queries.ids, "training queries"),
            (&corpus, &ds.corpus.ids, "corpus"),
            &train.qrels,
            "qrels/train.tsv",
        )?;
        let key = pairs.key();
        Some((pairs, key))
    } else {
        None
    };
    let report_opts = report::Options {
        ks: opts.ks.clone(),
        hidden,
        modes: opts.modes.clone(),
        hnsw: HNSW,
        supervised: opts.supervised,
    };
    let encoder_for = |hidden: usize, k: usize, supervised: bool| -> Result<(SparseEncoder, f64)> {
        let mut cfg = TrainConfig {
            hidden,
            k,
            epochs: opts.epochs,
            seed: opts.seed,
            ..TrainConfig::default()
        };
        let (pairs, key) = match (&pairs, supervised, &pseudo_pairs) {
            (Some((p, qkey)), true, _) => {
                cfg.losses.nce = SUPERVISED_NCE_WEIGHT;
                cfg.epochs = opts.supervised_epochs;
                (Some(p), format!("{data_key}+pairs:{qkey}"))
            }
            (_, false, Some((p, pkey))) => {
                cfg.losses.distill = PSEUDO_DISTILL_WEIGHT;
                (Some(p), format!("{data_key}+{pkey}"))
            }
            _ => (None, data_key.clone()),
        };
        let (enc, _, secs) = train_cached(
            opts.cache,
            &key,
            &train_vectors,
            pairs,
            &cfg,
            (&source, train_vectors.nrows()),
            progress,
        )?;
        Ok((enc, secs))
    };
    let name = opts.dataset.file_name().map_or_else(
        || opts.dataset.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let model = embedder.model_dir().path.display().to_string();
    let scratch = tempfile::tempdir()?;
    report::run(
        &ds,
        (&name, &model),
        &corpus,
        &queries,
        &report_opts,
        encoder_for,
        scratch.path(),
    )
}

/// Settings of [`evaluate_dense`].
pub struct DenseEvalOptions<'a> {
    /// BEIR-layout folder.
    pub dataset: &'a Path,
    /// Qrels split to evaluate.
    pub split: &'a str,
    /// Precomputed corpus and query vectors (`.npy`, each with its ids beside it), used
    /// instead of embedding.
    pub vectors: Option<(&'a Path, &'a Path)>,
    /// Texts per embedding batch.
    pub batch_size: usize,
    /// Drop hits whose document id equals the query id.
    pub ignore_identical_ids: bool,
    /// Where to write the ranked top 100 per query as a TREC run file.
    pub run_output: Option<&'a Path>,
}

/// Dense exact search on a BEIR dataset, scored on its qrels: every query searched by
/// inner product over the corpus. `model` gives the embedding model when the vectors are
/// not precomputed (it is not called otherwise).
pub fn evaluate_dense(
    opts: &DenseEvalOptions,
    model: impl FnOnce() -> Result<Embedder>,
    progress: &impl Progress,
) -> Result<Evaluation> {
    let ds = Dataset::load(opts.dataset, opts.split)?;
    if let Some(p) = opts.run_output {
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
    let (corpus, queries) = match opts.vectors {
        Some((corpus, queries)) => (
            read_npy_aligned(corpus, &ds.corpus.ids)?,
            read_npy_aligned(queries, &ds.queries.ids)?,
        ),
        None => {
            let e = model()?;
            let embed = |texts, what| embed_texts(&e, texts, opts.batch_size, what, progress);
            (embed(&ds.corpus, "corpus")?, embed(&ds.queries, "queries")?)
        }
    };
    let (result, run) = eval::dense_exact(&ds, corpus, &queries, opts.ignore_identical_ids)?;
    if let Some(p) = opts.run_output {
        eval::write_trec_run(p, &run, "ksparse-dense")?;
    }
    Ok(result)
}

/// Settings of [`evaluate_sparse`].
pub struct SparseEvalOptions<'a> {
    /// BEIR-layout folder.
    pub dataset: &'a Path,
    /// Qrels split to evaluate.
    pub split: &'a str,
    /// Encoder folder.
    pub encoder: &'a Path,
    /// Corpus vectors (`.npy` with its ids beside it).
    pub corpus_vectors: &'a Path,
    /// Query vectors (`.npy` with its ids beside it).
    pub query_vectors: &'a Path,
    /// Active latents per document code (default: the encoder's k).
    pub k: Option<usize>,
    /// How queries become sparse queries.
    pub mode: ScoringMode,
    /// Drop hits whose document id equals the query id.
    pub ignore_identical_ids: bool,
}

/// What [`evaluate_sparse`] measured, and at which code length and width.
pub struct SparseEvaluation {
    /// The metrics.
    pub evaluation: Evaluation,
    /// Active latents per document code.
    pub k: usize,
    /// The encoder's width.
    pub hidden: usize,
}

/// Sparse exact search on a BEIR dataset with a trained encoder, scored on its qrels:
/// documents encoded at k, queries made sparse by the scoring mode.
pub fn evaluate_sparse(opts: &SparseEvalOptions) -> Result<SparseEvaluation> {
    let ds = Dataset::load(opts.dataset, opts.split)?;
    let (enc, config) = SparseEncoder::load(opts.encoder)?;
    let k = opts.k.unwrap_or(config.k);
    check_k(k, enc.hidden)?;
    let corpus = read_npy_aligned(opts.corpus_vectors, &ds.corpus.ids)?;
    let queries = read_npy_aligned(opts.query_vectors, &ds.queries.ids)?;
    let (evaluation, _) = eval::sparse_exact(
        &ds,
        &corpus,
        &queries,
        &enc,
        k,
        opts.mode,
        opts.ignore_identical_ids,
    )?;
    Ok(SparseEvaluation {
        evaluation,
        k,
        hidden: enc.hidden,
    })
}

/// Evaluates a search folder on a BEIR dataset's `split`: each judged query is searched
/// to depth [`eval::EVAL_DEPTH`] under `mode`, by the folder's own index
/// ([`Searcher::search`]) or, given `engine`, through it ([`Searcher::search_through`]: a
/// database the folder was exported to, or its codes in memory), and the run is scored
/// against the qrels.
pub fn evaluate_folder(
    searcher: &Searcher,
    engine: Option<&dyn SparseEngine>,
    dataset: &Path,
    split: &str,
    mode: ScoringMode,
) -> Result<Evaluation> {
    let ds = Dataset::load(dataset, split)?;
    let hits = searcher.search_on(engine, &ds.queries.texts, eval::EVAL_DEPTH, mode, 0)?;
    let run = ds
        .queries
        .ids
        .iter()
        .zip(hits)
        .map(|(q, hits)| {
            let list = hits.into_iter().map(|h| (h.id, h.score as f64)).collect();
            (q.clone(), list)
        })
        .collect();
    let name = engine.map_or_else(|| "the folder's index".to_string(), |e| e.name());
    eval::evaluate_checked(&ds.qrels, &run, &ds.qrels_path.display().to_string(), &name)
}
