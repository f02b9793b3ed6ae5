//! `arwkv-kernel export`: a notebook as a reproducible Rust program (a Cargo project whose
//! `src/main.rs` holds the cells' items at module scope and their statements, in execution order,
//! inside `fn main() -> anyhow::Result<()>`), or as a jupytext `rs:percent` script.
//!
//! What the program keeps from the kernel: the prelude (`arwkv`, `burn`, the `use` line), every
//! `:dep` (later ones override earlier ones, as in evcxr), `:device` as code, the workspace's
//! `Cargo.lock` (trimmed to the program's graph, so `cargo build --locked --offline` works) and the
//! workspace's profiles. Displays write HTML files and print their text outside a kernel, so the
//! library calls compile unchanged. A cell's trailing expression is printed with `{:?}` (nothing for
//! `()`), as evcxr shows it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::notebook::cell_code::{self, Piece};
use crate::notebook::notebook_file::{CellKind, Notebook};
use crate::notebook::parameters;
use crate::session::engine;

/// Where the program's `arwkv` comes from and how the kernel built it.
#[derive(Clone, Debug)]
pub struct ExportSource {
    /// The `arwkv` crate.
    pub arwkv_path: PathBuf,
    /// Its cargo features in the kernel.
    pub arwkv_features: Vec<String>,
    /// The workspace `Cargo.lock`.
    pub workspace_lock: PathBuf,
}

/// The program made of a notebook's code cells.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Program {
    /// `:dep` lines: name → TOML value.
    pub dependencies: BTreeMap<String, String>,
    /// Module-scope items, in order (latest definition of a name wins).
    pub items: Vec<(Option<String>, String)>,
    /// The body of `main`.
    pub body: String,
    /// Declared parameters (after injected overrides): name → value source.
    pub parameters: BTreeMap<String, String>,
    /// Backends chosen with `:device`.
    pub devices: Vec<String>,
}

/// Checks that saved execution counts follow notebook order (a notebook run out of order cannot
/// be exported faithfully: its program would run the cells in another order).
pub fn check_execution_order(nb: &Notebook) -> Result<()> {
    let mut last: Option<(usize, u64)> = None;
    for i in (0..nb.len()).filter(|&i| nb.kind(i) == CellKind::Code) {
        if let Some(n) = nb.execution_count(i) {
            if let Some((cell, prev)) = last
                && n <= prev
            {
                bail!(
                    "{}: cell {} ran as In [{n}] after cell {cell} (In [{prev}]): the notebook was run out of \
                     order; re-run it top to bottom (`arwkv-kernel run`) or export with --notebook-order",
                    nb.path.display(),
                    i + 1,
                );
            }
            last = Some((i + 1, n));
        }
    }
    Ok(())
}

fn parse_dep(magic: &str) -> Option<Result<(String, String)>> {
    let rest = magic.strip_prefix(":dep")?;
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let rest = rest.trim();
    Some(match rest.split_once('=') {
        Some((name, spec)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), spec.trim().to_string()))
        }
        None if !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_') =>
        {
            Ok((rest.to_string(), "\"*\"".to_string()))
        }
        _ => Err(anyhow::anyhow!(
            "`{magic}`: only `:dep NAME = SPEC` and `:dep NAME` can be exported"
        )),
    })
}

/// Builds the program from the notebook's code cells, in notebook order.
pub fn program(nb: &Notebook) -> Result<Program> {
    let mut p = Program::default();
    let mut items: Vec<(Option<String>, String)> = vec![];
    let params_cell = parameters::parameters_cell(nb);
    for i in (0..nb.len()).filter(|&i| nb.kind(i) == CellKind::Code) {
        let source = nb.source(i);
        if source.trim().is_empty() {
            continue;
        }
        for line in source.lines() {
            if let Some(name) = line.trim().strip_prefix(":device")
                && (name.is_empty() || name.starts_with(char::is_whitespace))
            {
                p.devices.push(name.trim().to_string());
            }
        }
        let code = engine::translate_magics(&source);
        let pieces = cell_code::split(&code)
            .map_err(|e| anyhow::anyhow!("{}: cell {}: {e}", nb.path.display(), i + 1))?;
        let tags = nb.tags(i);
        let is_params =
            Some(i) == params_cell || tags.iter().any(|t| t == parameters::INJECTED_TAG);
        let _ = writeln!(p.body, "\n// ── cell {} ──", i + 1);
        for piece in pieces {
            match piece {
                Piece::Magic(m) => match parse_dep(&m) {
                    Some(dep) => {
                        let (name, spec) = dep.map_err(|e| {
                            anyhow::anyhow!("{}: cell {}: {e}", nb.path.display(), i + 1)
                        })?;
                        let _ = writeln!(p.body, "// {m}  (→ Cargo.toml)");
                        p.dependencies.insert(name, spec);
                    }
                    None => {
                        let _ = writeln!(p.body, "// {m}  (evcxr magic: no effect in a program)");
                    }
                },
                Piece::Shell(cmd) => {
                    let _ = writeln!(p.body, "// !{cmd}  (shell line: not run by the program)");
                }
                Piece::Item { key, code } => {
                    if let Some(k) = &key {
                        items.retain(|(old, _)| old.as_ref() != Some(k));
                    } else if items.iter().any(|(_, c)| c.trim() == code.trim()) {
                        continue;
                    }
                    items.push((
                        key,
                        format!("// from cell {}\n{}", i + 1, code.trim_matches('\n')),
                    ));
                }
                Piece::Let {
                    code, name, init, ..
                } => {
                    if is_params && let (Some(name), Some(init)) = (name, init) {
                        p.parameters.insert(name, init.trim().to_string());
                    }
                    p.body.push_str(&code);
                }
                Piece::Statement(code) => p.body.push_str(&code),
                Piece::Tail(code) => {
                    let _ = write!(p.body, "show(&(\n{}\n));", code.trim_end());
                }
            }
        }
        p.body.push('\n');
    }
    p.items = items;
    Ok(p)
}

/// `src/main.rs` of the program.
pub fn main_rs(p: &Program, notebook: &Path) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "//! Exported from `{}` by arwkv-kernel {}.\n//! Build and run: `cargo run --release --locked --offline`. Displays write HTML files under\n//! `arwkv-displays/` (or `$ARWKV_DISPLAY_DIR`) and print their text.\n",
        notebook.display(),
        env!("CARGO_PKG_VERSION")
    );
    s.push_str("#![allow(unused_imports, unused_variables, unused_mut, unused_assignments, unused_parens)]\n");
    s.push_str("#![allow(clippy::all)]\n\n");
    let _ = writeln!(s, "// The kernel's prelude.\n{}\n", engine::PRELUDE_USE);
    for (_, code) in &p.items {
        let _ = writeln!(s, "{code}\n");
    }
    s.push_str("fn main() -> anyhow::Result<()> {\n");
    s.push_str(&p.body);
    s.push_str("\nOk(())\n}\n\n");
    s.push_str(
        "/// Prints a cell's value the way the notebook shows it (`{:?}`; nothing for `()`).\n\
         fn show<T: std::fmt::Debug + ?Sized>(value: &T) {\n    \
         if std::any::type_name::<T>() != \"()\" {\n        println!(\"{value:?}\");\n    }\n}\n",
    );
    s
}

fn toml_string(s: &str) -> String {
    format!("{s:?}")
}

fn package_name(notebook: &Path) -> String {
    let stem = notebook
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("notebook");
    let mut name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name = format!("nb-{name}");
    }
    name
}

/// The version of `name` pinned in a `Cargo.lock`.
pub fn locked_version(lock: &str, name: &str) -> Option<String> {
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{name}\"") {
            return lines
                .next()
                .and_then(|v| v.trim().strip_prefix("version = "))
                .map(|v| v.trim_matches('"').to_string());
        }
    }
    None
}

fn rustc_version() -> String {
    std::process::Command::new("rustc")
        .arg("-V")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// `Cargo.toml` of the program.
pub fn cargo_toml(p: &Program, notebook: &Path, source: &ExportSource, lock: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Exported from {} by arwkv-kernel {}.",
        notebook.display(),
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        s,
        "[package]\nname = {}\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n",
        toml_string(&package_name(notebook))
    );
    let _ = writeln!(s, "[package.metadata.arwkv]");
    let _ = writeln!(
        s,
        "notebook = {}",
        toml_string(&notebook.display().to_string())
    );
    let _ = writeln!(s, "rustc = {}", toml_string(&rustc_version()));
    let _ = writeln!(s, "kernel = {}", toml_string(env!("CARGO_PKG_VERSION")));
    let seed = p
        .parameters
        .get("seed")
        .cloned()
        .unwrap_or_else(|| "none declared".into());
    let _ = writeln!(s, "seed = {}", toml_string(&seed));
    let devices = if p.devices.is_empty() {
        vec!["cpu (default)".to_string()]
    } else {
        p.devices.clone()
    };
    let _ = writeln!(
        s,
        "devices = [{}]",
        devices
            .iter()
            .map(|d| toml_string(d))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(s, "[package.metadata.arwkv.parameters]");
    for (k, v) in &p.parameters {
        let _ = writeln!(s, "{k} = {}", toml_string(v));
    }
    let features = engine::features_toml(&source.arwkv_features);
    let anyhow = locked_version(lock, "anyhow")
        .map(|v| format!("\"={v}\""))
        .unwrap_or_else(|| "\"1\"".into());
    let _ = writeln!(s, "\n[dependencies]");
    let _ = writeln!(
        s,
        "arwkv = {{ path = {}{features} }}",
        toml_string(&source.arwkv_path.display().to_string())
    );
    let _ = writeln!(
        s,
        "burn = {{ version = \"=0.22.1\", default-features = false, features = [\"std\"] }}"
    );
    let _ = writeln!(s, "anyhow = {anyhow}");
    for (name, spec) in &p.dependencies {
        if !matches!(name.as_str(), "arwkv" | "burn" | "anyhow") {
            let _ = writeln!(s, "{name} = {spec}");
        } else {
            let _ = writeln!(
                s,
                "# :dep {name} = {spec} (kept as the kernel's prelude pins it)"
            );
        }
    }
    // Its own workspace (not absorbed by an enclosing one); the workspace's profiles.
    s.push_str(
        "\n[workspace]\n\n[profile.dev]\nopt-level = 1\ndebug = \"line-tables-only\"\n\n\
         [profile.dev.package.\"*\"]\nopt-level = 2\n\n[profile.release]\ndebug = \"line-tables-only\"\n",
    );
    s
}

/// Writes the Cargo project into `out`; returns the files written.
pub fn export_cargo(
    nb: &Notebook,
    out: &Path,
    source: &ExportSource,
    notebook_order: bool,
) -> Result<Vec<PathBuf>> {
    if !notebook_order {
        check_execution_order(nb)?;
    }
    let p = program(nb)?;
    let lock = std::fs::read_to_string(&source.workspace_lock)
        .with_context(|| format!("reading {}", source.workspace_lock.display()))?;
    std::fs::create_dir_all(out.join("src"))
        .with_context(|| format!("creating {}", out.display()))?;
    let notebook = nb.path.canonicalize().unwrap_or_else(|_| nb.path.clone());
    let files = [
        (
            out.join("Cargo.toml"),
            cargo_toml(&p, &notebook, source, &lock),
        ),
        (out.join("src").join("main.rs"), main_rs(&p, &notebook)),
        (out.join("Cargo.lock"), lock),
        (
            out.join(".gitignore"),
            "/target\n/arwkv-displays\n".to_string(),
        ),
    ];
    for (path, text) in &files {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let main = out.join("src").join("main.rs");
    // Tidy layout; a program rustfmt cannot parse is still written (cargo will name the error).
    let _ = std::process::Command::new("rustfmt")
        .args(["--edition", "2024"])
        .arg(&main)
        .stderr(std::process::Stdio::null())
        .status();
    trim_lock(out)?;
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

/// Drops the workspace-only packages from the copied lock, keeping every pinned version.
fn trim_lock(out: &Path) -> Result<()> {
    let manifest = out.join("Cargo.toml");
    let metadata = |offline: bool| {
        let mut cmd =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        crate::session::analyzer_graph::with_real_cargo_home(&mut cmd);
        cmd.args(["metadata", "--format-version", "1", "--manifest-path"])
            .arg(&manifest);
        if offline {
            cmd.arg("--offline");
        }
        cmd.stdout(std::process::Stdio::null()).output()
    };
    let output = metadata(true).context("running cargo metadata")?;
    if output.status.success() {
        return Ok(());
    }
    let online = metadata(false).context("running cargo metadata")?;
    if online.status.success() {
        return Ok(());
    }
    bail!(
        "cargo could not resolve the exported program's dependencies:\n{}",
        String::from_utf8_lossy(&online.stderr)
    )
}

/// The notebook as a jupytext percent-format script (`// %%` cells, markdown as `//` comments,
/// magics commented out as jupytext does).
pub fn percent_script(nb: &Notebook) -> String {
    let mut s = String::from(
        "// ---\n// jupyter:\n//   jupytext:\n//     text_representation:\n//       extension: .rs\n\
         //       format_name: percent\n//   kernelspec:\n",
    );
    let _ = writeln!(
        s,
        "//     display_name: {}\n//     language: rust\n//     name: {}\n// ---",
        crate::identity::DISPLAY_NAME,
        crate::identity::KERNEL_NAME
    );
    for i in 0..nb.len() {
        let tags = nb.tags(i);
        let tag_text = if tags.is_empty() {
            String::new()
        } else {
            format!(
                " tags={}",
                serde_json::to_string(&tags)
                    .unwrap_or_default()
                    .replace(',', ", ")
            )
        };
        let source = nb.source(i);
        s.push('\n');
        match nb.kind(i) {
            CellKind::Markdown | CellKind::Raw => {
                let kind = if nb.kind(i) == CellKind::Markdown {
                    "markdown"
                } else {
                    "raw"
                };
                let _ = writeln!(s, "// %% [{kind}]{tag_text}");
                for line in source.lines() {
                    if line.is_empty() {
                        s.push_str("//\n");
                    } else {
                        let _ = writeln!(s, "// {line}");
                    }
                }
            }
            CellKind::Code => {
                let _ = writeln!(s, "// %%{tag_text}");
                for line in source.lines() {
                    if line.trim_start().starts_with(':') {
                        let _ = writeln!(s, "// {line}");
                    } else {
                        let _ = writeln!(s, "{line}");
                    }
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn notebook(cells: serde_json::Value) -> (tempfile::TempDir, Notebook) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("01-demo.ipynb");
        let doc = json!({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells});
        std::fs::write(&path, doc.to_string()).unwrap();
        (dir, Notebook::read(&path).unwrap())
    }

    fn code(src: &str, count: Option<u64>, tags: &[&str]) -> serde_json::Value {
        json!({"cell_type": "code", "metadata": {"tags": tags}, "source": src, "outputs": [], "execution_count": count})
    }

    #[test]
    fn items_go_to_module_scope_statements_to_main_in_order() {
        let (_d, nb) = notebook(json!([
            code("let seed: u64 = 7;\nlet steps = 3;", Some(1), &["parameters"]),
            code(":dep rand = \"0.9\"\n:device cpu\nfn twice(x: u64) -> u64 { x }\nlet a = twice(seed);", Some(2), &[]),
            {"cell_type": "markdown", "metadata": {}, "source": "# text"},
            code(":opt 2\nfn twice(x: u64) -> u64 { 2 * x }\nlet b = twice(a);\nb + steps", Some(3), &[]),
        ]));
        let p = program(&nb).unwrap();
        assert_eq!(p.dependencies["rand"], "\"0.9\"");
        assert_eq!(
            p.items.len(),
            1,
            "the later definition replaces the earlier one"
        );
        assert!(p.items[0].1.contains("2 * x"));
        assert_eq!(p.parameters["seed"], "7");
        assert_eq!(p.devices, vec!["cpu"]);
        let a = p.body.find("let a").unwrap();
        let b = p.body.find("let b").unwrap();
        assert!(a < b);
        assert!(
            p.body
                .contains("std::env::set_var(\"ARWKV_DEVICE\", \"cpu\")")
        );
        assert!(p.body.contains("show(&(\n\nb + steps\n));"), "{}", p.body);
        let main = main_rs(&p, &nb.path);
        assert!(main.contains("fn main() -> anyhow::Result<()> {"));
        assert!(main.find("fn twice").unwrap() < main.find("fn main").unwrap());
    }

    #[test]
    fn out_of_order_runs_and_bad_deps_are_refused() {
        let (_d, nb) = notebook(json!([
            code("let a = 1;", Some(2), &[]),
            code("let b = 2;", Some(1), &[])
        ]));
        let e = check_execution_order(&nb).unwrap_err().to_string();
        assert!(e.contains("cell 2") && e.contains("out of order"), "{e}");
        let (_d, nb) = notebook(json!([code(":dep ../local\nlet a = 1;", None, &[])]));
        assert!(
            program(&nb)
                .unwrap_err()
                .to_string()
                .contains(":dep NAME = SPEC")
        );
    }

    #[test]
    fn percent_script_comments_markdown_and_magics() {
        let (_d, nb) = notebook(json!([
            {"cell_type": "markdown", "metadata": {}, "source": "# Title\n\ntext"},
            code(":dep rand = \"0.9\"\nlet a = 1;", None, &["parameters"]),
        ]));
        let s = percent_script(&nb);
        assert!(
            s.contains("// %% [markdown]\n// # Title\n//\n// text\n"),
            "{s}"
        );
        assert!(
            s.contains("// %% tags=[\"parameters\"]\n// :dep rand = \"0.9\"\nlet a = 1;\n"),
            "{s}"
        );
    }

    #[test]
    fn locked_versions_and_package_names() {
        let lock = "[[package]]\nname = \"anyhow\"\nversion = \"1.0.99\"\n";
        assert_eq!(locked_version(lock, "anyhow").as_deref(), Some("1.0.99"));
        assert_eq!(
            package_name(Path::new("notebooks/02-stage1 alignment.ipynb")),
            "nb-02-stage1-alignment"
        );
    }
}
