//! `ksparse encode`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use ksparse::data::Shard;

use crate::args::positive_usize;

#[derive(Args)]
pub struct EncodeArgs {
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
    /// Encode only the rows of part I of N (counted from 0), as `embed --shard` parts
    /// texts (by their ids): give the same I/N to both, or encode a whole embedding file
    /// in N parts.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
}

pub fn run(a: EncodeArgs) -> Result<()> {
    let done = ksparse::pipeline::encode_file(&a.encoder, &a.input, &a.output, a.k, a.shard)?;
    tracing::info!(
        rows = done.rows,
        k = done.k,
        mean_nnz = done.mean_nnz,
        vectors_per_s = done.vectors_per_s,
        "wrote {}",
        a.output.display()
    );
    Ok(())
}
