//! Input data: BEIR-layout collections (corpus, queries, qrels) and plain text files.
//!
//! A BEIR folder holds `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`,
//! `text`) and `qrels/<split>.tsv` (`query-id corpus-id score`, header first). Each file
//! may also be gzip-compressed (`corpus.jsonl.gz`). Errors name the file and line.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
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

/// One of N deterministic parts of a collection, so that N machines can each embed,
/// encode or index 1/N of a corpus and together cover it exactly once: document `id`
/// belongs to part `FNV-1a-64(id) mod N`. The part depends on the id alone — not on the
/// file's order, its other documents or the machine — so a document lands in the same part
/// on every run, and parts can be exported one by one into one engine collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This part, 0 ≤ index < count.
    index: usize,
    /// Parts in all, ≥ 1.
    count: usize,
}

impl Shard {
    /// Part `index` (from 0) of `count`; `None` unless `index < count`.
    pub fn new(index: usize, count: usize) -> Option<Self> {
        (index < count).then_some(Self { index, count })
    }

    /// Parts in all.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether document `id` belongs to this part.
    pub fn holds(&self, id: &str) -> bool {
        // FNV-1a, 64 bits: stable across releases and platforms (unlike std's hasher).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in id.as_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h % self.count as u64 == self.index as u64
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `I/N`: part I (from 0) of N.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("{s:?} is not a shard: write I/N, part I (counted from 0) of N parts, e.g. 0/3")
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        Self::new(index, count).ok_or_else(|| {
            format!(
                "shard {s}: the part must be below the number of parts (0/{count} … {}/{count})",
                count.saturating_sub(1)
            )
        })
    }
}

impl std::fmt::Display for Shard {
    /// `I/N`, as parsed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Texts {
    /// The entries that belong to `shard`, in file order.
    pub fn shard(self, shard: Shard) -> Texts {
        let mut out = Texts::default();
        for ((id, text), title) in self.ids.into_iter().zip(self.texts).zip(self.titles) {
            if shard.holds(&id) {
                out.ids.push(id);
                out.texts.push(text);
                out.titles.push(title);
            }
        }
        out
    }
}

/// Relevance judgements: query id → (doc id → graded relevance).
pub type Qrels = HashMap<String, HashMap<String, i32>>;

/// The lines of a text file, numbered from 1 (see [`text_lines`]).
pub struct TextLines {
    reader: Box<dyn BufRead>,
    path: PathBuf,
    line: usize,
    done: bool,
}

/// Opens a text file (gzip-compressed when its name ends in `.gz`) for reading line by
/// line. Each item is (line number from 1, line without its `\n` / `\r\n`); a UTF-8 byte
/// order mark at the start of the file is skipped. Errors name the file: a missing file
/// is "not found", one that cannot be opened or read is "cannot read" with the system's
/// reason, and a line that is not valid UTF-8 is "not UTF-8 (line N)".
pub fn text_lines(path: &Path) -> Result<TextLines> {
    let reader = open_lines(path).map_err(|e| match e.downcast_ref::<std::io::Error>() {
        Some(io) if io.kind() == std::io::ErrorKind::NotFound => {
            anyhow!("{} not found", path.display())
        }
        Some(io) => anyhow!("cannot read {}: {io}", path.display()),
        None => e,
    })?;
    Ok(TextLines {
        reader,
        path: path.to_path_buf(),
        line: 0,
        done: false,
    })
}

impl Iterator for TextLines {
    type Item = Result<(usize, String)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.line += 1;
        let n = self.line;
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => {
                self.done = true;
                None
            }
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                }
                if n == 1 && buf.starts_with(b"\xEF\xBB\xBF") {
                    buf.drain(..3);
                }
                match String::from_utf8(buf) {
                    Ok(line) => Some(Ok((n, line))),
                    Err(_) => {
                        self.done = true;
                        Some(Err(anyhow!(
                            "{}: not UTF-8 (line {n})",
                            self.path.display()
                        )))
                    }
                }
            }
            Err(e) => {
                self.done = true;
                Some(Err(anyhow!(
                    "cannot read {} (line {n}): {e}",
                    self.path.display()
                )))
            }
        }
    }
}

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
    for line in text_lines(path)? {
        let (n, line) = line?;
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
        out.texts.push(document_text(title, text));
        out.titles.push(title.to_string());
        out.ids.push(id);
    }
    Ok(out)
}

/// The text embedded for a document: its title, a space and its text, trimmed (what every
/// stage that embeds a document — `build`, `eval`, the server — uses).
pub fn document_text(title: &str, text: &str) -> String {
    format!("{title} {text}").trim().to_string()
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
    for line in text_lines(path)? {
        let (n, line) = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.ids.push((n - 1).to_string());
        out.texts.push(line.trim().to_string());
        out.titles.push(String::new());
    }
    Ok(out)
}

/// Reads a qrels TSV (`query-id corpus-id score`, tab-separated, optional header line).
pub fn read_qrels(path: &Path) -> Result<Qrels> {
    let mut qrels: Qrels = HashMap::new();
    for line in text_lines(path)? {
        let (n, line) = line?;
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
    /// The qrels file they were read from (named in evaluation errors).
    pub qrels_path: PathBuf,
}

impl Dataset {
    /// Loads `dir` with the qrels of `split` (e.g. `test`), keeps only the judged queries,
    /// and checks that every judged query and document exists and that at least one query
    /// has a relevant document (grade ≥ 1), without which there is nothing to evaluate.
    pub fn load(dir: &Path, split: &str) -> Result<Self> {
        if !dir.is_dir() {
            bail!("dataset folder {} not found", dir.display());
        }
        let corpus = read_jsonl(&find_file(dir, "corpus.jsonl")?)?;
        let all_queries = read_jsonl(&find_file(dir, "queries.jsonl")?)?;
        let qrels_path = find_file(&dir.join("qrels"), &format!("{split}.tsv"))?;
        let qrels = read_qrels(&qrels_path)?;
        if !qrels.values().any(|docs| docs.values().any(|&g| g > 0)) {
            bail!(
                "{}: no query is judged (no judgement with a score ≥ 1), so there is nothing to evaluate",
                qrels_path.display()
            );
        }
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
            qrels_path,
        })
    }
}

/// Label-free training queries cut from a corpus: for each document, one short text of
/// its own (its title, or one sentence of a passage of several) and the document's row.
/// Where a document offers both, one of them is drawn (seeded), so the queries mix the
/// two shapes users type: headline-like and sentence-like. Text without titles or
/// sentence punctuation (older collections) gives a run of [`SPAN_WORDS`] consecutive
/// words instead, from a passage at least twice as long; a document with none of these
/// gives no query. The document keeps its full text as the positive: a trained loss then
/// learns how a short text relates to the passage it came from (see `encoder::loss`'s
/// `distill` term), not an exact match.
pub fn pseudo_queries(corpus: &Texts, seed: u64) -> (Texts, Vec<usize>) {
    use rand::{Rng, SeedableRng};
    /// Sentences outside this many words are headings or run-ons, not queries.
    const WORDS: std::ops::RangeInclusive<usize> = 4..=64;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = Texts::default();
    let mut rows = Vec::new();
    for (row, (text, title)) in corpus.texts.iter().zip(&corpus.titles).enumerate() {
        let title = title.trim();
        let body = text.strip_prefix(title).unwrap_or(text).trim();
        let sentences: Vec<&str> = split_sentences(body)
            .into_iter()
            .filter(|s| WORDS.contains(&s.split_whitespace().count()))
            .collect();
        let mut candidates: Vec<&str> = Vec::new();
        if title.split_whitespace().count() >= 2 {
            candidates.push(title);
        }
        if split_sentences(body).len() >= 2 {
            candidates.extend(sentences);
        }
        let words: Vec<&str> = body.split_whitespace().collect();
        let pick = if !candidates.is_empty() {
            candidates[rng.random_range(0..candidates.len())].to_string()
        } else if words.len() >= 2 * SPAN_WORDS {
            let start = rng.random_range(0..=words.len() - SPAN_WORDS);
            words[start..start + SPAN_WORDS].join(" ")
        } else {
            continue;
        };
        out.ids.push(corpus.ids[row].clone());
        out.texts.push(pick);
        out.titles.push(String::new());
        rows.push(row);
    }
    (out, rows)
}

/// Words of a pseudo-query cut from unpunctuated text (the length of a typical query).
pub const SPAN_WORDS: usize = 10;

/// `text` cut after each '.', '?' or '!' that is followed by whitespace; pieces trimmed,
/// empty ones dropped.
fn split_sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let ends = matches!(c, '.' | '?' | '!')
            && chars.peek().is_none_or(|&(_, next)| next.is_whitespace());
        if ends {
            out.push(text[start..i + 1].trim());
            start = i + 1;
        }
    }
    out.push(text[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::io::write_test_file as write;

    #[test]
    fn shards_split_ids_into_disjoint_parts_that_cover_them() {
        let ids: Vec<String> = (0..3000).map(|i| format!("doc-{i}")).collect();
        let shards: Vec<Shard> = (0..3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        let mut sizes = [0usize; 3];
        for id in &ids {
            let holders: Vec<usize> = (0..3).filter(|&s| shards[s].holds(id)).collect();
            assert_eq!(holders.len(), 1, "{id} in {holders:?}");
            sizes[holders[0]] += 1;
        }
        assert!(sizes.iter().all(|&n| (900..1100).contains(&n)), "{sizes:?}");
        // The part is a property of the id, fixed across releases.
        assert!("1/1".parse::<Shard>().is_err() && "0/1".parse::<Shard>().unwrap().holds("x"));
        assert_eq!(
            (0..4).find(|&i| Shard { index: i, count: 4 }.holds("4983")),
            Some(fnv_part("4983", 4))
        );
        for bad in ["3/3", "1", "a/3", "0/0", "-1/3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let texts = Texts {
            ids: ids[..10].to_vec(),
            texts: vec![String::new(); 10],
            titles: vec![String::new(); 10],
        };
        let total: usize = shards.iter().map(|&s| texts.clone().shard(s).len()).sum();
        assert_eq!(total, 10);
    }

    /// FNV-1a-64 mod n, from its definition (offset basis and prime of the 64-bit variant).
    fn fnv_part(id: &str, n: u64) -> usize {
        let h = id.bytes().fold(14695981039346656037u64, |h, b| {
            (h ^ b as u64).wrapping_mul(1099511628211)
        });
        (h % n) as usize
    }

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
    fn a_leading_byte_order_mark_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "corpus.jsonl",
            "\u{feff}{\"_id\":\"a\",\"text\":\"x\"}\r\n{\"_id\":\"b\",\"text\":\"y\"}\n",
        );
        let t = read_texts(&d.path().join("corpus.jsonl")).unwrap();
        assert_eq!(t.ids, ["a", "b"]);
        write(
            d.path(),
            "q.tsv",
            "\u{feff}query-id\tcorpus-id\tscore\nq\ta\t1\n",
        );
        assert_eq!(read_qrels(&d.path().join("q.tsv")).unwrap()["q"]["a"], 1);
        // Without a header, the first judgement's query id loses the mark too.
        write(d.path(), "q.tsv", "\u{feff}q\ta\t2\n");
        assert_eq!(read_qrels(&d.path().join("q.tsv")).unwrap()["q"]["a"], 2);
        write(d.path(), "t.txt", "\u{feff}first\n");
        assert_eq!(
            read_texts(&d.path().join("t.txt")).unwrap().texts,
            ["first"]
        );
    }

    #[test]
    fn unreadable_input_is_named_by_kind() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("corpus.jsonl");
        std::fs::write(
            &p,
            b"{\"_id\":\"a\",\"text\":\"x\"}\n{\"_id\":\"b\",\"text\":\"\xff\"}\n",
        )
        .unwrap();
        let e = format!("{:#}", read_texts(&p).unwrap_err());
        assert!(
            e.contains("corpus.jsonl") && e.contains("not UTF-8 (line 2)"),
            "{e}"
        );
        std::fs::write(d.path().join("q.tsv"), b"q\t\xfe\t1\n").unwrap();
        let e = format!("{:#}", read_qrels(&d.path().join("q.tsv")).unwrap_err());
        assert!(e.contains("not UTF-8 (line 1)"), "{e}");

        let e = format!(
            "{:#}",
            read_qrels(&d.path().join("absent.tsv")).unwrap_err()
        );
        assert!(e.contains("absent.tsv not found"), "{e}");
        // A folder opens but cannot be read.
        let e = format!("{:#}", read_qrels(d.path()).unwrap_err());
        assert!(e.contains("cannot read") && !e.contains("not found"), "{e}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let locked = d.path().join("locked.tsv");
            std::fs::write(&locked, "q\ta\t1\n").unwrap();
            std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
            // Skipped where permissions do not apply (running as root).
            if std::fs::read(&locked).is_err() {
                let e = format!("{:#}", read_qrels(&locked).unwrap_err());
                assert!(e.contains("cannot read") && e.contains("ermission"), "{e}");
            }
        }
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
        // Judgements, but none relevant: nothing to evaluate.
        write(
            d.path(),
            "qrels/test.tsv",
            "query-id\tcorpus-id\tscore\nq1\td1\t0\n",
        );
        let e = format!("{:#}", Dataset::load(d.path(), "test").err().unwrap());
        assert!(
            e.contains("test.tsv") && e.contains("no query is judged"),
            "{e}"
        );
        write(d.path(), "qrels/test.tsv", "query-id\tcorpus-id\tscore\n");
        let e = format!("{:#}", Dataset::load(d.path(), "test").err().unwrap());
        assert!(e.contains("no query is judged"), "{e}");
    }

    #[test]
    fn pseudo_queries_take_a_title_or_a_sentence_of_the_document() {
        let corpus = Texts {
            ids: vec!["a".into(), "b".into(), "c".into(), "d".into(), "e".into()],
            texts: vec![
                "Heart failure in mice. The left ventricle grows after stress. Mice were studied for six weeks.".into(),
                "One sentence alone with no title at all.".into(),
                "Short. Too short here.".into(),
                "Lone title here Only one sentence follows the title here.".into(),
                "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w17 w18 w19 w20".into(),
            ],
            titles: vec![
                "Heart failure in mice.".into(),
                String::new(),
                String::new(),
                "Lone title here".into(),
                String::new(),
            ],
        };
        let (q, rows) = pseudo_queries(&corpus, 0);
        // b: one sentence of 8 words, no title; c: sentences under four words; e: no
        // punctuation, so a run of 10 words.
        assert_eq!(rows, vec![0, 3, 4]);
        assert_eq!(q.ids, vec!["a", "d", "e"]);
        let span: Vec<&str> = q.texts[2].split(' ').collect();
        assert_eq!(span.len(), SPAN_WORDS);
        let first: usize = span[0][1..].parse().unwrap();
        let want: Vec<String> = (first..first + SPAN_WORDS)
            .map(|i| format!("w{i}"))
            .collect();
        assert_eq!(span, want);
        assert_eq!(q.texts[1], "Lone title here");
        assert!(
            [
                "Heart failure in mice.",
                "The left ventricle grows after stress.",
                "Mice were studied for six weeks."
            ]
            .contains(&q.texts[0].as_str()),
            "{:?}",
            q.texts[0]
        );
        assert_eq!(pseudo_queries(&corpus, 0).0.texts, q.texts, "seeded");
        assert_eq!(
            split_sentences("It is 3.5 mm. Why? Yes!  "),
            vec!["It is 3.5 mm.", "Why?", "Yes!"]
        );
    }
}
