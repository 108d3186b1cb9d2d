//! The whole path, one call per task: [`build`] turns a corpus file into a search folder
//! (texts → embeddings → encoder → codes → inverted index), [`Searcher`] answers query
//! text from that folder, [`evaluate`] runs both papers' experiments on a BEIR dataset,
//! and [`embed_file`], [`encode_file`], [`evaluate_dense`] and [`evaluate_sparse`] run one
//! stage on files. Long stages report to a [`Progress`].
//!
//! A search folder holds:
//!
//! ```text
//! ksparse.json   the manifest: model folder and its SHA-256, encoder SHA-256, dim, hidden, k
//! index/         the inverted index (meta.json + segments, see `index`)
//! encoder/       the encoder the codes came from (config.json + model.safetensors)
//! docs.jsonl     {"_id", "title", "text"} per document, for titles and snippets in results
//! ```
//!
//! A searcher recomputes both fingerprints on open and refuses a model or encoder that is
//! not the one the codes were made with (their queries would land in another space); it
//! also cross-checks the parts (manifest checksum, index width = encoder width = the
//! manifest's, 1 ≤ k ≤ width), so a swapped or edited part is an error, not silent
//! zero scores. A rebuild swaps the whole folder in atomically under its writer lock.
//! Building is resumable: embeddings and trained encoders go to a content-addressed cache,
//! so a build that was interrupted, or repeated with the same inputs, skips what is done.

mod build;
mod evaluate;
mod files;
mod search;

use std::path::{Path, PathBuf};

use anyhow::Result;
use ndarray::Array2;

use crate::data::Texts;
use crate::embed::Embedder;
use crate::encoder::train::{train_folder, EpochLog, Pairs, TrainConfig, TrainData, Trained};

pub use build::{
    build, encoder_fingerprint, model_fingerprint, train_cached, train_for_corpus, BuildOptions,
    Manifest, DOCS_FILE, FOLDER, MANIFEST_FILE,
};
pub use evaluate::{
    evaluate, evaluate_dense, evaluate_folder, evaluate_sparse, DenseEvalOptions, EvalOptions,
    SparseEvalOptions, SparseEvaluation,
};
pub use files::{embed_file, encode_file, Encoded};
pub use search::{parse_docs, read_manifest, snippet, EngineError, Found, Searcher};

/// A long stage of the pipeline, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Embedding texts (units: texts); says which ("corpus", "queries", …).
    Embed(&'static str),
    /// Copying documents into another engine (units: documents).
    Export,
    /// Training an encoder (units: steps).
    Train {
        /// Latents.
        hidden: usize,
        /// Active latents per code.
        k: usize,
        /// Whether InfoNCE pairs are learnt too.
        supervised: bool,
    },
}

impl Stage {
    /// Training an encoder under `cfg`, with InfoNCE pairs when `supervised`.
    pub fn train(cfg: &TrainConfig, supervised: bool) -> Self {
        Self::Train {
            hidden: cfg.hidden,
            k: cfg.k,
            supervised,
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Self::Embed(what) => write!(f, "embedding {what}"),
            Self::Export => f.write_str("exporting documents"),
            Self::Train {
                hidden,
                k,
                supervised,
            } => {
                write!(f, "training h={hidden} k={k}")?;
                if *supervised {
                    f.write_str(" supervised")?;
                }
                Ok(())
            }
        }
    }
}

/// Follows the long stages of a pipeline call: each [`Stage`] is started, updated as its
/// units finish, and finished. A stage that is found in a cache is never started.
pub trait Progress {
    /// `stage` begins, with `total` units (0 while not known).
    fn start(&self, stage: Stage, total: usize);
    /// `done` of `total` units of the current stage are finished.
    fn update(&self, done: usize, total: usize);
    /// The current stage has ended.
    fn finish(&self);

    /// Runs `work` as `stage` of `total` units (0 while not known): started, given the
    /// callback to report `(done, total)` with, and finished whether it succeeds or not.
    fn stage<T>(
        &self,
        stage: Stage,
        total: usize,
        work: impl FnOnce(&dyn Fn(usize, usize)) -> T,
    ) -> T
    where
        Self: Sized,
    {
        self.start(stage, total);
        let out = work(&|done, total| self.update(done, total));
        self.finish();
        out
    }
}

/// A model, an encoder or a search folder that does not go with the others.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A given encoder does not take the model's vectors.
    #[error("the encoder {} takes {encoder_dim}-d vectors but the model {} gives {model_dim}-d: use an encoder trained on this model's embeddings", encoder.display(), model.display())]
    EncoderDim {
        /// The encoder folder.
        encoder: PathBuf,
        /// The dimension it takes.
        encoder_dim: usize,
        /// The model folder.
        model: PathBuf,
        /// The dimension it gives.
        model_dim: usize,
    },
    /// A part of a corpus was to be built without the encoder all parts share.
    #[error("part {shard} of a corpus needs the encoder every part shares: an encoder trained on one part would put each part in its own latent space")]
    ShardWithoutEncoder {
        /// The part.
        shard: crate::data::Shard,
    },
    /// The model a search folder was built with cannot be loaded.
    #[error("cannot load the model {model} that {} needs: give the path of that model", folder.display())]
    Unavailable {
        /// The model, as recorded or given.
        model: String,
        /// The search folder.
        folder: PathBuf,
        /// Why it cannot be loaded.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The model given is not the one the search folder was built with.
    #[error("{} was built with the model {built} but {} is a different model (SHA-256 {}… ≠ {}…): search with the model the folder was built with, or rebuild the folder with this one", folder.display(), given.display(), short(found_sha256), short(built_sha256))]
    Different {
        /// The search folder.
        folder: PathBuf,
        /// The model it was built with.
        built: String,
        /// Its fingerprint.
        built_sha256: String,
        /// The model given.
        given: PathBuf,
        /// The given model's fingerprint.
        found_sha256: String,
    },
}

/// The first 12 characters of a fingerprint.
fn short(sha: &str) -> String {
    sha.chars().take(12).collect()
}

/// Trains an encoder and writes its folder ([`train_folder`]), reporting the stage
/// `Train` to `progress`; `on_epoch` sees each epoch's log entry.
pub fn train_encoder(
    output: &Path,
    data: &TrainData,
    cfg: &TrainConfig,
    progress: &impl Progress,
    on_epoch: impl FnMut(&EpochLog),
) -> Result<Trained> {
    progress.stage(Stage::train(cfg, cfg.losses.nce > 0.0), 0, |report| {
        train_folder(output, data, cfg, report, on_epoch)
    })
}

/// The label-free training pairs of a corpus: its pseudo-queries
/// ([`crate::data::pseudo_queries`], drawn with `seed`) embedded through the cache in
/// `cache`, each paired with its document's row of `vectors`; and a key that identifies
/// them for the encoder cache. `None`, with a warning, when fewer than two documents give
/// a pseudo-query (short untitled lines): the encoder then learns from documents alone.
pub fn pseudo_query_pairs(
    embedder: &Embedder,
    corpus: &Texts,
    vectors: &Array2<f32>,
    (cache, batch_size, seed): (&Path, usize, u64),
    progress: &impl Progress,
) -> Result<Option<(Pairs, String)>> {
    let (texts, rows) = crate::data::pseudo_queries(corpus, seed);
    if texts.len() < 2 {
        tracing::warn!(
            documents = corpus.len(),
            pseudo_queries = texts.len(),
            "too few documents have a title, two sentences or 20 words to cut pseudo-queries from: training on the documents alone"
        );
        return Ok(None);
    }
    let queries = embed_through_cache(
        embedder,
        &texts,
        cache,
        batch_size,
        "pseudo-queries",
        progress,
    )?;
    let pairs = Pairs::from_rows(&queries, vectors, &rows)?;
    let key = format!("pseudo-queries:{}", pairs.key());
    Ok(Some((pairs, key)))
}

/// Embeds `texts` in batches of `batch_size`, reporting the stage `Embed(what)`.
pub fn embed_texts(
    embedder: &Embedder,
    texts: &Texts,
    batch_size: usize,
    what: &'static str,
    progress: &impl Progress,
) -> Result<Array2<f32>> {
    let n = texts.len();
    progress.stage(Stage::Embed(what), n, |report| {
        embedder.embed(&texts.texts, batch_size, |done| report(done, n))
    })
}

/// [`embed_texts`] through the embedding cache in `dir`: texts embedded before by the same
/// model are read back, not embedded again.
pub fn embed_through_cache(
    embedder: &Embedder,
    texts: &Texts,
    dir: &Path,
    batch_size: usize,
    what: &'static str,
    progress: &impl Progress,
) -> Result<Array2<f32>> {
    crate::embed::cache::embed_cached(embedder, texts, dir, |t| {
        embed_texts(embedder, t, batch_size, what, progress)
    })
}
