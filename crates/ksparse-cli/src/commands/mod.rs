//! One module per command group: its flags (an `Args` struct per command) and the
//! function that calls the library and prints.

pub mod bench;
pub mod embed;
pub mod encode;
pub mod eval;
pub mod export;
pub mod index;
pub mod search;
pub mod serve;
pub mod train;
