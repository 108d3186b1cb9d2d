//! Where integration tests find models and the team's shared reference data.
#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether this run must check everything (`KSPARSE_REQUIRE_DATA=1`, set by CI): then a
/// missing model or data set fails the test instead of skipping it.
pub fn data_required() -> bool {
    std::env::var("KSPARSE_REQUIRE_DATA").as_deref() == Ok("1")
}

/// Skips (returns `None`, printing why) or, when [`data_required`], fails.
pub fn skip<T>(why: String) -> Option<T> {
    assert!(!data_required(), "KSPARSE_REQUIRE_DATA=1 but {why}");
    eprintln!("SKIPPED: {why}");
    None
}

/// A model folder, or `None` (with the reason printed) when it has not been fetched.
pub fn model(name: &str) -> Option<PathBuf> {
    let base = std::env::var_os("KSPARSE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models"));
    let dir = base.join(name);
    if dir.join("model.safetensors").is_file() {
        Some(dir)
    } else {
        skip(format!(
            "model {} not found; run scripts/fetch-models.sh",
            dir.display()
        ))
    }
}

/// A path under the shared data folder (`$KSPARSE_SHARED`, default `../shared`), or
/// `None` (with the reason printed) when it is absent.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let base = std::env::var_os("KSPARSE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared"));
    let p = base.join(rel);
    if p.exists() {
        Some(p)
    } else {
        skip(format!(
            "shared data {} not found (set KSPARSE_SHARED)",
            p.display()
        ))
    }
}

/// Cosine similarity in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}
