//! `ksparse serve`: the HTTP server of `ksparse-server`, with its flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use ksparse_server::collection::Limits;
use ksparse_server::ServeOptions;

use crate::args::positive_usize;

#[derive(Args)]
pub struct ServeArgs {
    /// Data folder: collections live in DIR/collections, snapshots in DIR/snapshots
    /// (created if missing).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Address to listen on. Without --api-key only a loopback address is accepted.
    #[arg(long, default_value = "127.0.0.1:6333")]
    listen: SocketAddr,
    /// Key every non-public route needs (api-key header or Authorization: Bearer);
    /// also read from KSPARSE_API_KEY.
    #[arg(long, env = "KSPARSE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// A second key that may only read (queries, retrieve, info, metrics); also read
    /// from KSPARSE_READ_KEY.
    #[arg(long, env = "KSPARSE_READ_KEY", hide_env_values = true)]
    read_key: Option<String>,
    /// Largest request body in MiB (larger bodies get 413).
    #[arg(long, value_parser = positive_usize, default_value_t = 32)]
    max_body_mb: usize,
    /// Most points per upsert request (more get 413).
    #[arg(long, value_parser = positive_usize, default_value_t = 10_000)]
    max_batch: usize,
}

pub fn run(a: ServeArgs) -> Result<()> {
    let options = ServeOptions {
        data: a.data,
        listen: a.listen,
        api_key: a.api_key,
        read_key: a.read_key,
        max_body: a
            .max_body_mb
            .checked_mul(1 << 20)
            .filter(|&b| b <= u32::MAX as usize)
            .ok_or_else(|| anyhow::anyhow!("--max-body-mb {} is too large", a.max_body_mb))?,
        limits: Limits {
            batch: a.max_batch,
            ..Limits::default()
        },
    };
    ksparse_server::run(options, |addr| {
        // The one line on stdout: scripts and tests read the port from it.
        println!("listening on http://{addr}");
        tracing::info!(
            "ksparse serve listening on http://{addr} (search page at /, API at /openapi.json)"
        );
    })
}
