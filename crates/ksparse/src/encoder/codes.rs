//! Sparse codes and their files.
//!
//! `.kspc` (ksparse codes), little-endian:
//!
//! ```text
//! magic "KSPCODE1" | rows u64 | hidden u32 | id_bytes u32 (2 or 4) | nnz u64
//! per row: count u32 | ids [count × u16|u32], strictly ascending | values [count × f32]
//! crc32 u32 of every byte before it
//! ```
//!
//! Ids are u16 when hidden ≤ 65536 (3 of every 4 bytes of a u32 id would be zero).
//! A name ending in `.npz` writes a SciPy CSR matrix instead (`scipy.sparse.load_npz`).
//!
//! Both writers refuse codes that would not read back: a width outside 1..=[`MAX_HIDDEN`],
//! ids not strictly ascending or not below the width, and NaN or infinite values (an
//! encoder overflow), naming the row. The reader checks the header against the file's
//! length and [`MAX_HIDDEN`] before it allocates anything.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::base::{SparseCode, MAX_HIDDEN};
use crate::io::write_atomic;

const MAGIC: &[u8; 8] = b"KSPCODE1";

/// Header bytes before the first row: magic, rows, hidden, id_bytes, nnz.
const HEADER: usize = 32;

/// The first row of `codes` holding a NaN or infinite value (an encoder overflow).
pub fn first_non_finite(codes: &[SparseCode]) -> Option<usize> {
    codes
        .iter()
        .position(|c| c.values.iter().any(|v| !v.is_finite()))
}

/// Checks that `codes` can be written as `hidden`-wide codes that read back as they are.
fn check_codes(path: &Path, codes: &[SparseCode], hidden: usize) -> Result<()> {
    let p = path.display();
    if hidden == 0 || hidden > MAX_HIDDEN {
        bail!("cannot write {p}: width {hidden} is outside 1..={MAX_HIDDEN}");
    }
    for (row, c) in codes.iter().enumerate() {
        if c.ids.len() != c.values.len() {
            bail!(
                "cannot write {p}: row {row} has {} ids but {} values",
                c.ids.len(),
                c.values.len()
            );
        }
        if let Some(w) = c.ids.windows(2).position(|w| w[0] >= w[1]) {
            bail!("cannot write {p}: row {row}: ids not strictly ascending at position {w}");
        }
        if let Some(&id) = c.ids.iter().find(|&&id| id as usize >= hidden) {
            bail!("cannot write {p}: row {row}: id {id} ≥ width {hidden}");
        }
        if let Some(v) = c.values.iter().find(|v| !v.is_finite()) {
            bail!("cannot write {p}: row {row} has the value {v} (overflow: the row's input is too large)");
        }
    }
    Ok(())
}

/// Writes codes to `path`: `.npz` → SciPy CSR, anything else → `.kspc`. Atomic.
pub fn write_codes(path: &Path, codes: &[SparseCode], hidden: usize) -> Result<()> {
    check_codes(path, codes, hidden)?;
    if path.extension().is_some_and(|e| e == "npz") {
        return write_npz(path, codes, hidden);
    }
    let id_bytes: u32 = if hidden <= 1 << 16 { 2 } else { 4 };
    let nnz: usize = codes.iter().map(SparseCode::len).sum();
    let mut buf = Vec::with_capacity(HEADER + codes.len() * 4 + nnz * (id_bytes as usize + 4));
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&(codes.len() as u64).to_le_bytes());
    buf.extend_from_slice(&(hidden as u32).to_le_bytes());
    buf.extend_from_slice(&id_bytes.to_le_bytes());
    buf.extend_from_slice(&(nnz as u64).to_le_bytes());
    for c in codes {
        buf.extend_from_slice(&(c.len() as u32).to_le_bytes());
        for &id in &c.ids {
            if id_bytes == 2 {
                buf.extend_from_slice(&(id as u16).to_le_bytes());
            } else {
                buf.extend_from_slice(&id.to_le_bytes());
            }
        }
        for v in &c.values {
            buf.extend_from_slice(&v.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    write_atomic(path, |w| Ok(w.write_all(&buf)?))
}

/// Reads a `.kspc` file, verifying its checksum, its header against the file's length and
/// [`MAX_HIDDEN`] (before allocating), and every row. Returns (codes, hidden).
pub fn read_codes(path: &Path) -> Result<(Vec<SparseCode>, usize)> {
    let p = path.display();
    let buf = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("{p} not found"),
        Err(e) => return Err(e).with_context(|| format!("cannot read {p}")),
    };
    if buf.len() < 36 || &buf[..8] != MAGIC {
        bail!("{p}: not a ksparse codes file (bad magic or too short)");
    }
    let (body, tail) = buf.split_at(buf.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(tail.try_into().expect("4 bytes")) {
        bail!("{p}: checksum mismatch (file corrupted or truncated)");
    }
    let u32_at = |o: usize| u32::from_le_bytes(body[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(body[o..o + 8].try_into().expect("8 bytes"));
    // The header is checked against the file's length before anything is allocated.
    let (rows64, hidden, id_bytes, nnz64) =
        (u64_at(8), u32_at(16) as usize, u32_at(20), u64_at(24));
    if hidden == 0 || hidden > MAX_HIDDEN {
        bail!("{p}: header field hidden (the width) = {hidden} is outside 1..={MAX_HIDDEN}");
    }
    if id_bytes != 2 && id_bytes != 4 {
        bail!("{p}: header field id_bytes = {id_bytes} is not 2 or 4");
    }
    let payload = (body.len() - HEADER) as u64;
    let need = rows64.checked_mul(4).and_then(|r| {
        nnz64
            .checked_mul(id_bytes as u64 + 4)
            .and_then(|z| r.checked_add(z))
    });
    if need != Some(payload) {
        bail!(
            "{p}: header fields rows = {rows64} and nnz = {nnz64} do not match the file's length ({payload} bytes of rows)"
        );
    }
    if nnz64 > rows64.saturating_mul(hidden as u64) {
        bail!("{p}: header field nnz = {nnz64} exceeds rows × hidden = {rows64} × {hidden}");
    }
    // Both fit in memory now: they are bounded by the file's length.
    let (rows, nnz, id_bytes) = (rows64 as usize, nnz64 as usize, id_bytes as usize);
    let mut off = HEADER;
    let mut codes = Vec::with_capacity(rows);
    for row in 0..rows {
        if off + 4 > body.len() {
            bail!("{p}: row {row}: truncated");
        }
        let count = u32_at(off) as usize;
        off += 4;
        let end = off + count * (id_bytes + 4);
        if count > hidden || end > body.len() {
            bail!("{p}: row {row}: count {count} exceeds the file or the width {hidden}");
        }
        let ids: Vec<u32> = (0..count)
            .map(|i| {
                let o = off + i * id_bytes;
                if id_bytes == 2 {
                    u16::from_le_bytes([body[o], body[o + 1]]) as u32
                } else {
                    u32_at(o)
                }
            })
            .collect();
        off += count * id_bytes;
        let values: Vec<f32> = (0..count)
            .map(|i| {
                f32::from_le_bytes(
                    body[off + 4 * i..off + 4 * i + 4]
                        .try_into()
                        .expect("4 bytes"),
                )
            })
            .collect();
        off += count * 4;
        if let Some(w) = ids.windows(2).position(|w| w[0] >= w[1]) {
            bail!("{p}: row {row}: ids not strictly ascending at position {w}");
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= hidden) {
            bail!("{p}: row {row}: id {id} ≥ width {hidden}");
        }
        if values.iter().any(|v| !v.is_finite()) {
            bail!("{p}: row {row}: NaN or infinite value");
        }
        codes.push(SparseCode { ids, values });
    }
    if off != body.len() || codes.iter().map(SparseCode::len).sum::<usize>() != nnz {
        bail!("{p}: header says {rows} rows / {nnz} non-zeros but the body disagrees");
    }
    Ok((codes, hidden))
}

/// A `.npy` (format 1.0) holding `data` with numpy type `descr` and `shape`.
fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let shape_txt = match shape {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        s => format!(
            "({})",
            s.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
    // Pad so that magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn write_npz(path: &Path, codes: &[SparseCode], hidden: usize) -> Result<()> {
    let mut indptr: Vec<u8> = Vec::with_capacity((codes.len() + 1) * 8);
    let mut indices = Vec::new();
    let mut data = Vec::new();
    let mut total = 0i64;
    indptr.extend_from_slice(&0i64.to_le_bytes());
    for c in codes {
        total += c.len() as i64;
        indptr.extend_from_slice(&total.to_le_bytes());
        c.ids
            .iter()
            .for_each(|&i| indices.extend_from_slice(&(i as i32).to_le_bytes()));
        c.values
            .iter()
            .for_each(|v| data.extend_from_slice(&v.to_le_bytes()));
    }
    let shape: Vec<u8> = [codes.len() as i64, hidden as i64]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let n = total as usize;
    let members = [
        ("indices.npy", npy_bytes("<i4", &[n], &indices)),
        ("indptr.npy", npy_bytes("<i8", &[codes.len() + 1], &indptr)),
        ("format.npy", npy_bytes("|S3", &[], b"csr")),
        ("shape.npy", npy_bytes("<i8", &[2], &shape)),
        ("data.npy", npy_bytes("<f4", &[n], &data)),
    ];
    write_atomic(path, |w| {
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut buf);
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            for (name, bytes) in &members {
                zip.start_file(*name, opts)?;
                zip.write_all(bytes)?;
            }
            zip.finish()?;
        }
        Ok(w.write_all(buf.get_ref())?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<SparseCode> {
        vec![
            SparseCode {
                ids: vec![1, 5, 900],
                values: vec![0.5, 1.5, 2.0],
            },
            SparseCode::default(),
            SparseCode {
                ids: vec![0],
                values: vec![3.0],
            },
        ]
    }

    #[test]
    fn top_k_relu_keeps_k_positive_sorted_ids() {
        let c = SparseCode::top_k_relu(&[0.1, -2.0, 3.0, 0.0, 2.0], 3);
        assert_eq!(c.ids, [0, 2, 4]);
        assert_eq!(c.values, [0.1, 3.0, 2.0]);
        let c = SparseCode::top_k_relu(&[-1.0, -2.0], 2);
        assert!(c.is_empty());
    }

    #[test]
    fn kspc_round_trip_and_corruption_detected() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.kspc");
        write_codes(&p, &sample(), 1024).unwrap();
        let (back, hidden) = read_codes(&p).unwrap();
        assert_eq!((back, hidden), (sample(), 1024));
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        assert!(format!("{:#}", read_codes(&p).unwrap_err()).contains("checksum"));
        std::fs::write(&p, &bytes[..20]).unwrap();
        assert!(read_codes(&p).is_err());
    }

    /// A `.kspc` with this header and body and a valid checksum.
    fn kspc_bytes(rows: u64, hidden: u32, id_bytes: u32, nnz: u64, body: &[u8]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&rows.to_le_bytes());
        b.extend_from_slice(&hidden.to_le_bytes());
        b.extend_from_slice(&id_bytes.to_le_bytes());
        b.extend_from_slice(&nnz.to_le_bytes());
        b.extend_from_slice(body);
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn kspc_header_is_checked_before_allocating() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.kspc");
        // One row with one non-zero: 4 + 2 + 4 bytes.
        let row = [
            1u32.to_le_bytes().as_slice(),
            &3u16.to_le_bytes(),
            &1.5f32.to_le_bytes(),
        ]
        .concat();
        std::fs::write(&p, kspc_bytes(1, 8, 2, 1, &row)).unwrap();
        assert_eq!(read_codes(&p).unwrap().0[0].ids, [3]);
        let err = |bytes: Vec<u8>| {
            std::fs::write(&p, bytes).unwrap();
            format!("{:#}", read_codes(&p).unwrap_err())
        };
        let e = err(kspc_bytes(1, u32::MAX, 4, 1, &[0; 12]));
        assert!(
            e.contains("c.kspc") && e.contains("hidden") && e.contains("4294967295"),
            "{e}"
        );
        let e = err(kspc_bytes(1, 0, 2, 0, &[0; 4]));
        assert!(e.contains("hidden"), "{e}");
        let e = err(kspc_bytes(u64::MAX, 8, 2, 1, &row));
        assert!(e.contains("rows = 18446744073709551615"), "{e}");
        let e = err(kspc_bytes(1, 8, 2, u64::MAX / 2, &row));
        assert!(e.contains("nnz"), "{e}");
        let e = err(kspc_bytes(1, 8, 3, 1, &row));
        assert!(e.contains("id_bytes = 3"), "{e}");
        // Consistent with the length but more non-zeros than rows × hidden allow.
        let e = err(kspc_bytes(0, 1, 2, 2, &[0; 12]));
        assert!(e.contains("nnz = 2"), "{e}");
    }

    #[test]
    fn writers_refuse_codes_that_would_not_read_back() {
        let d = tempfile::tempdir().unwrap();
        for name in ["c.kspc", "c.npz"] {
            let p = d.path().join(name);
            let mut codes = sample();
            codes[2].values[0] = f32::INFINITY;
            let e = format!("{:#}", write_codes(&p, &codes, 1024).unwrap_err());
            assert!(
                e.contains(name) && e.contains("row 2") && e.contains("inf"),
                "{e}"
            );
            codes[2].values[0] = f32::NAN;
            assert!(format!("{:#}", write_codes(&p, &codes, 1024).unwrap_err()).contains("row 2"));
            let e = format!("{:#}", write_codes(&p, &sample(), 900).unwrap_err());
            assert!(e.contains("row 0") && e.contains("900"), "{e}");
            let e = format!(
                "{:#}",
                write_codes(&p, &sample(), MAX_HIDDEN + 1).unwrap_err()
            );
            assert!(e.contains("width"), "{e}");
            assert!(!p.exists());
        }
        assert_eq!(first_non_finite(&sample()), None);
    }

    #[test]
    fn sparse_dot_merges_ids() {
        let s = sample();
        assert_eq!(
            s[0].dot(&SparseCode {
                ids: vec![5, 900, 901],
                values: vec![2.0, 1.0, 7.0]
            }),
            5.0
        );
        assert_eq!(s[0].dot(&s[1]), 0.0);
    }

    #[test]
    fn npz_has_the_csr_members() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.npz");
        write_codes(&p, &sample(), 1024).unwrap();
        let mut z = zip::ZipArchive::new(std::fs::File::open(&p).unwrap()).unwrap();
        let mut names: Vec<String> = (0..z.len())
            .map(|i| z.by_index(i).unwrap().name().to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "data.npy",
                "format.npy",
                "indices.npy",
                "indptr.npy",
                "shape.npy"
            ]
        );
        let header = npy_bytes("<f4", &[4], &[0; 16]);
        assert_eq!((header.len() - 16) % 64, 0);
    }
}
