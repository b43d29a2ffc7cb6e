//! A progress line on a terminal's stderr, redrawn in place with `\r`:
//! `checked / total records (percent), rate`. Drawn only when stderr is a
//! terminal; on a pipe (or a log file) it writes nothing. Hand-written:
//! `accessctl` stays light.

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

/// One progress line on stderr.
pub struct ProgressLine {
    what: &'static str,
    started: Instant,
    /// The width drawn last, to blank what a shorter line leaves.
    drawn: usize,
    on_terminal: bool,
}

impl ProgressLine {
    /// A line about `what` ("checked"), drawn only if stderr is a terminal
    /// and `wanted`.
    pub fn on_stderr(what: &'static str, wanted: bool) -> Self {
        Self {
            what,
            started: Instant::now(),
            drawn: 0,
            on_terminal: wanted && io::stderr().is_terminal(),
        }
    }

    /// Redraws the line: `done` of `total` records.
    pub fn update(&mut self, done: u64, total: u64) {
        if !self.on_terminal {
            return;
        }
        let text = render(self.what, done, total, self.started.elapsed());
        let pad = self.drawn.saturating_sub(text.len());
        self.drawn = text.len();
        let mut err = io::stderr().lock();
        let _ = write!(err, "\r{text}{:pad$}", "");
        let _ = err.flush();
    }

    /// Blanks the line, so what follows starts on a clean one.
    pub fn clear(&mut self) {
        if !self.on_terminal || self.drawn == 0 {
            return;
        }
        let mut err = io::stderr().lock();
        let _ = write!(err, "\r{:width$}\r", "", width = self.drawn);
        let _ = err.flush();
        self.drawn = 0;
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.clear();
    }
}

/// `1,234,000 / 5,000,000 records checked (24%), 81,200 records/s`.
pub fn render(what: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let percent = if total == 0 {
        100
    } else {
        (u128::from(done.min(total)) * 100 / u128::from(total)) as u64
    };
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        format!(", {} records/s", thousands((done as f64 / secs) as u64))
    } else {
        String::new()
    };
    format!(
        "{} / {} records {what} ({percent}%){rate}",
        thousands(done),
        thousands(total)
    )
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_count_total_percent_and_rate() {
        assert_eq!(
            render("checked", 250_000, 1_000_000, Duration::from_secs(2)),
            "250,000 / 1,000,000 records checked (25%), 125,000 records/s"
        );
        assert_eq!(
            render("checked", 0, 0, Duration::ZERO),
            "0 / 0 records checked (100%)"
        );
        // More than counted at the start (the log grew): never past 100 %.
        assert_eq!(
            render("checked", 12, 10, Duration::from_millis(500)),
            "12 / 10 records checked (100%), 24 records/s"
        );
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }

    #[test]
    fn nothing_is_drawn_off_a_terminal() {
        // Under `cargo test` stderr may or may not be a terminal; not
        // wanted, it never draws.
        let mut line = ProgressLine::on_stderr("checked", false);
        line.update(1, 2);
        assert_eq!(line.drawn, 0);
    }
}
