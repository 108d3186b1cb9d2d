//! Posting-list blocks: up to [`BLOCK`] (document, weight) pairs of one latent, documents
//! ascending. Documents are stored as deltas from the previous block's last document,
//! bit-packed at the smallest width that holds the largest delta; weights as one byte
//! each (quantised, see [`Quantizer`]). Each block's directory entry keeps its last
//! document and its largest weight, so a search can skip or bound a block unread.

/// Postings per block (the last block of a list may be shorter).
pub const BLOCK: usize = 128;

/// Directory entry of one block (12 bytes on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockMeta {
    /// Last (largest) document in the block.
    pub last_doc: u32,
    /// Byte offset of the block's data in the postings section.
    pub offset: u32,
    /// Number of postings, 1..=BLOCK.
    pub len: u8,
    /// Bits per packed delta, 0..=32.
    pub bits: u8,
    /// Largest quantised weight in the block.
    pub max_weight: u8,
}

impl BlockMeta {
    /// Size of an encoded entry.
    pub const BYTES: usize = 12;

    /// Appends the entry's bytes.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.last_doc.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        // len is stored minus one so that a full block (128) fits the byte like 1..=127.
        out.extend_from_slice(&[self.len - 1, self.bits, self.max_weight, 0]);
    }

    /// Reads an entry from 12 bytes.
    pub fn read(b: &[u8]) -> Self {
        Self {
            last_doc: u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")),
            offset: u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")),
            len: b[8].wrapping_add(1),
            bits: b[9],
            max_weight: b[10],
        }
    }

    /// Bytes of the block's data: packed deltas, then one weight byte per posting.
    pub fn data_len(&self) -> usize {
        packed_len(self.len as usize, self.bits) + self.len as usize
    }
}

/// Bytes taken by `n` values of `bits` bits.
fn packed_len(n: usize, bits: u8) -> usize {
    (n * bits as usize).div_ceil(8)
}

/// Linear quantisation of non-negative code values to 1..=255: q = round(v / scale),
/// at least 1 so that a stored posting never scores zero. The scale is the largest value
/// of the segment / 255, stored in its header.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantizer {
    /// Value of one quantisation step.
    pub scale: f32,
}

impl Quantizer {
    /// The quantiser for values up to `max` (> 0).
    pub fn for_max(max: f32) -> Self {
        Self {
            scale: if max > 0.0 { max / 255.0 } else { 1.0 },
        }
    }

    /// The byte for `v` ≥ 0.
    pub fn quantize(&self, v: f32) -> u8 {
        (v / self.scale).round().clamp(1.0, 255.0) as u8
    }
}

/// Encodes one block of (document, quantised weight) pairs, documents ascending and
/// greater than `prev_last` (or from 0 when `prev_last` is None), appending its data to
/// `out` (whose length becomes the block's offset).
pub fn encode_block(
    docs: &[u32],
    weights: &[u8],
    prev_last: Option<u32>,
    out: &mut Vec<u8>,
) -> BlockMeta {
    debug_assert!(!docs.is_empty() && docs.len() <= BLOCK && docs.len() == weights.len());
    let mut prev = prev_last;
    let deltas: Vec<u32> = docs
        .iter()
        .map(|&d| {
            let delta = match prev {
                Some(p) => d - p - 1,
                None => d,
            };
            prev = Some(d);
            delta
        })
        .collect();
    let bits = deltas
        .iter()
        .map(|&d| 32 - d.leading_zeros())
        .max()
        .unwrap_or(0) as u8;
    let offset = out.len() as u32;
    let start = out.len();
    out.resize(start + packed_len(deltas.len(), bits), 0);
    let packed = &mut out[start..];
    for (i, &d) in deltas.iter().enumerate() {
        let bit = i * bits as usize;
        let v = (d as u64) << (bit % 8);
        let bytes = v.to_le_bytes();
        let first = bit / 8;
        let n = (bit % 8 + bits as usize).div_ceil(8);
        for (k, byte) in bytes.iter().enumerate().take(n) {
            packed[first + k] |= byte;
        }
    }
    out.extend_from_slice(weights);
    BlockMeta {
        last_doc: *docs.last().expect("non-empty"),
        offset,
        len: docs.len() as u8,
        bits,
        max_weight: weights.iter().copied().max().unwrap_or(0),
    }
}

/// Decodes a block written by [`encode_block`] from the postings section `data` into
/// `docs` and returns its weights. `prev_last`: the previous block's last document.
/// The caller has checked that the block lies inside `data`.
pub fn decode_block<'a>(
    meta: &BlockMeta,
    data: &'a [u8],
    prev_last: Option<u32>,
    docs: &mut [u32; BLOCK],
) -> &'a [u8] {
    let n = meta.len as usize;
    let bits = meta.bits as usize;
    let start = meta.offset as usize;
    let packed_end = start + packed_len(n, meta.bits);
    let mask: u64 = if bits == 0 { 0 } else { (1u64 << bits) - 1 };
    let mut prev = prev_last.map_or(-1i64, |p| p as i64);
    for (i, doc) in docs.iter_mut().take(n).enumerate() {
        let bit = i * bits;
        let first = start + bit / 8;
        // Eight bytes from `first`: straight from the section (the bytes past this block's
        // packed deltas are its weights or the next block, masked off), or zero-padded at
        // the very end of the section.
        let word = match data.get(first..first + 8) {
            Some(w) => u64::from_le_bytes(w.try_into().expect("8 bytes")),
            None => {
                let mut w = [0u8; 8];
                let tail = &data[first.min(packed_end)..packed_end];
                w[..tail.len()].copy_from_slice(tail);
                u64::from_le_bytes(w)
            }
        };
        let delta = (word >> (bit % 8)) & mask;
        prev += delta as i64 + 1;
        *doc = prev as u32;
    }
    &data[packed_end..packed_end + n]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn blocks_round_trip_at_every_width() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for gap in [1u32, 2, 3, 100, 70_000, 1 << 30] {
            let mut out = vec![0xAA]; // a non-zero offset
            let mut docs = Vec::new();
            let mut d = rng.random_range(0..gap);
            for _ in 0..BLOCK {
                docs.push(d);
                d += rng.random_range(1..=gap.min(u32::MAX / 200));
            }
            let weights: Vec<u8> = (0..BLOCK).map(|_| rng.random_range(1..=255)).collect();
            let prev = docs[0].checked_sub(1).filter(|_| gap > 1);
            let meta = encode_block(&docs, &weights, prev, &mut out);
            assert_eq!(out.len(), 1 + meta.data_len());
            let mut bytes = Vec::new();
            meta.write(&mut bytes);
            let meta = BlockMeta::read(&bytes);
            let mut back = [0u32; BLOCK];
            let w = decode_block(&meta, &out, prev, &mut back);
            assert_eq!(&back[..], &docs[..], "gap {gap}");
            assert_eq!(w, &weights[..]);
            assert_eq!(meta.max_weight, *weights.iter().max().unwrap());
        }
    }

    #[test]
    fn consecutive_documents_take_no_bits() {
        let mut out = Vec::new();
        let meta = encode_block(&[5, 6, 7], &[1, 2, 3], Some(4), &mut out);
        assert_eq!((meta.bits, meta.len, out.len()), (0, 3, 3));
        let mut back = [0u32; BLOCK];
        decode_block(&meta, &out, Some(4), &mut back);
        assert_eq!(&back[..3], &[5, 6, 7]);
    }

    #[test]
    fn quantizer_keeps_postings_non_zero() {
        let q = Quantizer::for_max(2.55);
        assert_eq!(q.quantize(2.55), 255);
        assert_eq!(q.quantize(1e-9), 1);
        assert_eq!(q.quantize(1.0), 100);
    }
}
