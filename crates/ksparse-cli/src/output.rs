//! What the commands show: results on standard output (a reader that stops early is no
//! error), and progress of the long stages on standard error.

use std::cell::RefCell;
use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

use ksparse::eval::Evaluation;
use ksparse::io::write_atomic;
use ksparse::pipeline::Stage;

/// Standard output for results. A reader that stops early (`ksparse search … | head`)
/// closes the pipe; the output then ends quietly instead of failing the command.
pub struct Stdout {
    w: std::io::BufWriter<std::io::StdoutLock<'static>>,
    closed: bool,
}

impl Stdout {
    pub fn new() -> Self {
        Self {
            w: std::io::BufWriter::new(std::io::stdout().lock()),
            closed: false,
        }
    }

    /// Writes `text`; false once the reader has gone (what follows is dropped).
    pub fn write(&mut self, text: &str) -> Result<bool> {
        if self.closed {
            return Ok(false);
        }
        match self.w.write_all(text.as_bytes()) {
            Ok(()) => Ok(true),
            Err(e) => self.failed(e),
        }
    }

    /// Writes `text` and a line break; false once the reader has gone.
    pub fn line(&mut self, text: &str) -> Result<bool> {
        Ok(self.write(text)? && self.write("\n")?)
    }

    fn failed(&mut self, e: std::io::Error) -> Result<bool> {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            self.closed = true;
            Ok(false)
        } else {
            Err(anyhow::Error::new(e).context("cannot write to standard output"))
        }
    }

    /// Flushes the output (a reader that has gone is not an error).
    pub fn finish(mut self) -> Result<()> {
        if !self.closed {
            if let Err(e) = self.w.flush() {
                self.failed(e)?;
            }
        }
        Ok(())
    }
}

/// Prints `text` as it is to standard output through [`Stdout`].
pub fn print_text(text: &str) -> Result<()> {
    let mut out = Stdout::new();
    out.write(text)?;
    out.finish()
}

/// Prints `text` and a line break to standard output through [`Stdout`].
pub fn print_line(text: &str) -> Result<()> {
    let mut out = Stdout::new();
    out.line(text)?;
    out.finish()
}

/// Prints `value` as indented JSON and a line break.
pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    print_line(&serde_json::to_string_pretty(value)?)
}

/// Prints an evaluation: JSON with `extra` fields added, or a table.
pub fn print_eval(e: &Evaluation, json: bool, extra: serde_json::Value) -> Result<()> {
    if json {
        let mut v = serde_json::json!({ "mean": e.mean, "queries": e.queries });
        if let (Some(obj), serde_json::Value::Object(x)) = (v.as_object_mut(), extra) {
            obj.extend(x);
        }
        print_json(&v)
    } else {
        print_line(&format!(
            "queries     {}\nNDCG@10     {:.4}\nRecall@100  {:.4}\nMRR@10      {:.4}",
            e.queries, e.mean.ndcg_at_10, e.mean.recall_at_100, e.mean.mrr_at_10
        ))
    }
}

/// Writes a benchmark's report.json and report.md into `dir` and prints one of them.
pub fn write_report(
    dir: &Path,
    report: &impl serde::Serialize,
    markdown: &str,
    json: bool,
) -> Result<()> {
    write_atomic(&dir.join("report.json"), |w| {
        Ok(serde_json::to_writer_pretty(w, report)?)
    })?;
    write_atomic(&dir.join("report.md"), |w| {
        Ok(w.write_all(markdown.as_bytes())?)
    })?;
    if json {
        print_json(report)
    } else {
        print_line(markdown)
    }
}

/// How long a run without a terminal stays quiet between two progress lines.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// Progress of the long stages on standard error: a bar on a terminal; elsewhere (a log
/// file, CI, nohup) a line through the log every [`LOG_EVERY`] — stage, done/total, rate,
/// ETA — so that a long run is never silent. Each stage that did work ends with a line of
/// its time.
pub struct Progress {
    terminal: bool,
    current: RefCell<Option<Current>>,
}

/// The stage in progress.
struct Current {
    stage: Stage,
    bar: Option<ProgressBar>,
    started: Instant,
    logged: Instant,
    done: usize,
}

impl Progress {
    pub fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            current: RefCell::new(None),
        }
    }

    /// Runs `f`, which logs, without the bar drawn over what it writes.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        let bar = self.current.borrow().as_ref().and_then(|c| c.bar.clone());
        match bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }
}

impl ksparse::pipeline::Progress for Progress {
    fn start(&self, stage: Stage, total: usize) {
        self.finish();
        let bar = self.terminal.then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_message(stage.to_string());
            bar
        });
        let now = Instant::now();
        *self.current.borrow_mut() = Some(Current {
            stage,
            bar,
            started: now,
            logged: now,
            done: 0,
        });
    }

    fn update(&self, done: usize, total: usize) {
        let mut current = self.current.borrow_mut();
        let Some(c) = current.as_mut() else {
            return;
        };
        c.done = done;
        match &c.bar {
            Some(bar) => {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
            None if c.logged.elapsed() >= LOG_EVERY => {
                c.logged = Instant::now();
                tracing::info!("{}: {}", c.stage, status(done, total, c.started.elapsed()));
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(c) = self.current.borrow_mut().take() {
            if let Some(bar) = c.bar {
                bar.finish_and_clear();
            }
            if c.done == 0 {
                return;
            }
            let secs = c.started.elapsed().as_secs_f64();
            tracing::info!(
                done = c.done,
                secs = %format!("{secs:.1}"),
                rate = %format!("{:.1}/s", c.done as f64 / secs),
                "{} finished",
                c.stage
            );
        }
    }
}

/// `done` of `total` units after `elapsed`: count, share, rate and time left.
fn status(done: usize, total: usize, elapsed: Duration) -> String {
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
    if total == 0 {
        return format!("{done} done, {rate:.1}/s");
    }
    let share = 100.0 * done as f64 / total as f64;
    let left = if rate > 0.0 {
        clock(total.saturating_sub(done) as f64 / rate)
    } else {
        "unknown".to_string()
    };
    format!("{done}/{total} ({share:.0} %), {rate:.1}/s, ETA {left}")
}

/// `secs` as hours, minutes and seconds ("1h 05m", "4m 30s", "12s").
fn clock(secs: f64) -> String {
    let s = secs.round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s:02}s"),
        (h, m, _) => format!("{h}h {m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_give_share_rate_and_time_left() {
        let line = status(250, 1000, Duration::from_secs(50));
        assert_eq!(line, "250/1000 (25 %), 5.0/s, ETA 2m 30s");
        assert_eq!(status(7, 0, Duration::from_secs(2)), "7 done, 3.5/s");
        assert!(status(0, 10, Duration::from_secs(31)).ends_with("ETA unknown"));
        assert_eq!(clock(12.4), "12s");
        assert_eq!(clock(3900.0), "1h 05m");
    }
}
