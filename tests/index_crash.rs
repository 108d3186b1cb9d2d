//! Crash safety of index changes: a writer process killed at any moment leaves an index
//! that opens at its last commit (before or after the change, never in between).

use std::time::Duration;

use ksparse::encoder::codes::write_codes;
use ksparse::encoder::SparseCode;
use ksparse::index::{self, Index};
use ksparse::io::{ids_path, write_ids};
use rand::{Rng, SeedableRng};

fn codes(n: usize, hidden: u32, seed: u64) -> Vec<SparseCode> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut ids: Vec<u32> = (0..32).map(|_| rng.random_range(0..hidden)).collect();
            ids.sort_unstable();
            ids.dedup();
            let values = ids.iter().map(|_| rng.random_range(0.01f32..2.0)).collect();
            SparseCode { ids, values }
        })
        .collect()
}

#[test]
fn killed_writer_leaves_the_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let base_ids: Vec<String> = (0..1000).map(|i| format!("base{i}")).collect();
    let base = codes(1000, 1536, 1);
    // A large addition, so that the kill often lands while it is being written.
    let big = dir.path().join("big.kspc");
    let n_big = 150_000;
    write_codes(&big, &codes(n_big, 1536, 2), 1536).unwrap();
    let big_ids: Vec<String> = (0..n_big).map(|i| format!("new{i}")).collect();
    write_ids(&ids_path(&big), &big_ids).unwrap();
    let q = [(3u32, 1.0f32), (700, 0.5)];
    let mut outcomes = [0usize; 2];
    for (round, delay_ms) in [0u64, 10, 30, 60, 100, 150, 250, 400, 700, 1200]
        .into_iter()
        .enumerate()
    {
        let idx = dir.path().join(format!("idx{round}"));
        index::build(&idx, &base, &base_ids, 1536).unwrap();
        let before = Index::open(&idx).unwrap().search(&q, 10, 0).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ksparse"))
            .args(["--threads", "1", "index", "add"])
            .arg(&idx)
            .arg("--codes")
            .arg(&big)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
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
        // The next change succeeds and cleans what the killed one left behind.
        let extra = codes(5, 1536, 3);
        let extra_ids: Vec<String> = (0..5).map(|i| format!("extra{i}")).collect();
        index::writer::add(&idx, &extra, &extra_ids, 1536).unwrap();
        let files = std::fs::read_dir(&idx).unwrap().count();
        let committed = Index::open(&idx).unwrap().meta.segments.len();
        assert_eq!(
            files,
            committed + 1,
            "round {round}: only segments and meta.json remain"
        );
    }
    eprintln!(
        "kills before the commit: {}, after: {}",
        outcomes[0], outcomes[1]
    );
    assert!(outcomes[0] > 0, "no kill landed before the commit");
}
