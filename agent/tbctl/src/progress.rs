//! Progress of the long operations (restart, backup, recover, restore-drill, wait-ready,
//! start): one line per replica with its current step and the elapsed time. On a terminal
//! (stdout and stderr both, without `--json`) the lines are live (indicatif) and redrawn in
//! place; otherwise each change is one plain line, `[  12.5 s] replica 1: step`, for logs and
//! Ansible. Always on stderr: stdout holds the result alone.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::output;

/// How often a live line redraws its spinner and elapsed time.
const TICK_MS: u64 = 200;
const LIVE_TEMPLATE: &str = "{spinner} [{elapsed_precise}] {prefix}: {wide_msg}";

/// Live lines only where a person watches: both streams on a terminal, no `--json`.
fn live() -> bool {
    !output::json() && std::io::stderr().is_terminal() && std::io::stdout().is_terminal()
}

pub struct Progress {
    started: Instant,
    lines: Vec<Line>,
    // Kept so that the bars stay drawn together until the progress ends.
    _multi: Option<MultiProgress>,
}

struct Line {
    label: String,
    shown: Option<String>,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// One line per label ("replica 0"), in order; live or plain as the output allows.
    pub fn new(labels: impl IntoIterator<Item = String>) -> Progress {
        let multi = live().then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        let style = ProgressStyle::with_template(LIVE_TEMPLATE).expect("a valid template");
        let lines = labels
            .into_iter()
            .map(|label| {
                let bar = multi.as_ref().map(|multi| {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(style.clone());
                    bar.set_prefix(label.clone());
                    bar.enable_steady_tick(Duration::from_millis(TICK_MS));
                    bar
                });
                Line {
                    label,
                    shown: None,
                    bar,
                }
            })
            .collect();
        Progress {
            started: Instant::now(),
            lines,
            _multi: multi,
        }
    }

    /// Line `index` now shows `step`: redrawn live, or printed once per change.
    pub fn update(&mut self, index: usize, step: &str) {
        let started = self.started;
        let line = &mut self.lines[index];
        if line.shown.as_deref() == Some(step) {
            return;
        }
        match &line.bar {
            Some(bar) => bar.set_message(step.to_string()),
            None => {
                let elapsed_s = started.elapsed().as_secs_f64();
                eprintln!("[{elapsed_s:6.1} s] {}: {step}", line.label);
            }
        }
        line.shown = Some(step.to_string());
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Progress {
    /// The live lines stay on screen with their last step (success or not) and stop ticking.
    fn drop(&mut self) {
        let mut live = false;
        for line in &self.lines {
            if let Some(bar) = &line.bar {
                bar.abandon();
                live = true;
            }
        }
        if live {
            // indicatif leaves the cursor at the end of the last line: what follows starts on
            // a line of its own.
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_only_on_change() {
        // Under the test harness stdout is captured: never a terminal, so the lines are plain.
        let mut progress = Progress::new(["replica 0".to_string(), "replica 1".to_string()]);
        assert!(progress.lines.iter().all(|line| line.bar.is_none()));
        progress.update(1, "copying");
        progress.update(1, "copying");
        assert_eq!(progress.lines[1].shown.as_deref(), Some("copying"));
        assert_eq!(progress.lines[0].shown, None);
    }
}
