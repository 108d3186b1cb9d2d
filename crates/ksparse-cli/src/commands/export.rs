//! `ksparse export`: a search folder's codes into Milvus or Postgres (pgvector), and the
//! `--backend` that `search` and `eval` take to search through them.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use ksparse::encoder::scoring::{ScoringMode, SparseEngine};
use ksparse::pipeline::{EngineError, Progress as _, Searcher, Stage};

use super::search::open_searcher;
use crate::args::{cause, positive_usize};
use crate::output::{print_json, print_line, Progress};

#[derive(Args)]
pub struct ExportArgs {
    /// Search folder written by `ksparse build`.
    folder: PathBuf,
    /// The collection to fill: milvus://[USER:PASSWORD@]HOST:PORT/COLLECTION[?db=NAME] or
    /// postgres://USER[:PASSWORD]@HOST:PORT/DB?table=T[&index=hnsw] (index=hnsw also
    /// builds pgvector's approximate index; other parameters, e.g. connect_timeout, go to the
    /// Postgres client). Created when missing; an existing one must hold codes of the same
    /// encoder.
    #[arg(long, value_name = "URL")]
    to: String,
    /// Documents per insert.
    #[arg(long, value_parser = positive_usize, default_value_t = 1000)]
    batch: usize,
    /// The collection gathers several folders (e.g. the parts of `build --shard I/N`):
    /// check at the end that it holds at least this folder's documents, not exactly them.
    #[arg(long)]
    partial: bool,
    /// Print what was done as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: ExportArgs) -> Result<()> {
    let dest = ksparse_export::connect(&a.to)?;
    let progress = Progress::new();
    let opts = ksparse_export::ExportOptions {
        batch: a.batch,
        partial: a.partial,
    };
    progress.start(Stage::Export, 0);
    let done = ksparse_export::export(&a.folder, &*dest, &opts, &|done, total| {
        progress.update(done, total)
    });
    progress.finish();
    let done = done.map_err(|e| match e.downcast_ref::<ksparse_export::ExportError>() {
        Some(ksparse_export::ExportError::Count { holds, exported, .. }) if holds > exported => e.context(
            "give --partial when the collection gathers several folders (e.g. the parts of `build --shard`); export into a new collection to drop documents deleted from the folder",
        ),
        _ => e,
    })?;
    if a.json {
        return print_json(&done);
    }
    print_line(&format!(
        "{}: {} documents ({} added, {} replaced, {} unchanged), {} in the collection, {:.1} s{}",
        done.engine,
        done.documents,
        done.inserted,
        done.replaced,
        done.unchanged,
        done.engine_count,
        done.seconds,
        if done.truncated > 0 {
            format!(
                "; {} titles or texts cut to the engine's longest string",
                done.truncated
            )
        } else {
            String::new()
        }
    ))
}

/// A search folder opened for `search` and `eval --index`.
pub struct Opened {
    /// The folder's searcher.
    pub searcher: Searcher,
    /// The engine `--backend` names; `None`: the folder's own index.
    pub engine: Option<Box<dyn SparseEngine>>,
    /// The scoring mode: the one given, or the default for where the search runs.
    pub mode: ScoringMode,
}

/// Opens search folder `dir` (with `model` when it moved) to search on the engine
/// `backend` names — `exact` (the folder's codes in memory, exact f32 scores) or an
/// engine URL — or on its own index, under `mode` or the default for that engine.
pub fn open_search(
    dir: &Path,
    model: Option<&str>,
    backend: Option<&str>,
    mode: Option<ScoringMode>,
) -> Result<Opened> {
    let searcher = open_searcher(dir, model)?;
    let engine: Option<Box<dyn SparseEngine>> = match backend {
        Some("exact") => Some(Box::new(searcher.exact_engine())),
        Some(url) => Some(ksparse_export::connect(url)?),
        None => None,
    };
    let mode = mode.unwrap_or_else(|| searcher.default_mode_on(engine.as_deref()));
    Ok(Opened {
        searcher,
        engine,
        mode,
    })
}

/// What to do about a search through an engine of another encoder.
pub fn engine_hint(e: anyhow::Error) -> anyhow::Error {
    match cause::<EngineError>(&e) {
        Some(EngineError::OtherEncoder { .. }) => e.context("export this folder into another collection (`ksparse export --to URL`), or search with the folder the collection was exported from"),
        None => e,
    }
}
