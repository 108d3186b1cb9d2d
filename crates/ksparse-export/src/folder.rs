//! A search folder read as rows to export, a batch at a time.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use ksparse::base::SparseCode;
use ksparse::index::Index;
use ksparse::pipeline::{encoder_fingerprint, read_manifest, DOCS_FILE};

use crate::{Provenance, Row};

/// The live documents of a search folder as [`Row`]s, in the index's document order. The
/// index is memory-mapped and `docs.jsonl` is indexed by byte offset once (its checksum
/// verified on the way), then read a line at a time: memory holds the offsets and one
/// batch, never the corpus's texts.
pub struct FolderRows {
    provenance: Provenance,
    index: Index,
    docs: File,
    docs_path: PathBuf,
    /// Byte offset and length of each document's line in `docs.jsonl`.
    lines: HashMap<String, (u64, usize)>,
    next: u32,
}

#[derive(serde::Deserialize)]
struct DocId {
    #[serde(rename = "_id")]
    id: String,
}

#[derive(serde::Deserialize)]
struct Doc {
    #[serde(default)]
    title: String,
    #[serde(default)]
    text: String,
}

impl FolderRows {
    /// Opens search folder `dir`, checking its manifest, that its encoder is the one the
    /// manifest records, and the checksum of `docs.jsonl`.
    pub fn open(dir: &Path) -> Result<Self> {
        let manifest = read_manifest(dir)?;
        let enc_dir = dir.join("encoder");
        if encoder_fingerprint(&enc_dir)? != manifest.encoder_sha256 {
            bail!(
                "{}: the encoder's files changed after the build (checksum mismatch); rebuild the folder",
                enc_dir.display()
            );
        }
        let index = Index::open(&dir.join("index"))?;
        if index.hidden() != manifest.hidden {
            bail!(
                "{}: the index is {} latents wide, the manifest says {}: the folder was altered; rebuild it",
                dir.display(),
                index.hidden(),
                manifest.hidden
            );
        }
        let docs_path = dir.join(DOCS_FILE);
        let docs = File::open(&docs_path)
            .with_context(|| format!("cannot read {}", docs_path.display()))?;
        let mut lines = HashMap::new();
        let mut reader = BufReader::new(&docs);
        let (mut offset, mut line, mut sha) = (0u64, Vec::new(), Sha256::new());
        for number in 1.. {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .with_context(|| format!("cannot read {}", docs_path.display()))?;
            if n == 0 {
                break;
            }
            sha.update(&line);
            let doc: DocId = serde_json::from_slice(&line).with_context(|| {
                format!(
                    "{}:{number}: not a document (no \"_id\")",
                    docs_path.display()
                )
            })?;
            lines.insert(doc.id, (offset, n));
            offset += n as u64;
        }
        if let Some(want) = &manifest.docs_sha256 {
            if format!("{:x}", sha.finalize()) != *want {
                bail!(
                    "{}: SHA-256 does not match the manifest's: the file was damaged or edited; rebuild the folder",
                    docs_path.display()
                );
            }
        }
        Ok(Self {
            provenance: Provenance::of(&manifest),
            index,
            docs,
            docs_path,
            lines,
            next: 0,
        })
    }

    /// What the rows' codes were made with.
    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// Live documents.
    pub fn len(&self) -> usize {
        self.index.live()
    }

    /// Whether the folder holds no live document.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next (up to) `n` live documents; `None` after the last.
    pub fn next_batch(&mut self, n: usize) -> Result<Option<Vec<Row>>> {
        let mut rows = Vec::with_capacity(n);
        while rows.len() < n && (self.next as usize) < self.index.len() {
            let doc = self.next;
            self.next += 1;
            if self.index.is_deleted(doc) {
                continue;
            }
            let id = self.index.id(doc).to_string();
            let code = self.index.code(doc);
            let (title, text) = self.document(&id)?;
            rows.push(Row::new(id, code, title, text));
        }
        Ok((!rows.is_empty()).then_some(rows))
    }

    /// Title and text of `id` from `docs.jsonl` (empty for a document added to the index
    /// without text).
    fn document(&self, id: &str) -> Result<(String, String)> {
        let Some(&(offset, len)) = self.lines.get(id) else {
            return Ok(Default::default());
        };
        let mut line = vec![0; len];
        self.docs
            .read_exact_at(&mut line, offset)
            .with_context(|| format!("cannot read {}", self.docs_path.display()))?;
        let doc: Doc = serde_json::from_slice(&line).with_context(|| {
            format!(
                "{}: the line of document {id:?} changed while it was read",
                self.docs_path.display()
            )
        })?;
        Ok((doc.title, doc.text))
    }
}

/// The first 8 bytes of SHA-256 over a row's id, code, title and text.
pub(crate) fn digest(id: &str, code: &SparseCode, title: &str, text: &str) -> i64 {
    let mut h = Sha256::new();
    for part in [id.as_bytes(), title.as_bytes(), text.as_bytes()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    for (j, v) in code.ids.iter().zip(&code.values) {
        h.update(j.to_le_bytes());
        h.update(v.to_le_bytes());
    }
    i64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_change_with_every_part_of_a_row() {
        let code = SparseCode {
            ids: vec![1, 5],
            values: vec![0.5, 0.25],
        };
        let base = digest("a", &code, "t", "x");
        assert_eq!(base, digest("a", &code, "t", "x"));
        let mut other = code.clone();
        other.values[1] = 0.26;
        for d in [
            digest("b", &code, "t", "x"),
            digest("a", &other, "t", "x"),
            digest("a", &code, "tx", ""),
            digest("a", &code, "t", "y"),
        ] {
            assert_ne!(d, base);
        }
    }
}
