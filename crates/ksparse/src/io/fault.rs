//! Fault injection for crash tests: named points in the write paths where a test can make
//! the process die as `kill -9` would (no destructors, no cleanup), so that every step of
//! a replacement or commit can be tested without relying on timing.
//!
//! Set `KSPARSE_CRASH_AT` to a point's name (see the calls of [`point`]) to abort there.
//! Unset, a point costs one cached environment lookup.

use std::sync::OnceLock;

/// The environment variable that names the point to die at.
pub const CRASH_AT_VAR: &str = "KSPARSE_CRASH_AT";

/// Aborts the process if `KSPARSE_CRASH_AT` names this point.
pub fn point(name: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    if AT
        .get_or_init(|| std::env::var(CRASH_AT_VAR).ok())
        .as_deref()
        == Some(name)
    {
        eprintln!("{CRASH_AT_VAR}: dying at {name}");
        std::process::abort();
    }
}
