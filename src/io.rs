//! File I/O shared by every stage: atomic writes, `.npy` matrices and id lists.
//!
//! Every file ksparse writes goes to a temporary file in the target folder first, is
//! fsynced, then renamed over the target, so a crash or an error never leaves a
//! half-written file where a complete one is expected.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ndarray::Array2;
use ndarray_npy::{ReadNpyExt, WriteNpyExt};

/// Writes a file atomically: `fill` writes into a temporary file beside `path`, which is
/// fsynced and renamed to `path` only if `fill` succeeds.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&mut File>) -> Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create folder {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    {
        let mut w = BufWriter::new(tmp.as_file_mut());
        fill(&mut w).with_context(|| format!("writing {}", path.display()))?;
        w.flush()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("fsync {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot rename into {}", path.display()))?;
    sync_dir(&dir)
}

/// Test helper: writes `text` to `dir/rel`, creating folders.
#[cfg(test)]
pub(crate) fn write_test_file(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Makes a rename inside `dir` durable (fsync of the folder; a no-op where folders cannot
/// be opened for it).
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync folder {}", dir.display()))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Temporary files and folders are created private (0600 / 0700); what ksparse publishes
/// gets the usual 0644 / 0755.
fn set_mode(path: &Path, mode: u32) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set permissions of {}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Builds a folder atomically: `fill` writes into a fresh temporary folder beside `dest`,
/// which then replaces `dest` (an existing `dest` is moved aside first and removed after).
/// If `fill` fails, `dest` is untouched and the temporary folder is removed.
pub fn write_dir_atomic(dest: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create folder {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".ksparse-tmp")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a temporary folder in {}", parent.display()))?;
    fill(tmp.path()).with_context(|| format!("writing {}", dest.display()))?;
    set_mode(tmp.path(), 0o755)?;
    let old = parent.join(format!(".ksparse-old-{}", std::process::id()));
    let had_old = dest.exists();
    if had_old {
        std::fs::rename(dest, &old)
            .with_context(|| format!("cannot move {} aside", dest.display()))?;
    }
    let tmp_path = tmp.keep();
    if let Err(e) = std::fs::rename(&tmp_path, dest) {
        if had_old {
            let _ = std::fs::rename(&old, dest);
        }
        let _ = std::fs::remove_dir_all(&tmp_path);
        return Err(e).with_context(|| format!("cannot rename into {}", dest.display()));
    }
    if had_old {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("cannot remove the previous {}", old.display()))?;
    }
    Ok(())
}

/// Writes a float32 matrix as `.npy` (C order), atomically.
pub fn write_npy(path: &Path, m: &Array2<f32>) -> Result<()> {
    write_atomic(path, |w| Ok(m.write_npy(w)?))
}

/// Reads a float32 2-D `.npy` matrix and rejects NaN or infinite entries, naming the row.
pub fn read_npy(path: &Path) -> Result<Array2<f32>> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let m = Array2::<f32>::read_npy(BufReader::new(f))
        .with_context(|| format!("{}: not a 2-D float32 .npy matrix", path.display()))?;
    if let Some((row, _)) = m
        .rows()
        .into_iter()
        .enumerate()
        .find(|(_, r)| r.iter().any(|x| !x.is_finite()))
    {
        bail!("{}: row {row} contains NaN or Inf", path.display());
    }
    Ok(m)
}

/// The id list that belongs beside a vectors file: `X.npy` → `X.ids.txt`.
pub fn ids_path(vectors: &Path) -> PathBuf {
    vectors.with_extension("ids.txt")
}

/// Writes one id per line, atomically. Ids must not contain line breaks.
pub fn write_ids(path: &Path, ids: &[String]) -> Result<()> {
    if let Some(bad) = ids
        .iter()
        .position(|id| id.contains('\n') || id.contains('\r'))
    {
        bail!("id #{bad} ({:?}) contains a line break", ids[bad]);
    }
    write_atomic(path, |w| {
        for id in ids {
            writeln!(w, "{id}")?;
        }
        Ok(())
    })
}

/// Reads the ids beside a vectors file: `X.ids.txt` (one per line) or `X.ids.json`
/// (a JSON array of strings), checking that there is one id per row and none repeats.
pub fn read_ids(vectors: &Path, rows: usize) -> Result<Vec<String>> {
    let txt = ids_path(vectors);
    let json = vectors.with_extension("ids.json");
    let (path, ids): (&Path, Vec<String>) = if txt.is_file() {
        let text = std::fs::read_to_string(&txt)
            .with_context(|| format!("cannot read {}", txt.display()))?;
        (&txt, text.lines().map(str::to_string).collect())
    } else if json.is_file() {
        let text = std::fs::read_to_string(&json)
            .with_context(|| format!("cannot read {}", json.display()))?;
        let ids = serde_json::from_str(&text)
            .with_context(|| format!("{}: expected a JSON array of strings", json.display()))?;
        (&json, ids)
    } else {
        bail!(
            "no id list for {}: expected {} or {}",
            vectors.display(),
            txt.display(),
            json.display()
        );
    };
    if ids.len() != rows {
        bail!(
            "{}: {} ids for {rows} rows in {}",
            path.display(),
            ids.len(),
            vectors.display()
        );
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    for (line, id) in ids.iter().enumerate() {
        if !seen.insert(id.as_str()) {
            bail!(
                "{}: id {id:?} at entry {} appears twice",
                path.display(),
                line + 1
            );
        }
    }
    Ok(ids)
}

/// Reads a `.npy` matrix with its id list beside it and returns the rows of `want`, in
/// that order; an id without a row is an error naming the file.
pub fn read_npy_aligned(path: &Path, want: &[String]) -> Result<Array2<f32>> {
    let m = read_npy(path)?;
    let ids = read_ids(path, m.nrows())?;
    let row: std::collections::HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let mut out = Array2::zeros((want.len(), m.ncols()));
    for (i, id) in want.iter().enumerate() {
        let r = *row
            .get(id.as_str())
            .with_context(|| format!("{}: no vector for id {id:?}", path.display()))?;
        out.row_mut(i).assign(&m.row(r));
    }
    Ok(out)
}

/// Opens a text file for line reading, decompressing it when its name ends in `.gz`.
pub fn open_lines(path: &Path) -> Result<Box<dyn BufRead>> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let inner: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    };
    Ok(Box::new(BufReader::new(inner)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip_and_nan_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        let m = Array2::from_shape_vec((2, 3), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        write_npy(&p, &m).unwrap();
        assert_eq!(read_npy(&p).unwrap(), m);
        let bad = Array2::from_shape_vec((2, 1), vec![1.0, f32::NAN]).unwrap();
        write_npy(&p, &bad).unwrap();
        let err = format!("{:#}", read_npy(&p).unwrap_err());
        assert!(err.contains("row 1") && err.contains("NaN"), "{err}");
    }

    #[test]
    fn failed_write_leaves_old_file_intact() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ids.txt");
        write_ids(&p, &["a".into(), "b".into()]).unwrap();
        let r = write_atomic(&p, |w| {
            writeln!(w, "partial")?;
            bail!("disk on fire")
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a\nb\n");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temporary file left behind"
        );
    }

    #[test]
    fn folder_replacement_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("model");
        write_dir_atomic(&dest, |p| Ok(std::fs::write(p.join("a"), "1")?)).unwrap();
        let r = write_dir_atomic(&dest, |p| {
            std::fs::write(p.join("a"), "2")?;
            bail!("interrupted")
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_to_string(dest.join("a")).unwrap(), "1");
        write_dir_atomic(&dest, |p| Ok(std::fs::write(p.join("b"), "3")?)).unwrap();
        assert!(!dest.join("a").exists() && dest.join("b").exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temporary folders left behind"
        );
    }

    #[test]
    fn ids_are_checked_against_rows() {
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path().join("x.npy");
        write_ids(&ids_path(&v), &["a".into(), "a".into()]).unwrap();
        assert!(format!("{:#}", read_ids(&v, 2).unwrap_err()).contains("twice"));
        assert!(format!("{:#}", read_ids(&v, 3).unwrap_err()).contains("2 ids for 3 rows"));
    }
}
