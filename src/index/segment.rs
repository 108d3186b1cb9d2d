//! One immutable segment file (`*.ksx`): the posting lists, the forward index and the id
//! map of a batch of documents, behind a checksummed header.
//!
//! Layout (little-endian):
//!
//! ```text
//! header   magic "KSPXSEG1" · version u32 · hidden u32 · docs u32 · sections u32 (=5)
//!          · scale f32 · reserved u32 · 5 × (offset u64, len u64, crc32 u32, reserved u32)
//!          · crc32 of the header bytes before it
//! terms    (hidden + 1) × u32: latent j's blocks are blocks[terms[j] .. terms[j+1]]
//! blocks   12-byte BlockMeta entries (last doc, data offset, len, bits, max weight)
//! postings block data: bit-packed doc deltas, then one quantised weight byte per posting
//! forward  (docs + 1) × u64 entry offsets, then per posting (latent, value f32); the
//!          latent is a u16 when hidden ≤ 65536 (u32 otherwise, and always in version 1)
//! ids      (docs + 1) × u64 byte offsets, then the UTF-8 external ids
//! ```
//!
//! Every section's CRC-32 is checked when the segment is opened, and every block's bounds,
//! so a search never reads outside the file or decodes garbage.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use memmap2::Mmap;

use super::postings::{encode_block, BlockMeta, Quantizer, BLOCK};
use crate::encoder::SparseCode;

/// File magic of a segment.
pub const MAGIC: &[u8; 8] = b"KSPXSEG1";
/// Segment format version this build writes. Version 1 (u32 latents in the forward
/// index) is still read.
pub const VERSION: u32 = 2;
/// The oldest segment version this build reads.
pub const OLDEST_READ: u32 = 1;

/// Bytes of a latent id in the forward index of a segment of `version` and width `hidden`.
fn forward_id_bytes(version: u32, hidden: usize) -> usize {
    if version >= 2 && hidden <= 1 << 16 {
        2
    } else {
        4
    }
}
const SECTIONS: usize = 5;
const HEADER_BYTES: usize = 8 + 4 * 6 + SECTIONS * 24 + 4;

/// Section numbers.
const TERMS: usize = 0;
const BLOCKS: usize = 1;
const POSTINGS: usize = 2;
const FORWARD: usize = 3;
const IDS: usize = 4;

/// Checks codes and ids before anything is written: ids unique and free of line breaks,
/// latent ids below `hidden` and ascending, values finite and positive.
pub fn validate(codes: &[SparseCode], ids: &[String], hidden: usize) -> Result<()> {
    if codes.len() != ids.len() {
        bail!("{} codes but {} ids", codes.len(), ids.len());
    }
    if codes.len() >= u32::MAX as usize {
        bail!("a segment holds fewer than 2^32 − 1 documents");
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    for (row, (c, id)) in codes.iter().zip(ids).enumerate() {
        if !seen.insert(id.as_str()) {
            bail!("document id {id:?} appears twice (row {row})");
        }
        if c.ids.len() != c.values.len() {
            bail!(
                "row {row} ({id:?}): {} latent ids but {} values",
                c.ids.len(),
                c.values.len()
            );
        }
        for (i, (&j, &v)) in c.ids.iter().zip(&c.values).enumerate() {
            if j as usize >= hidden {
                bail!("row {row} ({id:?}): latent {j} is not below the width {hidden}");
            }
            if i > 0 && c.ids[i - 1] >= j {
                bail!("row {row} ({id:?}): latent ids are not strictly ascending");
            }
            if !v.is_finite() || v <= 0.0 {
                bail!("row {row} ({id:?}): value {v} of latent {j} is not a finite positive number (codes come from TopK + ReLU)");
            }
        }
    }
    Ok(())
}

/// Serialises a segment for `codes` (validated by [`validate`]) with external `ids`.
pub fn encode(codes: &[SparseCode], ids: &[String], hidden: usize) -> Vec<u8> {
    encode_as(VERSION, codes, ids, hidden)
}

/// [`encode`] in format `version` (older versions are written only by tests).
pub(super) fn encode_as(
    version: u32,
    codes: &[SparseCode],
    ids: &[String],
    hidden: usize,
) -> Vec<u8> {
    let max = codes
        .iter()
        .flat_map(|c| c.values.iter().copied())
        .fold(0.0f32, f32::max);
    let quant = Quantizer::for_max(max);
    // Transpose to per-latent (doc, weight) lists.
    let mut lists: Vec<Vec<(u32, u8)>> = vec![Vec::new(); hidden];
    for (d, c) in codes.iter().enumerate() {
        for (&j, &v) in c.ids.iter().zip(&c.values) {
            lists[j as usize].push((d as u32, quant.quantize(v)));
        }
    }
    let mut terms = Vec::with_capacity((hidden + 1) * 4);
    let (mut blocks, mut postings) = (Vec::new(), Vec::new());
    let mut n_blocks = 0u32;
    for list in &lists {
        terms.extend_from_slice(&n_blocks.to_le_bytes());
        let mut prev = None;
        for chunk in list.chunks(BLOCK) {
            let docs: Vec<u32> = chunk.iter().map(|p| p.0).collect();
            let weights: Vec<u8> = chunk.iter().map(|p| p.1).collect();
            let meta = encode_block(&docs, &weights, prev, &mut postings);
            meta.write(&mut blocks);
            prev = Some(meta.last_doc);
            n_blocks += 1;
        }
    }
    terms.extend_from_slice(&n_blocks.to_le_bytes());
    let offsets_then = |n: usize, item: &mut dyn FnMut(usize, &mut Vec<u8>)| {
        let (mut offs, mut body) = (Vec::with_capacity((n + 1) * 8), Vec::new());
        for i in 0..n {
            offs.extend_from_slice(&(body.len() as u64).to_le_bytes());
            item(i, &mut body);
        }
        offs.extend_from_slice(&(body.len() as u64).to_le_bytes());
        offs.extend_from_slice(&body);
        offs
    };
    let id_bytes = forward_id_bytes(version, hidden);
    let forward = offsets_then(codes.len(), &mut |i, body| {
        for (&j, &v) in codes[i].ids.iter().zip(&codes[i].values) {
            body.extend_from_slice(&j.to_le_bytes()[..id_bytes]);
            body.extend_from_slice(&v.to_le_bytes());
        }
    });
    let id_map = offsets_then(ids.len(), &mut |i, body| {
        body.extend_from_slice(ids[i].as_bytes())
    });

    let sections: [&[u8]; SECTIONS] = [&terms, &blocks, &postings, &forward, &id_map];
    let mut out =
        Vec::with_capacity(HEADER_BYTES + sections.iter().map(|s| s.len() + 8).sum::<usize>());
    out.extend_from_slice(MAGIC);
    for v in [version, hidden as u32, codes.len() as u32, SECTIONS as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&quant.scale.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let mut offset = HEADER_BYTES.next_multiple_of(8);
    for s in sections {
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(s).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        offset = (offset + s.len()).next_multiple_of(8);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    for s in sections {
        out.resize(out.len().next_multiple_of(8), 0);
        out.extend_from_slice(s);
    }
    out
}

/// A segment opened read-only through a memory map, every checksum and bound verified.
pub struct Segment {
    path: PathBuf,
    map: Mmap,
    /// Latents.
    pub hidden: usize,
    /// Documents.
    pub docs: usize,
    /// Quantisation scale: a stored weight q means q · scale.
    pub scale: f32,
    /// Bytes of a latent id in the forward index (2 or 4).
    forward_id_bytes: usize,
    sections: [(usize, usize); SECTIONS],
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

impl Segment {
    /// Opens and verifies `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open index segment {}", path.display()))?;
        // SAFETY: segments are immutable once committed (writers create new files and
        // rename them into place), so the mapped bytes do not change while mapped.
        let map = unsafe { Mmap::map(&file) }
            .with_context(|| format!("cannot map {}", path.display()))?;
        Self::from_map(path, map)
    }

    fn from_map(path: &Path, map: Mmap) -> Result<Self> {
        let bad =
            |what: String| anyhow::anyhow!("{}: corrupt index segment: {what}", path.display());
        let b: &[u8] = &map;
        if b.len() < HEADER_BYTES || &b[..8] != MAGIC {
            return Err(bad(
                "not a ksparse segment (bad magic or truncated header)".into()
            ));
        }
        let version = u32_at(b, 8);
        if !(OLDEST_READ..=VERSION).contains(&version) {
            bail!(
                "{}: segment format version {version}; this build reads versions {OLDEST_READ} to {VERSION}",
                path.display()
            );
        }
        if crc32fast::hash(&b[..HEADER_BYTES - 4]) != u32_at(b, HEADER_BYTES - 4) {
            return Err(bad("header checksum mismatch".into()));
        }
        let hidden = u32_at(b, 12) as usize;
        let docs = u32_at(b, 16) as usize;
        if u32_at(b, 20) as usize != SECTIONS {
            return Err(bad("unexpected section count".into()));
        }
        let scale = f32::from_le_bytes(b[24..28].try_into().expect("4 bytes"));
        if !(scale.is_finite() && scale > 0.0) {
            return Err(bad(format!("quantisation scale {scale}")));
        }
        let mut sections = [(0usize, 0usize); SECTIONS];
        for (s, slot) in sections.iter_mut().enumerate() {
            let at = 32 + s * 24;
            let (off, len) = (u64_at(b, at) as usize, u64_at(b, at + 8) as usize);
            let end = off.checked_add(len).filter(|&e| e <= b.len());
            let Some(end) = end else {
                return Err(bad(format!(
                    "section {s} lies outside the file (truncated?)"
                )));
            };
            if crc32fast::hash(&b[off..end]) != u32_at(b, at + 16) {
                return Err(bad(format!("section {s} checksum mismatch")));
            }
            *slot = (off, len);
        }
        let seg = Self {
            path: path.to_path_buf(),
            map,
            hidden,
            docs,
            scale,
            forward_id_bytes: forward_id_bytes(version, hidden),
            sections,
        };
        seg.check_structure().map_err(|e| bad(e.to_string()))?;
        Ok(seg)
    }

    fn section(&self, s: usize) -> &[u8] {
        let (off, len) = self.sections[s];
        &self.map[off..off + len]
    }

    /// Structural checks beyond checksums (a file written by another tool, or a bug, must
    /// not make search read out of bounds).
    fn check_structure(&self) -> Result<()> {
        let terms = self.section(TERMS);
        if terms.len() != (self.hidden + 1) * 4 {
            bail!("term directory size does not match the width");
        }
        let blocks = self.section(BLOCKS);
        if blocks.len() % BlockMeta::BYTES != 0 {
            bail!("block directory size");
        }
        let n_blocks = blocks.len() / BlockMeta::BYTES;
        let mut prev = 0;
        for j in 0..=self.hidden {
            let b = u32_at(terms, j * 4) as usize;
            if b < prev || b > n_blocks {
                bail!("term directory entry {j} out of order");
            }
            prev = b;
        }
        if prev != n_blocks {
            bail!("term directory does not cover every block");
        }
        let data = self.section(POSTINGS).len();
        for j in 0..self.hidden {
            let mut last: Option<u32> = None;
            for m in self.term_blocks(j) {
                let end = m.offset as usize + m.data_len();
                if end > data || m.bits > 32 || m.last_doc as usize >= self.docs {
                    bail!("block of latent {j} out of bounds");
                }
                if last.is_some_and(|l| m.last_doc <= l) {
                    bail!("blocks of latent {j} not ascending");
                }
                last = Some(m.last_doc);
            }
        }
        for (s, what) in [(FORWARD, self.forward_id_bytes + 4), (IDS, 1)] {
            let sec = self.section(s);
            let table = (self.docs + 1) * 8;
            if sec.len() < table {
                bail!("section {s} shorter than its offset table");
            }
            let mut prev = 0u64;
            for i in 0..=self.docs {
                let o = u64_at(sec, i * 8);
                if o < prev || table as u64 + o > sec.len() as u64 || o % what as u64 != 0 {
                    bail!("offset table of section {s} out of bounds at row {i}");
                }
                prev = o;
            }
            if (sec.len() - table) as u64 != prev {
                bail!("section {s} has trailing bytes");
            }
        }
        for i in 0..self.docs {
            std::str::from_utf8(self.id_bytes(i)).context("document id is not UTF-8")?;
            for (j, v) in self.forward(i) {
                if j as usize >= self.hidden || !v.is_finite() {
                    bail!("forward index row {i} holds latent {j} / value {v}");
                }
            }
        }
        Ok(())
    }

    /// The directory entries of latent `j`'s blocks.
    pub fn term_blocks(&self, j: usize) -> impl Iterator<Item = BlockMeta> + '_ {
        let terms = self.section(TERMS);
        let (a, b) = (
            u32_at(terms, j * 4) as usize,
            u32_at(terms, j * 4 + 4) as usize,
        );
        let blocks = self.section(BLOCKS);
        (a..b).map(move |i| {
            BlockMeta::read(&blocks[i * BlockMeta::BYTES..(i + 1) * BlockMeta::BYTES])
        })
    }

    /// The postings section (block data).
    pub fn postings(&self) -> &[u8] {
        self.section(POSTINGS)
    }

    /// Document `i`'s exact code as (latent, value) pairs.
    pub fn forward(&self, i: usize) -> impl Iterator<Item = (u32, f32)> + '_ {
        let sec = self.section(FORWARD);
        let table = (self.docs + 1) * 8;
        let (a, b) = (u64_at(sec, i * 8) as usize, u64_at(sec, i * 8 + 8) as usize);
        let w = self.forward_id_bytes;
        sec[table + a..table + b].chunks_exact(w + 4).map(move |e| {
            let mut id = [0u8; 4];
            id[..w].copy_from_slice(&e[..w]);
            (
                u32::from_le_bytes(id),
                f32::from_le_bytes(e[w..].try_into().expect("4 bytes")),
            )
        })
    }

    fn id_bytes(&self, i: usize) -> &[u8] {
        let sec = self.section(IDS);
        let table = (self.docs + 1) * 8;
        let (a, b) = (u64_at(sec, i * 8) as usize, u64_at(sec, i * 8 + 8) as usize);
        &sec[table + a..table + b]
    }

    /// Document `i`'s external id.
    pub fn id(&self, i: usize) -> &str {
        std::str::from_utf8(self.id_bytes(i)).expect("checked on open")
    }

    /// Bytes per part: (terms, blocks, postings, forward, ids).
    pub fn part_bytes(&self) -> [usize; SECTIONS] {
        self.sections.map(|s| s.1)
    }

    /// Postings of latent `j`.
    pub fn term_len(&self, j: usize) -> usize {
        self.term_blocks(j).map(|m| m.len as usize).sum()
    }

    /// The file this segment was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Segment {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        Segment::open(&path).unwrap()
    }

    #[test]
    fn version_1_segments_still_read_and_version_2_is_smaller() {
        let codes: Vec<SparseCode> = (0..50u32)
            .map(|d| SparseCode {
                ids: vec![d % 7, 7 + d % 11, 300 + d],
                values: vec![0.5 + d as f32, 1.25, 3.0 / (1 + d) as f32],
            })
            .collect();
        let ids: Vec<String> = (0..50).map(|d| format!("doc{d}")).collect();
        let dir = tempfile::tempdir().unwrap();
        let v1 = encode_as(1, &codes, &ids, 400);
        let v2 = encode(&codes, &ids, 400);
        assert!(v2.len() < v1.len(), "u16 latents in the forward index");
        let (s1, s2) = (
            open_bytes(dir.path(), "a.ksx", &v1),
            open_bytes(dir.path(), "b.ksx", &v2),
        );
        for (d, c) in codes.iter().enumerate() {
            let want: Vec<(u32, f32)> = c
                .ids
                .iter()
                .copied()
                .zip(c.values.iter().copied())
                .collect();
            assert_eq!(s1.forward(d).collect::<Vec<_>>(), want);
            assert_eq!(s2.forward(d).collect::<Vec<_>>(), want);
        }
        // A width above 2^16 keeps u32 latents.
        let wide = open_bytes(dir.path(), "c.ksx", &encode(&codes, &ids, 70_000));
        assert_eq!(
            wide.forward(3).collect::<Vec<_>>(),
            s2.forward(3).collect::<Vec<_>>()
        );
    }
}
