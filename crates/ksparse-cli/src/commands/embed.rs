//! `ksparse embed`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use ksparse::data::Shard;

use crate::args::ModelArgs;
use crate::output::Progress;

#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// corpus.jsonl, queries.jsonl (optionally .gz) or a text file with one passage per line.
    #[arg(long)]
    input: PathBuf,
    /// Output .npy file; the ids go beside it as .ids.txt.
    #[arg(long)]
    output: PathBuf,
    /// Embed only part I of N (counted from 0) of the input, so that N machines share the
    /// work: a text belongs to the part given by a hash of its id, the same on every
    /// machine and run, so the N outputs hold every text exactly once.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
}

pub fn run(a: EmbedArgs) -> Result<()> {
    let embedder = a.model.load()?;
    let (rows, dim) = ksparse::pipeline::embed_file(
        &embedder,
        &a.input,
        &a.output,
        a.model.batch_size,
        a.shard,
        &Progress::new(),
    )?;
    tracing::info!(output = %a.output.display(), "wrote {rows} × {dim}");
    Ok(())
}
