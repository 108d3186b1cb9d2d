//! The ground floor: the vocabulary every stage speaks — sparse codes, search hits, top-k
//! selection, the dense dot product, the stopwatch. It imports nothing else of ksparse,
//! so any layer may use it and it never pulls a layer in.

mod code;
mod dot;
mod hit;
pub mod stopwatch;
mod topk;

pub use code::{SparseCode, MAX_HIDDEN};
pub use dot::dot;
pub use hit::{top_k, Hit};
pub use topk::{top_indices, TopK};
