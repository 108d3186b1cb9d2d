//! Evaluation: turn search hits into a ranked run and score it against qrels.

pub mod metrics;
pub mod plot;
pub mod report;

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use ndarray::Array2;

pub use metrics::{evaluate, Evaluation, Metrics, Run};

use crate::data::Dataset;
use crate::encoder::scoring::ScoringMode;
use crate::encoder::SparseEncoder;
use crate::io::{open_lines, write_atomic};
use crate::search::{dense::FlatIndex, sparse::SparseIndex, Hit};
use rayon::prelude::*;

/// Documents retrieved per query for evaluation (Recall@100 needs 100).
pub const EVAL_DEPTH: usize = 100;

/// Builds a run from per-query hits. With `ignore_identical_ids` (the BEIR convention for
/// collections whose queries are also documents), a hit whose doc id equals the query id
/// is dropped.
pub fn run_from_hits(
    query_ids: &[String],
    doc_ids: &[String],
    hits: &[Vec<Hit>],
    ignore_identical_ids: bool,
) -> Run {
    query_ids
        .iter()
        .zip(hits)
        .map(|(q, hs)| {
            let list = hs
                .iter()
                .map(|h| (doc_ids[h.doc as usize].clone(), h.score as f64))
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
    Ok(score_hits(dataset, &hits, ignore_identical_ids))
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
    let codes = encoder.encode(&rows(corpus), corpus.nrows(), k);
    let index = SparseIndex::new(&codes, encoder.hidden);
    let q = rows(queries);
    let d = encoder.dim;
    Ok(modes
        .iter()
        .map(|&mode| {
            let hits: Vec<Vec<Hit>> = (0..queries.nrows())
                .into_par_iter()
                .map(|i| index.search(&encoder.query(&q[i * d..(i + 1) * d], k, mode), EVAL_DEPTH))
                .collect();
            score_hits(dataset, &hits, ignore_identical_ids)
        })
        .collect())
}

/// The run made of the dataset's queries' hits, and its evaluation.
pub(crate) fn score_hits(
    dataset: &Dataset,
    hits: &[Vec<Hit>],
    ignore_identical_ids: bool,
) -> (Evaluation, Run) {
    let run = run_from_hits(
        &dataset.queries.ids,
        &dataset.corpus.ids,
        hits,
        ignore_identical_ids,
    );
    (evaluate(&dataset.qrels, &run), run)
}

/// Writes a run in TREC format (`qid Q0 docid rank score tag`), ranked, atomically.
pub fn write_trec_run(path: &Path, run: &Run, tag: &str) -> Result<()> {
    let mut qids: Vec<&String> = run.keys().collect();
    qids.sort();
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

/// Reads a TREC run file (`qid Q0 docid rank score tag`, whitespace-separated).
pub fn read_trec_run(path: &Path) -> Result<Run> {
    let mut run = Run::new();
    for (i, line) in open_lines(path)?.lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("{}:{n}: cannot read line", path.display()))?;
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
        run.entry(cols[0].to_string())
            .or_default()
            .push((cols[2].to_string(), score));
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
    fn identical_ids_can_be_dropped() {
        let hits = vec![vec![Hit { doc: 0, score: 1.0 }, Hit { doc: 1, score: 0.5 }]];
        let ids = ["q1".to_string(), "d".to_string()];
        let run = run_from_hits(&["q1".into()], &ids, &hits, true);
        assert_eq!(run["q1"], vec![("d".to_string(), 0.5)]);
        assert_eq!(
            run_from_hits(&["q1".into()], &ids, &hits, false)["q1"].len(),
            2
        );
    }
}
