//! In-process fuzzing of every file reader of ksparse, on stable Rust.
//!
//! Each target pairs a reader with seed files made by ksparse's own writers. An execution
//! takes a seed, applies 1–4 random mutations (bit flips, special bytes and words,
//! truncation, appended, deleted and duplicated chunks; for text formats also JSON/TSV
//! tokens, huge numbers, replaced strings, line edits, byte-order marks and invalid
//! UTF-8), optionally repairs the file's checksums so that the mutation reaches the checks
//! behind them, writes the file and calls the reader under `catch_unwind`. A reader must
//! answer `Ok` or `Err`: a panic is a failure, recorded with its input so that it can be
//! replayed. What a reader accepts is then used the way ksparse uses it (an opened index
//! is searched, an encoder encodes), since accepting bytes that crash later is the same
//! bug. Where a JSON file keeps its checksum, what the reader accepts must also be what
//! was written (a "checksum bypass" otherwise). A reader that aborts the process (an
//! unbounded allocation) fails the test run.
//!
//! Environment:
//! - `KSPARSE_FUZZ_EXECS`: executions per reader (default [`DEFAULT_EXECS`]);
//! - `KSPARSE_FUZZ_SEED`: the campaign's random seed (default [`DEFAULT_SEED`]);
//! - `KSPARSE_FUZZ_REPORT`: a folder that receives `report.json` (per reader: execs, ok,
//!   err, panics, bypassed, seconds; and the CPU model) and the failing inputs
//!   (`crashes/`); without it, failing inputs go to `fuzz-crashes/` in Cargo's test
//!   scratch folder;
//! - `KSPARSE_FUZZ_REPLAY`: a saved input (`<reader>.s<seed>.e<exec>.bin`): the `replay`
//!   test runs its reader on it and fails with the failure's message and backtrace.
//!
//! The long campaign:
//! `KSPARSE_FUZZ_EXECS=1000000 cargo test --release --test fuzz -- --nocapture`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hint::black_box;
use std::io::{Read as _, Write as _};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ksparse::base::SparseCode;
use ksparse::encoder::codes::{read_codes, write_codes};
use ksparse::encoder::train::TrainConfig;
use ksparse::encoder::{DataStats, EncoderConfig, SparseEncoder};
use ksparse::index::query::{self, Strategy};
use ksparse::index::segment::Segment;
use ksparse::index::{Index, META_FILE};
use ksparse::{data, eval, io as kio};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Executions per reader when `KSPARSE_FUZZ_EXECS` is not set: all readers together take
/// about 20 s in a release build on one core (a tenth of that in a debug build, where the
/// library is unoptimised, so that a plain `cargo test` stays quick).
const DEFAULT_EXECS: u64 = if cfg!(debug_assertions) {
    2_000
} else {
    20_000
};
/// The campaign seed when `KSPARSE_FUZZ_SEED` is not set.
const DEFAULT_SEED: u64 = 0x006b_7370_6172_7365;
/// Panicking inputs saved per reader (all are counted).
const MAX_SAVED_CRASHES: u64 = 20;
/// Panics per thread whose backtrace is captured (capturing one takes milliseconds).
const MAX_BACKTRACES: u32 = 20;

// ---------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------

/// How a target's file is mutated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Grammar {
    /// Byte-level mutations only.
    Binary,
    /// Byte-level mutations and textual ones (tokens, numbers, strings, lines).
    Text,
}

/// One seed: a folder holding everything its reader needs besides the fuzzed file, and
/// the bytes of that file.
struct Seed {
    /// What the seed is, for crash reports.
    label: String,
    /// The folder the reader is given.
    dir: PathBuf,
    /// The unmutated file.
    bytes: Vec<u8>,
}

/// A reader under test.
struct Target {
    /// Name of the reader (and of its test).
    name: &'static str,
    /// The fuzzed file, relative to a seed's folder.
    file: &'static str,
    /// Makes the seeds inside an empty folder.
    seeds: fn(&Path) -> Result<Vec<Seed>>,
    /// The mutations applied.
    grammar: Grammar,
    /// Applied after mutating.
    fixup: Fixup,
    /// The reader, given a seed's folder.
    read: fn(&Path) -> Result<()>,
}

/// What is redone after mutating, as a writer would have done it.
#[derive(Clone, Copy)]
enum Fixup {
    /// Nothing: the mutated bytes are written as they are.
    None,
    /// A segment's section and header CRCs ([`fix_segment_crcs`]).
    SegmentCrcs,
    /// A trailing CRC-32 ([`fix_trailing_crc`]).
    TrailingCrc,
    /// A JSON file's `checksum` field ([`fix_json_checksum`]).
    JsonChecksum,
    /// Gzip compression of the mutated text ([`gzip`]).
    Gzip,
}

impl Fixup {
    fn apply(self, b: &mut Vec<u8>) {
        match self {
            Self::None => {}
            Self::SegmentCrcs => fix_segment_crcs(b),
            Self::TrailingCrc => fix_trailing_crc(b),
            Self::JsonChecksum => fix_json_checksum(b),
            Self::Gzip => gzip(b),
        }
    }
}

/// Every reader: index segments and commits, sparse codes, `.npy` matrices and id lists,
/// encoder weights and configs, BEIR corpora, queries and qrels, TREC runs.
const TARGETS: &[Target] = &[
    Target {
        name: "segment",
        file: SEGMENT_FILE,
        seeds: segment_seeds,
        grammar: Grammar::Binary,
        fixup: Fixup::None,
        read: read_segment,
    },
    Target {
        name: "segment_crc",
        file: SEGMENT_FILE,
        seeds: segment_seeds,
        grammar: Grammar::Binary,
        fixup: Fixup::SegmentCrcs,
        read: read_segment,
    },
    Target {
        name: "meta_checked",
        file: META_FILE,
        seeds: meta_seeds,
        grammar: Grammar::Text,
        fixup: Fixup::None,
        read: read_index_checked,
    },
    Target {
        name: "meta_legacy",
        file: META_FILE,
        seeds: meta_legacy_seeds,
        grammar: Grammar::Text,
        fixup: Fixup::None,
        read: read_index,
    },
    Target {
        name: "meta_resigned",
        file: META_FILE,
        seeds: meta_seeds,
        grammar: Grammar::Text,
        fixup: Fixup::JsonChecksum,
        read: read_index,
    },
    Target {
        name: "codes",
        file: CODES_FILE,
        seeds: codes_seeds,
        grammar: Grammar::Binary,
        fixup: Fixup::None,
        read: read_codes_file,
    },
    Target {
        name: "codes_crc",
        file: CODES_FILE,
        seeds: codes_seeds,
        grammar: Grammar::Binary,
        fixup: Fixup::TrailingCrc,
        read: read_codes_file,
    },
    Target {
        name: "npy",
        file: NPY_FILE,
        seeds: npy_seeds,
        grammar: Grammar::Text,
        fixup: Fixup::None,
        read: read_npy_file,
    },
    Target {
        name: "ids_txt",
        file: "x.ids.txt",
        seeds: ids_txt_seeds,
        grammar: Grammar::Text,
        fixup: Fixup::None,
        read: read_ids_file,
    },
    Target {
        name: "ids_json",
        file: "x.ids.json",
        seeds: ids_json_seeds,
        grammar: Grammar::Text,
        fixup: Fixup::None,
        read: read_ids_file,
    },
    Target {
        name: "encoder_weights",
        file: ksparse::encoder::WEIGHTS_FILE,
        seeds: encoder_weights_seeds,
        grammar: Grammar::Text,
        fixup: Fixup::None,
        read: read_encoder,
    },
    Target {
        name: "encoder_config_checked",
        file: ksparse::encoder::CONFIG_FILE,
        seeds: encoder_config_seeds,
        grammar: Grammar::Text,
        fixup: Fixup::None,
        read: read_encoder_checked,
    },
    Target {
        name: "encoder_config_legacy",
        file: ksparse::encoder::CONFIG_FILE,
        seeds: encoder_config_legacy_seeds,
        grammar: Grammar::Text,
        fixup: Fixup::None,
        read: read_encoder,
    },
    Target {
        name: "encoder_config_resigned",
        file: ksparse::encoder::CONFIG_FILE,
        seeds: encoder_config_seeds,
        grammar: Grammar::Text,
        fixup: Fixup::JsonChecksum,
        read: read_encoder,
    },
    Target {
        name: "corpus_jsonl",
        file: "corpus.jsonl",
        seeds: corpus_seeds,
        grammar: Grammar::Text,
        fixup: Fixup::None,
        read: read_corpus,
    },
    Target {
        name: "queries_jsonl",
        file: "queries.jsonl",
        seeds: queries_seeds,
        grammar: Grammar::Text,
        fixup: Fixup::None,
        read: read_queries,
    },
    Target {
        name: "corpus_jsonl_gz",
        file: "corpus.jsonl.gz",
        seeds: corpus_gz_seeds,
        grammar: Grammar::Binary,
        fixup: Fixup::None,
        read: read_corpus_gz,
    },
    Target {
        name: "corpus_jsonl_gz_text",
        file: "corpus.jsonl.gz",
        seeds: corpus_seeds,
        grammar: Grammar::Text,
        fixup: Fixup::Gzip,
        read: read_corpus_gz,
    },
    Target {
        name: "texts_txt",
        file: "texts.txt",
        seeds: plain_text_seeds,
        grammar: Grammar::Text,
        fixup: Fixup::None,
        read: read_plain_texts,
    },
    Target {
        name: "qrels_tsv",
        file: "test.tsv",
        seeds: qrels_seeds,
        grammar: Grammar::Text,
        fixup: Fixup::None,
        read: read_qrels_file,
    },
    Target {
        name: "qrels_tsv_gz",
        file: "test.tsv.gz",
        seeds: qrels_gz_seeds,
        grammar: Grammar::Binary,
        fixup: Fixup::None,
        read: read_qrels_gz,
    },
    Target {
        name: "dataset_qrels",
        file: "qrels/test.tsv",
        seeds: dataset_seeds,
        grammar: Grammar::Text,
        fixup: Fixup::None,
        read: read_dataset,
    },
    Target {
        name: "trec_run",
        file: "run.trec",
        seeds: trec_run_seeds,
        grammar: Grammar::Text,
        fixup: Fixup::None,
        read: read_trec_run_file,
    },
];

/// One test per target, so that a panic is attributed to its reader.
macro_rules! fuzz_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                fuzz(stringify!($name));
            }
        )*
        /// The targets that have a test.
        const TESTED: &[&str] = &[$(stringify!($name)),*];
    };
}

fuzz_tests!(
    segment,
    segment_crc,
    meta_checked,
    meta_legacy,
    meta_resigned,
    codes,
    codes_crc,
    npy,
    ids_txt,
    ids_json,
    encoder_weights,
    encoder_config_checked,
    encoder_config_legacy,
    encoder_config_resigned,
    corpus_jsonl,
    queries_jsonl,
    corpus_jsonl_gz,
    corpus_jsonl_gz_text,
    texts_txt,
    qrels_tsv,
    qrels_tsv_gz,
    dataset_qrels,
    trec_run,
);

#[test]
fn every_target_has_a_test() {
    let table: BTreeSet<&str> = TARGETS.iter().map(|t| t.name).collect();
    let tested: BTreeSet<&str> = TESTED.iter().copied().collect();
    assert_eq!(table, tested);
    assert_eq!(table.len(), TARGETS.len(), "target names are unique");
}

/// Runs the reader of a saved input (`KSPARSE_FUZZ_REPLAY`) and fails with its failure's
/// message; does nothing when the variable is not set.
#[test]
fn replay() {
    let Some(input) = std::env::var_os("KSPARSE_FUZZ_REPLAY").map(PathBuf::from) else {
        return;
    };
    let stem = input
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a saved input's name");
    let mut parts = stem.split('.');
    let target = find(parts.next().expect("reader"));
    let seed: usize = parts
        .next()
        .and_then(|s| s.strip_prefix('s'))
        .and_then(|s| s.parse().ok())
        .expect("a name <reader>.s<seed>.e<exec>.bin");
    let root = scratch(target.name);
    let seeds = (target.seeds)(root.path()).expect("seeds");
    let dir = &seeds[seed].dir;
    std::fs::copy(&input, dir.join(target.file)).expect("copy the input");
    install_panic_hook();
    match catch(|| (target.read)(dir)) {
        Ok(result) => println!(
            "{}: {:?}",
            target.name,
            result.map_err(|e| format!("{e:#}"))
        ),
        Err(f) => panic!("{}: {}: {}", target.name, f.kind.name(), f.message),
    }
}

/// The target called `name`.
fn find(name: &str) -> &'static Target {
    TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no fuzz target {name:?}"))
}

// ---------------------------------------------------------------------------------------
// Runner
// ---------------------------------------------------------------------------------------

/// The campaign's settings, from the environment.
struct Config {
    execs: u64,
    seed: u64,
    report: Option<PathBuf>,
}

impl Config {
    fn from_env() -> Self {
        let number = |var: &str, default: u64| {
            std::env::var(var).map_or(default, |v| {
                v.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{var}={v:?} is not a number"))
            })
        };
        Self {
            execs: number("KSPARSE_FUZZ_EXECS", DEFAULT_EXECS),
            seed: number("KSPARSE_FUZZ_SEED", DEFAULT_SEED),
            report: std::env::var_os("KSPARSE_FUZZ_REPORT").map(PathBuf::from),
        }
    }

    /// Where panicking inputs are saved.
    fn crash_dir(&self) -> PathBuf {
        match &self.report {
            Some(r) => r.join("crashes"),
            None => Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crashes"),
        }
    }
}

/// Counts of one reader's campaign.
#[derive(Clone, Copy, Default)]
struct Stats {
    /// Executions.
    execs: u64,
    /// The reader accepted the input.
    ok: u64,
    /// The reader refused the input.
    err: u64,
    /// The reader (or the use of what it accepted) panicked.
    panics: u64,
    /// A file whose checksum was kept was accepted with other contents.
    bypassed: u64,
    /// Time of the executions.
    seconds: f64,
}

/// Fuzzes the target `name` and asserts that its reader never failed, ran every
/// execution and detected some mutations.
fn fuzz(name: &str) {
    let target = find(name);
    let cfg = Config::from_env();
    let stats = run(target, &cfg);
    print_row(name, &stats);
    record(name, &stats, &cfg);
    let saved = cfg.crash_dir();
    assert_eq!(
        stats.panics,
        0,
        "{name}: {} panics in {} executions; inputs saved in {}",
        stats.panics,
        stats.execs,
        saved.display()
    );
    assert_eq!(
        stats.bypassed,
        0,
        "{name}: {} changed files passed the checksum in {} executions; inputs saved in {}",
        stats.bypassed,
        stats.execs,
        saved.display()
    );
    assert_eq!(stats.execs, cfg.execs, "{name}: executions");
    assert!(
        cfg.execs == 0 || stats.err > 0,
        "{name}: no mutation was detected"
    );
}

/// A fresh scratch folder for `name`, in memory where the system has `/dev/shm`.
fn scratch(name: &str) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    tempfile::Builder::new()
        .prefix(&format!("ksparse-fuzz-{name}-"))
        .tempdir_in(base)
        .expect("a scratch folder")
}

/// The random source of execution `exec` of `name`: each execution can be replayed alone.
fn exec_rng(seed: u64, name: &str, exec: u64) -> ChaCha8Rng {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    ChaCha8Rng::seed_from_u64(seed ^ h ^ exec.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Writes `bytes` as the target's file of `seed` and runs the reader.
fn exec_once(target: &Target, seed: &Seed, bytes: &[u8]) -> Result<Result<()>, Failure> {
    std::fs::write(seed.dir.join(target.file), bytes).expect("write the input");
    catch(|| (target.read)(&seed.dir))
}

/// Runs `execs` executions of `target`.
fn run(target: &Target, cfg: &Config) -> Stats {
    install_panic_hook();
    let root = scratch(target.name);
    let seeds = (target.seeds)(root.path())
        .unwrap_or_else(|e| panic!("{}: cannot make seeds: {e:#}", target.name));
    assert!(!seeds.is_empty(), "{}: no seeds", target.name);
    for (i, seed) in seeds.iter().enumerate() {
        let mut bytes = seed.bytes.clone();
        target.fixup.apply(&mut bytes);
        match exec_once(target, seed, &bytes) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{}: seed #{i} ({}): {e:#}", target.name, seed.label),
            Err(f) => panic!("{}: seed #{i} ({}): {}", target.name, seed.label, f.message),
        }
    }
    if cfg.execs >= 100_000 {
        eprintln!("{}: fuzzing in {}", target.name, root.path().display());
    }
    let mut stats = Stats::default();
    let start = Instant::now();
    let mut last_progress = start;
    for exec in 0..cfg.execs {
        let mut rng = exec_rng(cfg.seed, target.name, exec);
        let s = rng.random_range(0..seeds.len());
        let seed = &seeds[s];
        let mut bytes = seed.bytes.clone();
        let mutations = mutate(&mut bytes, target.grammar, &mut rng);
        target.fixup.apply(&mut bytes);
        match exec_once(target, seed, &bytes) {
            Ok(Ok(())) => stats.ok += 1,
            Ok(Err(_)) => stats.err += 1,
            Err(failure) => {
                match failure.kind {
                    FailureKind::Panic => stats.panics += 1,
                    FailureKind::Bypass => stats.bypassed += 1,
                }
                if stats.panics + stats.bypassed <= MAX_SAVED_CRASHES {
                    let crash = Crash {
                        target,
                        seed_index: s,
                        seed,
                        exec,
                        bytes: &bytes,
                        mutations: &mutations,
                        failure: &failure,
                    };
                    let saved = crash.save(cfg);
                    eprintln!(
                        "{}: {} at execution {exec} (saved {}): {}",
                        target.name,
                        failure.kind.name(),
                        saved.display(),
                        failure
                            .message
                            .lines()
                            .take(2)
                            .collect::<Vec<_>>()
                            .join(" ")
                    );
                }
            }
        }
        stats.execs += 1;
        if exec % 4096 == 0 && last_progress.elapsed() > Duration::from_secs(60) {
            last_progress = Instant::now();
            eprintln!(
                "{}: {} / {} executions, {} panics, {} checksum bypasses",
                target.name, stats.execs, cfg.execs, stats.panics, stats.bypassed
            );
        }
    }
    stats.seconds = start.elapsed().as_secs_f64();
    stats
}

/// A failed execution, as saved for replay.
struct Crash<'a> {
    target: &'a Target,
    seed_index: usize,
    seed: &'a Seed,
    exec: u64,
    bytes: &'a [u8],
    mutations: &'a [String],
    failure: &'a Failure,
}

impl Crash<'_> {
    /// Saves the input (`.bin`) and what made it (`.txt`); returns the input's path.
    fn save(&self, cfg: &Config) -> PathBuf {
        let dir = cfg.crash_dir();
        std::fs::create_dir_all(&dir).expect("create the crash folder");
        let stem = format!("{}.s{}.e{}", self.target.name, self.seed_index, self.exec);
        let input = dir.join(format!("{stem}.bin"));
        std::fs::write(&input, self.bytes).expect("save the input");
        let about = format!(
            "reader: {}\nfile: {}\nseed: #{} ({})\ncampaign seed: {}\nexecution: {}\n\
             mutations:\n  {}\nreplay: KSPARSE_FUZZ_REPLAY={} cargo test --release --test fuzz replay -- --nocapture\n\
             {}: {}\n",
            self.target.name,
            self.target.file,
            self.seed_index,
            self.seed.label,
            cfg.seed,
            self.exec,
            self.mutations.join("\n  "),
            input.display(),
            self.failure.kind.name(),
            self.failure.message
        );
        std::fs::write(dir.join(format!("{stem}.txt")), about).expect("save the report");
        input
    }
}

/// Why an execution failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FailureKind {
    /// The reader, or the use of what it accepted, panicked.
    Panic,
    /// A file whose checksum was kept was accepted with other contents than were written
    /// (raised by [`assert_unchanged`]).
    Bypass,
}

impl FailureKind {
    fn name(self) -> &'static str {
        match self {
            Self::Panic => "panic",
            Self::Bypass => "checksum bypass",
        }
    }
}

/// A failed execution: its kind and message (with a backtrace for the first panics).
struct Failure {
    kind: FailureKind,
    message: String,
}

/// The panic payload of a [`FailureKind::Bypass`].
struct BypassPayload(String);

thread_local! {
    /// Whether this thread is inside a fuzzed read (its panics are recorded, not printed).
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    /// The last failure caught on this thread.
    static CAUGHT: RefCell<Option<Failure>> = const { RefCell::new(None) };
    /// Backtraces captured on this thread.
    static BACKTRACES: Cell<u32> = const { Cell::new(0) };
}

/// Installs (once) a panic hook that records the panics of fuzzed reads instead of
/// printing them, and leaves every other panic to the default hook.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !CATCHING.with(Cell::get) {
                return default(info);
            }
            let failure = match info.payload().downcast_ref::<BypassPayload>() {
                Some(BypassPayload(message)) => Failure {
                    kind: FailureKind::Bypass,
                    message: message.clone(),
                },
                None => {
                    let mut message = info.to_string();
                    if BACKTRACES.with(|n| n.replace(n.get() + 1)) < MAX_BACKTRACES {
                        let trace = std::backtrace::Backtrace::force_capture().to_string();
                        message = format!("{message}\nbacktrace:\n{}", code_frames(&trace));
                    }
                    Failure {
                        kind: FailureKind::Panic,
                        message,
                    }
                }
            };
            CAUGHT.with(|c| *c.borrow_mut() = Some(failure));
        }));
    });
}

/// The frames of a backtrace that lie in ksparse or its dependencies (the standard
/// library's, the system's and this harness's are dropped).
fn code_frames(trace: &str) -> String {
    let mut frames: Vec<Vec<&str>> = Vec::new();
    for line in trace.lines() {
        let numbered = line
            .trim_start()
            .split_once(": ")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        match frames.last_mut() {
            Some(frame) if !numbered => frame.push(line),
            _ => frames.push(vec![line]),
        }
    }
    frames
        .iter()
        .filter(|f| {
            let at = f.get(1).copied().unwrap_or_default();
            at.contains("src/") && !at.contains("/rustc/") && !at.contains("tests/fuzz.rs")
        })
        .map(|f| f.join("\n"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `f`, turning a panic into the failure the hook recorded.
fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Failure> {
    CATCHING.with(|c| c.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(false));
    result.map_err(|_| {
        CAUGHT
            .with(|c| c.borrow_mut().take())
            .unwrap_or_else(|| Failure {
                kind: FailureKind::Panic,
                message: "a panic without a message".into(),
            })
    })
}

/// Prints a reader's row of the summary table (the header once).
fn print_row(name: &str, s: &Stats) {
    static HEADER: Once = Once::new();
    HEADER.call_once(|| {
        println!(
            "{:<24} {:>9} {:>9} {:>9} {:>6} {:>6} {:>8} {:>8}",
            "reader", "execs", "ok", "err", "panics", "bypass", "seconds", "µs/exec"
        );
    });
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>6} {:>6} {:>8.2} {:>8.1}",
        name,
        s.execs,
        s.ok,
        s.err,
        s.panics,
        s.bypassed,
        s.seconds,
        s.seconds * 1e6 / s.execs.max(1) as f64
    );
}

/// Results of the readers fuzzed by this process, for the report.
static RESULTS: Mutex<BTreeMap<String, Stats>> = Mutex::new(BTreeMap::new());

/// Adds a reader's result to the report (`KSPARSE_FUZZ_REPORT`), if one is asked for.
fn record(name: &str, stats: &Stats, cfg: &Config) {
    let Some(dir) = &cfg.report else {
        return;
    };
    let mut results = RESULTS.lock().unwrap_or_else(|e| e.into_inner());
    results.insert(name.to_string(), *stats);
    let readers: serde_json::Map<String, serde_json::Value> = results
        .iter()
        .map(|(n, s)| {
            let row = serde_json::json!({
                "execs": s.execs,
                "ok": s.ok,
                "err": s.err,
                "panics": s.panics,
                "bypassed": s.bypassed,
                "seconds": s.seconds,
            });
            (n.clone(), row)
        })
        .collect();
    let report = serde_json::json!({
        "cpu": cpu_model(),
        "seed": cfg.seed,
        "execs_per_reader": cfg.execs,
        "readers": readers,
    });
    std::fs::create_dir_all(dir).expect("create the report folder");
    let text = serde_json::to_string_pretty(&report).expect("a JSON report");
    std::fs::write(dir.join("report.json"), text).expect("write the report");
}

/// The CPU model named by `/proc/cpuinfo`, or "unknown".
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

// ---------------------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------------------

/// Bytes that often sit at the edge of a check.
const SPECIAL_BYTES: [u8; 4] = [0x00, 0xff, 0x7f, 0x80];

/// Tokens inserted into text: JSON and TSV syntax, digits, whitespace, a byte-order mark,
/// invalid UTF-8 (a lone continuation-less byte, an overlong NUL, a surrogate, a
/// truncated sequence), escapes and huge numbers.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"-",
    b".",
    b"e",
    b"E",
    b"\n",
    b"\t",
    b" ",
    b"\r\n",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xe2\x82",
    b"null",
    b"true",
    b"1e999",
    b"99999999999999999999",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"-0",
    b"NaN",
];

/// Numbers that replace a number of the text.
const NUMBERS: &[&[u8]] = &[
    b"0",
    b"1",
    b"-1",
    b"2",
    b"7",
    b"64",
    b"65536",
    b"65537",
    b"16777216",
    b"16777217",
    b"2147483648",
    b"4294967295",
    b"4294967296",
    b"18446744073709551615",
    b"18446744073709551616",
    b"99999999999999999999",
    b"1e999",
    b"-1e999",
    b"1e-999",
    b"1.5",
    b"-0",
    b"1E2",
    b"NaN",
];

/// Strings that replace the contents of a string of the text.
const STRINGS: &[&[u8]] = &[
    b"",
    b"seg-000001.ksx",
    b"seg-000002.ksx",
    b"seg-999999.ksx",
    b"seg-1.ksx",
    b"../meta.json",
    b"meta.json",
    b"ksparse-index",
    b"crc32:00000000",
    b"\\u0000",
    b"\\ud800",
    b"\\\"",
    b"\xc3\xa9",
    b"F32",
    b"F64",
    b"F16",
    b"I32",
    b"w_enc",
    b"b_pre",
    b"_id",
    b"query-id",
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];

/// Applies 1–4 random mutations to `b`, returning what each did.
fn mutate(b: &mut Vec<u8>, grammar: Grammar, rng: &mut ChaCha8Rng) -> Vec<String> {
    let n = rng.random_range(1..=4);
    (0..n)
        .map(|_| {
            if grammar == Grammar::Text && rng.random_bool(0.6) {
                text_op(b, rng)
            } else {
                byte_op(b, rng)
            }
        })
        .collect()
}

/// A position in `0..len` (`len` > 0), within the first 256 bytes (headers) a third of
/// the time.
fn position(rng: &mut ChaCha8Rng, len: usize) -> usize {
    if rng.random_bool(0.3) {
        rng.random_range(0..len.min(256))
    } else {
        rng.random_range(0..len)
    }
}

/// A chunk (start, length ≤ 64) of a `len`-byte buffer (`len` > 0).
fn chunk(rng: &mut ChaCha8Rng, len: usize) -> (usize, usize) {
    let at = rng.random_range(0..len);
    (at, rng.random_range(1..=(len - at).min(64)))
}

/// One byte-level mutation.
fn byte_op(b: &mut Vec<u8>, rng: &mut ChaCha8Rng) -> String {
    let len = b.len();
    if len == 0 {
        return append_random(b, rng);
    }
    match rng.random_range(0..10) {
        0 => {
            let (p, bit) = (position(rng, len), rng.random_range(0..8));
            b[p] ^= 1 << bit;
            format!("flip bit {bit} of byte {p}")
        }
        1 => {
            let (p, v) = (position(rng, len), pick(rng, &SPECIAL_BYTES));
            b[p] = v;
            format!("byte {p} = {v:#04x}")
        }
        2 if len >= 4 => {
            let p = position(rng, len - 3) & !3;
            let v = pick(rng, &[0, 1, u32::MAX, 1 << 31, len as u32]);
            b[p..p + 4].copy_from_slice(&v.to_le_bytes());
            format!("u32 at {p} = {v}")
        }
        3 if len >= 8 => {
            let p = position(rng, len - 7) & !7;
            let v = pick(rng, &[0, 1, u64::MAX, 1 << 63, 1 << 32, len as u64]);
            b[p..p + 8].copy_from_slice(&v.to_le_bytes());
            format!("u64 at {p} = {v}")
        }
        4 if len >= 4 => {
            let p = position(rng, len - 3) & !3;
            let delta = rng.random_range(1..=8) * if rng.random_bool(0.5) { 1 } else { -1 };
            let old = u32::from_le_bytes(b[p..p + 4].try_into().expect("4 bytes"));
            b[p..p + 4].copy_from_slice(&old.wrapping_add_signed(delta).to_le_bytes());
            format!("u32 at {p} += {delta}")
        }
        5 => {
            let n = rng.random_range(0..len);
            b.truncate(n);
            format!("truncate to {n} bytes")
        }
        6 => append_random(b, rng),
        7 => {
            let (at, n) = chunk(rng, len);
            b.drain(at..at + n);
            format!("delete {n} bytes at {at}")
        }
        8 => {
            let (at, n) = chunk(rng, len);
            let copy = b[at..at + n].to_vec();
            let to = rng.random_range(0..=len);
            b.splice(to..to, copy);
            format!("copy {n} bytes from {at} to {to}")
        }
        _ => {
            let (p, v) = (position(rng, len), rng.random::<u8>());
            b[p] = v;
            format!("byte {p} = {v:#04x}")
        }
    }
}

/// Appends 1–64 random bytes.
fn append_random(b: &mut Vec<u8>, rng: &mut ChaCha8Rng) -> String {
    let n = rng.random_range(1..=64);
    b.extend((0..n).map(|_| rng.random::<u8>()));
    format!("append {n} random bytes")
}

/// One textual mutation.
fn text_op(b: &mut Vec<u8>, rng: &mut ChaCha8Rng) -> String {
    match rng.random_range(0..8) {
        0..=2 => insert_token(b, rng),
        3 => {
            let at = rng.random_range(0..=b.len());
            let digit = b'0' + rng.random_range(0..10u8);
            b.insert(at, digit);
            format!("insert {:?} at {at}", digit as char)
        }
        4 => replace_number(b, rng),
        5 => replace_string(b, rng),
        6 => line_op(b, rng),
        _ => {
            b.splice(0..0, *b"\xef\xbb\xbf");
            "byte-order mark at the start".into()
        }
    }
}

/// Inserts one of [`TOKENS`] at a random position.
fn insert_token(b: &mut Vec<u8>, rng: &mut ChaCha8Rng) -> String {
    let at = rng.random_range(0..=b.len());
    let token = pick(rng, TOKENS);
    b.splice(at..at, token.iter().copied());
    format!("insert {:?} at {at}", String::from_utf8_lossy(token))
}

/// Replaces the first number after a random position with one of [`NUMBERS`].
fn replace_number(b: &mut Vec<u8>, rng: &mut ChaCha8Rng) -> String {
    let from = rng.random_range(0..=b.len());
    let Some(start) = b[from..].iter().position(u8::is_ascii_digit) else {
        return insert_token(b, rng);
    };
    let start = from + start;
    let end = start
        + b[start..]
            .iter()
            .take_while(|c| c.is_ascii_digit() || b"+-.eE".contains(c))
            .count();
    let start = if start > 0 && b[start - 1] == b'-' {
        start - 1
    } else {
        start
    };
    let new = pick(rng, NUMBERS);
    b.splice(start..end, new.iter().copied());
    format!("number at {start} = {}", String::from_utf8_lossy(new))
}

/// Replaces the contents of the first string after a random position with one of
/// [`STRINGS`].
fn replace_string(b: &mut Vec<u8>, rng: &mut ChaCha8Rng) -> String {
    let from = rng.random_range(0..=b.len());
    let quote = |from: usize, b: &[u8]| b[from..].iter().position(|&c| c == b'"').map(|i| from + i);
    let Some((open, close)) = quote(from, b).and_then(|o| Some((o, quote(o + 1, b)?))) else {
        return insert_token(b, rng);
    };
    let new = pick(rng, STRINGS);
    b.splice(open + 1..close, new.iter().copied());
    format!("string at {open} = {:?}", String::from_utf8_lossy(new))
}

/// Duplicates, deletes or swaps lines.
fn line_op(b: &mut Vec<u8>, rng: &mut ChaCha8Rng) -> String {
    let mut lines: Vec<Vec<u8>> = b.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect();
    let (i, j) = (
        rng.random_range(0..lines.len()),
        rng.random_range(0..lines.len()),
    );
    let what = match rng.random_range(0..3) {
        0 => {
            lines.insert(i, lines[i].clone());
            format!("duplicate line {i}")
        }
        1 if lines.len() > 1 => {
            lines.remove(i);
            format!("delete line {i}")
        }
        _ => {
            lines.swap(i, j);
            format!("swap lines {i} and {j}")
        }
    };
    *b = lines.join(&b'\n');
    what
}

/// A random element of `items`.
fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

// ---------------------------------------------------------------------------------------
// Fix-ups: checksums and compression recomputed after mutating
// ---------------------------------------------------------------------------------------

fn u32_le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_le(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Bytes of a segment header with `sections` sections (see `ksparse::index::segment`):
/// magic, six u32 fields, 24 bytes per section, the header's CRC-32.
fn segment_header_bytes(sections: usize) -> usize {
    8 + 6 * 4 + sections * 24 + 4
}

/// Recomputes the CRC-32 of every section that lies inside the file and then the
/// header's, as a writer would have: mutations then reach the structural checks.
fn fix_segment_crcs(b: &mut [u8]) {
    if b.len() < 12 {
        return;
    }
    // The section count follows from the version, as the reader derives it.
    let sections = if u32_le(b, 8) >= 3 { 7 } else { 5 };
    let header = segment_header_bytes(sections);
    if b.len() < header {
        return;
    }
    for s in 0..sections {
        let at = 32 + s * 24;
        let (off, len) = (u64_le(b, at), u64_le(b, at + 8));
        if let Some(end) = off.checked_add(len).filter(|&e| e <= b.len() as u64) {
            let crc = crc32fast::hash(&b[off as usize..end as usize]);
            b[at + 16..at + 20].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&b[..header - 4]);
    b[header - 4..header].copy_from_slice(&crc.to_le_bytes());
}

/// Recomputes a trailing CRC-32 over every byte before it (`.kspc` files).
fn fix_trailing_crc(b: &mut [u8]) {
    if let Some(body) = b.len().checked_sub(4) {
        let crc = crc32fast::hash(&b[..body]);
        b[body..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// The checksum field of ksparse's checksummed JSON files: `{"checksum", "content"}`.
const CHECKSUM_KEY: &str = "checksum";
/// The field that holds the checked value.
const CONTENT_KEY: &str = "content";

/// Recomputes the `checksum` of a checksummed JSON file in place (the hex digits after
/// `"checksum": "crc32:`), leaving the rest of the text as mutated: the CRC-32 of the
/// content's canonical form (compact, keys sorted). Text that is not such a file is left
/// as it is.
fn fix_json_checksum(b: &mut [u8]) {
    let text = b.strip_prefix(b"\xef\xbb\xbf").unwrap_or(b);
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(text) else {
        return;
    };
    let Some(content) = value.get(CONTENT_KEY) else {
        return;
    };
    let canonical = serde_json::to_vec(content).expect("a JSON value serialises");
    let sum = format!("{:08x}", crc32fast::hash(&canonical));
    let key = format!("\"{CHECKSUM_KEY}\"");
    let Some(k) = find_bytes(b, key.as_bytes()) else {
        return;
    };
    if let Some(c) = find_bytes(&b[k..], b"crc32:") {
        let at = k + c + "crc32:".len();
        if at + 8 <= b.len() {
            b[at..at + 8].copy_from_slice(sum.as_bytes());
        }
    }
}

/// The first position of `needle` in `hay`.
fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Compresses the mutated text: the gzip layer is intact, the text behind it is not.
fn gzip(b: &mut Vec<u8>) {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(b).expect("gzip into memory");
    *b = enc.finish().expect("gzip into memory");
}

/// `json` as a file written before ksparse recorded checksums: the checked content
/// unwrapped, its top-level `keys` removed, pretty-printed.
fn strip_keys(json: &[u8], keys: &[&str]) -> Result<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(json)?;
    if let Some(content) = value.get_mut(CONTENT_KEY) {
        value = content.take();
    }
    let map = value.as_object_mut().context("a JSON object")?;
    for k in keys {
        map.remove(*k);
    }
    Ok(serde_json::to_vec_pretty(&value)?)
}

// ---------------------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------------------

/// The segment file of a freshly built index.
const SEGMENT_FILE: &str = "seg-000001.ksx";
/// The fuzzed `.kspc` file.
const CODES_FILE: &str = "codes.kspc";
/// The fuzzed `.npy` file (and the vectors beside a fuzzed id list).
const NPY_FILE: &str = "x.npy";

/// A seeded random source for seed files (independent of the campaign seed, so that a
/// saved input replays against the same seeds).
fn seed_rng(n: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(0x5eed_0000 + n)
}

/// `docs` random codes `hidden` wide with about `k` non-zeros, latent 0 in every code
/// but one (long posting lists), that one empty; with distinct external ids.
fn random_codes(
    rng: &mut ChaCha8Rng,
    docs: usize,
    hidden: usize,
    k: usize,
) -> (Vec<SparseCode>, Vec<String>) {
    let codes = (0..docs)
        .map(|d| {
            if d == 1 {
                return SparseCode::default();
            }
            let mut ids: Vec<u32> = rand::seq::index::sample(rng, hidden - 1, k - 1)
                .into_iter()
                .map(|j| j as u32 + 1)
                .collect();
            ids.push(0);
            ids.sort_unstable();
            let values = ids.iter().map(|_| rng.random_range(0.01f32..4.0)).collect();
            SparseCode { ids, values }
        })
        .collect();
    let ids = (0..docs)
        .map(|d| match d % 5 {
            3 => format!("é-{d}"),
            4 => format!("doc {d}\t\u{1f600}"),
            _ => format!("doc-{d}"),
        })
        .collect();
    (codes, ids)
}

/// (documents, width, non-zeros per code) of the seed indexes: a small one, a wider one,
/// and one with more than a posting block (128) per latent and several doc blocks (64).
const INDEX_SHAPES: [(usize, usize, usize); 3] = [(12, 64, 4), (40, 512, 16), (150, 64, 8)];

/// Builds an index of shape `INDEX_SHAPES[i]` at `dir`.
fn build_index(dir: &Path, i: usize) -> Result<()> {
    let (docs, hidden, k) = INDEX_SHAPES[i];
    let (codes, ids) = random_codes(&mut seed_rng(i as u64), docs, hidden, k);
    let meta = ksparse::index::build(dir, &codes, &ids, hidden)?;
    ensure!(
        meta.segments[0].file == SEGMENT_FILE,
        "segment name changed"
    );
    Ok(())
}

/// The segment format versions of the frozen index folders in `tests/fixtures`
/// (`index-v1` … `index-v3`): every version this build still reads.
const FIXTURE_VERSIONS: [u32; 3] = [1, 2, 3];

/// A copy, at `root/fixture-v{version}`, of the frozen index folder of segment format
/// `version` (written once by that version's writer and kept as it is; commit without
/// checksum, as releases before checksums wrote it).
fn fixture_index(root: &Path, version: u32) -> Result<PathBuf> {
    let from = ksparse_testkit::root().join(format!("tests/fixtures/index-v{version}"));
    let dir = root.join(format!("fixture-v{version}"));
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(&from).with_context(|| format!("{}", from.display()))? {
        let entry = entry?;
        std::fs::copy(entry.path(), dir.join(entry.file_name()))?;
    }
    Ok(dir)
}

/// Segment seeds: each index shape built in the current format, and the first segment
/// of each frozen index folder (versions 1 to 3 as they were written), inside its
/// folder (the reader also opens and searches the index).
fn segment_seeds(root: &Path) -> Result<Vec<Seed>> {
    use ksparse::index::segment::{OLDEST_READ, VERSION};
    ensure!(
        FIXTURE_VERSIONS[..] == (OLDEST_READ..=VERSION).collect::<Vec<_>>()[..],
        "a frozen index folder for every readable segment version"
    );
    let mut seeds = Vec::new();
    for (i, (docs, hidden, _)) in INDEX_SHAPES.into_iter().enumerate() {
        let dir = root.join(format!("index-{i}"));
        build_index(&dir, i)?;
        seeds.push(Seed {
            label: format!("{docs} docs × {hidden}, current version"),
            bytes: std::fs::read(dir.join(SEGMENT_FILE))?,
            dir,
        });
    }
    for version in FIXTURE_VERSIONS {
        let dir = fixture_index(root, version)?;
        seeds.push(Seed {
            label: format!("tests/fixtures/index-v{version}"),
            bytes: std::fs::read(dir.join(SEGMENT_FILE))?,
            dir,
        });
    }
    Ok(seeds)
}

/// Commit seeds (`meta.json` as written, with its checksum): a one-segment index, and
/// one with three commits (build, add a segment, delete documents: tombstones).
fn meta_seeds(root: &Path) -> Result<Vec<Seed>> {
    let one = root.join("one");
    build_index(&one, 0)?;
    let three = root.join("three");
    build_index(&three, 1)?;
    let (docs, hidden, k) = INDEX_SHAPES[1];
    let (codes, ids) = random_codes(&mut seed_rng(99), 10, hidden, k);
    let ids: Vec<String> = ids.iter().map(|id| format!("added {id}")).collect();
    ksparse::index::writer::add(&three, &codes, &ids, hidden)?;
    let deleted = ["doc-2".to_string(), "doc-5".into(), ids[3].clone()];
    ksparse::index::writer::delete(&three, &deleted)?;
    let seeds = [(one, "1 segment"), (three, "2 segments, tombstones")]
        .into_iter()
        .map(|(dir, what)| {
            Ok(Seed {
                label: format!("{what}, {docs}+ docs"),
                bytes: std::fs::read(dir.join(META_FILE))?,
                dir,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    keep_originals(seeds, META_FILE)
}

/// Suffix of the unmutated copy of a checksummed file, kept in its seed's folder.
const ORIGINAL: &str = ".orig";

/// Keeps each seed's file, unmutated, beside it as `<file>.orig`.
fn keep_originals(seeds: Vec<Seed>, file: &str) -> Result<Vec<Seed>> {
    for s in &seeds {
        std::fs::write(s.dir.join(format!("{file}{ORIGINAL}")), &s.bytes)?;
    }
    Ok(seeds)
}

/// Legacy commits (no checksum): [`meta_seeds`] without their checksums, and the commits
/// of the frozen index folders as they were written.
fn meta_legacy_seeds(root: &Path) -> Result<Vec<Seed>> {
    let mut seeds = without_keys(meta_seeds(root)?, &[CHECKSUM_KEY])?;
    for version in FIXTURE_VERSIONS {
        let dir = fixture_index(root, version)?;
        seeds.push(Seed {
            label: format!("tests/fixtures/index-v{version}"),
            bytes: std::fs::read(dir.join(META_FILE))?,
            dir,
        });
    }
    Ok(seeds)
}

/// `seeds` with the top-level JSON `keys` removed from their bytes.
fn without_keys(seeds: Vec<Seed>, keys: &[&str]) -> Result<Vec<Seed>> {
    seeds
        .into_iter()
        .map(|s| {
            Ok(Seed {
                label: format!("{} without {}", s.label, keys.join(", ")),
                bytes: strip_keys(&s.bytes, keys)?,
                dir: s.dir,
            })
        })
        .collect()
}

/// The bytes `write` leaves at `root/name`.
fn written(root: &Path, name: &str, write: impl FnOnce(&Path) -> Result<()>) -> Result<Vec<u8>> {
    let path = root.join(name);
    write(&path)?;
    Ok(std::fs::read(path)?)
}

/// `.kspc` seeds: u16 latents (narrow, wide) and u32 latents (over 65536).
fn codes_seeds(root: &Path) -> Result<Vec<Seed>> {
    [(10, 64, 4), (30, 512, 16), (8, 70_000, 6)]
        .into_iter()
        .enumerate()
        .map(|(i, (rows, hidden, k))| {
            let (codes, _) = random_codes(&mut seed_rng(10 + i as u64), rows, hidden, k);
            let bytes = written(root, &format!("seed-{i}.kspc"), |p| {
                write_codes(p, &codes, hidden)
            })?;
            Ok(Seed {
                label: format!("{rows} rows × {hidden}"),
                dir: root.to_path_buf(),
                bytes,
            })
        })
        .collect()
}

/// A `rows` × `cols` matrix of random values.
fn random_matrix(rng: &mut ChaCha8Rng, rows: usize, cols: usize) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |_| rng.random_range(-2.0f32..2.0))
}

/// `.npy` seeds: several shapes (one empty) and a Fortran-order matrix.
fn npy_seeds(root: &Path) -> Result<Vec<Seed>> {
    let mut rng = seed_rng(20);
    let mut matrices: Vec<(String, Array2<f32>)> = [(1, 1), (5, 8), (16, 32), (0, 4)]
        .into_iter()
        .map(|(r, c)| (format!("{r} × {c}"), random_matrix(&mut rng, r, c)))
        .collect();
    let fortran = random_matrix(&mut rng, 3, 6).reversed_axes();
    matrices.push(("6 × 3, Fortran order".into(), fortran));
    matrices
        .into_iter()
        .enumerate()
        .map(|(i, (label, m))| {
            let bytes = written(root, &format!("seed-{i}.npy"), |p| kio::write_npy(p, &m))?;
            Ok(Seed {
                label,
                dir: root.to_path_buf(),
                bytes,
            })
        })
        .collect()
}

/// Id-list seeds, each beside its own `.npy` of as many rows, in the format `write`
/// produces (file `name`).
fn ids_seeds(
    root: &Path,
    name: &str,
    write: fn(&Path, &[String]) -> Result<()>,
) -> Result<Vec<Seed>> {
    [5usize, 12]
        .into_iter()
        .map(|rows| {
            let dir = root.join(format!("rows-{rows}"));
            std::fs::create_dir_all(&dir)?;
            kio::write_npy(&dir.join(NPY_FILE), &Array2::zeros((rows, 3)))?;
            let (_, ids) = random_codes(&mut seed_rng(30), rows, 8, 2);
            let bytes = written(&dir, name, |p| write(p, &ids))?;
            Ok(Seed {
                label: format!("{rows} ids"),
                dir,
                bytes,
            })
        })
        .collect()
}

/// `X.ids.txt` seeds.
fn ids_txt_seeds(root: &Path) -> Result<Vec<Seed>> {
    ids_seeds(root, "x.ids.txt", kio::write_ids)
}

/// `X.ids.json` seeds.
fn ids_json_seeds(root: &Path) -> Result<Vec<Seed>> {
    ids_seeds(root, "x.ids.json", |p, ids| {
        Ok(std::fs::write(p, serde_json::to_vec(ids)?)?)
    })
}

/// Encoder folders saved by [`SparseEncoder::save`] from small random encoders.
fn encoder_dirs(root: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut rng = seed_rng(40);
    [(8usize, 16usize), (4, 32)]
        .into_iter()
        .enumerate()
        .map(|(i, (dim, hidden))| {
            let mut values =
                |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
            let enc = SparseEncoder {
                dim,
                hidden,
                w_enc: values(hidden * dim),
                b_enc: values(hidden),
                w_dec: values(hidden * dim),
                b_pre: values(dim),
            };
            let config = EncoderConfig {
                version: env!("CARGO_PKG_VERSION").into(),
                dim,
                hidden,
                k: 4,
                training: TrainConfig {
                    hidden,
                    k: 4,
                    ..TrainConfig::default()
                },
                data: DataStats::default(),
                sources: HashMap::from([("train.npy".to_string(), 100)]),
                weights_sha256: None,
            };
            let dir = root.join(format!("encoder-{i}"));
            enc.save(&dir, &config)?;
            Ok((dir, format!("d {dim}, h {hidden}")))
        })
        .collect()
}

/// The seeds of fuzzed file `file` of each encoder folder, after `prepare` (given the
/// folder) has adjusted it.
fn encoder_seeds(root: &Path, file: &str, prepare: fn(&Path) -> Result<()>) -> Result<Vec<Seed>> {
    encoder_dirs(root)?
        .into_iter()
        .map(|(dir, label)| {
            prepare(&dir)?;
            Ok(Seed {
                label,
                bytes: std::fs::read(dir.join(file))?,
                dir,
            })
        })
        .collect()
}

/// Weights seeds: the config has neither the weights' SHA-256 nor its own checksum (as a
/// legacy folder), so mutated weights reach the safetensors parser.
fn encoder_weights_seeds(root: &Path) -> Result<Vec<Seed>> {
    encoder_seeds(root, ksparse::encoder::WEIGHTS_FILE, |dir| {
        let path = dir.join(ksparse::encoder::CONFIG_FILE);
        let legacy = strip_keys(&std::fs::read(&path)?, &["weights_sha256", CHECKSUM_KEY])?;
        Ok(std::fs::write(path, legacy)?)
    })
}

/// Config seeds as saved (with the weights' SHA-256 and the config's checksum).
fn encoder_config_seeds(root: &Path) -> Result<Vec<Seed>> {
    let seeds = encoder_seeds(root, ksparse::encoder::CONFIG_FILE, |_| Ok(()))?;
    keep_originals(seeds, ksparse::encoder::CONFIG_FILE)
}

/// Config seeds without their checksum (legacy configs).
fn encoder_config_legacy_seeds(root: &Path) -> Result<Vec<Seed>> {
    without_keys(encoder_config_seeds(root)?, &[CHECKSUM_KEY])
}

/// A file of the SciFact fixture, decompressed.
fn fixture(name: &str) -> Result<String> {
    let path = ksparse_testkit::root()
        .join("tests/fixtures/scifact-mini")
        .join(name);
    let raw = std::fs::read(&path).with_context(|| format!("{}", path.display()))?;
    if !name.ends_with(".gz") {
        return Ok(String::from_utf8(raw)?);
    }
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(&raw[..]).read_to_string(&mut text)?;
    Ok(text)
}

/// JSONL records of a fixture file whose `_id` `keep` accepts, their strings clipped to
/// 80 characters (small seeds make fast executions).
fn fixture_records(name: &str, keep: impl Fn(&str) -> bool) -> Result<String> {
    let mut out = String::new();
    for line in fixture(name)?.lines() {
        let mut v: serde_json::Value = serde_json::from_str(line)?;
        if !v["_id"].as_str().is_some_and(&keep) {
            continue;
        }
        for field in v.as_object_mut().context("a JSON record")?.values_mut() {
            if let Some(s) = field.as_str() {
                *field = s.chars().take(80).collect::<String>().into();
            }
        }
        out.push_str(&serde_json::to_string(&v)?);
        out.push('\n');
    }
    Ok(out)
}

/// Hand-written JSONL: a byte-order mark, CRLF, a blank line, a numeric and a non-ASCII
/// id, a null title, escapes.
const SYNTHETIC_JSONL: &str = "\u{feff}{\"_id\": \"a1\", \"title\": \"T\", \"text\": \"alpha\"}\r\n\n\
     {\"_id\": 42, \"title\": null, \"text\": \"numeric id\"}\n\
     {\"_id\": \"\u{e9}-\u{fc}\", \"text\": \"esc \\u00e9 \\ud83d\\ude00 \\\"q\\\"\", \"extra\": [1, 2.5e3]}\n";

/// Seeds of the text `file` in one shared folder.
fn text_seeds(root: &Path, texts: Vec<(&str, String)>) -> Result<Vec<Seed>> {
    Ok(texts
        .into_iter()
        .map(|(label, text)| Seed {
            label: label.into(),
            dir: root.to_path_buf(),
            bytes: text.into_bytes(),
        })
        .collect())
}

/// The first `n` ids of a fixture JSONL file.
fn first_ids(name: &str, n: usize) -> Result<BTreeSet<String>> {
    fixture(name)?
        .lines()
        .take(n)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok(v["_id"].as_str().context("an _id")?.to_string())
        })
        .collect()
}

/// Corpus seeds: eight fixture documents and the hand-written file.
fn corpus_seeds(root: &Path) -> Result<Vec<Seed>> {
    let ids = first_ids("corpus.jsonl.gz", 8)?;
    let corpus = fixture_records("corpus.jsonl.gz", |id| ids.contains(id))?;
    text_seeds(
        root,
        vec![
            ("fixture corpus", corpus),
            ("synthetic", SYNTHETIC_JSONL.into()),
        ],
    )
}

/// Query seeds: twelve fixture queries and the hand-written file.
fn queries_seeds(root: &Path) -> Result<Vec<Seed>> {
    let ids = first_ids("queries.jsonl.gz", 12)?;
    let queries = fixture_records("queries.jsonl.gz", |id| ids.contains(id))?;
    text_seeds(
        root,
        vec![
            ("fixture queries", queries),
            ("synthetic", SYNTHETIC_JSONL.into()),
        ],
    )
}

/// [`corpus_seeds`], gzip-compressed.
fn corpus_gz_seeds(root: &Path) -> Result<Vec<Seed>> {
    compressed(corpus_seeds(root)?)
}

/// `seeds` gzip-compressed.
fn compressed(mut seeds: Vec<Seed>) -> Result<Vec<Seed>> {
    for s in &mut seeds {
        gzip(&mut s.bytes);
        s.label.push_str(", gzip");
    }
    Ok(seeds)
}

/// Plain-text seeds (one passage per line).
fn plain_text_seeds(root: &Path) -> Result<Vec<Seed>> {
    let queries: String = fixture("queries.jsonl.gz")?
        .lines()
        .take(10)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok(format!("{}\n", v["text"].as_str().unwrap_or_default()))
        })
        .collect::<Result<_>>()?;
    text_seeds(
        root,
        vec![
            ("fixture query texts", queries),
            (
                "synthetic",
                "\u{feff}first passage\n\n  second passage  \r\nthird \u{e9}\tpassage".into(),
            ),
        ],
    )
}

/// Qrels seeds: the fixture's test split (BEIR form, header line) and a hand-written
/// TREC-form file (four columns, CRLF, a blank line).
fn qrels_seeds(root: &Path) -> Result<Vec<Seed>> {
    text_seeds(
        root,
        vec![
            ("fixture test qrels", fixture("qrels/test.tsv")?),
            (
                "synthetic TREC form",
                "q1\t0\td1\t1\r\nq1\t0\td2\t0\n\nq2\t0\td1\t2\n".into(),
            ),
        ],
    )
}

/// [`qrels_seeds`], gzip-compressed.
fn qrels_gz_seeds(root: &Path) -> Result<Vec<Seed>> {
    compressed(qrels_seeds(root)?)
}

/// A BEIR folder: the fixture's test qrels with the documents and queries they name (and
/// a few others), texts clipped. The qrels are fuzzed; loading cross-checks them.
fn dataset_seeds(root: &Path) -> Result<Vec<Seed>> {
    let qrels = fixture("qrels/test.tsv")?;
    let (mut queries, mut docs) = (first_ids("queries.jsonl.gz", 3)?, BTreeSet::new());
    for line in qrels.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        if let [q, d, _] = cols[..] {
            queries.insert(q.to_string());
            docs.insert(d.to_string());
        }
    }
    let dir = root.join("beir");
    std::fs::create_dir_all(dir.join("qrels"))?;
    let corpus = fixture_records("corpus.jsonl.gz", |id| docs.contains(id))?;
    std::fs::write(dir.join("corpus.jsonl"), corpus)?;
    let queries = fixture_records("queries.jsonl.gz", |id| queries.contains(id))?;
    std::fs::write(dir.join("queries.jsonl"), queries)?;
    Ok(vec![Seed {
        label: "fixture test split".into(),
        dir,
        bytes: qrels.into_bytes(),
    }])
}

/// TREC run seeds written by [`eval::write_trec_run`].
fn trec_run_seeds(root: &Path) -> Result<Vec<Seed>> {
    let mut rng = seed_rng(50);
    let run: eval::Run = (0..4)
        .map(|q| {
            let ranked = (0..6)
                .map(|d| (format!("doc-{q}-{d}"), rng.random_range(-1.0..10.0)))
                .collect();
            (format!("q{q}"), ranked)
        })
        .collect();
    let bytes = written(root, "seed.trec", |p| eval::write_trec_run(p, &run, "fuzz"))?;
    Ok(vec![Seed {
        label: "4 queries × 6 documents".into(),
        dir: root.to_path_buf(),
        bytes,
    }])
}

// ---------------------------------------------------------------------------------------
// Readers, and the use of what they accept
// ---------------------------------------------------------------------------------------

/// Opens the segment (`Segment::open`) and reads every part of it; then opens the index
/// around it and searches it.
fn read_segment(dir: &Path) -> Result<()> {
    let seg = Segment::open(&dir.join(SEGMENT_FILE))?;
    walk_segment(&seg);
    drop(seg);
    read_index(dir)
}

/// Every id, forward-index row, term block and block maximum of `seg`.
fn walk_segment(seg: &Segment) {
    for i in 0..seg.docs {
        black_box(seg.id(i));
        black_box(seg.forward(i).count());
    }
    for j in 0..seg.hidden {
        black_box(seg.term_blocks(j).map(|m| m.data_len()).sum::<usize>());
        black_box(seg.term_len(j));
    }
    black_box(seg.postings().len());
    if let Some(view) = seg.blocks_view() {
        for i in 0..seg.docs {
            view.for_each_posting(i, |j, q| {
                black_box((j, q));
            });
        }
        for j in 0..seg.hidden {
            black_box(view.latent_max(j));
        }
    }
}

/// Opens the index (`Index::open`, which reads the commit with `read_meta` and opens
/// every segment) and, if it opens, searches it every way.
fn read_index(dir: &Path) -> Result<()> {
    open_index(dir).map(drop)
}

/// [`read_index`] of a commit whose checksum was kept: what opens must be the commit
/// that was written.
fn read_index_checked(dir: &Path) -> Result<()> {
    let index = open_index(dir)?;
    assert_unchanged(dir, META_FILE, &index.meta);
    Ok(())
}

/// [`read_index`], returning the index.
fn open_index(dir: &Path) -> Result<Index> {
    let index = Index::open(dir)?;
    let hidden = index.hidden() as u32;
    let terms = [
        (0, 1.0),
        (1, 0.5),
        (5, 2.0),
        (9, -0.25),
        (33, 1.5),
        (63, 0.75),
        (200, 3.0),
    ];
    let query: Vec<(u32, f32)> = terms.into_iter().filter(|t| t.0 < hidden).collect();
    for strategy in [Strategy::Auto, Strategy::TermAtATime, Strategy::BlockMax] {
        black_box(query::search(&index, &query, 10, strategy));
    }
    black_box(query::search_brute_force(&index, &query, 10));
    black_box(index.search(&query, 5, 20)?);
    black_box(index.stats());
    for d in 0..index.len() as u32 {
        black_box(index.id(d));
    }
    Ok(index)
}

/// Fails the execution as a [`FailureKind::Bypass`] unless `loaded`, read from the
/// checksummed `file` of `dir`, equals what its unmutated copy holds: the checksum let a
/// changed file through.
fn assert_unchanged<T>(dir: &Path, file: &str, loaded: &T)
where
    T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let original = std::fs::read(dir.join(format!("{file}{ORIGINAL}"))).expect("the original");
    let mut original: serde_json::Value =
        serde_json::from_slice(&original).expect("the original parses");
    let original: T =
        serde_json::from_value(original[CONTENT_KEY].take()).expect("the original's content");
    if *loaded != original {
        panic::panic_any(BypassPayload(format!(
            "{file}: a mutated file passed its checksum with other contents\n  read:    {loaded:?}\n  written: {original:?}"
        )));
    }
}

/// `read_codes`.
fn read_codes_file(dir: &Path) -> Result<()> {
    let (codes, hidden) = read_codes(&dir.join(CODES_FILE))?;
    black_box((codes.len(), hidden));
    Ok(())
}

/// `read_npy`.
fn read_npy_file(dir: &Path) -> Result<()> {
    black_box(kio::read_npy(&dir.join(NPY_FILE))?.sum());
    Ok(())
}

/// `read_ids` of the `.npy` beside the fuzzed id list, for its row count.
fn read_ids_file(dir: &Path) -> Result<()> {
    let vectors = dir.join(NPY_FILE);
    let rows = kio::read_npy(&vectors)?.nrows();
    black_box(kio::read_ids(&vectors, rows)?);
    Ok(())
}

/// `SparseEncoder::load`, then encoding and decoding with what it loaded.
fn read_encoder(dir: &Path) -> Result<()> {
    load_encoder(dir).map(drop)
}

/// [`read_encoder`] of a config whose checksum was kept: what loads must be the config
/// that was written.
fn read_encoder_checked(dir: &Path) -> Result<()> {
    let config = load_encoder(dir)?;
    assert_unchanged(dir, ksparse::encoder::CONFIG_FILE, &config);
    Ok(())
}

/// [`read_encoder`], returning the config.
fn load_encoder(dir: &Path) -> Result<EncoderConfig> {
    let (enc, config) = SparseEncoder::load(dir)?;
    let x = vec![0.5f32; enc.dim];
    let code = enc.encode_one(&x, config.k.min(enc.hidden));
    black_box(enc.decode(&code));
    black_box(enc.latent_weights(&x));
    Ok(config)
}

/// `read_texts` of a file called `name` (the reader picks the format by name).
fn read_texts_named(dir: &Path, name: &str) -> Result<()> {
    black_box(data::read_texts(&dir.join(name))?);
    Ok(())
}

fn read_corpus(dir: &Path) -> Result<()> {
    read_texts_named(dir, "corpus.jsonl")
}

fn read_queries(dir: &Path) -> Result<()> {
    read_texts_named(dir, "queries.jsonl")
}

fn read_corpus_gz(dir: &Path) -> Result<()> {
    read_texts_named(dir, "corpus.jsonl.gz")
}

fn read_plain_texts(dir: &Path) -> Result<()> {
    read_texts_named(dir, "texts.txt")
}

/// `read_qrels` of a file called `name`.
fn read_qrels_named(dir: &Path, name: &str) -> Result<()> {
    black_box(data::read_qrels(&dir.join(name))?);
    Ok(())
}

fn read_qrels_file(dir: &Path) -> Result<()> {
    read_qrels_named(dir, "test.tsv")
}

fn read_qrels_gz(dir: &Path) -> Result<()> {
    read_qrels_named(dir, "test.tsv.gz")
}

/// `Dataset::load` of the test split (corpus, queries, qrels, cross-checked).
fn read_dataset(dir: &Path) -> Result<()> {
    black_box(data::Dataset::load(dir, "test")?);
    Ok(())
}

/// `read_trec_run`.
fn read_trec_run_file(dir: &Path) -> Result<()> {
    black_box(eval::read_trec_run(&dir.join("run.trec"))?);
    Ok(())
}
