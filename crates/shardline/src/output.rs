//! How admin commands print: aligned tables for people by default, JSON with `--json`,
//! and a progress bar on stderr for long operations.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

/// `println!` for command output: a closed pipe (`shardline stream describe s | head`)
/// ends the output quietly instead of panicking.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!` for command output; see [`outln!`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

/// What to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON document for scripts.
    Json,
}

impl Format {
    /// `Json` when `json` is set, else `Table`.
    pub fn from_flag(json: bool) -> Format {
        if json { Format::Json } else { Format::Table }
    }
}

/// Renders `headers` and `rows` as left-aligned columns two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// `bytes` for people: `230 B`, `1.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Width of a progress bar's bar, in characters.
const PROGRESS_BAR_WIDTH: usize = 30;

/// A progress bar on stderr: redrawn in place on a terminal; elsewhere (CI logs, files)
/// one line each time another tenth is done, so the output stays readable.
#[derive(Debug)]
pub struct Progress {
    label: String,
    terminal: bool,
    started: Instant,
    tenths_shown: Option<u64>,
}

impl Progress {
    /// A bar for the operation `label` (`verifying`, say), starting now.
    pub fn new(label: &str) -> Progress {
        Progress {
            label: label.to_owned(),
            terminal: std::io::stderr().is_terminal(),
            started: Instant::now(),
            tenths_shown: None,
        }
    }

    /// Shows `done` of `total` (the bar's measure, bytes say) and `detail`.
    pub fn update(&mut self, done: u64, total: u64, detail: &str) {
        let line = progress_line(&self.label, done, total, detail, self.started.elapsed());
        let mut stderr = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(stderr, "\r{line}\x1b[K");
            let _ = stderr.flush();
        } else {
            let tenths = (done * 10).checked_div(total).unwrap_or(10);
            if self.tenths_shown != Some(tenths) {
                self.tenths_shown = Some(tenths);
                let _ = writeln!(stderr, "{line}");
            }
        }
    }

    /// Ends the bar's line.
    pub fn finish(&mut self) {
        if self.terminal {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// One rendering of a progress bar: `label [#####-----]  50%  detail  3s`.
pub fn progress_line(
    label: &str,
    done: u64,
    total: u64,
    detail: &str,
    elapsed: Duration,
) -> String {
    // Nothing to do counts as all done.
    let fraction = if total == 0 {
        1.0
    } else {
        (done.min(total) as f64) / total as f64
    };
    let filled = (fraction * PROGRESS_BAR_WIDTH as f64).round() as usize;
    format!(
        "{label} [{}{}] {:>3.0}%  {detail}  {:.0}s",
        "#".repeat(filled),
        "-".repeat(PROGRESS_BAR_WIDTH - filled),
        fraction * 100.0,
        elapsed.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned() {
        let rows = vec![vec!["CCCC".to_owned(), "D".to_owned()]];
        assert_eq!(table(&["A", "BBB"], &rows), "A     BBB\nCCCC  D\n");
    }

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(human_bytes(230), "230 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn the_bar_fills_with_the_work_done() {
        let line = progress_line("verifying", 5, 10, "1/2 segments", Duration::from_secs(3));
        assert_eq!(
            line,
            "verifying [###############---------------]  50%  1/2 segments  3s"
        );
        let empty = progress_line("verifying", 0, 0, "nothing", Duration::ZERO);
        assert!(empty.contains("100%"), "{empty}");
        let over = progress_line("x", 12, 10, "", Duration::ZERO);
        assert!(over.contains("100%"), "{over}");
    }
}
