//! Flag groups that several commands share, the value parsers that check every number
//! where it enters, and the flag hints added to the library's typed errors.

use std::path::Path;

use anyhow::Result;
use clap::Args;

use ksparse::base::MAX_HIDDEN;
use ksparse::embed::Embedder;
use ksparse::encoder::Hidden;
use ksparse::io::{IoError, Wait};

/// The embedding model and how it runs.
#[derive(Args)]
pub struct ModelArgs {
    /// Model: a sentence-transformers folder, a name under models/ (e.g. all-MiniLM-L6-v2),
    /// or a Hugging Face id in the local cache.
    // Required; `eval --index` lifts that (the folder names its model), hence the Option.
    #[arg(long, required = true)]
    pub model: Option<String>,
    /// Texts per batch (inputs are sorted by length first, so padding stays small; one
    /// batch runs per thread). 16 measured fastest on SciFact passages with MiniLM.
    #[arg(long, value_parser = positive_usize, default_value_t = 16)]
    pub batch_size: usize,
    /// Truncate inputs at this many tokens (default: the model's max_seq_length).
    #[arg(long, value_parser = positive_usize)]
    pub max_seq_length: Option<usize>,
}

impl ModelArgs {
    /// The model as given (clap requires it wherever these flags are not lifted).
    pub fn name(&self) -> &str {
        self.model.as_deref().expect("--model is required")
    }

    /// Loads the model, truncating inputs at --max-seq-length when given.
    pub fn load(&self) -> Result<Embedder> {
        let mut e = Embedder::load(self.name())?;
        if let Some(n) = self.max_seq_length {
            e.set_max_seq_length(n)?;
        }
        tracing::info!(model = %e.model_dir().path.display(), dim = e.dim(), max_seq_length = e.max_seq_length(), "model loaded");
        Ok(e)
    }
}

/// Width, code length and training length of an encoder (`train`, `build`).
#[derive(Args)]
pub struct EncoderShapeArgs {
    /// Latents h: a number, or a multiple of the input dimension such as 4d.
    #[arg(long, value_parser = width, default_value = "4d")]
    pub hidden: Hidden,
    /// Active latents per code.
    #[arg(long, value_parser = positive_usize, default_value_t = 32)]
    pub k: usize,
    /// Passes over the data (100 with lr 5e-4 beat 50 with 1e-3 and 200 with 3e-4 on
    /// SciFact's training queries at h = 4d, k = 32).
    #[arg(long, value_parser = positive_usize, default_value_t = 100)]
    pub epochs: usize,
}

/// One writer at a time: what a writing command does when another holds the lock.
#[derive(Args)]
pub struct LockArgs {
    /// Wait for another writer of the same index or search folder to finish instead of
    /// failing at once (the error names the process that holds the lock).
    #[arg(long)]
    wait: bool,
}

impl LockArgs {
    /// What the library does when the lock is held.
    pub fn wait(&self) -> Wait {
        if self.wait {
            Wait::Yes
        } else {
            Wait::No
        }
    }

    /// `e`, with the flag that queues behind the other writer when one held the lock.
    pub fn hint(&self, e: anyhow::Error) -> anyhow::Error {
        let locked = cause::<IoError>(&e).is_some_and(|io| matches!(io, IoError::Locked { .. }));
        if locked && !self.wait {
            e.context("another writer holds the lock: pass --wait to wait for it")
        } else {
            e
        }
    }
}

/// `e`, naming `flag` when the library refused `path`, the folder given by that flag, as
/// not one of its own.
pub fn output_hint(e: anyhow::Error, path: &Path, flag: &str) -> anyhow::Error {
    match cause::<IoError>(&e) {
        Some(IoError::NotOurs { path: refused, .. }) if refused == path => {
            let hint = format!("cannot replace {flag} {}", path.display());
            e.context(hint)
        }
        _ => e,
    }
}

/// The library's typed error of type `E` behind `e`, if any.
pub fn cause<E: std::error::Error + 'static>(e: &anyhow::Error) -> Option<&E> {
    e.chain().find_map(|c| c.downcast_ref::<E>())
}

/// `--rescore R` re-ranks the top R ≥ `--top` hits (0 = off).
pub fn check_rescore(rescore: usize, top: usize) -> Result<()> {
    if rescore > 0 && rescore < top {
        anyhow::bail!("--rescore {rescore} must be 0 (off) or at least --top {top}");
    }
    Ok(())
}

// clap value parsers: every number is checked where it enters, so NaN, infinities and
// values out of a flag's range never reach a computation or a config file.

/// A finite float.
fn finite_f32(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("{s} is not a finite number")),
        Err(_) => Err(format!("{s:?} is not a number")),
    }
}

/// A finite float ≥ 0 (a weight, a noise level).
pub fn non_negative_f32(s: &str) -> Result<f32, String> {
    let v = finite_f32(s)?;
    if v < 0.0 {
        return Err(format!("{s} must be ≥ 0"));
    }
    Ok(v.abs())
}

/// A finite float > 0 (a learning rate, a temperature).
pub fn positive_f32(s: &str) -> Result<f32, String> {
    let v = finite_f32(s)?;
    if v <= 0.0 {
        return Err(format!("{s} must be > 0"));
    }
    Ok(v)
}

/// A fraction in [0, 1).
pub fn fraction_f32(s: &str) -> Result<f32, String> {
    let v = non_negative_f32(s)?;
    if v >= 1.0 {
        return Err(format!("{s} must be in [0, 1)"));
    }
    Ok(v)
}

/// A count of at least 1.
pub fn positive_usize(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("0 is not allowed: give at least 1".to_string()),
        Ok(v) => Ok(v),
        Err(_) => Err(format!("{s:?} is not a whole number ≥ 1")),
    }
}

/// An encoder width of at least one latent (a number or a multiple of d such as 4d), at
/// most the widest codes files hold.
pub fn width(s: &str) -> Result<Hidden, String> {
    match s.trim().parse::<Hidden>()? {
        Hidden::Latents(0) | Hidden::TimesDim(0) => {
            Err(format!("{s:?} is no width: give at least 1 latent"))
        }
        Hidden::Latents(n) | Hidden::TimesDim(n) if n > MAX_HIDDEN => Err(format!(
            "{s:?} is wider than the {MAX_HIDDEN} latents codes files hold"
        )),
        h => Ok(h),
    }
}
