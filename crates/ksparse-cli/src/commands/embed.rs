//! `ksparse embed`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

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
}

pub fn run(a: EmbedArgs) -> Result<()> {
    let embedder = a.model.load()?;
    let (rows, dim) = ksparse::pipeline::embed_file(
        &embedder,
        &a.input,
        &a.output,
        a.model.batch_size,
        &Progress::new(),
    )?;
    tracing::info!(output = %a.output.display(), "wrote {rows} × {dim}");
    Ok(())
}
