//! Displays that can be updated in place. Inside `arwkv-kernel` a display is one marker line on
//! stdout (`ARWKV_KERNEL_DISPLAY {json}`) that the kernel turns into `display_data` /
//! `update_display_data` with a `transient.display_id`; elsewhere (CLI, exported program) it writes
//! `<dir>/<id>.html` and prints the `text/plain` part.
//!
//! Nothing here lives in a static: evcxr gives every cell its own copy of the library, so the
//! channel is the process's stdout and the environment the kernel sets.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Prefix of a display line the kernel intercepts.
pub const MARKER: &str = "ARWKV_KERNEL_DISPLAY ";

/// Environment variable the kernel sets in its evaluation process.
pub const KERNEL_ENV: &str = "ARWKV_KERNEL";

/// Where displays go outside a kernel (default `arwkv-displays` in the working directory).
pub const DISPLAY_DIR_ENV: &str = "ARWKV_DISPLAY_DIR";

/// A MIME bundle: mime type → content (JSON for `*json` types, strings otherwise).
pub type Bundle = BTreeMap<String, Value>;

/// One message on the display channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DisplayMessage {
    /// `display` (new output) or `update` (replace an earlier one).
    pub op: DisplayOp,
    /// The display id (unique per process and run).
    pub id: String,
    /// The bundle.
    pub data: Bundle,
}

/// What a display message does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisplayOp {
    /// Show a new output.
    Display,
    /// Replace every earlier output with the same id.
    Update,
    /// Clear the cell's output (`wait`: when the next output arrives).
    Clear,
}

impl DisplayMessage {
    /// The marker line for this message (no newline).
    pub fn to_line(&self) -> String {
        format!(
            "{MARKER}{}",
            serde_json::to_string(self).expect("bundles serialise")
        )
    }

    /// Parses a marker line; `None` when the line is not one.
    pub fn from_line(line: &str) -> Option<std::result::Result<Self, serde_json::Error>> {
        line.strip_prefix(MARKER).map(serde_json::from_str)
    }
}

/// Whether this process runs inside `arwkv-kernel`.
pub fn in_kernel() -> bool {
    std::env::var_os(KERNEL_ENV).is_some()
}

fn fresh_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("arwkv-{}-{nanos:x}-{n}", std::process::id())
}

/// A display that can be replaced in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisplayHandle {
    id: String,
}

impl DisplayHandle {
    /// The display id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Replaces the display's content.
    pub fn update(&self, data: Bundle) {
        emit(DisplayOp::Update, &self.id, data);
    }
}

/// Shows `data` and returns a handle to update it.
pub fn display(data: Bundle) -> DisplayHandle {
    let id = fresh_id();
    emit(DisplayOp::Display, &id, data);
    DisplayHandle { id }
}

fn emit(op: DisplayOp, id: &str, data: Bundle) {
    if in_kernel() {
        let line = DisplayMessage {
            op,
            id: id.to_string(),
            data,
        }
        .to_line();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
        return;
    }
    if let Some(Value::String(html)) = data.get("text/html") {
        let dir = std::env::var_os(DISPLAY_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("arwkv-displays"));
        let path = dir.join(format!("{id}.html"));
        let page = format!("<!doctype html><meta charset=\"utf-8\">{html}");
        if std::fs::create_dir_all(&dir).is_ok() {
            let _ = crate::save::write_atomic(&path, page.as_bytes());
        }
    }
    if op == DisplayOp::Display
        && let Some(Value::String(text)) = data.get("text/plain")
    {
        println!("{text}");
    }
}

/// Clears the cell's output once the next output arrives (flicker-free redraws).
pub fn clear_output() {
    if in_kernel() {
        emit(DisplayOp::Clear, "", Bundle::new());
    }
}

/// The MIME type of a Plotly figure.
pub const PLOTLY_MIME: &str = "application/vnd.plotly.v1+json";

/// A bundle with HTML and plain text.
pub fn html_bundle(html: impl Into<String>, text: impl Into<String>) -> Bundle {
    let mut b = Bundle::new();
    b.insert("text/html".into(), Value::String(html.into()));
    b.insert("text/plain".into(), Value::String(text.into()));
    b
}

/// A bundle with Markdown (rendered by front ends) and the same text as plain text.
pub fn markdown_bundle(md: impl Into<String>) -> Bundle {
    let md = md.into();
    let mut b = Bundle::new();
    b.insert("text/markdown".into(), Value::String(md.clone()));
    b.insert("text/plain".into(), Value::String(md));
    b
}

/// A bundle with a Plotly figure (drawn by front ends with Plotly support) and `text` for the rest.
pub fn plotly_bundle(plot: &plotly::Plot, text: impl Into<String>) -> Bundle {
    let mut b = Bundle::new();
    let figure: Value = serde_json::from_str(&plot.to_json()).expect("plotly writes JSON");
    b.insert(PLOTLY_MIME.into(), figure);
    b.insert("text/plain".into(), Value::String(text.into()));
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plotly_bundle_holds_the_figure_and_its_text() {
        let mut plot = plotly::Plot::new();
        plot.add_trace(plotly::Bar::new(vec!["a", "b"], vec![1.0, 2.0]));
        let b = plotly_bundle(&plot, "a: 1, b: 2");
        assert_eq!(b[PLOTLY_MIME]["data"][0]["y"][1], 2.0);
        assert_eq!(b["text/plain"], "a: 1, b: 2");
    }

    #[test]
    fn marker_lines_round_trip() {
        let m = DisplayMessage {
            op: DisplayOp::Update,
            id: "x-1".into(),
            data: html_bundle("<b>hi</b>", "hi"),
        };
        let line = m.to_line();
        assert!(line.starts_with(MARKER) && !line.contains('\n'));
        assert_eq!(DisplayMessage::from_line(&line).unwrap().unwrap(), m);
        assert!(DisplayMessage::from_line("plain output").is_none());
        assert!(
            DisplayMessage::from_line("ARWKV_KERNEL_DISPLAY {bad")
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn ids_are_unique() {
        assert_ne!(fresh_id(), fresh_id());
    }
}
