//! Input data: BEIR-layout collections (corpus, queries, qrels) and plain text files.
//!
//! A BEIR folder holds `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`,
//! `text`) and `qrels/<split>.tsv` (`query-id corpus-id score`, header first). Each file
//! may also be gzip-compressed (`corpus.jsonl.gz`). Errors name the file and line.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::io::open_lines;

/// Texts with their ids, in file order (a corpus, a query set, or lines of a text file).
#[derive(Debug, Clone, Default)]
pub struct Texts {
    /// External ids, unique.
    pub ids: Vec<String>,
    /// The text to embed for each id (for a corpus: title + " " + text, trimmed).
    pub texts: Vec<String>,
    /// Titles (empty for queries and plain text); shown in search results.
    pub titles: Vec<String>,
}

impl Texts {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Relevance judgements: query id → (doc id → graded relevance).
pub type Qrels = HashMap<String, HashMap<String, i32>>;

/// Finds `name` or `name.gz` inside `dir`.
pub fn find_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let plain = dir.join(name);
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    bail!(
        "{} not found (expected the BEIR layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv)",
        plain.display()
    )
}

fn id_of(v: &Value, path: &Path, line: usize) -> Result<String> {
    match v.get("_id") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => bail!("{}:{line}: missing or empty \"_id\"", path.display()),
    }
}

fn str_field<'a>(v: &'a Value, field: &str, path: &Path, line: usize) -> Result<&'a str> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(_) => bail!("{}:{line}: \"{field}\" is not a string", path.display()),
    }
}

/// Reads a JSONL file of `{"_id", "title"?, "text"}` records. The text to embed is
/// `title + " " + text`, trimmed (the BEIR / MTEB convention).
pub fn read_jsonl(path: &Path) -> Result<Texts> {
    let mut out = Texts::default();
    let mut seen = HashSet::new();
    for (i, line) in open_lines(path)?.lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("{}:{n}: cannot read line", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{n}: invalid JSON", path.display()))?;
        let id = id_of(&v, path, n)?;
        if !seen.insert(id.clone()) {
            bail!("{}:{n}: duplicate _id {id:?}", path.display());
        }
        let title = str_field(&v, "title", path, n)?;
        let text = str_field(&v, "text", path, n)?;
        out.texts.push(format!("{title} {text}").trim().to_string());
        out.titles.push(title.to_string());
        out.ids.push(id);
    }
    Ok(out)
}

/// Reads texts to embed from a BEIR `corpus.jsonl` / `queries.jsonl` (by the `.jsonl` or
/// `.jsonl.gz` name) or from a plain text file with one passage per line, whose ids are
/// the 0-based line numbers of its non-empty lines.
pub fn read_texts(path: &Path) -> Result<Texts> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if name.ends_with(".jsonl") || name.ends_with(".jsonl.gz") {
        return read_jsonl(path);
    }
    let mut out = Texts::default();
    for (i, line) in open_lines(path)?.lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: not UTF-8 text", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        out.ids.push(i.to_string());
        out.texts.push(line.trim().to_string());
        out.titles.push(String::new());
    }
    Ok(out)
}

/// Reads a qrels TSV (`query-id corpus-id score`, tab-separated, optional header line).
pub fn read_qrels(path: &Path) -> Result<Qrels> {
    let mut qrels: Qrels = HashMap::new();
    for (i, line) in open_lines(path)?.lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("{}:{n}: cannot read line", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        if n == 1 && cols.first().is_some_and(|c| c.trim() == "query-id") {
            continue;
        }
        let (q, d, s) = match cols.as_slice() {
            [q, d, s] => (q.trim(), d.trim(), s.trim()),
            // TREC qrels form: query 0 doc score.
            [q, _, d, s] => (q.trim(), d.trim(), s.trim()),
            _ => bail!(
                "{}:{n}: expected 3 tab-separated columns (query-id, corpus-id, score), got {}",
                path.display(),
                cols.len()
            ),
        };
        let score: i32 = s
            .parse()
            .with_context(|| format!("{}:{n}: score {s:?} is not an integer", path.display()))?;
        if q.is_empty() || d.is_empty() {
            bail!("{}:{n}: empty query-id or corpus-id", path.display());
        }
        qrels
            .entry(q.to_string())
            .or_default()
            .insert(d.to_string(), score);
    }
    Ok(qrels)
}

/// A BEIR collection: corpus, queries and the qrels of one split.
pub struct Dataset {
    /// Documents.
    pub corpus: Texts,
    /// Queries that have judgements in the split (in `queries.jsonl` order).
    pub queries: Texts,
    /// Judgements of the split.
    pub qrels: Qrels,
}

impl Dataset {
    /// Loads `dir` with the qrels of `split` (e.g. `test`), keeps only the judged queries,
    /// and checks that every judged query and document exists.
    pub fn load(dir: &Path, split: &str) -> Result<Self> {
        if !dir.is_dir() {
            bail!("dataset folder {} not found", dir.display());
        }
        let corpus = read_jsonl(&find_file(dir, "corpus.jsonl")?)?;
        let all_queries = read_jsonl(&find_file(dir, "queries.jsonl")?)?;
        let qrels_path = find_file(&dir.join("qrels"), &format!("{split}.tsv"))?;
        let qrels = read_qrels(&qrels_path)?;
        let doc_ids: HashSet<&str> = corpus.ids.iter().map(String::as_str).collect();
        let query_ids: HashSet<&str> = all_queries.ids.iter().map(String::as_str).collect();
        let sorted: BTreeMap<_, _> = qrels.iter().collect();
        for (q, docs) in sorted {
            if !query_ids.contains(q.as_str()) {
                bail!(
                    "{}: query-id {q:?} is not in queries.jsonl",
                    qrels_path.display()
                );
            }
            if let Some(d) = docs.keys().find(|d| !doc_ids.contains(d.as_str())) {
                bail!(
                    "{}: corpus-id {d:?} (query {q:?}) is not in corpus.jsonl",
                    qrels_path.display()
                );
            }
        }
        let mut queries = Texts::default();
        for i in 0..all_queries.len() {
            if qrels.contains_key(&all_queries.ids[i]) {
                queries.ids.push(all_queries.ids[i].clone());
                queries.texts.push(all_queries.texts[i].clone());
                queries.titles.push(String::new());
            }
        }
        Ok(Self {
            corpus,
            queries,
            qrels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::io::write_test_file as write;

    #[test]
    fn corpus_text_is_title_plus_text() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "corpus.jsonl", "{\"_id\":\"a\",\"title\":\"T\",\"text\":\"body \"}\n{\"_id\":7,\"title\":\"\",\"text\":\"x\"}\n");
        let t = read_texts(&d.path().join("corpus.jsonl")).unwrap();
        assert_eq!(t.ids, ["a", "7"]);
        assert_eq!(t.texts, ["T body", "x"]);
    }

    #[test]
    fn errors_name_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "corpus.jsonl",
            "{\"_id\":\"a\",\"text\":\"x\"}\n{\"text\":\"y\"}\n",
        );
        let e = format!(
            "{:#}",
            read_texts(&d.path().join("corpus.jsonl")).unwrap_err()
        );
        assert!(e.contains("corpus.jsonl:2") && e.contains("_id"), "{e}");
        write(d.path(), "q.tsv", "query-id\tcorpus-id\tscore\n1\ta\tx\n");
        let e = format!("{:#}", read_qrels(&d.path().join("q.tsv")).unwrap_err());
        assert!(e.contains("q.tsv:2") && e.contains("integer"), "{e}");
    }

    #[test]
    fn plain_text_ids_are_line_numbers() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "t.txt", "first\n\n  second  \n");
        let t = read_texts(&d.path().join("t.txt")).unwrap();
        assert_eq!(t.ids, ["0", "2"]);
        assert_eq!(t.texts, ["first", "second"]);
    }

    #[test]
    fn dataset_checks_qrels_ids() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "corpus.jsonl",
            "{\"_id\":\"d1\",\"text\":\"x\"}\n",
        );
        write(
            d.path(),
            "queries.jsonl",
            "{\"_id\":\"q1\",\"text\":\"x\"}\n{\"_id\":\"q2\",\"text\":\"y\"}\n",
        );
        write(
            d.path(),
            "qrels/test.tsv",
            "query-id\tcorpus-id\tscore\nq1\td1\t2\n",
        );
        let ds = Dataset::load(d.path(), "test").unwrap();
        assert_eq!(ds.queries.ids, ["q1"]);
        assert_eq!(ds.qrels["q1"]["d1"], 2);
        write(
            d.path(),
            "qrels/test.tsv",
            "query-id\tcorpus-id\tscore\nq1\tmissing\t1\n",
        );
        let e = format!("{:#}", Dataset::load(d.path(), "test").err().unwrap());
        assert!(
            e.contains("missing") && e.contains("not in corpus.jsonl"),
            "{e}"
        );
    }
}
