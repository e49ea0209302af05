//! Everything a command prints on stdout: human tables (comfy-table), key/value views and
//! check lists, or — with `--json` — exactly one JSON document.
//!
//! Colours are used only when stdout is a terminal and `NO_COLOR` is unset, so piped output
//! never carries escape codes.

use std::io::{IsTerminal, Write};

use comfy_table::{Cell, ContentArrangement, Table, presets};
use serde::Serialize;
use serde_json::Value;

/// How a check (probe check, doctor check) went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Error,
}

impl Level {
    /// Probe check levels are `info | warn | error`.
    pub fn from_probe(level: &str) -> Level {
        match level {
            "error" => Level::Error,
            "warn" | "warning" => Level::Warn,
            _ => Level::Ok,
        }
    }

    /// Raise `Ok` to `Warn`; keep `Warn` and `Error`.
    pub fn max_warn(self) -> Level {
        match self {
            Level::Ok => Level::Warn,
            other => other,
        }
    }

    fn mark(self) -> &'static str {
        match self {
            Level::Ok => "✓",
            Level::Warn => "!",
            Level::Error => "✗",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Level::Ok => GREEN,
            Level::Warn => YELLOW,
            Level::Error => RED,
        }
    }
}

const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// Where and how to print.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
    pub color: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        let color = std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none()
            && std::env::var("TERM").map(|t| t != "dumb").unwrap_or(true);
        Self { json, color }
    }

    /// Print one JSON document (pretty, with a trailing newline).
    pub fn print_json(&self, value: &impl Serialize) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(value)?;
        write_stdout(&format!("{text}\n"))
    }

    /// Print a line of human output.
    pub fn line(&self, text: impl AsRef<str>) -> anyhow::Result<()> {
        write_stdout(&format!("{}\n", text.as_ref()))
    }

    /// A confirmation such as "created environment …".
    pub fn done(&self, text: impl AsRef<str>) -> anyhow::Result<()> {
        let mark = self.paint(Level::Ok.colour(), Level::Ok.mark());
        self.line(format!("{mark} {}", text.as_ref()))
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint(BOLD, text)
    }

    pub fn dim(&self, text: &str) -> String {
        self.paint(DIM, text)
    }

    fn paint(&self, style: &str, text: &str) -> String {
        if self.color {
            format!("{style}{text}{RESET}")
        } else {
            text.to_string()
        }
    }

    /// A table with a header row; `empty` is printed instead when there are no rows.
    pub fn table(
        &self,
        headers: &[&str],
        rows: Vec<Vec<String>>,
        empty: &str,
    ) -> anyhow::Result<()> {
        if rows.is_empty() {
            return self.line(empty);
        }
        let mut table = Table::new();
        table
            .load_preset(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled);
        if !self.color {
            table.force_no_tty();
        }
        table.set_header(
            headers
                .iter()
                .map(|h| {
                    let cell = Cell::new(h);
                    if self.color {
                        cell.add_attribute(comfy_table::Attribute::Bold)
                    } else {
                        cell
                    }
                })
                .collect::<Vec<_>>(),
        );
        for row in rows {
            table.add_row(row);
        }
        // comfy-table pads the first column with a leading space; trim each line's edges.
        let rendered: String = table
            .to_string()
            .lines()
            .map(|l| {
                let l = l.trim_end();
                format!("{}\n", l.strip_prefix(' ').unwrap_or(l))
            })
            .collect();
        write_stdout(&rendered)
    }

    /// A record as aligned `key: value` lines.
    pub fn fields(&self, pairs: &[(&str, String)]) -> anyhow::Result<()> {
        let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut text = String::new();
        for (key, value) in pairs {
            let label = format!("{key}:{:pad$}", "", pad = width - key.len());
            let mut lines = value.lines();
            let first = lines.next().unwrap_or("");
            text.push_str(&format!("{} {first}\n", self.bold(&label)));
            for more in lines {
                text.push_str(&format!("{:pad$} {more}\n", "", pad = width + 1));
            }
        }
        write_stdout(&text)
    }

    /// One line of a check list: `✓ message`, then an indented detail and hint.
    pub fn check(
        &self,
        level: Level,
        message: &str,
        detail: Option<&str>,
        hint: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut text = format!("{} {message}\n", self.paint(level.colour(), level.mark()));
        if let Some(detail) = detail.filter(|d| !d.is_empty()) {
            for line in detail.lines() {
                text.push_str(&format!("    {}\n", self.dim(line)));
            }
        }
        if let Some(hint) = hint.filter(|h| !h.is_empty()) {
            text.push_str(&format!("    hint: {hint}\n"));
        }
        write_stdout(&text)
    }
}

/// Write to stdout; a closed pipe (`berth env list | head -1`) is not an error worth a message.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context("failed to write to stdout")),
    }
}

/// A JSON value for a table cell: strings bare, null as `-`, others as compact JSON.
pub fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// An optional displayable value for a table cell.
pub fn opt<T: std::fmt::Display>(value: &Option<T>) -> String {
    match value {
        Some(v) => v.to_string(),
        None => "-".into(),
    }
}

/// Pretty JSON for a `fields` view.
pub fn pretty(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::Object(map) if map.is_empty() => "{}".into(),
        other => serde_json::to_string_pretty(other).unwrap_or_else(|_| other.to_string()),
    }
}

/// A timestamp as shown in tables: RFC 3339 to the second, UTC.
pub fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}
