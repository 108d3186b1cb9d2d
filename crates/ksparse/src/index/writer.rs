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

use super::segment;
use super::store;
use super::{segment_file, write_meta, Index, Meta, SegmentEntry};
use crate::base::SparseCode;
use crate::io::{write_new, Wait, WriterLock};

/// Documents to add: their codes, external ids (unique) and, optionally, one stored
/// record each ([`super::store`]), all in the same order.
#[derive(Debug, Clone, Copy)]
pub struct NewDocs<'a> {
    /// The codes.
    pub codes: &'a [SparseCode],
    /// Their external ids.
    pub ids: &'a [String],
    /// One record per document, kept in a store beside the segment.
    pub records: Option<&'a [Vec<u8>]>,
}

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
        let index = Index::open(&self.dir)?;
        if let Some(&d) = live_with_ids(&index, ids).first() {
            bail!(
                "document id {:?} is already in the index; delete it first to replace it",
                index.id(d)
            );
        }
        let docs = NewDocs {
            codes,
            ids,
            records: None,
        };
        self.upsert_replacing(&index, docs, hidden, &[])
    }

    /// Adds `docs` as a new segment, deleting the live documents that have their ids, in
    /// one commit: a reader sees the old documents or the new ones, never both or neither.
    /// `current` must be the index's latest commit (an index this writer's changes opened).
    pub fn upsert(&self, current: &Index, docs: NewDocs, hidden: usize) -> Result<Meta> {
        let replaced = live_with_ids(current, docs.ids);
        self.upsert_replacing(current, docs, hidden, &replaced)
    }

    /// [`Writer::upsert`] for a caller that knows which live documents carry the new ids
    /// (`replaced`, global document numbers of `current`, e.g. from its own id map): no
    /// scan of every id, so a small write to a large index costs what it writes. Each
    /// replaced document must be live and have one of the new ids; a live document with a
    /// new id that `replaced` leaves out would stay beside its replacement, so callers
    /// pass every one.
    pub fn upsert_replacing(
        &self,
        current: &Index,
        docs: NewDocs,
        hidden: usize,
        replaced: &[u32],
    ) -> Result<Meta> {
        let dir = &self.dir;
        self.check_current(current)?;
        let ids: HashSet<&str> = docs.ids.iter().map(String::as_str).collect();
        for &d in replaced {
            if !is_live(current, d) || !ids.contains(current.id(d)) {
                bail!("document {d} is not a live document with one of the new ids");
            }
        }
        if hidden != current.hidden() {
            bail!(
                "the codes are {hidden} wide but the index {} is {} wide",
                dir.display(),
                current.hidden()
            );
        }
        segment::validate(docs.codes, docs.ids, hidden)?;
        if let Some(r) = docs.records {
            if r.len() != docs.ids.len() {
                bail!("{} records for {} documents", r.len(), docs.ids.len());
            }
        }
        let mut meta = current.meta.clone();
        tombstone(current, replaced, &mut meta);
        meta.generation += 1;
        remove_uncommitted(dir, &current.meta)?;
        let file = self.write_segment(meta.generation, docs, hidden)?;
        crate::io::fault::point("index:before-commit");
        meta.segments.push(SegmentEntry {
            file,
            deleted: Vec::new(),
            store: docs.records.is_some(),
        });
        write_meta(dir, &meta)?;
        Ok(meta)
    }

    /// Marks the documents with these external ids deleted and commits. Returns how many
    /// of the ids were live documents (unknown ids are ignored).
    pub fn delete(&self, ids: &[String]) -> Result<usize> {
        Ok(self.delete_in(&Index::open(&self.dir)?, ids)?.0)
    }

    /// [`Writer::delete`] on `current`, the index's latest commit; also returns the new
    /// commit (none when no id was live).
    pub fn delete_in(&self, current: &Index, ids: &[String]) -> Result<(usize, Option<Meta>)> {
        let docs = live_with_ids(current, ids);
        Ok((docs.len(), self.delete_docs(current, &docs)?))
    }

    /// Deletes documents by number (`docs`, live documents of `current`, the latest
    /// commit) and commits; `None` when `docs` is empty (nothing to commit).
    pub fn delete_docs(&self, current: &Index, docs: &[u32]) -> Result<Option<Meta>> {
        self.check_current(current)?;
        if let Some(&d) = docs.iter().find(|&&d| !is_live(current, d)) {
            bail!("document {d} is not a live document of the index");
        }
        if docs.is_empty() {
            return Ok(None);
        }
        let mut meta = current.meta.clone();
        tombstone(current, docs, &mut meta);
        meta.generation += 1;
        write_meta(&self.dir, &meta)?;
        Ok(Some(meta))
    }

    /// Rewrites the live documents of all segments into one segment, commits, and
    /// removes the old segment files.
    pub fn merge(&self) -> Result<Meta> {
        let index = Index::open(&self.dir)?;
        let all: Vec<String> = index.meta.segments.iter().map(|s| s.file.clone()).collect();
        self.merge_segments(&index, &all)
    }

    /// Rewrites the live documents of the segments named `files` (of `current`, the
    /// latest commit) into one segment that takes the place of the first of them, carries
    /// their stored records over, commits, and removes the replaced files.
    pub fn merge_segments(&self, current: &Index, files: &[String]) -> Result<Meta> {
        let dir = &self.dir;
        self.check_current(current)?;
        let chosen: HashSet<&str> = files.iter().map(String::as_str).collect();
        let (mut codes, mut ids, mut records) = (Vec::new(), Vec::new(), Vec::new());
        let mut any_store = false;
        for part in current.segment_refs().filter(|p| chosen.contains(p.file)) {
            any_store |= part.store.is_some();
            for local in (0..part.segment.docs).filter(|&l| !part.deleted[l]) {
                let (c_ids, values) = part.segment.forward(local).unzip();
                codes.push(SparseCode { ids: c_ids, values });
                ids.push(part.segment.id(local).to_string());
                records.push(part.store.map_or(Vec::new(), |s| s.get(local).to_vec()));
            }
        }
        let mut meta = current.meta.clone();
        let Some(first) = meta
            .segments
            .iter()
            .position(|e| chosen.contains(e.file.as_str()))
        else {
            bail!(
                "none of the segments {files:?} is in the index {}",
                dir.display()
            );
        };
        meta.generation += 1;
        remove_uncommitted(dir, &current.meta)?;
        let docs = NewDocs {
            codes: &codes,
            ids: &ids,
            records: any_store.then_some(records.as_slice()),
        };
        let file = self.write_segment(meta.generation, docs, current.hidden())?;
        let merged = SegmentEntry {
            file,
            deleted: Vec::new(),
            store: any_store,
        };
        meta.segments.retain(|e| !chosen.contains(e.file.as_str()));
        meta.segments.insert(first, merged);
        write_meta(dir, &meta)?;
        crate::io::fault::point("index:after-merge-commit");
        remove_uncommitted(dir, &meta)?;
        Ok(meta)
    }

    /// Writes the segment (and store) of commit `generation` for `docs`, fsynced; returns
    /// the segment's file name.
    fn write_segment(&self, generation: u64, docs: NewDocs, hidden: usize) -> Result<String> {
        let file = segment_file(generation);
        let (bytes, order) = segment::encode_ordered(docs.codes, docs.ids, hidden);
        if let Some(records) = docs.records {
            let ordered: Vec<&[u8]> = order
                .iter()
                .map(|&r| records[r as usize].as_slice())
                .collect();
            let path = self.dir.join(store::file_for(&file));
            write_new(&path, |w| Ok(w.write_all(&store::encode(&ordered))?))?;
        }
        write_new(&self.dir.join(&file), |w| Ok(w.write_all(&bytes)?))?;
        Ok(file)
    }

    /// Refuses to change the index from a commit other than its latest: this writer holds
    /// the lock, so `current` is stale only if it was opened before one of its changes.
    fn check_current(&self, current: &Index) -> Result<()> {
        let latest = super::read_meta(&self.dir)?.generation;
        if current.meta.generation != latest {
            bail!(
                "{}: the change was prepared on commit {} but the index is at commit {latest}; reopen it",
                self.dir.display(),
                current.meta.generation
            );
        }
        Ok(())
    }
}

/// Adds a tombstone to `meta` (a copy of `index`'s commit) for each of `docs` (global
/// document numbers, live).
fn tombstone(index: &Index, docs: &[u32], meta: &mut Meta) {
    for &d in docs {
        let (s, local) = index.locate(d);
        meta.segments[s].deleted.push(local as u32);
    }
    for entry in &mut meta.segments {
        entry.deleted.sort_unstable();
        entry.deleted.dedup();
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

/// The live documents of `index` whose external id is one of `ids`, in document order.
fn live_with_ids(index: &Index, ids: &[String]) -> Vec<u32> {
    let ids: HashSet<&str> = ids.iter().map(String::as_str).collect();
    (0..index.len() as u32)
        .filter(|&d| !index.is_deleted(d) && ids.contains(index.id(d)))
        .collect()
}

/// Whether `doc` is a document number of `index` and not deleted.
fn is_live(index: &Index, doc: u32) -> bool {
    (doc as usize) < index.len() && !index.is_deleted(doc)
}

/// Removes segment files and temporary files that `meta` does not reference (left by a
/// change that crashed before its commit, or replaced by a merge). Only under the lock.
fn remove_uncommitted(dir: &Path, meta: &Meta) -> Result<()> {
    let keep: HashSet<String> = meta
        .segments
        .iter()
        .flat_map(|s| [s.file.clone(), store::file_for(&s.file)])
        .collect();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        let stale_segment = name.starts_with("seg-")
            && (name.ends_with(".ksx") || name.ends_with(".kss"))
            && !keep.contains(&*name);
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

    #[test]
    fn upserts_replace_in_one_commit_and_stores_follow_their_documents() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("idx");
        build(&dir, &[code(0, 1.0)], &names(&["a"]), 4).unwrap();
        let w = Writer::open(&dir, Wait::No).unwrap();
        let records =
            |v: &[&str]| -> Vec<Vec<u8>> { v.iter().map(|r| r.as_bytes().to_vec()).collect() };
        let ix = Index::open(&dir).unwrap();
        let recs = records(&["rec-b", "rec-c"]);
        let docs = NewDocs {
            codes: &[code(1, 2.0), code(2, 1.0)],
            ids: &names(&["b", "c"]),
            records: Some(&recs),
        };
        w.upsert(&ix, docs, 4).unwrap();
        // A change prepared on a stale commit is refused.
        let err = w.upsert(&ix, docs, 4).unwrap_err();
        assert!(err.to_string().contains("reopen"), "{err}");
        let ix = ix.reopen(&dir).unwrap();
        // Replacing "a" and "c": the old versions are tombstoned in the same commit.
        let recs = records(&["rec-a2", "rec-c2"]);
        let docs = NewDocs {
            codes: &[code(3, 1.0), code(2, 5.0)],
            ids: &names(&["a", "c"]),
            records: Some(&recs),
        };
        let meta = w.upsert(&ix, docs, 4).unwrap();
        assert_eq!(meta.generation, ix.meta.generation + 1);
        let ix = ix.reopen(&dir).unwrap();
        // A commit with stores is version 4: releases before stores refuse it.
        assert_eq!(ix.meta.version, super::super::STORE_VERSION);
        assert_eq!((ix.len(), ix.live()), (5, 3));
        let stored = |ix: &Index| -> Vec<(String, String)> {
            let mut v: Vec<(String, String)> = (0..ix.len() as u32)
                .filter(|&d| !ix.is_deleted(d))
                .map(|d| {
                    (
                        ix.id(d).to_string(),
                        String::from_utf8(ix.stored(d).to_vec()).unwrap(),
                    )
                })
                .collect();
            v.sort();
            v
        };
        let want = vec![
            ("a".to_string(), "rec-a2".to_string()),
            ("b".into(), "rec-b".into()),
            ("c".into(), "rec-c2".into()),
        ];
        assert_eq!(stored(&ix), want);
        // An exclusion keeps search exact among the documents it leaves.
        let q = [(1u32, 1.0f32), (2, 1.0), (3, 1.0)];
        let not_c = ix.exclusion(|d| ix.id(d) != "c");
        let hits = ix.search_excluding(&q, 10, 0, Some(&not_c)).unwrap();
        let got: Vec<&str> = hits.iter().map(|h| ix.id(h.doc)).collect();
        assert_eq!(got, ["b", "a"]);
        assert_eq!(
            hits,
            query::search_brute_force_excluding(&ix, &q, 10, Some(&not_c))
        );
        // Merging the last two segments carries their stores; the first keeps none.
        let files: Vec<String> = ix.meta.segments[1..]
            .iter()
            .map(|s| s.file.clone())
            .collect();
        let meta = w.merge_segments(&ix, &files).unwrap();
        assert_eq!(meta.segments.len(), 2);
        assert!(!meta.segments[0].store && meta.segments[1].store);
        let merged = ix.reopen(&dir).unwrap();
        assert_eq!(stored(&merged), want);
        let on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("seg-"))
            .collect();
        assert_eq!(
            on_disk.len(),
            3,
            "one segment + one merged segment with its store: {on_disk:?}"
        );
        // Reopening shares the segments both commits have.
        let again = merged.reopen(&dir).unwrap();
        assert!(std::ptr::eq(
            again.segments[0].as_ref(),
            merged.segments[0].as_ref()
        ));
        // A damaged store is refused on open.
        let store = dir.join(store::file_for(&meta.segments[1].file));
        let mut bytes = std::fs::read(&store).unwrap();
        bytes[20] ^= 0xff;
        std::fs::write(&store, bytes).unwrap();
        assert!(Index::open(&dir).is_err());
    }
}
