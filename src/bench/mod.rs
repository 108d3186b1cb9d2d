//! Benchmarks that compare a ksparse stage with the tool users run today, in one run, on
//! the same data and thread count, and report the ratio.

pub mod embed;
pub mod train;

use std::time::Instant;

/// Runs `f` and returns its result with the elapsed wall time in seconds.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_secs_f64())
}
