//! `ksparse export`: a search folder's codes into Milvus or Postgres (pgvector), and the
//! `--backend` that `search` and `eval` take to search through them.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use ksparse::encoder::scoring::SparseEngine;
use ksparse::pipeline::{Progress as _, Searcher, Stage};

use crate::args::positive_usize;
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

/// The engine `--backend` names: `exact` (the folder's codes in memory, exact f32 scores)
/// or an engine URL; checked to hold codes of `searcher`'s encoder.
pub fn backend(searcher: &Searcher, spec: &str) -> Result<Box<dyn SparseEngine>> {
    let engine: Box<dyn SparseEngine> = if spec == "exact" {
        Box::new(searcher.exact_engine())
    } else {
        ksparse_export::connect(spec)?
    };
    searcher.check_engine(&*engine).map_err(|e| {
        e.context("export this folder into another collection (`ksparse export --to URL`), or search with the folder the collection was exported from")
    })?;
    Ok(engine)
}
