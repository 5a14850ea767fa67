//! Progress of long loops: a bar with throughput and ETA on a terminal, plain lines every tenth
//! of the way otherwise (logs, CI), and nothing when quiet.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar if stderr is a terminal, else plain lines.
    Auto,
    /// Plain lines only.
    Lines,
    /// Nothing.
    Quiet,
}

/// Progress over `total` units (batches) of one phase.
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    label: String,
    total: usize,
    done: usize,
    samples: usize,
    next_line: usize,
    start: Instant,
}

impl Progress {
    /// Starts a phase called `label`.
    pub fn new(mode: ProgressMode, label: impl Into<String>, total: usize) -> Self {
        let label = label.into();
        let terminal = mode == ProgressMode::Auto && std::io::stderr().is_terminal();
        let bar = terminal.then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed} < {eta})")
                    .expect("the template is valid")
                    .progress_chars("=> "),
            );
            bar.set_prefix(label.clone());
            bar
        });
        let lines = !terminal && mode != ProgressMode::Quiet;
        Self { bar, lines, label, total, done: 0, samples: 0, next_line: 1, start: Instant::now() }
    }

    /// One unit done, covering `samples` samples; `message` is shown beside the bar.
    pub fn step(&mut self, samples: usize, message: impl FnOnce() -> String) {
        self.done += 1;
        self.samples += samples;
        let rate = self.samples as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{} {rate:.1} samples/s", message()));
            bar.inc(1);
        } else if self.lines && self.done * 10 >= self.next_line * self.total {
            let eta = (self.total - self.done) as f64 * self.start.elapsed().as_secs_f64() / self.done as f64;
            eprintln!("{:>12} {}/{} {} {rate:.1} samples/s, eta {eta:.0} s", self.label, self.done, self.total, message());
            while self.done * 10 >= self.next_line * self.total {
                self.next_line += 1;
            }
        }
    }

    /// Ends the phase.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
