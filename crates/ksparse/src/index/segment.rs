//! One immutable segment file (`*.ksx`): the posting lists, the forward index and the id
//! map of a batch of documents, behind a checksummed header.
//!
//! Layout (little-endian):
//!
//! ```text
//! header    magic "KSPXSEG1" · version u32 · hidden u32 · docs u32 · sections u32 (S)
//!           · scale f32 · doc block u32 (documents per block of `block max`; 0 before
//!           version 3) · S × (offset u64, len u64, crc32 u32, reserved u32)
//!           · crc32 of the header bytes before it
//! terms     (hidden + 1) × u32: latent j's blocks are blocks[terms[j] .. terms[j+1]]
//! blocks    12-byte BlockMeta entries (last doc, data offset, len, bits, max weight)
//! postings  block data: bit-packed doc deltas, then one quantised weight byte per posting
//! forward   (docs + 1) × u64 entry offsets, then per posting (latent, value f32); the
//!           latent is a u16 when hidden ≤ 65536 (u32 otherwise, and always in version 1)
//! ids       (docs + 1) × u64 byte offsets, then the UTF-8 external ids
//! block max (version 3) hidden × blocks bytes, latent-major: the largest quantised
//!           weight of latent j among documents [b · doc block, (b + 1) · doc block)
//! forward q (version 3) one byte per forward-index posting, in its order: the quantised
//!           weight the posting lists store
//! ```
//!
//! From version 3 the documents are stored in [`order::cluster_order`] (similar codes
//! in the same doc block), so block maxima bound whole blocks tightly. S is 5 before
//! version 3 and 7 from it.
//!
//! Every section's CRC-32 is checked when the segment is opened, and every block's bounds,
//! so a search never reads outside the file or decodes garbage; the block maxima are
//! checked against every stored weight, so pruning by them never drops a document.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use memmap2::Mmap;

use super::order;
use super::postings::{self, encode_block, BlockMeta, Quantizer, BLOCK};
use crate::base::{SparseCode, MAX_HIDDEN};

/// File magic of a segment.
pub const MAGIC: &[u8; 8] = b"KSPXSEG1";
/// Segment format version this build writes. Versions 1 (u32 latents in the forward
/// index) and 2 (no block maxima: searched term-at-a-time only) are still read.
pub const VERSION: u32 = 3;
/// The oldest segment version this build reads.
pub const OLDEST_READ: u32 = 1;
/// Documents per block of the block-max section: the unit of pruning. Smaller blocks
/// bound tighter but take more bytes (hidden bytes per block) and more bound arithmetic
/// per query.
pub const DOC_BLOCK: usize = 64;

/// Bytes of a latent id in the forward index of a segment of `version` and width `hidden`.
fn forward_id_bytes(version: u32, hidden: usize) -> usize {
    if version >= 2 && hidden <= 1 << 16 {
        2
    } else {
        4
    }
}

/// Sections of a segment of `version`.
fn section_count(version: u32) -> usize {
    if version >= 3 {
        7
    } else {
        5
    }
}

/// Header bytes of a segment with `sections` sections.
fn header_bytes(sections: usize) -> usize {
    8 + 4 * 6 + sections * 24 + 4
}

/// Section numbers.
const TERMS: usize = 0;
const BLOCKS: usize = 1;
const POSTINGS: usize = 2;
const FORWARD: usize = 3;
const IDS: usize = 4;
const BLOCK_MAX: usize = 5;
const FORWARD_Q: usize = 6;

/// Checks codes and ids before anything is written: ids unique and free of line breaks,
/// latent ids below `hidden` and ascending, values finite and positive.
pub fn validate(codes: &[SparseCode], ids: &[String], hidden: usize) -> Result<()> {
    if codes.len() != ids.len() {
        bail!("{} codes but {} ids", codes.len(), ids.len());
    }
    if codes.len() >= u32::MAX as usize {
        bail!("a segment holds fewer than 2^32 − 1 documents");
    }
    if hidden == 0 || hidden > MAX_HIDDEN {
        bail!("width {hidden} is not between 1 and {MAX_HIDDEN}");
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

/// Serialises a segment for `codes` (validated by [`validate`]) with external `ids`, in
/// the current format ([`VERSION`]; older versions are only read: the files they wrote
/// are kept in `tests/fixtures/index-v*`).
pub fn encode(codes: &[SparseCode], ids: &[String], hidden: usize) -> Vec<u8> {
    encode_ordered(codes, ids, hidden).0
}

/// [`encode`], also returning the storage order: local row i of the segment holds input
/// row `order[i]` (what a document store beside the segment follows).
pub fn encode_ordered(codes: &[SparseCode], ids: &[String], hidden: usize) -> (Vec<u8>, Vec<u32>) {
    // Storage order: clustered, so that a doc block holds similar codes.
    let order = order::cluster_order(codes, hidden, DOC_BLOCK);
    let stored = |pos: usize| &codes[order[pos] as usize];
    let max = codes
        .iter()
        .flat_map(|c| c.values.iter().copied())
        .fold(0.0f32, f32::max);
    let quant = Quantizer::for_max(max);
    // Transpose to per-latent (doc, weight) lists.
    let mut lists: Vec<Vec<(u32, u8)>> = vec![Vec::new(); hidden];
    for d in 0..codes.len() {
        let c = stored(d);
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
    let id_bytes = forward_id_bytes(VERSION, hidden);
    let forward = offsets_then(codes.len(), &mut |i, body| {
        let c = stored(i);
        for (&j, &v) in c.ids.iter().zip(&c.values) {
            body.extend_from_slice(&j.to_le_bytes()[..id_bytes]);
            body.extend_from_slice(&v.to_le_bytes());
        }
    });
    let id_map = offsets_then(ids.len(), &mut |i, body| {
        body.extend_from_slice(ids[order[i] as usize].as_bytes())
    });
    let per_latent = codes.len().div_ceil(DOC_BLOCK);
    let (mut block_max, mut forward_q) = (vec![0u8; hidden * per_latent], Vec::new());
    for d in 0..codes.len() {
        let c = stored(d);
        for (&j, &v) in c.ids.iter().zip(&c.values) {
            let q = quant.quantize(v);
            let slot = &mut block_max[j as usize * per_latent + d / DOC_BLOCK];
            *slot = (*slot).max(q);
            forward_q.push(q);
        }
    }

    let sections: [&[u8]; 7] = [
        &terms, &blocks, &postings, &forward, &id_map, &block_max, &forward_q,
    ];
    debug_assert_eq!(sections.len(), section_count(VERSION));
    let header = header_bytes(sections.len());
    let mut out = Vec::with_capacity(header + sections.iter().map(|s| s.len() + 8).sum::<usize>());
    out.extend_from_slice(MAGIC);
    for v in [
        VERSION,
        hidden as u32,
        codes.len() as u32,
        sections.len() as u32,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&quant.scale.to_le_bytes());
    out.extend_from_slice(&(DOC_BLOCK as u32).to_le_bytes());
    let mut offset = header.next_multiple_of(8);
    for s in &sections {
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(s).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        offset = (offset + s.len()).next_multiple_of(8);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    for s in &sections {
        out.resize(out.len().next_multiple_of(8), 0);
        out.extend_from_slice(s);
    }
    (out, order)
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
    /// Documents per block of the block maxima; 0 when the segment has none (before
    /// version 3).
    pub doc_block: usize,
    /// (offset, length) of each section in the file.
    sections: Vec<(usize, usize)>,
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
        if b.len() < header_bytes(0) || &b[..8] != MAGIC {
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
        let n_sections = section_count(version);
        let header = header_bytes(n_sections);
        if u32_at(b, 20) as usize != n_sections {
            return Err(bad("unexpected section count".into()));
        }
        if b.len() < header {
            return Err(bad("truncated header".into()));
        }
        if crc32fast::hash(&b[..header - 4]) != u32_at(b, header - 4) {
            return Err(bad("header checksum mismatch".into()));
        }
        let hidden = u32_at(b, 12) as usize;
        let docs = u32_at(b, 16) as usize;
        if hidden == 0 || hidden > MAX_HIDDEN {
            return Err(bad(format!(
                "width {hidden} is not between 1 and {MAX_HIDDEN}"
            )));
        }
        let scale = f32::from_le_bytes(b[24..28].try_into().expect("4 bytes"));
        if !(scale.is_finite() && scale > 0.0) {
            return Err(bad(format!("quantisation scale {scale}")));
        }
        let doc_block = u32_at(b, 28) as usize;
        if (version >= 3) != (doc_block > 0) {
            return Err(bad(format!(
                "doc block {doc_block} in a version {version} segment"
            )));
        }
        let mut sections = vec![(0usize, 0usize); n_sections];
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
            doc_block,
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
        if !blocks.len().is_multiple_of(BlockMeta::BYTES) {
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
        let data = self.section(POSTINGS);
        let mut docs = [0u32; BLOCK];
        for j in 0..self.hidden {
            let mut last: Option<u32> = None;
            for m in self.term_blocks(j) {
                let end = m.offset as usize + m.data_len();
                let len_ok = (1..=BLOCK).contains(&(m.len as usize));
                if !len_ok || end > data.len() || m.bits > 32 || m.last_doc as usize >= self.docs {
                    bail!("block of latent {j} out of bounds");
                }
                if last.is_some_and(|l| m.last_doc <= l) {
                    bail!("blocks of latent {j} not ascending");
                }
                // Search trusts the decoded documents as accumulator slots: each must be
                // above the one before and the block must end at its recorded last one.
                let weights = postings::decode_block(&m, data, last, &mut docs);
                let decoded = &docs[..m.len as usize];
                let mut prev = last.map_or(-1i64, i64::from);
                for &d in decoded {
                    if i64::from(d) <= prev {
                        bail!("postings of latent {j} not ascending");
                    }
                    prev = i64::from(d);
                }
                if decoded.last() != Some(&m.last_doc)
                    || weights.iter().copied().max() != Some(m.max_weight)
                {
                    bail!("a block of latent {j} disagrees with its directory entry");
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
                if o < prev || table as u64 + o > sec.len() as u64 || !o.is_multiple_of(what as u64)
                {
                    bail!("offset table of section {s} out of bounds at row {i}");
                }
                prev = o;
            }
            if (sec.len() - table) as u64 != prev {
                bail!("section {s} has trailing bytes");
            }
        }
        let blocks = self.blocks_view();
        if let Some(view) = &blocks {
            let entries = (self.section(FORWARD).len() - (self.docs + 1) * 8) / view.stride;
            if view.block_max.len() != self.hidden * view.blocks || view.weights.len() != entries {
                bail!("block maxima or quantised forward index do not match the documents");
            }
        }
        let quant = Quantizer { scale: self.scale };
        for i in 0..self.docs {
            std::str::from_utf8(self.id_bytes(i)).context("document id is not UTF-8")?;
            for (e, (j, v)) in self.forward_entries(i).zip(self.forward(i)) {
                if j as usize >= self.hidden || !v.is_finite() {
                    bail!("forward index row {i} holds latent {j} / value {v}");
                }
                if let Some(view) = &blocks {
                    // Pruning trusts these bytes: a stored weight above its block's
                    // maximum would silently drop a document.
                    let q = view.weights[e];
                    let bound = view.latent_max(j as usize)[i / view.doc_block];
                    if q != quant.quantize(v) || q > bound {
                        bail!("row {i}, latent {j}: quantised weight {q} does not match its value or exceeds its block maximum {bound}");
                    }
                }
            }
        }
        Ok(())
    }

    /// Entry numbers (posting positions in the forward index) of document `i`'s code.
    fn forward_entries(&self, i: usize) -> std::ops::Range<usize> {
        let sec = self.section(FORWARD);
        let stride = self.forward_id_bytes + 4;
        u64_at(sec, i * 8) as usize / stride..u64_at(sec, i * 8 + 8) as usize / stride
    }

    /// The block-max view of a version-3 segment, `None` before.
    pub fn blocks_view(&self) -> Option<BlockView<'_>> {
        (self.doc_block > 0).then(|| {
            let fwd = self.section(FORWARD);
            let table = (self.docs + 1) * 8;
            BlockView {
                doc_block: self.doc_block,
                blocks: self.docs.div_ceil(self.doc_block),
                block_max: self.section(BLOCK_MAX),
                offsets: &fwd[..table],
                latents: &fwd[table..],
                stride: self.forward_id_bytes + 4,
                weights: self.section(FORWARD_Q),
            }
        })
    }

    /// The directory entries of latent `j`'s blocks.
    pub fn term_blocks(&self, j: usize) -> impl ExactSizeIterator<Item = BlockMeta> + '_ {
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
    pub fn part_bytes(&self) -> [usize; 7] {
        let mut parts = [0; 7];
        for (p, s) in parts.iter_mut().zip(&self.sections) {
            *p = s.1;
        }
        parts
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

/// What block-max search reads from a version-3 segment: the block maxima and the
/// forward index's latents with their quantised weights.
pub struct BlockView<'a> {
    /// Documents per block.
    pub doc_block: usize,
    /// Blocks (the last may be partial).
    pub blocks: usize,
    /// hidden × blocks maxima, latent-major.
    block_max: &'a [u8],
    /// (docs + 1) × u64 byte offsets into `latents`.
    offsets: &'a [u8],
    /// Forward-index entries: latent (2 or 4 bytes), then the f32 value.
    latents: &'a [u8],
    /// Bytes per forward-index entry.
    stride: usize,
    /// Quantised weight per forward-index entry.
    weights: &'a [u8],
}

impl BlockView<'_> {
    /// Postings of all documents.
    pub fn postings(&self) -> usize {
        self.weights.len()
    }

    /// Latent `j`'s maximum in each block.
    pub fn latent_max(&self, j: usize) -> &[u8] {
        &self.block_max[j * self.blocks..(j + 1) * self.blocks]
    }

    /// Calls `f(latent, quantised weight)` for each posting of document `i`, latents
    /// ascending.
    #[inline]
    pub fn for_each_posting(&self, i: usize, mut f: impl FnMut(usize, u8)) {
        let (a, b) = (
            u64_at(self.offsets, i * 8) as usize,
            u64_at(self.offsets, i * 8 + 8) as usize,
        );
        let weights = &self.weights[a / self.stride..b / self.stride];
        let entries = self.latents[a..b].chunks_exact(self.stride);
        if self.stride == 6 {
            for (e, &q) in entries.zip(weights) {
                f(u16::from_le_bytes([e[0], e[1]]) as usize, q);
            }
        } else {
            for (e, &q) in entries.zip(weights) {
                f(u32_at(e, 0) as usize, q);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fixture, pairs, Fixture};
    use super::*;

    fn open_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Segment {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        Segment::open(&path).unwrap()
    }

    #[test]
    fn frozen_segments_of_every_readable_version_hold_their_codes() {
        // (documents, forward-index latent bytes, doc block) of each fixture segment.
        let layouts: [&[(usize, usize, usize)]; 3] = [
            &[(40, 4, 0)],
            &[(30, 2, 0), (12, 2, 0)],
            &[(70, 2, DOC_BLOCK)],
        ];
        for version in OLDEST_READ..=VERSION {
            let Fixture {
                dir,
                codes,
                ids,
                meta,
            } = fixture(version);
            let row_of = |id: &str| ids.iter().position(|i| i == id).unwrap();
            let want = layouts[(version - OLDEST_READ) as usize];
            assert_eq!(meta.segments.len(), want.len(), "version {version}");
            let mut first_row = 0;
            for (entry, &(docs, id_bytes, doc_block)) in meta.segments.iter().zip(want) {
                let seg = Segment::open(&dir.join(&entry.file)).unwrap();
                let what = format!("version {version}, {}", entry.file);
                assert_eq!(u32_at(&seg.map[..], 8), version, "{what}");
                assert_eq!(
                    (seg.docs, seg.hidden, seg.forward_id_bytes, seg.doc_block),
                    (docs, 64, id_bytes, doc_block),
                    "{what}"
                );
                assert_eq!(seg.blocks_view().is_some(), version >= 3, "{what}");
                let rows: Vec<usize> = (0..docs).map(|i| row_of(seg.id(i))).collect();
                if version < 3 {
                    // Stored in input order.
                    assert_eq!(rows, (first_row..first_row + docs).collect::<Vec<_>>());
                }
                let mut sorted = rows.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, (first_row..first_row + docs).collect::<Vec<_>>());
                let nnz: usize = rows.iter().map(|&r| codes[r].ids.len()).sum();
                for (i, &r) in rows.iter().enumerate() {
                    assert_eq!(
                        seg.forward(i).collect::<Vec<_>>(),
                        pairs(&codes[r]),
                        "{what}, row {r}"
                    );
                }
                // The forward index: offsets, then latent and f32 value per entry.
                let forward = seg.part_bytes()[FORWARD];
                assert_eq!(forward, (docs + 1) * 8 + nnz * (id_bytes + 4), "{what}");
                // Every posting list holds exactly the documents whose code has the
                // latent, with their quantised weights.
                let quant = Quantizer { scale: seg.scale };
                let mut buf = [0u32; BLOCK];
                for j in 0..seg.hidden {
                    let mut got = Vec::new();
                    let mut last = None;
                    for m in seg.term_blocks(j) {
                        let weights = postings::decode_block(&m, seg.postings(), last, &mut buf);
                        got.extend(
                            buf[..m.len as usize]
                                .iter()
                                .copied()
                                .zip(weights.iter().copied()),
                        );
                        last = Some(m.last_doc);
                    }
                    let want: Vec<(u32, u8)> = rows
                        .iter()
                        .enumerate()
                        .filter_map(|(i, &r)| {
                            let c = &codes[r];
                            let p = c.ids.binary_search(&(j as u32)).ok()?;
                            Some((i as u32, quant.quantize(c.values[p])))
                        })
                        .collect();
                    assert_eq!(got, want, "{what}, latent {j}");
                }
                first_row += docs;
            }
            assert_eq!(
                first_row,
                codes.len(),
                "version {version}: every code is stored"
            );
        }
    }

    #[test]
    fn today_writes_the_current_version_and_keeps_u32_latents_above_2_16() {
        let codes: Vec<SparseCode> = (0..150u32)
            .map(|d| SparseCode {
                ids: vec![d % 7, 7 + d % 11, 250 + d],
                values: vec![0.5 + d as f32, 1.25, 3.0 / (1 + d) as f32],
            })
            .collect();
        let ids: Vec<String> = (0..150).map(|d| format!("doc{d}")).collect();
        let dir = tempfile::tempdir().unwrap();
        let narrow = open_bytes(dir.path(), "b.ksx", &encode(&codes, &ids, 400));
        let wide = open_bytes(dir.path(), "c.ksx", &encode(&codes, &ids, 70_000));
        for seg in [&narrow, &wide] {
            assert_eq!(u32_at(&seg.map[..], 8), VERSION);
            assert_eq!((seg.docs, seg.doc_block), (150, DOC_BLOCK));
            for i in 0..seg.docs {
                let row: usize = seg.id(i)[3..].parse().unwrap();
                assert_eq!(seg.forward(i).collect::<Vec<_>>(), pairs(&codes[row]));
            }
        }
        assert_eq!((narrow.forward_id_bytes, wide.forward_id_bytes), (2, 4));
        // The same codes give the same storage order at any width.
        assert!((0..150).all(|i| narrow.id(i) == wide.id(i)));
    }
}
