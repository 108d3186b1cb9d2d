//! Benchmarks that compare a ksparse stage with the tool users run today, in one run, on
//! the same data and thread count, and report the ratio.

pub mod embed;
pub mod quality;
pub mod search;
pub mod serve;
pub mod train;

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use ksparse::io::write_atomic;

/// What a Python baseline script prints as its last line.
#[derive(Debug, Deserialize)]
pub struct PythonTiming {
    /// Seconds of the timed section.
    pub seconds: f64,
    /// PyTorch version the baseline ran on.
    pub torch: String,
}

/// Runs a baseline script (`source`, saved as `name` in `scratch`) with `python` and
/// `args`, and parses the last line it prints as `T` (JSON). Returns `Ok(Err(reason))`
/// when `python` cannot import `module`, so the benchmark can report the baseline as
/// skipped rather than fail.
pub fn run_python_baseline<T: DeserializeOwned>(
    python: &Path,
    module: &str,
    name: &str,
    source: &str,
    args: &[OsString],
    scratch: &Path,
) -> Result<std::result::Result<T, String>> {
    let probe = Command::new(python)
        .args(["-c", &format!("import {module}")])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        return Ok(Err(format!("{} cannot import {module}", python.display())));
    }
    let script = scratch.join(name);
    write_atomic(&script, |w| {
        Ok(std::io::Write::write_all(w, source.as_bytes())?)
    })?;
    let out = Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .with_context(|| format!("cannot run the {module} baseline"))?;
    if !out.status.success() {
        bail!(
            "{module} baseline failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let timing = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .with_context(|| format!("unexpected baseline output: {stdout}"))?;
    Ok(Ok(timing))
}

/// The CPU's model name (Linux), for reports: figures depend on it.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
