//! Wall time and memory, as every report measures them.

use std::time::Instant;

use super::Hit;

/// Runs `f` and returns its result with the elapsed wall time in seconds.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_secs_f64())
}

/// Latency percentiles (p50, p99, ms) of `search` run once per query on this thread, with
/// the hits.
pub fn latencies<F>(queries: usize, search: F) -> (f64, f64, Vec<Vec<Hit>>)
where
    F: Fn(usize) -> Vec<Hit>,
{
    let mut ms = Vec::with_capacity(queries);
    let mut hits = Vec::with_capacity(queries);
    for i in 0..queries {
        let (h, s) = timed(|| search(i));
        ms.push(s * 1e3);
        hits.push(h);
    }
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    (pct(0.5), pct(0.99), hits)
}

/// Resident memory of this process, bytes (Linux; 0 elsewhere).
pub fn resident_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}
