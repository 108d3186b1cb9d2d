//! ksparse: single-stage semantic search with K-sparse codes.
//!
//! The data's path, one module per stage:
//! text ([`data`]) → dense vectors ([`embed`]) → K-sparse codes ([`encoder`]) → inverted
//! index ([`index`]) → hits → metrics ([`eval`]); [`search`] holds the baselines the index
//! is measured against (dense flat, HNSW, in-memory sparse), and [`pipeline`] runs the
//! whole path from a corpus file to search hits. Below every stage: [`base`], the
//! vocabulary they share (codes, hits, top-k, dot products, the stopwatch), and [`io`],
//! the file handling that loses nothing (atomic writes, locks, checksums).
//! `ARCHITECTURE.md` describes the path, the layers and the file formats.

pub mod base;
pub mod data;
pub mod embed;
pub mod encoder;
pub mod eval;
pub mod index;
pub mod io;
pub mod pipeline;
pub mod search;

/// Sets the number of worker threads for everything ksparse runs in parallel (the rayon
/// pool and candle's matrix kernels). Call once, before any parallel work; 0 = all cores.
pub fn set_threads(threads: usize) -> anyhow::Result<usize> {
    let n = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    // candle's CPU kernels read the rayon variable to size their own parallelism.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| anyhow::anyhow!("cannot size the thread pool: {e}"))?;
    Ok(n)
}
