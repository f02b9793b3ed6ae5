//! JSONL rows read from outside (training data, DPO pairs, eval tasks): one JSON value per line,
//! blank lines skipped, and a line that is not JSON or does not fit skipped and reported as
//! `file:line: reason` (the first few reasons kept), so one bad row never stops a run.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::error::Result;

/// How many skipped rows keep their reason.
const REASONS_KEPT: usize = 5;

/// Rows that were skipped while reading, with the first few reasons.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BadRows {
    /// How many rows were skipped.
    pub count: usize,
    /// `file:line: reason` of the first ones.
    pub first: Vec<String>,
}

impl BadRows {
    /// Counts a skipped row of `path` at 1-based `line`, keeping its reason if among the first.
    pub fn reject(&mut self, path: &Path, line: usize, reason: impl std::fmt::Display) {
        self.count += 1;
        if self.first.len() < REASONS_KEPT {
            self.first
                .push(format!("{}:{line}: {reason}", path.display()));
        }
    }

    /// `", e.g. <first reason>"` for a message, or nothing when no row was skipped.
    pub fn example(&self) -> String {
        self.first
            .first()
            .map(|f| format!(", e.g. {f}"))
            .unwrap_or_default()
    }
}

/// Parses each non-blank line of `path` as JSON and hands it, with its 0-based line index, to
/// `parse`; a line that fails either step is counted in `bad` and skipped.
pub fn read_rows<T>(
    path: &Path,
    bad: &mut BadRows,
    mut parse: impl FnMut(usize, Value) -> std::result::Result<T, String>,
) -> Result<Vec<T>> {
    let text = crate::error::read_to_string(path)?;
    let mut rows = vec![];
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Value>(line)
            .map_err(|e| format!("invalid JSON: {e}"))
            .and_then(|value| parse(n, value));
        match parsed {
            Ok(row) => rows.push(row),
            Err(reason) => bad.reject(path, n + 1, reason),
        }
    }
    Ok(rows)
}
