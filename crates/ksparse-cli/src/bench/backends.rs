//! `ksparse bench backends`: the same codes in the on-disk index, in Milvus and in
//! Postgres with pgvector (exact by sequential scan, approximate by HNSW), measured in one
//! run on one machine: ingest, bytes on disk, single-client latency, QPS by concurrency,
//! and recall@10 against exact f32 search.
//!
//! The codes are a search folder's encoder applied to SciFact's corpus vectors and to
//! vectors generated near them (as `bench search` and `bench serve` make them); the
//! queries are SciFact's, encoded at k (symmetric). The engines are a real Milvus
//! (milvus-lite 2.5.1's server) and a real Postgres 18 with pgvector 0.8.2, started on
//! loopback by `scripts/local-engines.sh` and reached over TCP, as a client would; the
//! on-disk index is searched in process. Every engine returns ids and scores only.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use ksparse::base::stopwatch::timed;
use ksparse::base::SparseCode;
use ksparse::encoder::scoring::{EngineHit, Fetch, SparseEngine};
use ksparse::eval::plot::{Chart, Series};
use ksparse::index::{self, Index};
use ksparse::search::sparse::ExactEngine;
use ksparse_export::{export_rows, Destination, ExportOptions, Provenance};

use super::{cpu_name, CodeWorkload, WorkloadArgs};
use crate::output::Progress;

/// Hits per query.
const TOP: usize = 10;

/// What to run.
pub struct Options {
    /// The search folder, its corpus, the queries and the embedding cache.
    pub workload: WorkloadArgs,
    /// Collection sizes.
    pub docs: Vec<usize>,
    /// Client threads per QPS run.
    pub concurrency: Vec<usize>,
    /// Seconds per QPS run.
    pub seconds: f64,
    /// Queries timed one at a time for p50/p99 and recall.
    pub latency_queries: usize,
    /// pgvector's `hnsw.ef_search`.
    pub ef_search: usize,
    /// Rows per insert.
    pub batch: usize,
    /// Where the index folders and the engines' data go.
    pub scratch: PathBuf,
}

/// One engine at one size.
#[derive(Debug, Serialize)]
pub struct Row {
    /// The engine.
    pub engine: String,
    /// Documents.
    pub documents: usize,
    /// Ingest: documents per second, from the first insert to searchable (Milvus: flushed
    /// and loaded; Postgres: committed; the index: written).
    pub ingest_docs_per_s: f64,
    /// Seconds to build an approximate index after ingest (pgvector HNSW), if any.
    pub index_build_s: Option<f64>,
    /// Bytes on disk.
    pub bytes: u64,
    /// Single-client latency, ms.
    pub p50_ms: f64,
    /// Single-client latency, ms.
    pub p99_ms: f64,
    /// (client threads, queries per second).
    pub qps: Vec<(usize, f64)>,
    /// Mean overlap of the top 10 with exact f32 search's top 10.
    pub recall_at_10: f64,
}

/// The report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// CPU model.
    pub cpu: String,
    /// Logical cores.
    pub cores: usize,
    /// Latents of the codes.
    pub hidden: usize,
    /// Non-zeros per document code.
    pub k: usize,
    /// Queries timed one at a time.
    pub latency_queries: usize,
    /// Seconds per QPS run.
    pub seconds: f64,
    /// pgvector's `hnsw.ef_search`.
    pub ef_search: usize,
    /// Rows.
    pub rows: Vec<Row>,
}

/// Candidates the rescored index row re-ranks by the exact f32 codes.
const RESCORE: usize = 100;

/// The index with its quantised first stage's top [`RESCORE`] re-ranked by the exact codes
/// (`ksparse index search --rescore`): exact up to the candidates the quantisation misses.
struct Rescored<'a>(&'a Index);

impl SparseEngine for Rescored<'_> {
    fn name(&self) -> String {
        self.0.name()
    }

    fn encoder_sha256(&self) -> Result<Option<String>> {
        Ok(None)
    }

    fn count(&self) -> Result<usize> {
        Ok(self.0.live())
    }

    fn top(&self, terms: &[(u32, f32)], depth: usize, _: Fetch) -> Result<Vec<EngineHit>> {
        Ok(self
            .0
            .search(terms, depth, RESCORE)?
            .into_iter()
            .map(|h| EngineHit {
                id: self.0.id(h.doc).to_string(),
                score: h.score,
                code: None,
                document: None,
            })
            .collect())
    }
}

/// The local Milvus and Postgres of `scripts/local-engines.sh`, stopped when dropped.
struct LocalEngines {
    dir: PathBuf,
    milvus: String,
    postgres: String,
}

impl LocalEngines {
    fn start(dir: &Path) -> Result<Self> {
        let out = Command::new("scripts/local-engines.sh")
            .arg("start")
            .arg(dir)
            .output()
            .context("cannot run scripts/local-engines.sh (run the benchmark from the repository's root)")?;
        if !out.status.success() {
            bail!(
                "scripts/local-engines.sh could not start the engines: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let read = |name: &str| -> Result<String> {
            Ok(std::fs::read_to_string(dir.join(name))?.trim().to_string())
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            milvus: read("milvus.url")?,
            postgres: read("postgres.url")?,
        })
    }

    /// Bytes of Milvus's data files.
    fn milvus_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with("milvus.db") {
                total += folder_bytes(&entry.path())?;
            }
        }
        Ok(total)
    }
}

impl Drop for LocalEngines {
    fn drop(&mut self) {
        let _ = Command::new("scripts/local-engines.sh")
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// Bytes of a file, or of every file under a folder.
fn folder_bytes(path: &Path) -> Result<u64> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        total += folder_bytes(&entry?.path())?;
    }
    Ok(total)
}

/// Runs the benchmark.
pub fn run(o: &Options, progress: &Progress) -> Result<Report> {
    let w = CodeWorkload::load(&o.workload, progress)?;
    let provenance = Provenance::of(&ksparse::pipeline::read_manifest(&o.workload.folder)?);
    let terms: Vec<Vec<(u32, f32)>> = w
        .query_terms()
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect();
    if terms.is_empty() {
        bail!(
            "{}: no query encodes to a non-empty code",
            o.workload.queries.display()
        );
    }
    let timed_queries = o.latency_queries.min(terms.len());
    let engines = LocalEngines::start(&o.scratch.join("engines"))?;
    let mut rows = Vec::new();
    for &n in &o.docs {
        tracing::info!("{n} documents: generating codes");
        let codes = w.codes(n, 7);
        let ids: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        let exact = ExactEngine::new(codes.clone(), ids.clone(), w.encoder.hidden);
        let reference: Vec<Vec<String>> = terms[..timed_queries]
            .iter()
            .map(|t| Ok(ids_of(&exact.top(t, TOP, Fetch::default())?)))
            .collect::<Result<_>>()?;
        drop(exact);
        let row_of = |name: String,
                      engine: &dyn SparseEngine,
                      ingest: f64,
                      build: Option<f64>,
                      bytes: u64|
         -> Result<Row> {
            tracing::info!("{n} documents: searching {name}");
            let row = measure(
                o,
                &terms,
                timed_queries,
                &reference,
                engine,
                name,
                n,
                ingest,
                build,
                bytes,
            )?;
            tracing::info!(?row, "measured");
            Ok(row)
        };

        // The on-disk index, written in one build.
        let dir = o.scratch.join(format!("index-{n}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let (built, secs) = timed(|| index::build(&dir, &codes, &ids, w.encoder.hidden));
        built?;
        let index = Index::open(&dir)?;
        let bytes = folder_bytes(&dir)?;
        let rate = n as f64 / secs;
        rows.push(row_of(
            "ksparse index (in process)".into(),
            &index,
            rate,
            None,
            bytes,
        )?);
        let rescored = Rescored(&index);
        let name = format!("ksparse index, top {RESCORE} rescored (in process)");
        rows.push(row_of(name, &rescored, rate, None, bytes)?);
        drop(index);
        std::fs::remove_dir_all(&dir)?;

        // Milvus: inverted index, drop_ratio_search 0 (exact).
        let before = engines.milvus_bytes()?;
        let milvus =
            ksparse_export::milvus::Milvus::connect(&format!("{}/bench_{n}", engines.milvus))?;
        let secs = ingest(&milvus, &provenance, &codes, &ids, o.batch, progress)?;
        let bytes = engines.milvus_bytes()?.saturating_sub(before);
        rows.push(row_of(
            "Milvus (inverted index, exact)".into(),
            &milvus,
            n as f64 / secs,
            None,
            bytes,
        )?);
        drop(milvus);

        // Postgres + pgvector: sequential scan (exact), then an HNSW index.
        let table = format!("{}?table=bench_{n}", engines.postgres);
        let pg = ksparse_export::postgres::Postgres::connect(&table)?;
        let secs = ingest(&pg, &provenance, &codes, &ids, o.batch, progress)?;
        rows.push(row_of(
            "pgvector (sequential scan, exact)".into(),
            &pg,
            n as f64 / secs,
            None,
            pg.table_bytes()?,
        )?);
        let with_index =
            ksparse_export::postgres::Postgres::connect(&format!("{table}&index=hnsw"))?;
        let (sealed, build) = timed(|| with_index.seal());
        sealed?;
        let hnsw = ksparse_export::postgres::Postgres::connect(&format!(
            "{table}&search=hnsw&ef_search={}",
            o.ef_search
        ))?;
        rows.push(row_of(
            format!("pgvector (HNSW, ef_search {})", o.ef_search),
            &hnsw,
            n as f64 / secs,
            Some(build),
            hnsw.table_bytes()?,
        )?);
    }
    Ok(Report {
        cpu: cpu_name(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        hidden: w.encoder.hidden,
        k: w.k,
        latency_queries: timed_queries,
        seconds: o.seconds,
        ef_search: o.ef_search,
        rows,
    })
}

fn ids_of(hits: &[EngineHit]) -> Vec<String> {
    hits.iter().map(|h| h.id.clone()).collect()
}

/// Exports the codes into `dest`; seconds from the first insert to searchable.
fn ingest(
    dest: &dyn Destination,
    provenance: &Provenance,
    codes: &[SparseCode],
    ids: &[String],
    batch: usize,
    progress: &Progress,
) -> Result<f64> {
    use ksparse::pipeline::{Progress as _, Stage};
    let mut next = 0;
    let next_batch = || -> Result<Option<Vec<ksparse_export::Row>>> {
        let end = (next + batch).min(codes.len());
        let rows: Vec<ksparse_export::Row> = (next..end)
            .map(|i| {
                ksparse_export::Row::new(
                    ids[i].clone(),
                    codes[i].clone(),
                    String::new(),
                    String::new(),
                )
            })
            .collect();
        next = end;
        Ok((!rows.is_empty()).then_some(rows))
    };
    let opts = ExportOptions {
        batch,
        partial: false,
    };
    progress.start(Stage::Export, codes.len());
    let done = export_rows(provenance, codes.len(), next_batch, dest, &opts, &|d, t| {
        progress.update(d, t)
    });
    progress.finish();
    Ok(done?.seconds)
}

#[allow(clippy::too_many_arguments)]
fn measure(
    o: &Options,
    terms: &[Vec<(u32, f32)>],
    timed_queries: usize,
    reference: &[Vec<String>],
    engine: &dyn SparseEngine,
    name: String,
    documents: usize,
    ingest_docs_per_s: f64,
    index_build_s: Option<f64>,
    bytes: u64,
) -> Result<Row> {
    // Warm: one pass over the timed queries.
    for t in &terms[..timed_queries] {
        engine.top(t, TOP, Fetch::default())?;
    }
    let mut ms = Vec::with_capacity(timed_queries);
    let mut found = 0;
    for (t, want) in terms[..timed_queries].iter().zip(reference) {
        let (hits, s) = timed(|| engine.top(t, TOP, Fetch::default()));
        ms.push(s * 1e3);
        let got = ids_of(&hits?);
        found += want.iter().filter(|id| got.contains(id)).count();
    }
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    let mut qps = Vec::new();
    for &c in &o.concurrency {
        let done = AtomicUsize::new(0);
        let failed = AtomicUsize::new(0);
        let deadline = Instant::now() + Duration::from_secs_f64(o.seconds);
        let started = Instant::now();
        std::thread::scope(|s| {
            for thread in 0..c {
                let (done, failed) = (&done, &failed);
                s.spawn(move || {
                    let mut i = thread;
                    while Instant::now() < deadline {
                        if engine
                            .top(&terms[i % terms.len()], TOP, Fetch::default())
                            .is_err()
                        {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                        i += c;
                    }
                });
            }
        });
        if failed.load(Ordering::Relaxed) > 0 {
            bail!(
                "{name}: {} of the searches at {c} threads failed",
                failed.load(Ordering::Relaxed)
            );
        }
        qps.push((
            c,
            done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
        ));
    }
    Ok(Row {
        engine: name,
        documents,
        ingest_docs_per_s,
        index_build_s,
        bytes,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        qps,
        recall_at_10: found as f64 / reference.iter().map(Vec::len).sum::<usize>().max(1) as f64,
    })
}

impl Report {
    /// The report as Markdown; `command` is the command line that produced it.
    pub fn markdown(&self, command: &str) -> String {
        let mut s = format!(
            "# Engines for ksparse's codes\n\n`{command}`\n\n{} ({} logical cores). Codes: {} latents, k = {}; SciFact's queries encoded at k. Latency: {} queries one at a time, one client; QPS: client threads each sending its next query when the answer arrives, {} s a run. Recall@10: overlap with exact f32 search's top 10. Milvus (milvus-lite 2.5.1's server) and Postgres 18 with pgvector 0.8.2 ran on the same machine, reached over loopback TCP; the ksparse index is searched in process. Engines return ids and scores.\n\n| engine | documents | ingest docs/s | index build s | MB on disk | p50 ms | p99 ms |",
            self.cpu, self.cores, self.hidden, self.k, self.latency_queries, self.seconds
        );
        let threads: Vec<usize> = self
            .rows
            .first()
            .map(|r| r.qps.iter().map(|q| q.0).collect())
            .unwrap_or_default();
        for c in &threads {
            s += &format!(" QPS ×{c} |");
        }
        s += " recall@10 |\n|---|---:|---:|---:|---:|---:|---:|";
        for _ in &threads {
            s += "---:|";
        }
        s += "---:|\n";
        for r in &self.rows {
            s += &format!(
                "| {} | {} | {:.0} | {} | {:.1} | {:.2} | {:.2} |",
                r.engine,
                r.documents,
                r.ingest_docs_per_s,
                r.index_build_s
                    .map_or("–".to_string(), |b| format!("{b:.1}")),
                r.bytes as f64 / 1e6,
                r.p50_ms,
                r.p99_ms
            );
            for (_, q) in &r.qps {
                s += &format!(" {q:.1} |");
            }
            s += &format!(" {:.4} |\n", r.recall_at_10);
        }
        s += "\n![p50 latency by collection size](latency.svg)\n";
        s
    }

    /// p50 latency against collection size, one line per engine.
    pub fn latency_chart(&self) -> Chart {
        let mut series: Vec<Series> = Vec::new();
        for r in &self.rows {
            match series.iter_mut().find(|s| s.name == r.engine) {
                Some(s) => s.points.push((r.documents as f64, r.p50_ms)),
                None => series.push(Series {
                    name: r.engine.clone(),
                    points: vec![(r.documents as f64, r.p50_ms)],
                    line: true,
                }),
            }
        }
        Chart {
            title: "Single-client latency by collection size".into(),
            x_label: "documents (log₂)".into(),
            y_label: "p50 ms (log₁₀)".into(),
            log2_x: true,
            log10_y: true,
            series,
            references: Vec::new(),
        }
    }
}
