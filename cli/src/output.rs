//! What `accessctl` prints: aligned plain-text tables, the small formatting
//! helpers every command shares ("-" for nothing, shortened times, human
//! durations), and writing to stdout without panicking when the reader goes
//! away (`accessctl audit | head`).

use std::cell::RefCell;
use std::io::{self, Write};
use std::time::SystemTime;

/// Writing the output failed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write to standard output: {0}")]
    Write(#[source] io::Error),
    #[error("cannot format the answer as JSON: {0}")]
    Json(#[source] serde_json::Error),
}

impl OutputError {
    /// True when the reader closed the pipe: not worth an error message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Write(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// Where command output goes: stdout, or (in tests) a buffer.
#[derive(Debug, Default)]
pub struct Out {
    captured: Option<RefCell<String>>,
}

impl Out {
    pub fn stdout() -> Self {
        Self { captured: None }
    }

    /// Keeps everything written, for [`Out::captured`].
    #[cfg(test)]
    pub fn capture() -> Self {
        Self {
            captured: Some(RefCell::new(String::new())),
        }
    }

    #[cfg(test)]
    pub fn captured(&self) -> String {
        self.captured
            .as_ref()
            .map(|c| c.borrow().clone())
            .unwrap_or_default()
    }

    /// Writes `text` as is, and flushes (so `--follow` output shows up at once
    /// even through a pipe).
    pub fn emit(&self, text: &str) -> Result<(), OutputError> {
        if let Some(captured) = &self.captured {
            captured.borrow_mut().push_str(text);
            return Ok(());
        }
        let mut out = io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(OutputError::Write)
    }

    /// Writes `value` as pretty JSON followed by a newline (`--json`).
    pub fn emit_json(&self, value: &serde_json::Value) -> Result<(), OutputError> {
        let mut text = serde_json::to_string_pretty(value).map_err(OutputError::Json)?;
        text.push('\n');
        self.emit(&text)
    }
}

/// A table of aligned columns separated by two spaces; the last column is not
/// padded, so no line ends in spaces.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    min_widths: Vec<usize>,
    show_header: bool,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
            min_widths: Vec::new(),
            show_header: true,
        }
    }

    /// Columns at least this wide, so tables printed in batches (`audit
    /// --follow`) line up with each other.
    pub fn min_widths(mut self, widths: &[usize]) -> Self {
        self.min_widths = widths.to_vec();
        self
    }

    /// Leave the header line out (a later batch of the same table).
    pub fn header(mut self, show: bool) -> Self {
        self.show_header = show;
        self
    }

    /// Adds a row; missing cells print as "-", extra cells are ignored.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table, every line (header included) ending in '\n'.
    pub fn render(&self) -> String {
        self.render_indented("")
    }

    /// Same as [`Table::render`], with `indent` before every line.
    pub fn render_indented(&self, indent: &str) -> String {
        let columns = self.headers.len();
        let cell = |row: &Vec<String>, i: usize| -> String {
            match row.get(i).map(|c| sanitize(c)) {
                Some(c) if !c.is_empty() => c,
                _ => "-".to_owned(),
            }
        };
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| (0..columns).map(|i| cell(row, i)).collect())
            .collect();
        let mut widths: Vec<usize> = self
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| width(h).max(self.min_widths.get(i).copied().unwrap_or(0)))
            .collect();
        for row in &rows {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(c));
            }
        }
        let mut out = String::new();
        let headers: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        let header = self.show_header.then_some(&headers);
        for row in header.into_iter().chain(&rows) {
            out.push_str(indent);
            for (i, c) in row.iter().enumerate() {
                out.push_str(c);
                if i + 1 < columns {
                    let pad = widths[i] - width(c) + 2;
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push('\n');
        }
        out
    }
}

/// `value`, or "-" when there is none.
pub fn or_dash(value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => v.to_owned(),
        _ => "-".to_owned(),
    }
}

/// An RFC 3339 time without its fractional seconds: `2026-05-01T12:34:56Z`.
/// Anything that does not look like one is returned unchanged.
pub fn short_time(time: &str) -> String {
    let Some(dot) = time.find('.') else {
        return time.to_owned();
    };
    let fraction_end = time[dot + 1..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(time.len(), |i| dot + 1 + i);
    if fraction_end == dot + 1 || !time[..dot].contains('T') {
        return time.to_owned();
    }
    format!("{}{}", &time[..dot], &time[fraction_end..])
}

/// [`short_time`] of an optional time, "-" (or `none`) when absent.
pub fn opt_time(time: Option<&str>, none: &str) -> String {
    match time {
        Some(t) if !t.is_empty() => short_time(t),
        _ => none.to_owned(),
    }
}

/// Items joined by `sep`, or "-" when there are none.
pub fn list(items: &[String], sep: &str) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(sep)
    }
}

/// At most `max` characters of `text`, ending in "..." when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let keep = max.saturating_sub(3);
    let mut out: String = text.chars().take(keep).collect();
    out.push_str("...");
    out
}

/// A duration as people say it: `45s`, `12m`, `3h 5m`, `2d 4h`.
pub fn human_duration(secs: u64) -> String {
    let (days, hours, minutes, seconds) = (
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60,
    );
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, m) => format!("{m}m {seconds}s"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// A byte count in binary units: `512 B`, `1.5 KiB`, `12.3 MiB`, `4.0 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// How long before `now` an RFC 3339 `time` was, as `12s ago` or `3h 5m
/// ago`; the time itself (shortened) when it cannot be read, `none` when
/// absent. A time slightly ahead of `now` (clock skew) reads `just now`.
pub fn ago(time: Option<&str>, now: SystemTime, none: &str) -> String {
    let Some(time) = time.filter(|t| !t.is_empty()) else {
        return none.to_owned();
    };
    let Ok(then) = humantime::parse_rfc3339_weak(time) else {
        return short_time(time);
    };
    match now.duration_since(then) {
        Ok(elapsed) => format!("{} ago", human_duration(elapsed.as_secs())),
        Err(_) => "just now".to_owned(),
    }
}

/// Control characters (from names or details in the daemon's answer) would
/// break the table or the terminal; show them escaped.
fn sanitize(cell: &str) -> String {
    if cell.chars().any(char::is_control) {
        cell.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        cell.to_owned()
    }
}

fn width(text: &str) -> usize {
    text.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_without_trailing_spaces() {
        let mut table = Table::new(&["NAME", "STATE", "GROUPS"]);
        table.row(vec!["alice".into(), "active".into(), "research,ops".into()]);
        table.row(vec!["bo".into(), String::new(), "x".into()]);
        table.row(vec!["carol-long-name".into()]);
        assert_eq!(
            table.render(),
            "\
NAME             STATE   GROUPS
alice            active  research,ops
bo               -       x
carol-long-name  -       -
"
        );
        assert!(table.render().lines().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn batches_line_up_with_minimum_widths() {
        let batch = |rows: &[&str], header: bool| {
            let mut table = Table::new(&["SEQ", "KIND"]).min_widths(&[5]).header(header);
            for r in rows {
                table.row(vec![(*r).to_owned(), "user.add".into()]);
            }
            table.render()
        };
        assert_eq!(
            batch(&["1", "2"], true),
            "SEQ    KIND\n1      user.add\n2      user.add\n"
        );
        assert_eq!(batch(&["10"], false), "10     user.add\n");
    }

    #[test]
    fn table_indents_and_escapes_control_characters() {
        let mut table = Table::new(&["A", "B"]);
        table.row(vec!["x\ny".into(), "é".into()]);
        assert_eq!(table.render_indented("  "), "  A     B\n  x\\ny  é\n");
    }

    #[test]
    fn short_time_drops_fractions_only() {
        assert_eq!(
            short_time("2026-05-01T12:34:56.123456Z"),
            "2026-05-01T12:34:56Z"
        );
        assert_eq!(
            short_time("2026-05-01T12:34:56.5+02:00"),
            "2026-05-01T12:34:56+02:00"
        );
        assert_eq!(short_time("2026-05-01T12:34:56Z"), "2026-05-01T12:34:56Z");
        assert_eq!(short_time("v1.2"), "v1.2");
        assert_eq!(opt_time(None, "never"), "never");
    }

    #[test]
    fn helpers() {
        assert_eq!(or_dash(None), "-");
        assert_eq!(or_dash(Some("")), "-");
        assert_eq!(list(&[], ", "), "-");
        assert_eq!(list(&["a".into(), "b".into()], ", "), "a, b");
        assert_eq!(truncate("abcdef", 6), "abcdef");
        assert_eq!(truncate("abcdefg", 6), "abc...");
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(125), "2m 5s");
        assert_eq!(human_duration(3 * 3600 + 5 * 60 + 7), "3h 5m");
        assert_eq!(human_duration(2 * 86_400 + 4 * 3600 + 59), "2d 4h");
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12_900_000), "12.3 MiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn ago_reads_relative_to_now() {
        let now = humantime::parse_rfc3339("2026-05-01T12:00:00Z").expect("time");
        assert_eq!(ago(Some("2026-05-01T11:59:48Z"), now, "never"), "12s ago");
        assert_eq!(
            ago(Some("2026-05-01T09:00:00.5Z"), now, "never"),
            "2h 59m ago"
        );
        assert_eq!(ago(Some("2026-05-01T12:00:03Z"), now, "never"), "just now");
        assert_eq!(ago(None, now, "never"), "never");
        assert_eq!(ago(Some("soon"), now, "never"), "soon");
    }
}
