//! Evaluation: turn search hits into a ranked run and score it against qrels.

pub mod metrics;
pub mod plot;
pub mod report;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ndarray::Array2;

pub use metrics::{evaluate, Evaluation, Metrics, Run};

use crate::data::{text_lines, Dataset, Qrels};
use crate::embed::int8::Int8Vectors;
use crate::encoder::codes::first_non_finite;
use crate::encoder::scoring::ScoringMode;
use crate::encoder::SparseEncoder;
use crate::io::write_atomic;
use crate::search::sparse::{RowDocs, SparseIndex};
use crate::search::{dense::FlatIndex, Hit};
use rayon::prelude::*;

/// Documents retrieved per query for evaluation (Recall@100 needs 100).
pub const EVAL_DEPTH: usize = 100;

/// How a quality table's sparse rows were scored: two tables, two scorers, each saying
/// which it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Scorer {
    /// The on-disk index: exact top-k over one-byte quantised weights (what `ksparse
    /// search` and `ksparse eval` measure).
    #[serde(rename = "index (one-byte weights)")]
    Index,
    /// An in-memory exact sparse dot product over the f32 codes (what `ksparse
    /// eval-sparse` and `ksparse bench quality` measure: the encoder alone, before
    /// quantisation).
    #[serde(rename = "exact f32 codes")]
    ExactF32,
}

impl std::fmt::Display for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Index => "the on-disk index (exact top-k over one-byte quantised weights)",
            Self::ExactF32 => {
                "an exact sparse dot product over the f32 codes (in memory, before quantisation)"
            }
        })
    }
}

/// Builds a run from per-query hits, each document named by its external id: `id_of`
/// maps a hit's document number to it in the numbering of the collection that answered
/// (a row of the corpus for the in-memory engines, [`crate::index::Index::id`] for the
/// on-disk index). With `ignore_identical_ids` (the BEIR convention for collections whose
/// queries are also documents), a hit whose doc id equals the query id is dropped.
pub fn run_from_hits<'a>(
    query_ids: &[String],
    id_of: impl Fn(u32) -> &'a str,
    hits: &[Vec<Hit>],
    ignore_identical_ids: bool,
) -> Run {
    query_ids
        .iter()
        .zip(hits)
        .map(|(q, hs)| {
            let list = hs
                .iter()
                .map(|h| (id_of(h.doc).to_string(), h.score as f64))
                .filter(|(d, _)| !(ignore_identical_ids && d == q))
                .collect();
            (q.clone(), list)
        })
        .collect()
}

/// Checks that the vectors match the dataset's documents and judged queries.
fn check_shapes(dataset: &Dataset, corpus: &Array2<f32>, queries: &Array2<f32>) -> Result<()> {
    if corpus.nrows() != dataset.corpus.len() || queries.nrows() != dataset.queries.len() {
        bail!(
            "embeddings have {} corpus and {} query rows; the dataset has {} documents and {} judged queries",
            corpus.nrows(),
            queries.nrows(),
            dataset.corpus.len(),
            dataset.queries.len()
        );
    }
    if corpus.ncols() != queries.ncols() {
        bail!(
            "corpus vectors are {}-d but query vectors are {}-d",
            corpus.ncols(),
            queries.ncols()
        );
    }
    Ok(())
}

/// Dense exact search of every query over the corpus, evaluated on the dataset's qrels.
pub fn dense_exact(
    dataset: &Dataset,
    corpus: Array2<f32>,
    queries: &Array2<f32>,
    ignore_identical_ids: bool,
) -> Result<(Evaluation, Run)> {
    check_shapes(dataset, &corpus, queries)?;
    let index = FlatIndex::new(corpus);
    let hits = index.search_batch(queries, EVAL_DEPTH);
    score_hits(
        dataset,
        &hits,
        |d| corpus_id(dataset, d),
        ignore_identical_ids,
    )
}

/// Sparse exact search: documents encoded at `k`, queries turned into sparse queries by
/// `mode`, exact top 100 by the sparse dot product, evaluated on the dataset's qrels.
pub fn sparse_exact(
    dataset: &Dataset,
    corpus: &Array2<f32>,
    queries: &Array2<f32>,
    encoder: &SparseEncoder,
    k: usize,
    mode: ScoringMode,
    ignore_identical_ids: bool,
) -> Result<(Evaluation, Run)> {
    let mut all = sparse_exact_modes(
        dataset,
        corpus,
        queries,
        encoder,
        k,
        &[mode],
        ignore_identical_ids,
    )?;
    Ok(all.pop().expect("one mode"))
}

/// [`sparse_exact`] for several scoring modes over one encoding of the corpus (in
/// `modes` order).
pub fn sparse_exact_modes(
    dataset: &Dataset,
    corpus: &Array2<f32>,
    queries: &Array2<f32>,
    encoder: &SparseEncoder,
    k: usize,
    modes: &[ScoringMode],
    ignore_identical_ids: bool,
) -> Result<Vec<(Evaluation, Run)>> {
    check_shapes(dataset, corpus, queries)?;
    if corpus.ncols() != encoder.dim {
        bail!(
            "vectors are {}-d but the encoder expects {}-d",
            corpus.ncols(),
            encoder.dim
        );
    }
    let rows = |m: &Array2<f32>| m.as_standard_layout().iter().copied().collect::<Vec<f32>>();
    let corpus_rows = rows(corpus);
    let codes = encoder.encode(&corpus_rows, corpus.nrows(), k);
    if let Some(row) = first_non_finite(&codes) {
        bail!(
            "document {:?} (corpus row {row}) encodes to an infinite or NaN value (overflow: its vector is too large)",
            dataset.corpus.ids[row]
        );
    }
    let index = SparseIndex::new(&codes, encoder.hidden);
    let vectors = Int8Vectors::quantize(&corpus_rows, corpus.ncols())?;
    drop(corpus_rows);
    let docs = RowDocs {
        codes: &codes,
        vectors: Some(&vectors),
    };
    let q = rows(queries);
    let d = encoder.dim;
    modes
        .iter()
        .map(|&mode| {
            let search = |top: usize| -> Vec<Vec<Hit>> {
                (0..queries.nrows())
                    .into_par_iter()
                    .map(|i| {
                        let plan = encoder.plan(&q[i * d..(i + 1) * d], k, mode);
                        let candidates = index.search(&plan.terms, plan.depth(top));
                        plan.finish(candidates, top, &docs)
                            .expect("the corpus vectors are kept")
                    })
                    .collect()
            };
            score_at_depths(
                dataset,
                mode,
                search,
                |d| corpus_id(dataset, d),
                ignore_identical_ids,
            )
        })
        .collect()
}

/// Scores a search the way a user meets it: NDCG@10 and MRR@10 from the top 10 it
/// returns, Recall@100 (and the run) from its top 100. A single-stage search's top 10 are
/// the first 10 of its top 100, so one search serves both, as it does for a two-stage
/// search with R ≥ 100; one with R < 100 re-ranks the top max(R, hits asked for), so its
/// top 10 are searched on their own. `search(top)` gives every query's hits.
pub(crate) fn score_at_depths<'a>(
    dataset: &Dataset,
    mode: ScoringMode,
    search: impl Fn(usize) -> Vec<Vec<Hit>>,
    id_of: impl Fn(u32) -> &'a str + Copy,
    ignore_identical_ids: bool,
) -> Result<(Evaluation, Run)> {
    let (mut deep, run) = score_hits(dataset, &search(EVAL_DEPTH), id_of, ignore_identical_ids)?;
    if mode.candidates().is_some_and(|r| r < EVAL_DEPTH) {
        let (at10, _) = score_hits(dataset, &search(10), id_of, ignore_identical_ids)?;
        for (qid, m) in deep.per_query.iter_mut() {
            let top = &at10.per_query[qid];
            m.ndcg_at_10 = top.ndcg_at_10;
            m.mrr_at_10 = top.mrr_at_10;
        }
        deep.mean.ndcg_at_10 = at10.mean.ndcg_at_10;
        deep.mean.mrr_at_10 = at10.mean.mrr_at_10;
    }
    Ok((deep, run))
}

/// The external id of corpus row `row`: how the in-memory engines, which number documents
/// by corpus row, name their hits.
fn corpus_id(dataset: &Dataset, row: u32) -> &str {
    &dataset.corpus.ids[row as usize]
}

/// The run made of the dataset's queries' hits (documents named by `id_of`, see
/// [`run_from_hits`]), and its evaluation (an error when no query of the dataset is
/// judged).
pub(crate) fn score_hits<'a>(
    dataset: &Dataset,
    hits: &[Vec<Hit>],
    id_of: impl Fn(u32) -> &'a str,
    ignore_identical_ids: bool,
) -> Result<(Evaluation, Run)> {
    let run = run_from_hits(&dataset.queries.ids, id_of, hits, ignore_identical_ids);
    let qrels_name = dataset.qrels_path.display().to_string();
    let e = evaluate_checked(&dataset.qrels, &run, &qrels_name, "the search results")?;
    Ok((e, run))
}

/// [`evaluate`], refusing what would make its mean meaningless: qrels in which no query is
/// judged (no grade ≥ 1), and a run none of whose queries is judged (an empty run, or the
/// qrels of another collection). `qrels_name` and `run_name` name the two in errors.
pub fn evaluate_checked(
    qrels: &Qrels,
    run: &Run,
    qrels_name: &str,
    run_name: &str,
) -> Result<Evaluation> {
    let judged = |q: &str| qrels.get(q).is_some_and(|d| d.values().any(|&g| g > 0));
    if !qrels.keys().any(|q| judged(q)) {
        bail!("{qrels_name}: no query is judged (no judgement with a score ≥ 1), so there is nothing to evaluate");
    }
    if !run.keys().any(|q| judged(q)) {
        bail!(
            "none of the {} queries of {run_name} is judged in {qrels_name} (wrong qrels for this run?)",
            run.len()
        );
    }
    let e = evaluate(qrels, run);
    debug_assert!(e.queries > 0);
    Ok(e)
}

/// Whether `id` can be a column of a TREC run (whitespace-separated): not empty, no
/// whitespace.
pub fn trec_safe(id: &str) -> bool {
    !id.is_empty() && !id.chars().any(char::is_whitespace)
}

/// Writes a run in TREC format (`qid Q0 docid rank score tag`), ranked, atomically. An id
/// or tag that is empty or contains whitespace would shift the columns, so it is refused
/// (naming it) before anything is written.
pub fn write_trec_run(path: &Path, run: &Run, tag: &str) -> Result<()> {
    let mut qids: Vec<&String> = run.keys().collect();
    qids.sort();
    let refuse = |what: String| {
        anyhow::anyhow!(
            "cannot write the TREC run {}: {what} is empty or contains whitespace (TREC runs are whitespace-separated)",
            path.display()
        )
    };
    if !trec_safe(tag) {
        return Err(refuse(format!("the run tag {tag:?}")));
    }
    for q in &qids {
        if !trec_safe(q) {
            return Err(refuse(format!("query id {q:?}")));
        }
        if let Some((d, _)) = run[*q].iter().find(|(d, _)| !trec_safe(d)) {
            return Err(refuse(format!("document id {d:?} (query {q:?})")));
        }
        if let Some((d, s)) = run[*q].iter().find(|(_, s)| !s.is_finite()) {
            bail!(
                "cannot write the TREC run {}: query {q:?}, document {d:?} has score {s}",
                path.display()
            );
        }
    }
    write_atomic(path, |w| {
        for q in qids {
            let mut ranked = run[q].clone();
            metrics::rank(&mut ranked);
            for (i, (d, s)) in ranked.iter().enumerate() {
                writeln!(w, "{q} Q0 {d} {} {s:.6} {tag}", i + 1)?;
            }
        }
        Ok(())
    })
}

/// Reads a TREC run file (`qid Q0 docid rank score tag`, whitespace-separated). A document
/// listed twice for the same query is refused (it would be counted twice), naming both
/// lines.
pub fn read_trec_run(path: &Path) -> Result<Run> {
    let mut run = Run::new();
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for line in text_lines(path)? {
        let (n, line) = line?;
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.is_empty() {
            continue;
        }
        if cols.len() != 6 {
            bail!(
                "{}:{n}: expected 6 columns (qid Q0 docid rank score tag), got {}",
                path.display(),
                cols.len()
            );
        }
        let score: f64 = cols[4].parse().with_context(|| {
            format!(
                "{}:{n}: score {:?} is not a number",
                path.display(),
                cols[4]
            )
        })?;
        if !score.is_finite() {
            bail!("{}:{n}: score is NaN or infinite", path.display());
        }
        let (q, d) = (cols[0].to_string(), cols[2].to_string());
        if let Some(first) = seen.insert((q.clone(), d.clone()), n) {
            bail!(
                "{}:{n}: document {d:?} is listed twice for query {q:?} (first at line {first})",
                path.display()
            );
        }
        run.entry(q).or_default().push((d, score));
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trec_run_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("run.trec");
        let mut run = Run::new();
        run.insert("q".into(), vec![("a".into(), 0.25), ("b".into(), 0.75)]);
        write_trec_run(&p, &run, "t").unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "q Q0 b 1 0.750000 t\nq Q0 a 2 0.250000 t\n"
        );
        let back = read_trec_run(&p).unwrap();
        assert_eq!(back["q"].len(), 2);
    }

    #[test]
    fn a_document_listed_twice_for_a_query_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("run.trec");
        std::fs::write(
            &p,
            "q1 Q0 a 1 0.9 t\nq2 Q0 a 1 0.9 t\n\nq1 Q0 b 2 0.8 t\nq1 Q0 a 3 0.7 t\n",
        )
        .unwrap();
        let e = format!("{:#}", read_trec_run(&p).unwrap_err());
        assert!(
            e.contains("run.trec:5") && e.contains("twice") && e.contains("line 1"),
            "{e}"
        );
    }

    #[test]
    fn ids_a_trec_run_cannot_hold_are_refused_before_writing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("run.trec");
        for (q, doc, named) in [
            ("q1", "doc 1", "\"doc 1\""),
            ("q1", "doc\t2", "\"doc\\t2\""),
            ("query one", "d", "\"query one\""),
            ("q1", "", "\"\""),
        ] {
            let mut run = Run::new();
            run.insert(q.into(), vec![("fine".into(), 1.0), (doc.into(), 0.5)]);
            let e = format!("{:#}", write_trec_run(&p, &run, "t").unwrap_err());
            assert!(e.contains(named) && e.contains("whitespace"), "{e}");
            assert!(!p.exists());
        }
        let mut run = Run::new();
        run.insert("q".into(), vec![("d".into(), 1.0)]);
        assert!(write_trec_run(&p, &run, "my tag").is_err());
        assert!(!p.exists());
    }

    #[test]
    fn evaluation_over_no_judged_query_is_refused() {
        let mut qrels = Qrels::new();
        qrels.insert("q1".into(), HashMap::from([("a".to_string(), 0)]));
        let mut run = Run::new();
        run.insert("q1".into(), vec![("a".into(), 1.0)]);
        let e = format!(
            "{:#}",
            evaluate_checked(&qrels, &run, "qrels.tsv", "run.trec").unwrap_err()
        );
        assert!(
            e.contains("qrels.tsv") && e.contains("no query is judged"),
            "{e}"
        );
        qrels.insert("q2".into(), HashMap::from([("a".to_string(), 1)]));
        let e = format!(
            "{:#}",
            evaluate_checked(&qrels, &run, "qrels.tsv", "run.trec").unwrap_err()
        );
        assert!(
            e.contains("run.trec") && e.contains("qrels.tsv") && e.contains("judged"),
            "{e}"
        );
        let e = evaluate_checked(&qrels, &Run::new(), "qrels.tsv", "run.trec");
        assert!(e.is_err());
        run.insert("q2".into(), vec![("a".into(), 1.0)]);
        let e = evaluate_checked(&qrels, &run, "qrels.tsv", "run.trec").unwrap();
        assert_eq!((e.queries, e.mean.mrr_at_10), (1, 1.0));
    }

    #[test]
    fn identical_ids_can_be_dropped() {
        let hits = vec![vec![Hit { doc: 0, score: 1.0 }, Hit { doc: 1, score: 0.5 }]];
        let ids = ["q1".to_string(), "d".to_string()];
        let run = run_from_hits(&["q1".into()], |d| ids[d as usize].as_str(), &hits, true);
        assert_eq!(run["q1"], vec![("d".to_string(), 0.5)]);
        assert_eq!(
            run_from_hits(&["q1".into()], |d| ids[d as usize].as_str(), &hits, false)["q1"].len(),
            2
        );
    }
}
