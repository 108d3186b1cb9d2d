//! File I/O shared by every stage: atomic writes, folder replacement, writer locks,
//! checksummed JSON, `.npy` matrices and id lists.
//!
//! Every file ksparse writes goes to a temporary file in the target folder first, is
//! fsynced, then renamed over the target, so a crash or an error never leaves a
//! half-written file where a complete one is expected. Folders are built the same way
//! and swapped in whole ([`dir`]); folders that change in place are guarded by a writer
//! lock ([`lock`]). What ksparse reads back is verified: JSON files it writes carry a
//! checksum ([`write_json_checked`] / [`read_json_checked`]), binary files carry their
//! own CRCs.

pub mod dir;
pub mod fault;
pub mod lock;

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ndarray::Array2;
use ndarray_npy::{ReadNpyExt, WriteNpyExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use dir::{write_dir_atomic, FolderKind};
pub use lock::{Wait, WriterLock};

/// Errors of reading, writing and locking files, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The file or folder does not exist.
    #[error("{}: not found", path.display())]
    Missing {
        /// What was looked for.
        path: PathBuf,
    },
    /// An operating-system error other than "not found".
    #[error("{}: {what}: {source}", path.display())]
    Os {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS's reason.
        source: std::io::Error,
    },
    /// The file is not UTF-8 text.
    #[error("{}: not UTF-8 text (line {line})", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// First line with an invalid byte, from 1.
        line: usize,
    },
    /// The file is not the JSON it should be.
    #[error("{}: invalid {what}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What the file should hold.
        what: &'static str,
        /// Why it does not.
        reason: String,
    },
    /// The content does not match its stored checksum: the file was damaged or edited.
    #[error("{}: checksum mismatch (stored {stored}, content {actual}): the file was damaged or edited after ksparse wrote it", path.display())]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The checksum the file records.
        stored: String,
        /// The checksum of what it holds.
        actual: String,
    },
    /// Another process holds the folder's writer lock.
    #[error("{} is being changed by another writer ({holder}); wait for it to finish", path.display())]
    Locked {
        /// The locked folder.
        path: PathBuf,
        /// Who holds it, as the holder recorded.
        holder: String,
    },
    /// An output path exists and is not something ksparse wrote, so it is not replaced.
    #[error("{} exists and is not a ksparse {kind}; it was left untouched (choose another output)", path.display())]
    NotOurs {
        /// The output path.
        path: PathBuf,
        /// What would have been written there.
        kind: &'static str,
    },
}

impl IoError {
    /// An OS error at `path`, "not found" told apart from the rest.
    pub fn at(path: &Path, what: &'static str, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            Self::Missing {
                path: path.to_path_buf(),
            }
        } else {
            Self::Os {
                path: path.to_path_buf(),
                what,
                source,
            }
        }
    }
}

/// Reads a whole text file: missing, unreadable and not-UTF-8 files are told apart, and
/// a leading UTF-8 byte-order mark is dropped.
pub fn read_text(path: &Path) -> Result<String, IoError> {
    let bytes = std::fs::read(path).map_err(|e| IoError::at(path, "cannot read", e))?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_string()),
        Err(e) => Err(IoError::NotUtf8 {
            path: path.to_path_buf(),
            line: bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1,
        }),
    }
}

/// The keys of a checksummed JSON file: `{"checksum": "crc32:…", "content": {…}}`.
const CHECKSUM_KEY: &str = "checksum";
/// See [`CHECKSUM_KEY`].
const CONTENT_KEY: &str = "content";

/// CRC-32 of the canonical form of a JSON value: compact, object keys sorted. Canonical
/// so that pretty-printing or reordering does not change it.
fn json_checksum(value: &serde_json::Value) -> String {
    let bytes = serde_json::to_vec(value).expect("a JSON value serialises");
    format!("crc32:{:08x}", crc32fast::hash(&bytes))
}

/// Writes `value` atomically as pretty JSON, wrapped with a checksum over it:
/// `{"checksum": "crc32:…", "content": value}`, which [`read_json_checked`] verifies.
/// The content is nested rather than beside the checksum so that damage which removes
/// the checksum cannot leave a file that still reads.
pub fn write_json_checked<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    // Through text first, so that numbers are the ones a reader will parse back.
    let content: serde_json::Value = serde_json::from_str(&serde_json::to_string(value)?)?;
    let wrapped = serde_json::json!({
        CHECKSUM_KEY: json_checksum(&content),
        CONTENT_KEY: content,
    });
    write_atomic(path, |w| Ok(serde_json::to_writer_pretty(w, &wrapped)?))
}

/// Reads a JSON file written by [`write_json_checked`] as `what` (e.g. "index commit"),
/// verifying its checksum. A file that is not wrapped (written before ksparse recorded
/// checksums) is read as the bare value.
pub fn read_json_checked<T: DeserializeOwned>(
    path: &Path,
    what: &'static str,
) -> Result<T, IoError> {
    let text = read_text(path)?;
    let invalid = |reason: String| IoError::Invalid {
        path: path.to_path_buf(),
        what,
        reason,
    };
    let mut value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let Some(object) = value.as_object_mut() else {
        return Err(invalid("expected a JSON object".into()));
    };
    let value = match object.remove(CONTENT_KEY) {
        None => value,
        Some(content) => {
            let Some(serde_json::Value::String(stored)) = object.get(CHECKSUM_KEY) else {
                return Err(invalid("the checksum is missing or not a string".into()));
            };
            if object.len() != 1 {
                return Err(invalid(
                    "unexpected keys beside the checksum and content".into(),
                ));
            }
            let actual = json_checksum(&content);
            if *stored != actual {
                return Err(IoError::Checksum {
                    path: path.to_path_buf(),
                    stored: stored.chars().take(40).collect(),
                    actual,
                });
            }
            content
        }
    };
    serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
}

/// Writes a file atomically: `fill` writes into a temporary file beside `path`, which is
/// fsynced and renamed to `path` only if `fill` succeeds. The file gets mode 0644 less
/// the umask, like any file a program creates.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&mut File>) -> Result<()>,
) -> Result<()> {
    publish(path, fill, true)
}

/// [`write_atomic`] for a file that must not exist yet: if `path` exists (or appears
/// meanwhile), nothing is replaced and the call fails.
pub fn write_new(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&mut File>) -> Result<()>,
) -> Result<()> {
    publish(path, fill, false)
}

fn publish(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&mut File>) -> Result<()>,
    replace: bool,
) -> Result<()> {
    let dir = parent_of(path);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create folder {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .permissions(file_mode(0o644))
        .tempfile_in(&dir)
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
    fault::point("file:before-rename");
    if replace {
        tmp.persist(path)
            .with_context(|| format!("cannot rename into {}", path.display()))?;
    } else {
        tmp.persist_noclobber(path)
            .with_context(|| format!("cannot create {} (it exists already?)", path.display()))?;
    }
    sync_dir(&dir)
}

/// Prefix of the temporary files and folders ksparse writes before renaming them into
/// place; leftovers of killed runs are recognised by it.
pub const TMP_PREFIX: &str = ".tmp-ksparse";

/// The folder `path` is in ("." for a bare name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Permissions `mode` for a file or folder being created (the umask still applies).
fn file_mode(mode: u32) -> std::fs::Permissions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::Permissions::from_mode(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        std::fs::metadata(".")
            .map(|m| m.permissions())
            .expect("cwd")
    }
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
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync folder {}", dir.display()))?;
    #[cfg(not(unix))]
    let _ = dir;
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
        let text = read_text(&txt)?;
        (&txt, text.lines().map(str::to_string).collect())
    } else if json.is_file() {
        let text = read_text(&json)?;
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
    fn checked_json_round_trips_and_refuses_edits() {
        #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Thing {
            name: String,
            weight: f32,
            items: Vec<u64>,
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("thing.json");
        let thing = Thing {
            name: "é".into(),
            weight: 0.3,
            items: vec![1, u64::MAX],
        };
        write_json_checked(&p, &thing).unwrap();
        assert_eq!(read_json_checked::<Thing>(&p, "thing").unwrap(), thing);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("\"weight\": 0.3"), "{text}");
        // Reformatted (or with a BOM) it still reads; edited, it does not.
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        std::fs::write(
            &p,
            format!("\u{feff}{}", serde_json::to_string(&v).unwrap()),
        )
        .unwrap();
        assert_eq!(read_json_checked::<Thing>(&p, "thing").unwrap(), thing);
        std::fs::write(&p, text.replace("0.3", "0.4")).unwrap();
        let err = read_json_checked::<Thing>(&p, "thing").unwrap_err();
        assert!(matches!(err, IoError::Checksum { .. }), "{err}");
        // Damage that removes or renames the checksum leaves nothing that reads.
        let no_sum: String = text.lines().filter(|l| !l.contains("crc32:")).collect();
        std::fs::write(&p, no_sum).unwrap();
        assert!(read_json_checked::<Thing>(&p, "thing").is_err());
        std::fs::write(&p, text.replace("\"checksum\"", "\"checksTm\"")).unwrap();
        assert!(read_json_checked::<Thing>(&p, "thing").is_err());
        // Written before checksums existed: read as it is.
        std::fs::write(&p, r#"{"name": "a", "weight": 1, "items": []}"#).unwrap();
        assert_eq!(read_json_checked::<Thing>(&p, "thing").unwrap().name, "a");
        std::fs::write(&p, "[1]").unwrap();
        let err = read_json_checked::<Thing>(&p, "thing")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid thing"), "{err}");
    }

    #[test]
    fn text_reads_tell_missing_unreadable_and_not_utf8_apart() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        assert!(matches!(read_text(&p), Err(IoError::Missing { .. })));
        std::fs::create_dir(&p).unwrap();
        assert!(matches!(read_text(&p), Err(IoError::Os { .. })));
        std::fs::remove_dir(&p).unwrap();
        std::fs::write(&p, b"ok\nbad \xff\n").unwrap();
        let err = read_text(&p).unwrap_err().to_string();
        assert!(err.contains("not UTF-8 text (line 2)"), "{err}");
        std::fs::write(&p, "\u{feff}text").unwrap();
        assert_eq!(read_text(&p).unwrap(), "text");
    }

    #[cfg(unix)]
    #[test]
    fn published_files_get_the_usual_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let reference = dir.path().join("plain");
        std::fs::write(&reference, "").unwrap();
        let p = dir.path().join("ours");
        write_atomic(&p, |w| Ok(w.write_all(b"x")?)).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // What any program creating a file gets under this umask, less write for others.
        assert_eq!(mode(&p), mode(&reference) & 0o644);
        assert!(mode(&p) & 0o400 != 0);
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
