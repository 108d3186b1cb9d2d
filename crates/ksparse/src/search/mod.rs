//! The baselines the sparse index is measured against: dense exact search (flat), HNSW,
//! and exact sparse search over in-memory codes.
//!
//! Every engine returns [`Hit`]s ordered by score, highest first, ties broken by the lower
//! document number, so results are deterministic and comparable across engines.

pub mod dense;
pub mod hnsw;
pub mod sparse;

pub use crate::base::{top_k, Hit};
