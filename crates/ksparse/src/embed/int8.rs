//! Dense vectors kept beside an index, one byte per dimension, for re-ranking
//! (`two-stage-dense`): q · x_d ≈ (s_d / 127) · Σ_i q_i · x̃_di, with x̃_d = round(127 x_d / s_d)
//! and s_d = max_i |x_di| per vector. The rounding error of each term is at most s_d / 254,
//! so for unit vectors of 384 dimensions the score moves by about 10⁻³ — far below the
//! gaps between documents that matter — at a quarter of f32's bytes.
//!
//! File (`vectors.i8`, little-endian): `KSI8`, format u32 = 1, dim u32, count u64, then
//! `count` f32 scales, `count × dim` i8 values, and a CRC-32 of everything before it.
//! Vectors are numbered like the documents of the index they sit beside.

use std::io::Write as _;
use std::path::Path;

use anyhow::{bail, Result};

use crate::io::{write_atomic, IoError};

const MAGIC: &[u8; 4] = b"KSI8";
const FORMAT: u32 = 1;
const HEADER: usize = 4 + 4 + 4 + 8;

/// Dense vectors quantised to i8 with one scale per vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Vectors {
    dim: usize,
    scales: Vec<f32>,
    values: Vec<i8>,
}

impl Int8Vectors {
    /// Quantises `rows` (row-major, `dim` values each). Values must be finite.
    pub fn quantize(rows: &[f32], dim: usize) -> Result<Self> {
        if dim == 0 || !rows.len().is_multiple_of(dim) {
            bail!(
                "{} values are not whole rows of {dim} dimensions",
                rows.len()
            );
        }
        if let Some(i) = rows.iter().position(|v| !v.is_finite()) {
            bail!("vector {} holds a NaN or infinite value", i / dim);
        }
        let mut scales = Vec::with_capacity(rows.len() / dim);
        let mut values = Vec::with_capacity(rows.len());
        for row in rows.chunks_exact(dim) {
            let s = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            scales.push(s);
            let inv = if s > 0.0 { 127.0 / s } else { 0.0 };
            values.extend(
                row.iter()
                    .map(|v| (v * inv).round().clamp(-127.0, 127.0) as i8),
            );
        }
        Ok(Self {
            dim,
            scales,
            values,
        })
    }

    /// Dimensions per vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.scales.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }

    /// Bytes held: one per value and four per scale.
    pub fn bytes(&self) -> usize {
        self.values.len() + 4 * self.scales.len()
    }

    /// q · (vector `i`, dequantised). `q` must have [`dim`](Self::dim) values.
    pub fn dot(&self, i: usize, q: &[f32]) -> f32 {
        let row = &self.values[i * self.dim..(i + 1) * self.dim];
        let mut acc = [0.0f32; 8];
        for (x, y) in row.chunks_exact(8).zip(q.chunks_exact(8)) {
            for l in 0..8 {
                acc[l] += x[l] as f32 * y[l];
            }
        }
        let body = row.len() / 8 * 8;
        let tail: f32 = row[body..]
            .iter()
            .zip(&q[body..])
            .map(|(&x, y)| x as f32 * y)
            .sum();
        (acc.iter().sum::<f32>() + tail) * self.scales[i] / 127.0
    }

    /// The vectors in another numbering: vector i of the result is vector `order[i]` of
    /// this one (e.g. rows put in an index's document order by `Index::rows_in`).
    pub fn reorder(&self, order: &[u32]) -> Self {
        let d = self.dim;
        Self {
            dim: d,
            scales: order.iter().map(|&r| self.scales[r as usize]).collect(),
            values: order
                .iter()
                .flat_map(|&r| {
                    self.values[r as usize * d..(r as usize + 1) * d]
                        .iter()
                        .copied()
                })
                .collect(),
        }
    }

    /// Writes the file atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut out = Vec::with_capacity(HEADER + self.bytes() + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.extend_from_slice(&(self.dim as u32).to_le_bytes());
        out.extend_from_slice(&(self.len() as u64).to_le_bytes());
        self.scales
            .iter()
            .for_each(|s| out.extend_from_slice(&s.to_le_bytes()));
        out.extend(self.values.iter().map(|&v| v as u8));
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        write_atomic(path, |w| Ok(w.write_all(&out)?))
    }

    /// Reads a file written by [`write`](Self::write), checking its format, size,
    /// checksum and scales.
    pub fn read(path: &Path) -> Result<Self> {
        let b = std::fs::read(path).map_err(|e| IoError::at(path, "cannot read", e))?;
        Self::from_bytes(&b, path)
    }

    /// [`read`](Self::read) over a file's bytes already in memory (`path` names it in
    /// errors): for a caller that also checksums them.
    pub fn from_bytes(b: &[u8], path: &Path) -> Result<Self> {
        let bad = |why: String| anyhow::anyhow!("{}: {why}", path.display());
        if b.len() < HEADER + 4 || &b[..4] != MAGIC {
            return Err(bad("not a ksparse int8 vectors file".into()));
        }
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        if u32_at(4) != FORMAT {
            return Err(bad(format!(
                "format {}; this build reads format {FORMAT}",
                u32_at(4)
            )));
        }
        let dim = u32_at(8) as usize;
        let n = u64::from_le_bytes(b[12..20].try_into().expect("8 bytes"));
        let want = n
            .checked_mul(4 + dim as u64)
            .and_then(|v| v.checked_add((HEADER + 4) as u64));
        if dim == 0 || want != Some(b.len() as u64) {
            return Err(bad(format!(
                "{n} vectors of {dim} dimensions do not fit its {} bytes (truncated or damaged)",
                b.len()
            )));
        }
        let body = b.len() - 4;
        if crc32fast::hash(&b[..body]) != u32_at(body) {
            return Err(bad("checksum mismatch: the file is damaged".into()));
        }
        let n = n as usize;
        let scales: Vec<f32> = b[HEADER..HEADER + 4 * n]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        if let Some(i) = scales.iter().position(|s| !s.is_finite() || *s < 0.0) {
            return Err(bad(format!("vector {i} has scale {}", scales[i])));
        }
        let values = b[HEADER + 4 * n..body].iter().map(|&v| v as i8).collect();
        Ok(Self {
            dim,
            scales,
            values,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn dot_products_stay_within_the_rounding_bound_and_files_round_trip() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (n, d) = (50, 37);
        let rows: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let v = Int8Vectors::quantize(&rows, d).unwrap();
        let q: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        for i in 0..n {
            let row = &rows[i * d..(i + 1) * d];
            let exact: f32 = row.iter().zip(&q).map(|(a, b)| a * b).sum();
            let s = row.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let bound = s / 254.0 * q.iter().map(|x| x.abs()).sum::<f32>() + 1e-5;
            assert!((v.dot(i, &q) - exact).abs() <= bound, "row {i}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vectors.i8");
        v.write(&path).unwrap();
        assert_eq!(Int8Vectors::read(&path).unwrap(), v);
        let r = v.reorder(&[3, 0]);
        assert_eq!(
            (r.len(), r.dot(0, &q), r.dot(1, &q)),
            (2, v.dot(3, &q), v.dot(0, &q))
        );
        // Damage anywhere is refused, naming the file.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 4 * n + 7] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let e = Int8Vectors::read(&path).unwrap_err().to_string();
        assert!(e.contains("checksum") && e.contains("vectors.i8"), "{e}");
        std::fs::write(&path, &bytes[..bytes.len() - 9]).unwrap();
        assert!(Int8Vectors::read(&path)
            .unwrap_err()
            .to_string()
            .contains("truncated"));
        assert!(Int8Vectors::quantize(&[1.0, f32::NAN], 2).is_err());
    }
}
