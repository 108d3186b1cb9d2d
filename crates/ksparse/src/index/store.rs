//! A segment's stored documents (`seg-NNNNNN.kss`): one opaque byte record per document,
//! in the segment's storage order, beside the segment file and committed with it.
//!
//! The index itself never reads the records: they are what a caller wants back with a
//! hit (a server keeps each point's payload and text there), kept in the same commit as
//! the codes so that a crash can never leave codes without their records or the reverse.
//! A segment's entry in `meta.json` says whether it has a store (`store: true`); merges
//! carry the records of live documents over.
//!
//! Layout (little-endian): magic `KSPSTOR1` · docs u64 · (docs + 1) × u64 byte offsets ·
//! the records · CRC-32 of all preceding bytes (checked on open).

use std::path::Path;

use anyhow::{bail, Context, Result};
use memmap2::Mmap;

/// File magic of a store.
const MAGIC: &[u8; 8] = b"KSPSTOR1";

/// The store file beside segment file `segment` (`seg-000007.ksx` → `seg-000007.kss`).
pub fn file_for(segment: &str) -> String {
    format!("{}.kss", segment.strip_suffix(".ksx").unwrap_or(segment))
}

/// Serialises `records` (one per document, in the segment's storage order).
pub fn encode<R: AsRef<[u8]>>(records: &[R]) -> Vec<u8> {
    let body: usize = records.iter().map(|r| r.as_ref().len()).sum();
    let mut out = Vec::with_capacity(16 + (records.len() + 1) * 8 + body + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(records.len() as u64).to_le_bytes());
    let mut at = 0u64;
    for r in records {
        out.extend_from_slice(&at.to_le_bytes());
        at += r.as_ref().len() as u64;
    }
    out.extend_from_slice(&at.to_le_bytes());
    for r in records {
        out.extend_from_slice(r.as_ref());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// An open store, memory-mapped, checksum and offsets verified.
#[derive(Debug)]
pub struct Store {
    map: Mmap,
    docs: usize,
}

impl Store {
    /// Opens the store at `path`, which must hold `docs` records (its segment's count).
    pub fn open(path: &Path, docs: usize) -> Result<Self> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open document store {}", path.display()))?;
        // SAFETY: stores, like segments, are created once and never modified.
        let map = unsafe { Mmap::map(&file) }
            .with_context(|| format!("cannot map {}", path.display()))?;
        let bad =
            |what: &str| anyhow::anyhow!("{}: corrupt document store: {what}", path.display());
        let b: &[u8] = &map;
        let table = (docs + 1) * 8;
        if b.len() < 16 + table + 4 || &b[..8] != MAGIC {
            return Err(bad("bad magic or truncated"));
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(bad("checksum mismatch"));
        }
        if u64_at(b, 8) != docs as u64 {
            bail!(
                "{}: holds {} records but its segment has {docs} documents",
                path.display(),
                u64_at(b, 8)
            );
        }
        let records = body.len() - 16 - table;
        let mut prev = 0;
        for i in 0..=docs {
            let o = u64_at(b, 16 + i * 8);
            if o < prev || o > records as u64 {
                return Err(bad("offset table out of bounds"));
            }
            prev = o;
        }
        if prev != records as u64 {
            return Err(bad("trailing bytes"));
        }
        Ok(Self { map, docs })
    }

    /// Record `i` (a local row of the segment).
    pub fn get(&self, i: usize) -> &[u8] {
        let start = 16 + (self.docs + 1) * 8;
        let (a, b) = (u64_at(&self.map, 16 + i * 8), u64_at(&self.map, 24 + i * 8));
        &self.map[start + a as usize..start + b as usize]
    }

    /// Bytes of the file.
    pub fn bytes(&self) -> usize {
        self.map.len()
    }
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.kss");
        let records: Vec<&[u8]> = vec![b"{\"a\":1}", b"", "é😀".as_bytes()];
        std::fs::write(&path, encode(&records)).unwrap();
        let store = Store::open(&path, 3).unwrap();
        for (i, r) in records.iter().enumerate() {
            assert_eq!(store.get(i), *r);
        }
        assert!(Store::open(&path, 2)
            .unwrap_err()
            .to_string()
            .contains("3 records"));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[30] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(Store::open(&path, 3).is_err());
        std::fs::write(&path, &bytes[..10]).unwrap();
        assert!(Store::open(&path, 3).is_err());
        assert_eq!(file_for("seg-000007.ksx"), "seg-000007.kss");
    }
}
