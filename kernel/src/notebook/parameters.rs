//! Notebook parameters, papermill-style for Rust: the cell tagged `parameters` declares them with
//! `let NAME[: TYPE] = VALUE;`, and `-p NAME=VALUE` overrides go into a new cell right after it,
//! tagged `injected-parameters`, that shadows them. A value is Rust source, except where the
//! declaration is a string (a `"…"` literal, `&str` or `String`): then it is the text itself.

use anyhow::{Result, bail};

use crate::notebook::cell_code::{self, Piece};
use crate::notebook::notebook_file::{CellKind, Notebook};

/// The tag of the cell that declares parameters.
pub const PARAMETERS_TAG: &str = "parameters";
/// The tag of the cell that overrides them.
pub const INJECTED_TAG: &str = "injected-parameters";

/// One declared parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declared {
    /// Its name.
    pub name: String,
    /// Its declared type, if written.
    pub ty: Option<String>,
    /// Its value's source in the notebook.
    pub init: String,
}

impl Declared {
    fn is_text(&self) -> bool {
        let ty = self.ty.as_deref().map(|t| t.replace(' ', ""));
        self.init.trim_start().starts_with('"')
            || matches!(ty.as_deref(), Some("&str" | "&'staticstr" | "String"))
    }

    /// The Rust source of `value` for this parameter.
    pub fn render(&self, value: &str) -> Result<String> {
        if self.is_text() {
            let literal = format!("{value:?}");
            return Ok(match self.ty.as_deref().map(str::trim) {
                Some("String") => format!("String::from({literal})"),
                _ => literal,
            });
        }
        if !cell_code::is_expression(value) {
            bail!(
                "parameter `{}`: `{value}` is not a Rust expression (declared as `{}`)",
                self.name,
                self.init.trim()
            );
        }
        Ok(value.to_string())
    }
}

/// Index of the cell tagged `parameters`.
pub fn parameters_cell(nb: &Notebook) -> Option<usize> {
    (0..nb.len())
        .find(|&i| nb.kind(i) == CellKind::Code && nb.tags(i).iter().any(|t| t == PARAMETERS_TAG))
}

/// The parameters the cell declares.
pub fn declared(source: &str) -> Result<Vec<Declared>> {
    let pieces = cell_code::split(source)
        .map_err(|e| anyhow::anyhow!("the parameters cell does not parse: {e}"))?;
    Ok(pieces
        .into_iter()
        .filter_map(|p| match p {
            Piece::Let {
                name: Some(name),
                ty,
                init: Some(init),
                ..
            } => Some(Declared { name, ty, init }),
            _ => None,
        })
        .collect())
}

/// Parses `NAME=VALUE`.
pub fn parse_assignment(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.to_string()))
        }
        _ => bail!("-p `{text}`: expected NAME=VALUE"),
    }
}

/// Applies overrides: (re)writes the `injected-parameters` cell after the `parameters` cell.
/// Returns the injected source (None when there were no overrides).
pub fn inject(nb: &mut Notebook, overrides: &[(String, String)]) -> Result<Option<String>> {
    if overrides.is_empty() {
        return Ok(None);
    }
    let Some(at) = parameters_cell(nb) else {
        bail!(
            "{}: -p given but no code cell is tagged `{PARAMETERS_TAG}`",
            nb.path.display()
        );
    };
    let declared = declared(&nb.source(at))?;
    let mut lines = vec!["// Parameters injected by `arwkv-kernel run -p`.".to_string()];
    for (name, value) in overrides {
        let Some(d) = declared.iter().find(|d| &d.name == name) else {
            let known: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
            bail!(
                "{}: unknown parameter `{name}` (the parameters cell declares: {})",
                nb.path.display(),
                if known.is_empty() {
                    "nothing".to_string()
                } else {
                    known.join(", ")
                }
            );
        };
        let ty =
            d.ty.as_deref()
                .map(|t| format!(": {}", t.trim()))
                .unwrap_or_default();
        lines.push(format!("let {name}{ty} = {};", d.render(value)?));
    }
    let source = lines.join("\n");
    // A notebook written by an earlier run already holds one: replace it.
    if at + 1 < nb.len() && nb.tags(at + 1).iter().any(|t| t == INJECTED_TAG) {
        nb.remove_cell(at + 1);
    }
    nb.insert_code_cell(at + 1, &source, &[INJECTED_TAG]);
    Ok(Some(source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notebook(params: &str) -> (tempfile::TempDir, Notebook) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nb.ipynb");
        let doc = serde_json::json!({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": "# t"},
            {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": params, "outputs": [], "execution_count": null},
            {"cell_type": "code", "metadata": {}, "source": "steps", "outputs": [], "execution_count": null}]});
        std::fs::write(&path, doc.to_string()).unwrap();
        let nb = Notebook::read(&path).unwrap();
        (dir, nb)
    }

    #[test]
    fn overrides_keep_types_and_quote_text() {
        let (_d, mut nb) = notebook(
            "let steps: u64 = 100; // steps\nlet device = \"cpu\";\nlet name: String = String::from(\"x\");\nlet lr = 1e-3;",
        );
        let src = inject(
            &mut nb,
            &[
                ("steps".into(), "20".into()),
                ("device".into(), "wgpu".into()),
                ("name".into(), "a \"b\"".into()),
                ("lr".into(), "3e-4".into()),
            ],
        )
        .unwrap()
        .unwrap();
        assert!(src.contains("let steps: u64 = 20;"), "{src}");
        assert!(src.contains("let device = \"wgpu\";"), "{src}");
        assert!(
            src.contains("let name: String = String::from(\"a \\\"b\\\"\");"),
            "{src}"
        );
        assert!(src.contains("let lr = 3e-4;"), "{src}");
        assert_eq!(nb.len(), 4);
        assert_eq!(nb.tags(2), vec![INJECTED_TAG]);
        // Running again replaces the injected cell.
        inject(&mut nb, &[("steps".into(), "5".into())]).unwrap();
        assert_eq!(nb.len(), 4);
        assert!(nb.source(2).contains("= 5;"));
    }

    #[test]
    fn unknown_names_and_bad_values_are_clear_errors() {
        let (_d, mut nb) = notebook("let steps = 100;");
        let e = inject(&mut nb, &[("stesp".into(), "1".into())])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown parameter `stesp`") && e.contains("steps"),
            "{e}"
        );
        let e = inject(&mut nb, &[("steps".into(), "1; panic!()".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a Rust expression"), "{e}");
        assert!(parse_assignment("nope").is_err());
        assert_eq!(
            parse_assignment("a=b=c").unwrap(),
            ("a".into(), "b=c".into())
        );
    }
}
