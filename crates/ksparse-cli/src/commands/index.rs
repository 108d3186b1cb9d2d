//! `ksparse index …`: build, change, inspect and search the on-disk inverted index.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use ksparse::base::SparseCode;
use ksparse::data::text_lines;
use ksparse::encoder::codes::read_codes;
use ksparse::index::writer::Writer;
use ksparse::index::{self, Index};
use ksparse::io::read_ids;

use crate::args::{check_rescore, positive_usize, LockArgs};
use crate::output::{print_json, print_text, Stdout};

#[derive(Subcommand)]
pub enum IndexCommand {
    /// Build an index folder from sparse codes (.kspc from `ksparse encode`) and their ids.
    ///
    /// Posting lists are stored in blocks of 128 (bit-packed document deltas, one-byte
    /// quantised weights, per-block maxima), with a forward index of the exact codes and
    /// the id map; the folder appears complete or not at all.
    ///
    /// Example: ksparse index build --codes corpus.kspc --output corpus.idx
    Build(BuildArgs),
    /// Add documents (codes + ids new to the index) as a new segment.
    ///
    /// The change commits atomically: after a crash the index opens at its last commit.
    Add(AddArgs),
    /// Delete documents by id (tombstones; `index merge` reclaims the space).
    Delete(DeleteArgs),
    /// Merge all segments into one, dropping deleted documents.
    Merge(MergeArgs),
    /// Documents, postings, bytes per part and the latent usage histogram of an index.
    Stats(StatsArgs),
    /// Exact top-k for each row of a codes file used as sparse queries.
    ///
    /// Example: ksparse index search corpus.idx --queries queries.kspc --top 10 --json
    Search(SearchArgs),
}

#[derive(Args)]
pub struct BuildArgs {
    /// Codes of the documents (.kspc).
    #[arg(long)]
    codes: PathBuf,
    /// Document ids, one per line (default: the .ids.txt beside --codes).
    #[arg(long)]
    ids: Option<PathBuf>,
    /// Index folder to create (must not exist).
    #[arg(long)]
    output: PathBuf,
}

#[derive(Args)]
pub struct AddArgs {
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
}

#[derive(Args)]
pub struct DeleteArgs {
    /// Index folder.
    index: PathBuf,
    /// Ids to delete.
    #[arg(required = true)]
    ids: Vec<String>,
    #[command(flatten)]
    lock: LockArgs,
}

#[derive(Args)]
pub struct MergeArgs {
    /// Index folder.
    index: PathBuf,
    #[command(flatten)]
    lock: LockArgs,
}

#[derive(Args)]
pub struct StatsArgs {
    /// Index folder.
    index: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct SearchArgs {
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
}

pub fn run(c: IndexCommand) -> Result<()> {
    match c {
        IndexCommand::Build(a) => build(a),
        IndexCommand::Add(a) => {
            let (codes, hidden, ids) = read_codes_with_ids(&a.codes, a.ids.as_deref())?;
            let meta = Writer::open(&a.index, a.lock.wait())
                .and_then(|w| w.add(&codes, &ids, hidden))
                .map_err(|e| a.lock.hint(e))?;
            tracing::info!(
                added = ids.len(),
                segments = meta.segments.len(),
                "committed {}",
                a.index.display()
            );
            Ok(())
        }
        IndexCommand::Delete(a) => {
            let n = Writer::open(&a.index, a.lock.wait())
                .and_then(|w| w.delete(&a.ids))
                .map_err(|e| a.lock.hint(e))?;
            tracing::info!(
                deleted = n,
                not_found = a.ids.len() - n,
                "committed {}",
                a.index.display()
            );
            Ok(())
        }
        IndexCommand::Merge(a) => {
            let meta = Writer::open(&a.index, a.lock.wait())
                .and_then(|w| w.merge())
                .map_err(|e| a.lock.hint(e))?;
            tracing::info!(
                segments = meta.segments.len(),
                "committed {}",
                a.index.display()
            );
            Ok(())
        }
        IndexCommand::Stats(a) => {
            let stats = Index::open(&a.index)?.stats();
            if a.json {
                print_json(&stats)
            } else {
                print_text(&stats.text())
            }
        }
        IndexCommand::Search(a) => search(a),
    }
}

fn build(a: BuildArgs) -> Result<()> {
    let (codes, hidden, ids) = read_codes_with_ids(&a.codes, a.ids.as_deref())?;
    let start = std::time::Instant::now();
    index::build(&a.output, &codes, &ids, hidden)
        .with_context(|| format!("cannot build an index from {}", a.codes.display()))?;
    let stats = Index::open(&a.output)?.stats();
    tracing::info!(
        docs = stats.docs,
        postings = stats.postings,
        bytes = stats.file_bytes,
        secs = start.elapsed().as_secs_f64(),
        "wrote {}",
        a.output.display()
    );
    Ok(())
}

fn search(a: SearchArgs) -> Result<()> {
    check_rescore(a.rescore, a.top)?;
    let idx = Index::open(&a.index)?;
    let (codes, hidden) = read_codes(&a.queries)?;
    if hidden != idx.hidden() {
        anyhow::bail!(
            "{} holds {hidden}-wide codes but the index is {} wide",
            a.queries.display(),
            idx.hidden()
        );
    }
    let qids = read_ids(&a.queries, codes.len())
        .unwrap_or_else(|_| (0..codes.len()).map(|i| i.to_string()).collect());
    let mut out = Stdout::new();
    let queries: Vec<Vec<(u32, f32)>> = codes
        .into_iter()
        .map(|c| c.ids.into_iter().zip(c.values).collect())
        .collect();
    // All queries across the threads, printed in input order.
    let results = idx.search_batch(&queries, a.top, a.rescore)?;
    'queries: for (qid, hits) in qids.iter().zip(&results) {
        if a.json {
            let hits: Vec<_> = hits
                .iter()
                .map(|h| serde_json::json!({ "id": idx.id(h.doc), "score": h.score }))
                .collect();
            if !out.line(&serde_json::json!({ "query": qid, "hits": hits }).to_string())? {
                break 'queries;
            }
        } else {
            for (rank, h) in hits.iter().enumerate() {
                let line = format!("{qid}\t{}\t{}\t{:.6}", rank + 1, idx.id(h.doc), h.score);
                if !out.line(&line)? {
                    break 'queries;
                }
            }
        }
    }
    out.finish()
}

/// Codes, their width and their ids: from `ids` (one per line) when given, otherwise the
/// `.ids.txt` beside the codes.
fn read_codes_with_ids(
    codes: &Path,
    ids: Option<&Path>,
) -> Result<(Vec<SparseCode>, usize, Vec<String>)> {
    let (read, hidden) = read_codes(codes)?;
    let ids = match ids {
        Some(p) => text_lines(p)?
            .map(|l| l.map(|(_, id)| id))
            .collect::<Result<_>>()?,
        None => read_ids(codes, read.len())?,
    };
    Ok((read, hidden, ids))
}
