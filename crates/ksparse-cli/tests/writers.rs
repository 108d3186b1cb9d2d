//! One writer at a time, nothing lost: concurrent writer processes on one index, a reader
//! searching through merges, writers killed with SIGKILL at random moments and (by fault
//! injection, as `kill -9` would) between any two steps of a commit or a folder
//! replacement, and a disk that fills up.

use ksparse_testkit as common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ksparse::base::SparseCode;
use ksparse::encoder::codes::write_codes;
use ksparse::encoder::SparseEncoder;
use ksparse::index::{self, Index};
use ksparse::io::{ids_path, write_ids, write_npy};
use rand::{Rng, SeedableRng};

const HIDDEN: u32 = 512;

fn codes(n: usize, seed: u64) -> Vec<SparseCode> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut ids: Vec<u32> = (0..16).map(|_| rng.random_range(0..HIDDEN)).collect();
            ids.sort_unstable();
            ids.dedup();
            let values = ids.iter().map(|_| rng.random_range(0.01f32..2.0)).collect();
            SparseCode { ids, values }
        })
        .collect()
}

/// `{prefix}0` … `{prefix}{n-1}`.
fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Writes `n` codes with ids `{prefix}{i}` to `dir/{prefix}.kspc` (ids beside it).
fn batch(dir: &Path, prefix: &str, n: usize, seed: u64) -> PathBuf {
    let path = dir.join(format!("{prefix}.kspc"));
    write_codes(&path, &codes(n, seed), HIDDEN as usize).unwrap();
    write_ids(&ids_path(&path), &names(prefix, n)).unwrap();
    path
}

fn ksparse() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ksparse"));
    c.args(["--threads", "1"]);
    c
}

/// `ksparse index COMMAND IDX`.
fn index_cmd(command: &str, idx: &Path) -> Command {
    let mut c = ksparse();
    c.args(["index", command]).arg(idx);
    c
}

/// `ksparse index add IDX --codes CODES`.
fn add_cmd(idx: &Path, codes: &Path) -> Command {
    let mut c = index_cmd("add", idx);
    c.arg("--codes").arg(codes);
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn new_index(dir: &Path, name: &str) -> PathBuf {
    let idx = dir.join(name);
    index::build(&idx, &codes(100, 1), &names("base", 100), HIDDEN as usize).unwrap();
    idx
}

fn live_ids(idx: &Path) -> BTreeSet<String> {
    let ix = Index::open(idx).unwrap();
    ix.segments()
        .flat_map(|(_, seg, deleted)| {
            (0..seg.docs)
                .filter(|&l| !deleted[l])
                .map(|l| seg.id(l).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn concurrent_writers_that_wait_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let a = batch(dir.path(), "a", 20_000, 2);
    let b = batch(dir.path(), "b", 20_000, 3);
    for round in 0..4 {
        let idx = new_index(dir.path(), &format!("idx{round}"));
        let spawn = |command: &str, args: &[&str]| {
            index_cmd(command, &idx)
                .args(args)
                .arg("--wait")
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let a_s = a.to_str().unwrap();
        let b_s = b.to_str().unwrap();
        // add ‖ add ‖ delete ‖ merge, all at once.
        let children = vec![
            spawn("add", &["--codes", a_s]),
            spawn("add", &["--codes", b_s]),
            spawn("delete", &["base0", "base1"]),
            spawn("merge", &[]),
        ];
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", stderr(&out));
        }
        // Every change landed: both additions whole, the two deletions, nothing else.
        let mut want: BTreeSet<String> = names("base", 100).into_iter().skip(2).collect();
        want.extend(names("a", 20_000));
        want.extend(names("b", 20_000));
        assert!(
            live_ids(&idx) == want,
            "round {round}: not the documents of all four changes"
        );
    }
}

#[test]
fn a_writer_that_does_not_wait_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let idx = new_index(dir.path(), "idx");
    // Wait::Yes: a child another test thread forks inherits, until its exec, the lock
    // that building the index held a moment ago.
    let held = index::writer::Writer::open(&idx, ksparse::io::Wait::Yes).unwrap();
    let more = batch(dir.path(), "more", 10, 4);
    let out = add_cmd(&idx, &more).output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("another writer") && err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    drop(held);
    assert_eq!(
        live_ids(&idx),
        names("base", 100).into_iter().collect::<BTreeSet<_>>(),
        "the refused writer changed nothing"
    );
}

#[test]
fn readers_see_only_committed_states_through_merges() {
    let dir = tempfile::tempdir().unwrap();
    let idx = new_index(dir.path(), "idx");
    let batches: Vec<PathBuf> = (0..12)
        .map(|i| batch(dir.path(), &format!("w{i}-"), 2_000, 10 + i))
        .collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (searches, sizes) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut sizes = std::collections::BTreeSet::new();
            let mut searches = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let ix = Index::open(&idx).unwrap_or_else(|e| panic!("open during a merge: {e:#}"));
                ix.search(&[(3, 1.0), (100, 0.5)], 10, 0).unwrap();
                sizes.insert(ix.live());
                searches += 1;
            }
            (searches, sizes)
        });
        for b in &batches {
            for mut cmd in [add_cmd(&idx, b), index_cmd("merge", &idx)] {
                let out = cmd.output().unwrap();
                assert!(out.status.success(), "{}", stderr(&out));
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().unwrap()
    });
    assert!(searches > 24, "the reader ran {searches} searches");
    assert_eq!(Index::open(&idx).unwrap().live(), 100 + 12 * 2_000);
    // Every state a reader saw is a committed one: 100 + 2000·i documents.
    assert!(sizes.iter().all(|n| (n - 100) % 2_000 == 0), "{sizes:?}");
}

/// Runs `cmd` with the fault point `at` armed: the process must die there (aborted, as
/// the fault point does, naming the point).
fn crash_at(mut cmd: Command, at: &str) {
    use std::os::unix::process::ExitStatusExt as _;
    let out = cmd
        .env(ksparse::io::fault::CRASH_AT_VAR, at)
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(6), "{at}: not aborted (SIGABRT)");
    assert!(
        stderr(&out).contains(&format!("dying at {at}")),
        "{at}: {}",
        stderr(&out)
    );
}

/// What an index folder holds once every change has finished: its committed segments,
/// the commit, the writer lock and the folder marker.
fn committed_files(idx: &Path) -> BTreeSet<String> {
    let meta = Index::open(idx).unwrap().meta;
    let mut files: BTreeSet<String> = meta.segments.into_iter().map(|s| s.file).collect();
    files.extend(
        [
            index::META_FILE,
            ksparse::io::lock::LOCK_FILE,
            ksparse::io::dir::MARKER_FILE,
        ]
        .map(String::from),
    );
    files
}

/// The names in `dir`.
fn file_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Names in `dir` that start with a dot (temporary and marker files).
fn hidden_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    v.sort();
    v
}

#[test]
fn an_index_change_killed_at_any_step_leaves_the_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let more = batch(dir.path(), "more", 50, 5);
    for at in [
        "file:before-rename",
        "index:before-commit",
        "index:after-merge-commit",
    ] {
        let idx = new_index(dir.path(), &format!("idx-{}", at.replace(':', "-")));
        let merging = at.contains("merge");
        if merging {
            assert!(add_cmd(&idx, &more).output().unwrap().status.success());
            crash_at(index_cmd("merge", &idx), at);
        } else {
            crash_at(add_cmd(&idx, &more), at);
        }
        let want = if merging { 150 } else { 100 };
        assert_eq!(Index::open(&idx).unwrap().live(), want, "{at}");
        // The next change cleans what the dead one left: only committed segments,
        // meta.json, the lock and the folder marker remain.
        index::writer::delete(&idx, &["base5".to_string()]).unwrap();
        index::writer::add(&idx, &codes(1, 9), &["late".to_string()], HIDDEN as usize).unwrap();
        assert_eq!(file_names(&idx), committed_files(&idx), "{at}");
        assert_eq!(
            Index::open(&idx).unwrap().live(),
            want,
            "{at}: one deleted, one added"
        );
    }
}

/// A small encoder folder trained by the CLI on random vectors.
fn train(dir: &Path, out: &Path, seed: u64) -> Command {
    let x = dir.join(format!("x{seed}.npy"));
    if !x.exists() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let m = ndarray::Array2::from_shape_fn((256, 8), |_| rng.random_range(-1.0f32..1.0));
        write_npy(&x, &m).unwrap();
    }
    let mut c = ksparse();
    c.arg("train")
        .arg("--input")
        .arg(&x)
        .arg("--output")
        .arg(out);
    c.args(["--hidden", "32", "--k", "4", "--epochs", "1", "--seed"]);
    c.arg(seed.to_string());
    c
}

#[test]
fn a_folder_replacement_killed_at_any_step_leaves_the_old_or_the_new_folder() {
    let dir = tempfile::tempdir().unwrap();
    let enc = dir.path().join("enc");
    assert!(train(dir.path(), &enc, 1)
        .output()
        .unwrap()
        .status
        .success());
    let (first, _) = SparseEncoder::load(&enc).unwrap();
    crash_at(train(dir.path(), &enc, 2), "folder:before-swap");
    assert_eq!(
        SparseEncoder::load(&enc).unwrap().0,
        first,
        "the old folder stays"
    );
    crash_at(train(dir.path(), &enc, 3), "folder:after-swap");
    let (third, _) = SparseEncoder::load(&enc).unwrap();
    assert_ne!(third, first, "the new folder is in place");
    // The dead run left one folder behind: the old one, swapped out (the run before it
    // left its unfinished folder, which this run removed when it started).
    let left = hidden_names(dir.path());
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        SparseEncoder::load(&dir.path().join(&left[0])).unwrap().0,
        first
    );
    // The next run removes what dead runs left behind.
    assert!(train(dir.path(), &enc, 4)
        .output()
        .unwrap()
        .status
        .success());
    assert!(
        hidden_names(dir.path()).is_empty(),
        "{:?}",
        hidden_names(dir.path())
    );
}

#[test]
fn outputs_that_ksparse_did_not_write_are_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    std::fs::write(photos.join("cat.jpg"), "meow").unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "keep me").unwrap();
    for out in [&photos, &notes] {
        let o = train(dir.path(), out, 1).output().unwrap();
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("is not a ksparse encoder"),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(
        std::fs::read_to_string(photos.join("cat.jpg")).unwrap(),
        "meow"
    );
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "keep me");
    assert_eq!(hidden_names(dir.path()), Vec::<String>::new());
}

/// A tmpfs of `kib` KiB mounted on a fresh folder, unmounted on drop: a disk that fills.
struct SmallDisk {
    path: PathBuf,
    _parent: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` where this process may not mount (not root); an error when the run must
    /// check everything (`KSPARSE_REQUIRE_DATA=1`).
    fn mount(kib: usize) -> Option<Self> {
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(&path)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self {
                path,
                _parent: parent,
            }),
            other => common::skip(format!(
                "cannot mount a small tmpfs (needs root): {other:?}"
            )),
        }
    }

    /// Writes zeros into a filler file until the disk is full.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path.join("filler")).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).and_then(|_| f.sync_all()).is_ok() {}
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

#[test]
fn a_full_disk_fails_the_write_and_keeps_what_was_there() {
    let Some(disk) = SmallDisk::mount(1024) else {
        return;
    };
    let outside = tempfile::tempdir().unwrap();
    let idx = new_index(&disk.path, "idx");
    let enc = disk.path.join("enc");
    assert!(train(outside.path(), &enc, 1)
        .output()
        .unwrap()
        .status
        .success());
    let (encoder, _) = SparseEncoder::load(&enc).unwrap();
    let more = batch(outside.path(), "more", 3_000, 6);
    let idx_files = file_names(&idx);
    disk.fill();
    for (what, mut cmd) in [
        ("index add", add_cmd(&idx, &more)),
        ("train", train(outside.path(), &enc, 2)),
    ] {
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{what} succeeded on a full disk");
        assert!(
            stderr(&out).contains("No space left"),
            "{what}: {}",
            stderr(&out)
        );
    }
    assert_eq!(Index::open(&idx).unwrap().live(), 100);
    assert_eq!(file_names(&idx), idx_files);
    assert_eq!(SparseEncoder::load(&enc).unwrap().0, encoder);
    assert_eq!(hidden_names(&disk.path), Vec::<String>::new());
    // With space again, the same change lands.
    std::fs::remove_file(disk.path.join("filler")).unwrap();
    let out = add_cmd(&idx, &more).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(Index::open(&idx).unwrap().live(), 3_100);
}

#[test]
fn a_writer_killed_at_random_moments_leaves_the_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let base_ids = names("base", 1000);
    let base = codes(1000, 1);
    // A large addition, so that the kill often lands while it is being written.
    let n_big = 150_000;
    let big = batch(dir.path(), "new", n_big, 2);
    let q = [(3u32, 1.0f32), (300, 0.5)];
    let mut outcomes = [0usize; 2];
    for (round, delay_ms) in [0u64, 10, 30, 60, 100, 150, 250, 400, 700, 1200]
        .into_iter()
        .enumerate()
    {
        let idx = dir.path().join(format!("idx{round}"));
        index::build(&idx, &base, &base_ids, HIDDEN as usize).unwrap();
        let before = Index::open(&idx).unwrap().search(&q, 10, 0).unwrap();
        let mut child = add_cmd(&idx, &big)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().ok(); // SIGKILL; a no-op error if it already finished
        child.wait().unwrap();
        let ix = Index::open(&idx).unwrap_or_else(|e| panic!("round {round}: {e:#}"));
        match ix.live() {
            1000 => {
                outcomes[0] += 1;
                assert_eq!(ix.search(&q, 10, 0).unwrap(), before);
            }
            n if n == 1000 + n_big => outcomes[1] += 1,
            n => panic!("round {round}: {n} documents, neither before nor after the change"),
        }
        drop(ix);
        // The next change succeeds and cleans what the killed one left behind: only
        // segments, meta.json, the writer lock and the folder marker remain.
        index::writer::add(&idx, &codes(5, 3), &names("extra", 5), HIDDEN as usize).unwrap();
        assert_eq!(file_names(&idx), committed_files(&idx), "round {round}");
    }
    eprintln!(
        "kills before the commit: {}, after: {}",
        outcomes[0], outcomes[1]
    );
    assert!(outcomes[0] > 0, "no kill landed before the commit");
}
