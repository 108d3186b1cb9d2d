//! Scoring modes: how a query becomes a sparse query over document codes z_d.
//!
//! | mode | query terms | score | cost per query |
//! |---|---|---|---|
//! | `symmetric` | z_q (k terms, ≥ 0) | z_q · z_d | k postings lists |
//! | `symmetric:m` | z_q with m active latents | z_q · z_d | m postings lists |
//! | `reconstruction` | u = W_decᵀ q (all h terms, any sign) | u · z_d = q · (x̂_d − b_pre) | one h × d mat-vec + all lists |
//! | `projected:m` | the m largest positive entries of u | partial u · z_d | mat-vec + m lists |
//! | `two-stage:R` | z_q, then u on the top R | u · z_d over the symmetric top R | k lists + R · k dot products of length d |
//! | `two-stage-dense:R` | z_q, then q on the top R | q · x_d (int8) over the symmetric top R | k lists + R dot products of length d |
//!
//! `reconstruction` ranks exactly as q · x̂_d (q · b_pre is the same for every document),
//! so it approaches dense search as the reconstruction improves; `projected:m` trades
//! some of that for an O(m) query. `symmetric:m` keeps document codes at k but lets the
//! query use m > k latents: more of a relevant document's latents are then shared with
//! the query (on SciFact's training queries, m = 4k raised NDCG@10 by about 0.04 at k = 32).
//!
//! `two-stage:R` gets nearly all of `reconstruction`'s quality at nearly `symmetric`'s
//! cost: the index returns its exact top R for the symmetric query (over the weights it
//! stores), and only those R documents are re-ranked by u · z_d, their exact f32 codes
//! read from the forward index. A search for `top` hits re-ranks the top max(R, top). Only the
//! entries of u that the candidates' codes use are computed (one d-long dot product each,
//! at most R · k). `two-stage-dense:R` re-ranks by the documents' own dense vectors
//! instead, where they are kept (one byte per dimension): dense quality for the
//! candidates the sparse index found, at the price of storing the vectors. A search runs
//! a [`QueryPlan`]: the sparse query, then [`QueryPlan::finish`], so no engine can forget
//! the second stage.

use std::fmt;
use std::str::FromStr;

use super::SparseEncoder;
use crate::base::{dot, top_indices, Hit, SparseCode};

/// Candidates re-ranked by `two-stage` when the mode does not name R: chosen on SciFact's
/// training queries (`docs/results/quality-selection/README.md`).
pub const DEFAULT_CANDIDATES: usize = 100;

/// A sparse query: (latent, weight) terms; weights may be negative.
pub type SparseQuery = Vec<(u32, f32)>;

/// How queries are scored against document codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoringMode {
    /// z_q · z_d, with the query code keeping this many latents (None = the documents' k).
    Symmetric(Option<usize>),
    /// (W_decᵀ q) · z_d.
    Reconstruction,
    /// The m largest positive terms of W_decᵀ q.
    Projected(usize),
    /// The symmetric top R, re-ranked by (W_decᵀ q) · z_d.
    TwoStage(usize),
    /// The symmetric top R, re-ranked by q · x_d with the documents' kept dense vectors.
    TwoStageDense(usize),
}

impl FromStr for ScoringMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "symmetric" => Ok(Self::Symmetric(None)),
            "reconstruction" => Ok(Self::Reconstruction),
            "two-stage" => Ok(Self::TwoStage(DEFAULT_CANDIDATES)),
            "two-stage-dense" => Ok(Self::TwoStageDense(DEFAULT_CANDIDATES)),
            _ => {
                let bad = || {
                    format!("unknown scoring mode {s:?}: use symmetric, symmetric:M, reconstruction, projected:M, two-stage[:R] or two-stage-dense[:R] (M, R ≥ 1)")
                };
                let (name, m) = s.split_once(':').ok_or_else(bad)?;
                let m = m.parse::<usize>().ok().filter(|&m| m > 0).ok_or_else(bad)?;
                match name {
                    "symmetric" => Ok(Self::Symmetric(Some(m))),
                    "projected" => Ok(Self::Projected(m)),
                    "two-stage" => Ok(Self::TwoStage(m)),
                    "two-stage-dense" => Ok(Self::TwoStageDense(m)),
                    _ => Err(bad()),
                }
            }
        }
    }
}

impl ScoringMode {
    /// Two-stage modes: the candidates they re-rank (R); `None` for single-stage modes.
    pub fn candidates(self) -> Option<usize> {
        match self {
            Self::TwoStage(r) | Self::TwoStageDense(r) => Some(r),
            _ => None,
        }
    }

    /// Whether the mode re-ranks by the documents' kept dense vectors (so they count among
    /// the bytes it searches).
    pub fn uses_vectors(self) -> bool {
        matches!(self, Self::TwoStageDense(_))
    }
}

impl fmt::Display for ScoringMode {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::Symmetric(None) => write!(f, "symmetric"),
            Self::Symmetric(Some(m)) => write!(f, "symmetric:{m}"),
            Self::Reconstruction => write!(f, "reconstruction"),
            Self::Projected(m) => write!(f, "projected:{m}"),
            Self::TwoStage(r) => write!(f, "two-stage:{r}"),
            Self::TwoStageDense(r) => write!(f, "two-stage-dense:{r}"),
        }
    }
}

/// A scoring mode whose m may be written as a multiple of k (`symmetric:4k`), so one
/// table can follow k.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeSpec(String);

impl ModeSpec {
    /// The scoring mode at document code length `k`.
    pub fn at(&self, k: usize) -> ScoringMode {
        let s = match self.0.split_once(':') {
            Some((name, m)) if m.ends_with('k') => {
                let times: usize = m[..m.len() - 1].parse().expect("checked when parsed");
                format!("{name}:{}", times * k)
            }
            _ => self.0.clone(),
        };
        s.parse().expect("checked when parsed")
    }
}

impl std::str::FromStr for ModeSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let spec = Self(s.to_string());
        // Validate with k = 1 (the same grammar as ScoringMode, with "Nk" allowed for m).
        let probe = match s.split_once(':') {
            Some((name, m)) if m.ends_with('k') => format!("{name}:{}", &m[..m.len() - 1]),
            _ => s.to_string(),
        };
        probe.parse::<ScoringMode>()?;
        Ok(spec)
    }
}

impl std::fmt::Display for ModeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A mode's label independent of k: `symmetric:128` at k = 32 prints as `symmetric:4k`.
pub fn mode_family(mode: &str, k: usize) -> String {
    match mode.split_once(':') {
        Some(("symmetric", m)) => match m.parse::<usize>() {
            Ok(m) if m % k == 0 => format!("symmetric:{}k", m / k),
            _ => mode.to_string(),
        },
        _ => mode.to_string(),
    }
}

/// What a second stage reads of a candidate document, from whatever engine holds it.
pub trait Forward {
    /// Document `doc`'s exact code (latent, value pairs) appended to `out`.
    fn code_into(&self, doc: u32, out: &mut Vec<(u32, f32)>);
    /// q · document `doc`'s kept dense vector; `None` when the engine keeps no vectors.
    fn dense_dot(&self, doc: u32, q: &[f32]) -> Option<f32>;
    /// Whether the engine keeps the documents' dense vectors.
    fn keeps_vectors(&self) -> bool;
}

/// How a two-stage plan re-ranks its candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rerank {
    /// By u · z_d (the reconstruction score).
    Reconstruction,
    /// By q · x_d (the kept dense vectors).
    Dense,
}

/// One query under a scoring mode, ready to run on any engine that gives an exact top-n
/// for a sparse query and reads candidates through [`Forward`]: `terms` go to the engine,
/// asking for [`depth`](Self::depth) hits, and [`finish`](Self::finish) turns them into
/// the answer.
pub struct QueryPlan<'a> {
    /// The sparse query the engine searches.
    pub terms: SparseQuery,
    /// Two-stage: the candidates to re-rank, how, and the encoder and dense query that
    /// score them.
    rerank: Option<(usize, Rerank, &'a SparseEncoder, Vec<f32>)>,
}

impl QueryPlan<'_> {
    /// Hits to ask the engine for, to answer with `top`.
    pub fn depth(&self, top: usize) -> usize {
        match &self.rerank {
            Some((candidates, ..)) => (*candidates).max(top),
            None => top,
        }
    }

    /// Whether [`finish`](Self::finish) re-ranks (two-stage) rather than truncates.
    pub fn reranks(&self) -> bool {
        self.rerank.is_some()
    }

    /// The dense query's dimension (0 for a single-stage plan, which keeps none).
    pub fn dim(&self) -> usize {
        self.rerank.as_ref().map_or(0, |r| r.3.len())
    }

    /// The best `top` of the engine's `candidates` (its exact top [`depth`](Self::depth)
    /// for `terms`, best first). Two-stage re-scores each candidate — by u · z_d with z_d
    /// its exact code and u_j = atom_j · q computed once per latent met, or by q · x_d —
    /// then sorts by score descending, ties by lower document. Fails only when the plan
    /// needs dense vectors that `docs` does not keep.
    pub fn finish(
        &self,
        mut candidates: Vec<Hit>,
        top: usize,
        docs: &impl Forward,
    ) -> Result<Vec<Hit>, MissingVectors> {
        if matches!(self.rerank, Some((_, Rerank::Dense, ..))) && !docs.keeps_vectors() {
            return Err(MissingVectors);
        }
        match &self.rerank {
            Some((_, Rerank::Reconstruction, enc, q)) => {
                // NaN marks an entry of u not computed yet (finite weights give finite dots).
                let mut u = vec![f32::NAN; enc.hidden];
                let mut code = Vec::new();
                for hit in &mut candidates {
                    code.clear();
                    docs.code_into(hit.doc, &mut code);
                    hit.score = code
                        .iter()
                        .map(|&(j, z)| {
                            let w = &mut u[j as usize];
                            if w.is_nan() {
                                *w = dot(enc.atom(j as usize), q);
                            }
                            *w * z
                        })
                        .sum();
                }
            }
            Some((_, Rerank::Dense, _, q)) => {
                for hit in &mut candidates {
                    hit.score = docs.dense_dot(hit.doc, q).ok_or(MissingVectors)?;
                }
            }
            None => {}
        }
        if self.reranks() {
            candidates.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc)));
        }
        candidates.truncate(top);
        Ok(candidates)
    }
}

/// A document an engine returned for a sparse query.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineHit {
    /// The document's external id.
    pub id: String,
    /// Σ weight · value over the query's terms as the engine computed it (after a second
    /// stage: the re-ranking score).
    pub score: f32,
    /// The document's code, when asked for: a second stage re-ranks by it.
    pub code: Option<SparseCode>,
    /// Title and text, when the engine keeps them (databases do; the index keeps them in
    /// the search folder's `docs.jsonl`).
    pub document: Option<(String, String)>,
}

/// Whatever holds codes and answers a sparse query with its exact top n — the on-disk
/// index, an exact scan in memory, or a database (Milvus, Postgres with pgvector) — so
/// that one query path ([`QueryPlan::run`]) and its second stage run on all of them.
pub trait SparseEngine: Send + Sync {
    /// Where the codes are, for messages and reports (never with credentials).
    fn name(&self) -> String;
    /// SHA-256 of the encoder the codes were made with, where the engine records it.
    fn encoder_sha256(&self) -> anyhow::Result<Option<String>>;
    /// Documents held.
    fn count(&self) -> anyhow::Result<usize>;
    /// The `depth` documents with the highest Σ weight · value over `terms` (latent,
    /// weight), best first, with what `fetch` asks for.
    fn top(
        &self,
        terms: &[(u32, f32)],
        depth: usize,
        fetch: Fetch,
    ) -> anyhow::Result<Vec<EngineHit>>;
}

/// What an engine returns with each hit besides its id and score.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fetch {
    /// The document's code ([`EngineHit::code`]), which a second stage needs.
    pub codes: bool,
    /// Its title and text ([`EngineHit::document`]), where the engine keeps them.
    pub documents: bool,
}

impl QueryPlan<'_> {
    /// The best `top` documents of `engine` for this plan: the engine's top
    /// [`depth`](Self::depth) for the terms (with their codes when the plan re-ranks),
    /// finished by [`finish`](Self::finish). Engines keep codes, not dense vectors, so
    /// `two-stage-dense` fails with [`MissingVectors`].
    /// `documents`: also fetch each hit's title and text where the engine keeps them.
    pub fn run(
        &self,
        engine: &dyn SparseEngine,
        top: usize,
        documents: bool,
    ) -> anyhow::Result<Vec<EngineHit>> {
        let fetch = Fetch {
            codes: self.reranks(),
            documents,
        };
        let mut hits = engine.top(&self.terms, self.depth(top), fetch)?;
        if !self.reranks() {
            hits.truncate(top);
            return Ok(hits);
        }
        let width = self.rerank.as_ref().map_or(0, |r| r.2.hidden);
        for h in &hits {
            match &h.code {
                None => anyhow::bail!(
                    "{} returned document {} without its code, which the second stage re-ranks by",
                    engine.name(),
                    h.id
                ),
                Some(c) if c.ids.iter().any(|&j| j as usize >= width) => anyhow::bail!(
                    "{} returned document {} with a latent beyond the encoder's {width}: the collection holds codes of another encoder",
                    engine.name(),
                    h.id
                ),
                Some(_) => {}
            }
        }
        // Candidates are numbered by the engine's rank, so ties keep the engine's order.
        let candidates = hits
            .iter()
            .enumerate()
            .map(|(i, h)| Hit {
                doc: i as u32,
                score: h.score,
            })
            .collect();
        let order = self.finish(candidates, top, &EngineDocs(&hits))?;
        let mut slots: Vec<Option<EngineHit>> = hits.into_iter().map(Some).collect();
        Ok(order
            .into_iter()
            .map(|h| {
                let mut hit = slots[h.doc as usize].take().expect("each candidate once");
                hit.score = h.score;
                hit
            })
            .collect())
    }
}

/// An engine's candidates as a second stage reads them: codes by rank, no dense vectors.
struct EngineDocs<'a>(&'a [EngineHit]);

impl Forward for EngineDocs<'_> {
    fn code_into(&self, doc: u32, out: &mut Vec<(u32, f32)>) {
        if let Some(c) = &self.0[doc as usize].code {
            out.extend(c.ids.iter().copied().zip(c.values.iter().copied()));
        }
    }

    fn dense_dot(&self, _: u32, _: &[f32]) -> Option<f32> {
        None
    }

    fn keeps_vectors(&self) -> bool {
        false
    }
}

/// A `two-stage-dense` search over documents whose dense vectors were not kept.
#[derive(Debug, thiserror::Error)]
#[error("two-stage-dense re-ranks by the documents' dense vectors, and none were kept with these documents (build with --keep-vectors)")]
pub struct MissingVectors;

impl SparseEncoder {
    /// The plan of dense query vector `q` under `mode` (`k`: the documents' code length,
    /// used by `symmetric` without its own m and by `two-stage`'s first stage).
    pub fn plan(&self, q: &[f32], k: usize, mode: ScoringMode) -> QueryPlan<'_> {
        let code_terms = |m: usize| {
            let c = self.encode_one(q, m.min(self.hidden));
            c.ids.into_iter().zip(c.values).collect()
        };
        let (terms, rerank) = match mode {
            ScoringMode::Symmetric(m) => (code_terms(m.unwrap_or(k)), None),
            ScoringMode::TwoStage(candidates) => (
                code_terms(k),
                Some((candidates, Rerank::Reconstruction, self, q.to_vec())),
            ),
            ScoringMode::TwoStageDense(candidates) => (
                code_terms(k),
                Some((candidates, Rerank::Dense, self, q.to_vec())),
            ),
            ScoringMode::Reconstruction => (
                self.latent_weights(q)
                    .into_iter()
                    .enumerate()
                    .map(|(j, w)| (j as u32, w))
                    .collect(),
                None,
            ),
            ScoringMode::Projected(m) => {
                let u = self.latent_weights(q);
                let mut terms: SparseQuery = top_indices(&u, m)
                    .into_iter()
                    .map(|j| (j, u[j as usize]))
                    .filter(|t| t.1 > 0.0)
                    .collect();
                terms.sort_unstable_by_key(|t| t.0);
                (terms, None)
            }
        };
        QueryPlan { terms, rerank }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::SparseCode;

    fn tiny() -> SparseEncoder {
        // d = 2, h = 3: atoms e1, e2, and (e1 + e2)/√2.
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let w = vec![1.0, 0.0, 0.0, 1.0, s, s];
        SparseEncoder {
            dim: 2,
            hidden: 3,
            w_enc: w.clone(),
            b_enc: vec![0.0; 3],
            w_dec: w,
            b_pre: vec![0.0; 2],
        }
    }

    #[test]
    fn modes_parse_and_print() {
        for m in [
            "symmetric",
            "symmetric:128",
            "reconstruction",
            "projected:16",
            "two-stage:50",
            "two-stage-dense:20",
        ] {
            assert_eq!(m.parse::<ScoringMode>().unwrap().to_string(), m);
        }
        assert!("projected:0".parse::<ScoringMode>().is_err());
        assert!("reconstruction:3".parse::<ScoringMode>().is_err());
        assert!("two-stage:0".parse::<ScoringMode>().is_err());
        assert_eq!(
            "two-stage".parse::<ScoringMode>().unwrap(),
            ScoringMode::TwoStage(DEFAULT_CANDIDATES)
        );
        let two_stage = |s: &str| s.parse::<ScoringMode>().unwrap();
        assert_eq!(two_stage("two-stage-dense:20").candidates(), Some(20));
        assert_eq!(two_stage("symmetric:64").candidates(), None);
        assert!(two_stage("two-stage-dense").uses_vectors());
        assert!(!two_stage("two-stage:5").uses_vectors());
        assert!("dense"
            .parse::<ScoringMode>()
            .unwrap_err()
            .contains("symmetric"));
    }

    #[test]
    fn reconstruction_score_equals_query_dot_reconstruction() {
        let enc = tiny();
        let q = [0.3f32, -0.8];
        let doc = SparseCode {
            ids: vec![0, 2],
            values: vec![0.5, 1.5],
        };
        let u = enc.plan(&q, 3, ScoringMode::Reconstruction).terms;
        let score: f32 = u
            .iter()
            .map(|&(j, w)| {
                w * doc
                    .ids
                    .iter()
                    .position(|&i| i == j)
                    .map_or(0.0, |p| doc.values[p])
            })
            .sum();
        let xhat = enc.decode(&doc);
        let dense = q[0] * xhat[0] + q[1] * xhat[1];
        assert!((score - dense).abs() < 1e-6);
        // Projected keeps only positive terms, at most m.
        let p = enc.plan(&q, 3, ScoringMode::Projected(2)).terms;
        assert_eq!(p, vec![(0, 0.3)]);
    }
}
