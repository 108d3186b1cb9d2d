//! Folders written whole: built under a temporary name beside their destination, then
//! swapped in with one atomic rename, so the path holds the old folder or the new one at
//! every instant — never nothing, never a mix.
//!
//! On Linux the swap is `renameat2(RENAME_EXCHANGE)` (the new folder and the old one
//! trade places in one step; the old one, now under the temporary name, is removed
//! after) and a first build uses `RENAME_NOREPLACE` (a folder that appeared meanwhile is
//! not overwritten). Where the file system cannot exchange, the old folder is renamed
//! aside first (a crash between the two renames then leaves the old folder under its
//! temporary name, restored by nobody: the documented exception).
//!
//! ksparse replaces only what it wrote: each folder records its kind in a marker file,
//! and an existing output that is neither empty nor a folder of the same kind is
//! refused ([`IoError::NotOurs`]). Leftovers of killed runs (temporary folders whose
//! writer is gone) are removed by the next run that writes beside them.

use std::path::Path;

use anyhow::{Context, Result};

use super::lock::{Wait, WriterLock, LOCK_FILE};
use super::{file_mode, parent_of, sync_dir, IoError, TMP_PREFIX};

/// The marker file inside every folder written by [`write_dir_atomic`]; it holds the
/// folder's kind.
pub const MARKER_FILE: &str = ".ksparse-folder";

/// A kind of folder ksparse writes whole (an encoder, a search folder, an index).
#[derive(Debug, Clone, Copy)]
pub struct FolderKind {
    /// What the folder is, as messages and the marker file say it ("encoder").
    pub name: &'static str,
    /// Recognises a folder of this kind written before markers existed.
    pub legacy: fn(&Path) -> bool,
}

impl FolderKind {
    /// Whether `dir` (an existing folder) is one of ours of this kind.
    fn owns(&self, dir: &Path) -> bool {
        match std::fs::read_to_string(dir.join(MARKER_FILE)) {
            Ok(kind) => kind.trim() == self.name,
            Err(_) => (self.legacy)(dir),
        }
    }
}

/// Checks that `dest` may be written as a folder of `kind`: it does not exist, is an
/// empty folder, or is a folder of that kind that ksparse wrote. Commands call it before
/// their long work, and [`write_dir_atomic`] again before the swap.
pub fn check_output(dest: &Path, kind: &FolderKind) -> Result<(), IoError> {
    let meta = match std::fs::symlink_metadata(dest) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(IoError::at(dest, "cannot inspect", e)),
    };
    let ours = meta.is_dir()
        && (kind.owns(dest)
            || std::fs::read_dir(dest)
                .map_err(|e| IoError::at(dest, "cannot list", e))?
                .next()
                .is_none());
    if ours {
        Ok(())
    } else {
        Err(IoError::NotOurs {
            path: dest.to_path_buf(),
            kind: kind.name,
        })
    }
}

/// Builds the folder `dest` of `kind` atomically: `fill` writes into a fresh temporary
/// folder beside `dest`, which then takes `dest`'s place in one rename. If `fill` fails,
/// `dest` is untouched and the temporary folder is removed. An existing `dest` that is
/// not ours (see [`check_output`]) is refused before `fill` runs.
pub fn write_dir_atomic(
    dest: &Path,
    kind: &FolderKind,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let parent = parent_of(dest);
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create folder {}", parent.display()))?;
    remove_leftovers(&parent);
    check_output(dest, kind)?;
    let tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .permissions(file_mode(0o755))
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a temporary folder in {}", parent.display()))?;
    // Held until the swap: tells a cleaner that this temporary folder is still being
    // written, and is the new folder's writer lock once it is in place.
    let _alive = WriterLock::acquire(tmp.path(), Wait::No)?;
    fill(tmp.path()).with_context(|| format!("writing {}", dest.display()))?;
    super::write_atomic(&tmp.path().join(MARKER_FILE), |w| {
        Ok(std::io::Write::write_all(
            w,
            format!("{}\n", kind.name).as_bytes(),
        )?)
    })?;
    check_output(dest, kind)?;
    let tmp_path = tmp.keep();
    super::fault::point("folder:before-swap");
    let swapped = swap_in(&tmp_path, dest);
    if swapped.is_err() {
        let _ = std::fs::remove_dir_all(&tmp_path);
    }
    let old = swapped?;
    super::fault::point("folder:after-swap");
    sync_dir(&parent)?;
    if let Some(old) = old {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("cannot remove the previous {}", old.display()))?;
    }
    Ok(())
}

/// Moves the finished folder `tmp` to `dest`. Returns where the replaced folder now is
/// (to be removed), if there was one.
pub fn swap_in(tmp: &Path, dest: &Path) -> Result<Option<std::path::PathBuf>> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        let exists = dest.exists();
        let flags = if exists {
            RenameFlags::EXCHANGE
        } else {
            RenameFlags::NOREPLACE
        };
        match renameat_with(CWD, tmp, CWD, dest, flags) {
            Ok(()) => return Ok(exists.then(|| tmp.to_path_buf())),
            // The file system cannot exchange: fall back to two renames below.
            Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {}
            Err(e) => {
                return Err(std::io::Error::from(e)).with_context(|| {
                    format!("cannot move {} into {}", tmp.display(), dest.display())
                })
            }
        }
    }
    swap_by_two_renames(tmp, dest)
}

/// The portable swap: the old folder aside, the new one in.
fn swap_by_two_renames(tmp: &Path, dest: &Path) -> Result<Option<std::path::PathBuf>> {
    let old = dest.exists().then(|| {
        let mut name = tmp.as_os_str().to_owned();
        name.push("-old");
        std::path::PathBuf::from(name)
    });
    if let Some(old) = &old {
        std::fs::rename(dest, old)
            .with_context(|| format!("cannot move {} aside", dest.display()))?;
        super::fault::point("folder:between-renames");
    }
    if let Err(e) = std::fs::rename(tmp, dest) {
        if let Some(old) = &old {
            let _ = std::fs::rename(old, dest);
        }
        return Err(e).with_context(|| format!("cannot rename into {}", dest.display()));
    }
    Ok(old)
}

/// Seconds after which an unlocked temporary entry is taken for a leftover (an entry
/// younger than this may be one whose writer has not yet taken its lock).
const LEFTOVER_AGE_S: u64 = 600;

/// Removes temporary folders (and files) of killed runs in `dir`: a temporary folder
/// whose writer lock nobody holds, or any temporary entry older than
/// [`LEFTOVER_AGE_S`] with no lock. Best effort: what cannot be removed stays.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Older releases named their temporary folders `.ksparse-tmp*` / `.ksparse-old-*`.
        if !(name.starts_with(TMP_PREFIX)
            || name.starts_with(".ksparse-tmp")
            || name.starts_with(".ksparse-old-"))
        {
            continue;
        }
        let path = entry.path();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > LEFTOVER_AGE_S);
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            let dead = match std::fs::File::open(path.join(LOCK_FILE)) {
                Ok(f) => f.try_lock().is_ok(),
                Err(_) => old,
            };
            if dead {
                tracing::info!(
                    "removing {}, left by a run that did not finish",
                    path.display()
                );
                let _ = std::fs::remove_dir_all(&path);
            }
        } else if old {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THING: FolderKind = FolderKind {
        name: "thing",
        legacy: |dir| dir.join("thing.txt").exists(),
    };

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn folder_replacement_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("model");
        write_dir_atomic(&dest, &THING, |p| Ok(std::fs::write(p.join("a"), "1")?)).unwrap();
        let r = write_dir_atomic(&dest, &THING, |p| {
            std::fs::write(p.join("a"), "2")?;
            anyhow::bail!("interrupted")
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_to_string(dest.join("a")).unwrap(), "1");
        write_dir_atomic(&dest, &THING, |p| Ok(std::fs::write(p.join("b"), "3")?)).unwrap();
        assert!(!dest.join("a").exists() && dest.join("b").exists());
        assert_eq!(
            names(dir.path()),
            ["model"],
            "temporary folders left behind"
        );
        assert_eq!(
            std::fs::read_to_string(dest.join(MARKER_FILE)).unwrap(),
            "thing\n"
        );
    }

    #[test]
    fn what_ksparse_did_not_write_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        // A foreign folder, a file, a folder of another kind: refused, untouched.
        let foreign = dir.path().join("photos");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::write(foreign.join("cat.jpg"), "meow").unwrap();
        let file = dir.path().join("notes.txt");
        std::fs::write(&file, "keep me").unwrap();
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join(MARKER_FILE), "encoder\n").unwrap();
        for dest in [&foreign, &file, &other] {
            let err = write_dir_atomic(dest, &THING, |_| Ok(())).unwrap_err();
            assert!(
                matches!(err.downcast_ref::<IoError>(), Some(IoError::NotOurs { .. })),
                "{err:#}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(foreign.join("cat.jpg")).unwrap(),
            "meow"
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
        // An empty folder and a legacy folder of the kind are replaced.
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        write_dir_atomic(&empty, &THING, |p| Ok(std::fs::write(p.join("x"), "")?)).unwrap();
        let legacy = dir.path().join("legacy");
        std::fs::create_dir(&legacy).unwrap();
        std::fs::write(legacy.join("thing.txt"), "").unwrap();
        write_dir_atomic(&legacy, &THING, |p| Ok(std::fs::write(p.join("x"), "")?)).unwrap();
        assert!(legacy.join("x").exists() && !legacy.join("thing.txt").exists());
    }

    #[test]
    fn leftovers_of_dead_writers_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join(format!("{TMP_PREFIX}dead"));
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(LOCK_FILE), "").unwrap();
        let live = dir.path().join(format!("{TMP_PREFIX}live"));
        std::fs::create_dir(&live).unwrap();
        let _held = WriterLock::acquire(&live, Wait::No).unwrap();
        let young_unlocked = dir.path().join(format!("{TMP_PREFIX}young"));
        std::fs::create_dir(&young_unlocked).unwrap();
        write_dir_atomic(&dir.path().join("out"), &THING, |_| Ok(())).unwrap();
        let left = names(dir.path());
        assert!(!left.iter().any(|n| n.ends_with("dead")), "{left:?}");
        assert!(left.iter().any(|n| n.ends_with("live")), "{left:?}");
        assert!(left.iter().any(|n| n.ends_with("young")), "{left:?}");
    }
}
