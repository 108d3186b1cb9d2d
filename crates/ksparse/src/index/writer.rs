//! Changes to an existing index: add documents (a new segment), delete documents by id
//! (tombstones), merge all segments into one (dropping deleted documents).
//!
//! A [`Writer`] holds the index's writer lock for as long as it lives, so changes never
//! interleave: two processes that add at once both land, one after the other (or the
//! second is refused, naming the first, when it does not wait). Every change writes its
//! new files first (fsynced; a segment file is created, never overwritten) and then
//! commits by replacing `meta.json` atomically, so a crash at any point leaves the index
//! at its last commit; files a crashed change left behind are removed by the next
//! change. Readers never take the lock: an open [`Index`] keeps its memory-mapped
//! segments, which are never modified, until it is opened again (on Linux a merge's
//! removal of a file does not unmap it), and [`Index::open`] retries when a merge
//! removed the segments of the commit it had just read.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::segment::{self, Segment};
use super::{segment_file, write_meta, Index, Meta, SegmentEntry};
use crate::base::SparseCode;
use crate::io::{write_new, Wait, WriterLock};

/// The one writer of an index folder: changes go through it while it holds the lock.
#[derive(Debug)]
pub struct Writer {
    dir: PathBuf,
    _lock: WriterLock,
}

impl Writer {
    /// Takes the writer lock of the index at `dir` (waiting for another writer to
    /// finish, or failing at once naming it, as `wait` says).
    pub fn open(dir: &Path, wait: Wait) -> Result<Self> {
        // Refuse a folder that is not an index before creating a lock file in it.
        super::read_meta(dir)?;
        Ok(Self {
            _lock: WriterLock::acquire(dir, wait)?,
            dir: dir.to_path_buf(),
        })
    }

    /// Adds `codes` with external `ids` (new to the index) as a new segment and commits.
    pub fn add(&self, codes: &[SparseCode], ids: &[String], hidden: usize) -> Result<Meta> {
        let dir = &self.dir;
        let index = Index::open(dir)?;
        if hidden != index.hidden() {
            bail!(
                "the codes are {hidden} wide but the index {} is {} wide",
                dir.display(),
                index.hidden()
            );
        }
        segment::validate(codes, ids, hidden)?;
        let live: HashSet<&str> = live_docs(&index).map(|(id, _)| id).collect();
        if let Some(id) = ids.iter().find(|id| live.contains(id.as_str())) {
            bail!("document id {id:?} is already in the index; delete it first to replace it");
        }
        let mut meta = index.meta.clone();
        meta.generation += 1;
        let file = segment_file(meta.generation);
        remove_uncommitted(dir, &index.meta)?;
        let bytes = segment::encode(codes, ids, hidden);
        write_new(&dir.join(&file), |w| Ok(w.write_all(&bytes)?))?;
        crate::io::fault::point("index:before-commit");
        meta.segments.push(SegmentEntry {
            file,
            deleted: Vec::new(),
        });
        write_meta(dir, &meta)?;
        Ok(meta)
    }

    /// Marks the documents with these external ids deleted and commits. Returns how many
    /// of the ids were live documents (unknown ids are ignored).
    pub fn delete(&self, ids: &[String]) -> Result<usize> {
        let index = Index::open(&self.dir)?;
        let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut meta = index.meta.clone();
        let mut found = 0;
        for ((_, seg, deleted), entry) in index.segments().zip(&mut meta.segments) {
            for (local, &is_deleted) in deleted.iter().enumerate() {
                if !is_deleted && wanted.contains(seg.id(local)) {
                    entry.deleted.push(local as u32);
                    found += 1;
                }
            }
            entry.deleted.sort_unstable();
        }
        if found > 0 {
            meta.generation += 1;
            write_meta(&self.dir, &meta)?;
        }
        Ok(found)
    }

    /// Rewrites the live documents of all segments into one segment, commits, and
    /// removes the old segment files.
    pub fn merge(&self) -> Result<Meta> {
        let dir = &self.dir;
        let index = Index::open(dir)?;
        let (mut codes, mut ids) = (Vec::new(), Vec::new());
        for (id, (seg, local)) in live_docs(&index) {
            let (c_ids, values) = seg.forward(local).unzip();
            codes.push(SparseCode { ids: c_ids, values });
            ids.push(id.to_string());
        }
        let mut meta = index.meta.clone();
        meta.generation += 1;
        remove_uncommitted(dir, &index.meta)?;
        let file = segment_file(meta.generation);
        let bytes = segment::encode(&codes, &ids, index.hidden());
        write_new(&dir.join(&file), |w| Ok(w.write_all(&bytes)?))?;
        meta.segments = vec![SegmentEntry {
            file,
            deleted: Vec::new(),
        }];
        write_meta(dir, &meta)?;
        crate::io::fault::point("index:after-merge-commit");
        drop(index);
        remove_uncommitted(dir, &meta)?;
        Ok(meta)
    }
}

/// [`Writer::add`] under the lock, failing at once if another writer holds it.
pub fn add(dir: &Path, codes: &[SparseCode], ids: &[String], hidden: usize) -> Result<Meta> {
    Writer::open(dir, Wait::No)?.add(codes, ids, hidden)
}

/// [`Writer::delete`] under the lock, failing at once if another writer holds it.
pub fn delete(dir: &Path, ids: &[String]) -> Result<usize> {
    Writer::open(dir, Wait::No)?.delete(ids)
}

/// [`Writer::merge`] under the lock, failing at once if another writer holds it.
pub fn merge(dir: &Path) -> Result<Meta> {
    Writer::open(dir, Wait::No)?.merge()
}

/// (external id, (segment, local row)) of every live document, in document order.
fn live_docs(index: &Index) -> impl Iterator<Item = (&str, (&Segment, usize))> {
    index.segments().flat_map(|(_, seg, deleted)| {
        (0..seg.docs)
            .filter(move |&l| !deleted[l])
            .map(move |l| (seg.id(l), (seg, l)))
    })
}

/// Removes segment files and temporary files that `meta` does not reference (left by a
/// change that crashed before its commit, or replaced by a merge). Only under the lock.
fn remove_uncommitted(dir: &Path, meta: &Meta) -> Result<()> {
    let keep: HashSet<&str> = meta.segments.iter().map(|s| s.file.as_str()).collect();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        let stale_segment =
            name.starts_with("seg-") && name.ends_with(".ksx") && !keep.contains(&*name);
        // Temporary files: ours start with `io::TMP_PREFIX`, older releases' with ".tmp".
        if stale_segment || name.starts_with(".tmp") {
            std::fs::remove_file(dir.join(&*name)).ok();
        }
    }
    Ok(())
}

use std::io::Write as _;

#[cfg(test)]
mod tests {
    use super::super::{build, query};
    use super::*;

    fn code(j: u32, v: f32) -> SparseCode {
        SparseCode {
            ids: vec![j],
            values: vec![v],
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn add_delete_merge_keep_search_exact() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("idx");
        build(&dir, &[code(0, 1.0), code(1, 2.0)], &names(&["a", "b"]), 4).unwrap();
        let reader = Index::open(&dir).unwrap();
        add(&dir, &[code(0, 3.0), code(2, 1.0)], &names(&["c", "d"]), 4).unwrap();
        let err = add(&dir, &[code(0, 1.0)], &names(&["a"]), 4).unwrap_err();
        assert!(err.to_string().contains("already in the index"));
        assert!(add(&dir, &[code(0, 1.0)], &names(&["e"]), 8).is_err());
        // The reader opened before the change still sees its commit.
        assert_eq!(reader.len(), 2);
        let top = |ix: &Index| -> Vec<String> {
            ix.search(&[(0, 1.0), (2, 0.5)], 10, 0)
                .unwrap()
                .iter()
                .map(|h| ix.id(h.doc).to_string())
                .collect()
        };
        let ix = Index::open(&dir).unwrap();
        assert_eq!(top(&ix), ["c", "a", "d", "b"]);
        assert_eq!(delete(&dir, &names(&["c", "zzz"])).unwrap(), 1);
        let ix = Index::open(&dir).unwrap();
        assert_eq!(top(&ix), ["a", "d", "b"]);
        assert_eq!(ix.live(), 3);
        let q = [(0u32, 1.0f32), (1, -0.25)];
        assert_eq!(
            ix.search(&q, 5, 0).unwrap(),
            query::search_brute_force(&ix, &q, 5)
        );
        drop(ix);
        // Deleted ids can be added again; merge drops tombstones and old files.
        add(&dir, &[code(3, 1.0)], &names(&["c"]), 4).unwrap();
        let meta = merge(&dir).unwrap();
        assert_eq!(meta.segments.len(), 1);
        let ix = Index::open(&dir).unwrap();
        assert_eq!((ix.len(), ix.live()), (4, 4));
        assert_eq!(top(&ix), ["a", "d", "b", "c"]);
        let files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".ksx"))
            .collect();
        assert_eq!(files, [meta.segments[0].file.clone()]);
        // The first reader still searches its (now unlinked) mapped files.
        assert_eq!(reader.search(&[(1, 1.0)], 1, 0).unwrap()[0].doc, 1);
    }
}
