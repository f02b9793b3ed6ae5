//! Jupyter notebooks on disk (nbformat 4): reading with errors that name the file and cell,
//! cell sources, outputs, and an atomic write. The document is kept as JSON so keys we do not
//! know (widgets state, editor metadata) survive a run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

/// A notebook file.
#[derive(Clone, Debug)]
pub struct Notebook {
    /// Where it was read from.
    pub path: PathBuf,
    /// The document.
    pub doc: Value,
}

/// What kind of cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellKind {
    /// Code, run by the kernel.
    Code,
    /// Markdown.
    Markdown,
    /// Raw (not run).
    Raw,
}

impl Notebook {
    /// Reads and checks an nbformat-4 notebook.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the notebook {}", path.display()))?;
        let doc: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let nb = Self {
            path: path.to_path_buf(),
            doc,
        };
        nb.check()?;
        Ok(nb)
    }

    fn check(&self) -> Result<()> {
        let p = self.path.display();
        match self.doc.get("nbformat").and_then(Value::as_u64) {
            Some(4) => {}
            Some(v) => bail!("{p}: nbformat {v} is not supported (only 4)"),
            None => bail!("{p}: not a notebook (no `nbformat` key)"),
        }
        let Some(cells) = self.doc.get("cells").and_then(Value::as_array) else {
            bail!("{p}: `cells` is missing or not a list");
        };
        for (i, cell) in cells.iter().enumerate() {
            let n = i + 1;
            match cell.get("cell_type").and_then(Value::as_str) {
                Some("code" | "markdown" | "raw") => {}
                Some(other) => bail!("{p}: cell {n} has unknown cell_type `{other}`"),
                None => bail!("{p}: cell {n} has no cell_type"),
            }
            if source_of(cell).is_none() {
                bail!("{p}: cell {n}: `source` must be a string or a list of strings");
            }
        }
        Ok(())
    }

    /// Number of cells.
    pub fn len(&self) -> usize {
        self.cells().len()
    }

    fn cells(&self) -> &Vec<Value> {
        self.doc["cells"].as_array().expect("checked at read")
    }

    fn cells_mut(&mut self) -> &mut Vec<Value> {
        self.doc["cells"].as_array_mut().expect("checked at read")
    }

    /// The kind of cell `i` (0-based).
    pub fn kind(&self, i: usize) -> CellKind {
        match self.cells()[i]["cell_type"].as_str() {
            Some("code") => CellKind::Code,
            Some("markdown") => CellKind::Markdown,
            _ => CellKind::Raw,
        }
    }

    /// The source of cell `i`.
    pub fn source(&self, i: usize) -> String {
        source_of(&self.cells()[i]).unwrap_or_default()
    }

    /// The tags of cell `i`.
    pub fn tags(&self, i: usize) -> Vec<String> {
        self.cells()[i]["metadata"]["tags"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The saved execution count of code cell `i`.
    pub fn execution_count(&self, i: usize) -> Option<u64> {
        self.cells()[i]["execution_count"].as_u64()
    }

    /// Inserts a code cell at `i` with `source` and `tags`.
    pub fn insert_code_cell(&mut self, i: usize, source: &str, tags: &[&str]) {
        let id = format!("{:08x}", rand_id());
        let cell = json!({
            "cell_type": "code",
            "execution_count": null,
            "id": id,
            "metadata": {"tags": tags},
            "outputs": [],
            "source": split_source(source),
        });
        self.cells_mut().insert(i, cell);
    }

    /// Removes cell `i`.
    pub fn remove_cell(&mut self, i: usize) {
        self.cells_mut().remove(i);
    }

    /// Replaces the outputs and execution count of code cell `i`.
    pub fn set_outputs(&mut self, i: usize, outputs: Vec<Value>, count: Option<u64>) {
        let cell = &mut self.cells_mut()[i];
        cell["outputs"] = Value::Array(outputs);
        cell["execution_count"] = count.map(Value::from).unwrap_or(Value::Null);
    }

    /// Clears every code cell's outputs and counts.
    pub fn clear_outputs(&mut self) {
        for i in 0..self.len() {
            if self.kind(i) == CellKind::Code {
                self.set_outputs(i, vec![], None);
            }
        }
    }

    /// Sets `metadata.language_info` and, when absent, `metadata.kernelspec`.
    pub fn set_kernel_metadata(&mut self, language_info: Value, kernelspec: Value) {
        let meta = self
            .doc
            .as_object_mut()
            .expect("a notebook is an object")
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(m) = meta.as_object_mut() {
            m.insert("language_info".into(), language_info);
            m.entry("kernelspec").or_insert(kernelspec);
        }
    }

    /// Writes the notebook to `path` atomically (temporary file + rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.doc)? + "\n";
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("notebook"),
            std::process::id()
        ));
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

fn source_of(cell: &Value) -> Option<String> {
    match cell.get("source")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| p.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.concat()),
        _ => None,
    }
}

/// nbformat's multi-line string: one list entry per line, newlines kept.
pub fn split_source(text: &str) -> Value {
    Value::Array(
        text.split_inclusive('\n')
            .map(|l| Value::String(l.to_string()))
            .collect(),
    )
}

fn rand_id() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    nanos ^ std::process::id().rotate_left(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nb.ipynb");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn bad_notebooks_are_named() {
        let (_d, p) = write("{not json");
        assert!(format!("{:#}", Notebook::read(&p).unwrap_err()).contains("not valid JSON"));
        let (_d, p) = write(r#"{"nbformat": 3, "cells": []}"#);
        assert!(
            Notebook::read(&p)
                .unwrap_err()
                .to_string()
                .contains("nbformat 3")
        );
        let (_d, p) = write(r#"{"nbformat": 4, "cells": [{"cell_type": "code", "source": 3}]}"#);
        assert!(
            Notebook::read(&p)
                .unwrap_err()
                .to_string()
                .contains("cell 1")
        );
    }

    #[test]
    fn sources_tags_and_outputs_round_trip() {
        let (_d, p) = write(
            r#"{"nbformat": 4, "nbformat_minor": 5, "metadata": {"x": 1}, "cells": [
              {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": ["let a = 1;\n", "a"], "outputs": [], "execution_count": null}]}"#,
        );
        let mut nb = Notebook::read(&p).unwrap();
        assert_eq!(nb.source(0), "let a = 1;\na");
        assert_eq!(nb.tags(0), vec!["parameters"]);
        nb.insert_code_cell(1, "let a = 2;\n", &["injected-parameters"]);
        nb.set_outputs(1, vec![json!({"output_type": "stream"})], Some(2));
        nb.write(&p).unwrap();
        let back = Notebook::read(&p).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back.execution_count(1), Some(2));
        assert_eq!(back.doc["metadata"]["x"], 1, "unknown keys survive");
    }
}
