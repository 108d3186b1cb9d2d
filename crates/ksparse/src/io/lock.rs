//! One writer at a time: an advisory lock per folder that ksparse changes.
//!
//! Every command that changes an index or a search folder first takes the folder's writer
//! lock (`writer.lock` inside it, an OS file lock: released by the kernel when the
//! process ends, however it ends, so a killed writer never leaves a stale lock). The
//! holder writes its process id, command line and start time into the file, so a second
//! writer that is refused can say who holds it. Readers never take the lock: they read
//! committed states only (see `index`).
//!
//! A folder can be replaced while a writer waits for its lock (`ksparse build` swaps a
//! search folder in whole). The lock belongs to the folder, not to the path: after
//! taking it, a writer checks that the lock file it holds is still the one at the path
//! and otherwise starts again on the folder that is there now.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use super::IoError;

/// The lock file's name inside a locked folder.
pub const LOCK_FILE: &str = "writer.lock";

/// What to do when another process holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Fail at once, naming the holder.
    No,
    /// Block until the holder releases it.
    Yes,
}

/// A held writer lock; released on drop (or when the process ends).
#[derive(Debug)]
pub struct WriterLock {
    file: File,
}

impl WriterLock {
    /// Takes the writer lock of `dir` (an existing folder).
    pub fn acquire(dir: &Path, wait: Wait) -> Result<Self, IoError> {
        let path = dir.join(LOCK_FILE);
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| IoError::at(&path, "cannot open the writer lock", e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) if wait == Wait::Yes => {
                    tracing::info!(
                        "waiting for the writer lock of {} ({})",
                        dir.display(),
                        holder(&path)
                    );
                    file.lock()
                        .map_err(|e| IoError::at(&path, "cannot take the writer lock", e))?;
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(IoError::Locked {
                        path: dir.to_path_buf(),
                        holder: holder(&path),
                    })
                }
                Err(TryLockError::Error(e)) => {
                    return Err(IoError::at(&path, "cannot take the writer lock", e))
                }
            }
            // The folder may have been replaced while we waited: the lock is only ours if
            // the file we locked is still the one at the path.
            if same_file(&file, &path) {
                let mut lock = Self { file };
                lock.record_holder();
                return Ok(lock);
            }
        }
    }

    /// Writes who holds the lock into the file (best effort: the lock itself is what
    /// excludes other writers, the text only explains).
    fn record_holder(&mut self) {
        let args: Vec<String> = std::env::args().collect();
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let text = format!(
            "pid {} since unix time {since}: {}\n",
            std::process::id(),
            args.join(" ")
        );
        let _ = self.file.set_len(0);
        let _ = self.file.rewind();
        let _ = self.file.write_all(text.as_bytes());
    }
}

/// Whether the open `file` is the file now at `path` (same device and inode).
fn same_file(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

/// The holder's note from a lock file, for messages.
fn holder(path: &Path) -> String {
    let mut text = String::new();
    let _ = File::open(path).and_then(|mut f| f.read_to_string(&mut text));
    let text = text.trim();
    if text.is_empty() {
        "another process".to_string()
    } else {
        text.chars().take(300).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holder_named_then_admitted() {
        let dir = tempfile::tempdir().unwrap();
        let first = WriterLock::acquire(dir.path(), Wait::No).unwrap();
        let err = WriterLock::acquire(dir.path(), Wait::No).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, IoError::Locked { .. }), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        let waiter = std::thread::spawn({
            let dir = dir.path().to_path_buf();
            move || WriterLock::acquire(&dir, Wait::Yes).map(|_| ())
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "a waiting writer must block");
        drop(first);
        waiter.join().unwrap().unwrap();
        WriterLock::acquire(dir.path(), Wait::No).unwrap();
    }

    #[test]
    fn a_writer_waiting_on_a_replaced_folder_locks_the_new_one() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("f");
        std::fs::create_dir(&dir).unwrap();
        let held = WriterLock::acquire(&dir, Wait::No).unwrap();
        let waiter = std::thread::spawn({
            let dir = dir.clone();
            move || {
                let lock = WriterLock::acquire(&dir, Wait::Yes).unwrap();
                same_file(&lock.file, &dir.join(LOCK_FILE))
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        // Replace the folder by a new one while the lock is held and waited for.
        std::fs::rename(&dir, root.path().join("old")).unwrap();
        std::fs::create_dir(&dir).unwrap();
        drop(held);
        assert!(
            waiter.join().unwrap(),
            "the waiter must end on the new folder's lock"
        );
    }
}
