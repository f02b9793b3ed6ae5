//! The crate graph rust-analyzer sees: the one cargo really builds, not `cargo metadata`'s.
//!
//! evcxr infers the type of every variable a cell defines with an in-process rust-analyzer, which
//! learns the crate graph from `cargo metadata`. That command reports the dependency resolver's
//! graph: it keeps every optional dependency a weak feature (`dep?/feat`) names and unifies
//! features across targets. For the prelude (Burn with `wgpu`, `arwkv`) that is 643 packages and
//! 276 MB of Rust source — LibTorch, CUDA, HIP, an LLVM CPU backend, an SQLite engine — where the
//! build uses 353 packages and 139 MB. The analyzer reads, indexes and name-resolves all of it
//! before a notebook's first `let` can be typed.
//!
//! rust-analyzer runs cargo as `$CARGO_HOME/bin/cargo`. For our build directory the kernel points
//! `CARGO_HOME` at a folder whose `bin/cargo` is this executable: it runs the real cargo, and for a
//! `metadata` call on the build directory's manifest it keeps only the packages, edges and
//! features that `cargo tree` (cargo's feature resolver, the one builds use) reports. Every other
//! call, and any failure, passes the real cargo's answer through unchanged. Cargo builds (evcxr's,
//! the exporter's, a cell's child process) get the real `CARGO_HOME` back, so nothing is rebuilt.
//! Measured in `docs/BENCHMARKS.md` ("Notebook kernel latency").

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use serde_json::Value;

/// The user's real `CARGO_HOME`, remembered while the kernel points it at the shim.
const REAL_HOME: &str = "ARWKV_KERNEL_CARGO_HOME";
/// The manifest whose `cargo metadata` the shim trims (the kernel's build directory).
const TRIMMED_MANIFEST: &str = "ARWKV_KERNEL_TRIMMED_MANIFEST";

/// Runs as the shim when invoked as `cargo` (never returns then); in any other process started
/// by a kernel (evcxr's evaluation process, its rustc wrapper) restores the real `CARGO_HOME`.
/// Call first in `main`, before any thread exists.
pub fn on_process_start() {
    let invoked_as = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    if invoked_as.as_deref() == Some("cargo") {
        std::process::exit(run_shim(std::env::args_os().skip(1).collect()));
    }
    if let Some(real) = std::env::var_os(REAL_HOME) {
        // SAFETY: called first in `main`, while the process has one thread.
        unsafe {
            std::env::set_var("CARGO_HOME", real);
            std::env::remove_var(REAL_HOME);
            std::env::remove_var(TRIMMED_MANIFEST);
        }
    }
}

/// Points rust-analyzer's cargo at the shim for the build directory `dir`; returns the real
/// `CARGO_HOME`, which evcxr's builds must be given back (`:build_env`). `None` (and nothing
/// changed) when the shim cannot be set up: the analyzer then sees the full graph, as before.
/// Must run before any thread of ours reads the environment.
pub fn route_analyzer_through_shim(dir: &Path) -> Option<PathBuf> {
    let real = real_cargo_home()?;
    let shim_home = dir.join("analyzer-cargo-home");
    if let Err(e) = write_shim(&shim_home) {
        eprintln!("arwkv-kernel: rust-analyzer will see the full crate graph ({e:#})");
        return None;
    }
    // SAFETY: see the function doc (single-threaded at this point).
    unsafe {
        std::env::set_var(REAL_HOME, &real);
        std::env::set_var(TRIMMED_MANIFEST, dir.join("Cargo.toml"));
        std::env::set_var("CARGO_HOME", &shim_home);
    }
    Some(real)
}

/// The `CARGO_HOME` a cargo started by this process should use: the real one while the shim is
/// routed, else the inherited setting.
pub fn cargo_home_for_builds() -> Option<PathBuf> {
    std::env::var_os(REAL_HOME).map(PathBuf::from)
}

/// Gives `command` the real `CARGO_HOME` when the shim is routed (a no-op otherwise).
pub fn with_real_cargo_home(command: &mut Command) -> &mut Command {
    if let Some(home) = cargo_home_for_builds() {
        command.env("CARGO_HOME", home);
    }
    command
}

fn real_cargo_home() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os(REAL_HOME).or_else(|| std::env::var_os("CARGO_HOME")) {
        return Some(PathBuf::from(home));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo"))
}

/// `<shim_home>/bin/cargo` → this executable, replaced atomically.
fn write_shim(shim_home: &Path) -> Result<()> {
    let bin = shim_home.join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    let exe = std::env::current_exe().context("locating this executable")?;
    let staged = bin.join(format!(".cargo-{}", std::process::id()));
    let _ = std::fs::remove_file(&staged);
    #[cfg(unix)]
    std::os::unix::fs::symlink(&exe, &staged)
        .with_context(|| format!("linking {}", staged.display()))?;
    #[cfg(not(unix))]
    anyhow::bail!(
        "the cargo shim needs symbolic links ({} not linked)",
        exe.display()
    );
    std::fs::rename(&staged, bin.join("cargo"))
        .with_context(|| format!("placing {}", bin.join("cargo").display()))?;
    Ok(())
}

/// The real cargo: the one in the real `CARGO_HOME`, else the first on `PATH`.
fn real_cargo() -> (PathBuf, Option<PathBuf>) {
    let home = std::env::var_os(REAL_HOME).map(PathBuf::from);
    let in_home = home.as_ref().map(|h| h.join("bin").join("cargo"));
    match in_home {
        Some(p) if p.is_file() => (p, home),
        _ => (PathBuf::from("cargo"), home),
    }
}

fn run_shim(args: Vec<std::ffi::OsString>) -> i32 {
    let (cargo, home) = real_cargo();
    let mut real = Command::new(&cargo);
    real.args(&args);
    if let Some(home) = &home {
        real.env("CARGO_HOME", home);
    }
    real.env_remove(REAL_HOME).env_remove(TRIMMED_MANIFEST);
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let trimmed = std::env::var_os(TRIMMED_MANIFEST).map(PathBuf::from);
    let manifest = flag_value(&args, "--manifest-path").map(PathBuf::from);
    let trim = args.first().is_some_and(|a| a == "metadata")
        && trimmed.is_some()
        && manifest.is_some()
        && trimmed == manifest;
    if !trim {
        return match real.status() {
            Ok(s) => s.code().unwrap_or(1),
            Err(e) => {
                eprintln!(
                    "arwkv-kernel (cargo shim): running {}: {e}",
                    cargo.display()
                );
                1
            }
        };
    }
    let output = match real.stderr(Stdio::inherit()).output() {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "arwkv-kernel (cargo shim): running {}: {e}",
                cargo.display()
            );
            return 1;
        }
    };
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if output.status.success()
        && let Some(manifest) = manifest
        && let Some(trimmed) =
            trim_metadata(&output.stdout, &cargo, home.as_deref(), &manifest, &args)
    {
        let _ = stdout.write_all(trimmed.as_bytes());
        return 0;
    }
    let _ = stdout.write_all(&output.stdout);
    output.status.code().unwrap_or(1)
}

fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(&prefix)
        }
    })
}

/// `metadata`, trimmed to the graph `cargo tree` resolves for the same manifest and platform;
/// `None` when `cargo tree` fails or its answer does not match (the caller passes the original).
fn trim_metadata(
    metadata: &[u8],
    cargo: &Path,
    home: Option<&Path>,
    manifest: &Path,
    args: &[String],
) -> Option<String> {
    let mut tree = Command::new(cargo);
    tree.args([
        "tree",
        "--offline",
        "-e",
        "normal,build",
        "--prefix",
        "depth",
    ])
    .args(["-f", "{p}|{f}", "--manifest-path"])
    .arg(manifest)
    .env_remove(REAL_HOME)
    .env_remove(TRIMMED_MANIFEST)
    .stderr(Stdio::null());
    if let Some(target) = flag_value(args, "--filter-platform") {
        tree.args(["--target", target]);
    }
    if let Some(home) = home {
        tree.env("CARGO_HOME", home);
    }
    let out = tree.output().ok().filter(|o| o.status.success())?;
    let mut metadata: Value = serde_json::from_slice(metadata).ok()?;
    let resolved = ResolvedGraph::parse(&String::from_utf8_lossy(&out.stdout));
    resolved.apply(&mut metadata)?;
    serde_json::to_string(&metadata).ok()
}

/// The packages, edges and features of a `cargo tree --prefix depth -f '{p}|{f}'` listing, keyed
/// by (name, version).
#[derive(Debug, Default, PartialEq)]
struct ResolvedGraph {
    features: HashMap<(String, String), Vec<String>>,
    edges: HashSet<((String, String), (String, String))>,
}

impl ResolvedGraph {
    fn parse(listing: &str) -> Self {
        let mut graph = ResolvedGraph::default();
        let mut path: Vec<(String, String)> = vec![];
        for line in listing.lines() {
            let digits = line.chars().take_while(char::is_ascii_digit).count();
            let Ok(depth) = line[..digits].parse::<usize>() else {
                continue;
            };
            let (package, features) = line[digits..]
                .split_once('|')
                .unwrap_or((&line[digits..], ""));
            let mut words = package.split_whitespace();
            let (Some(name), Some(version)) = (words.next(), words.next()) else {
                continue;
            };
            let key = (
                name.to_string(),
                version.trim_start_matches('v').to_string(),
            );
            let features = features.trim_end_matches(" (*)").trim();
            graph.features.insert(
                key.clone(),
                features
                    .split(',')
                    .filter(|f| !f.is_empty())
                    .map(str::to_string)
                    .collect(),
            );
            path.truncate(depth);
            if let Some(parent) = path.last() {
                graph.edges.insert((parent.clone(), key.clone()));
            }
            path.push(key);
        }
        graph
    }

    /// Keeps in `metadata` only the packages and dependency edges of this graph, with its
    /// features. `None` when the graph names no package of `metadata` (nothing to trust).
    fn apply(&self, metadata: &mut Value) -> Option<()> {
        let key_of = |p: &Value| -> Option<(String, (String, String))> {
            Some((
                p.get("id")?.as_str()?.to_string(),
                (
                    p.get("name")?.as_str()?.to_string(),
                    p.get("version")?.as_str()?.to_string(),
                ),
            ))
        };
        let keys: HashMap<String, (String, String)> = metadata
            .get("packages")?
            .as_array()?
            .iter()
            .filter_map(key_of)
            .collect();
        let kept: HashSet<&String> = keys
            .iter()
            .filter(|(_, k)| self.features.contains_key(*k))
            .map(|(id, _)| id)
            .collect();
        if kept.is_empty() {
            return None;
        }
        let kept: HashSet<String> = kept.into_iter().cloned().collect();
        let packages = metadata.get_mut("packages")?.as_array_mut()?;
        packages.retain(|p| {
            p.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| kept.contains(id))
        });
        let nodes = metadata
            .get_mut("resolve")?
            .get_mut("nodes")?
            .as_array_mut()?;
        nodes.retain(|n| {
            n.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| kept.contains(id))
        });
        for node in nodes.iter_mut() {
            let id = node.get("id")?.as_str()?.to_string();
            let from = keys.get(&id)?.clone();
            let edge_kept = |dep: &str| {
                keys.get(dep)
                    .is_some_and(|to| self.edges.contains(&(from.clone(), to.clone())))
            };
            if let Some(deps) = node.get_mut("deps").and_then(Value::as_array_mut) {
                deps.retain(|d| d.get("pkg").and_then(Value::as_str).is_some_and(edge_kept));
            }
            if let Some(deps) = node.get_mut("dependencies").and_then(Value::as_array_mut) {
                deps.retain(|d| d.as_str().is_some_and(edge_kept));
            }
            let features = self.features.get(&from)?.clone();
            node["features"] = Value::from(features);
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(name: &str) -> Value {
        serde_json::json!({"id": format!("{name}-id"), "name": name, "version": "1.0.0"})
    }

    fn node(name: &str, deps: &[&str], features: &[&str]) -> Value {
        serde_json::json!({
            "id": format!("{name}-id"),
            "dependencies": deps.iter().map(|d| format!("{d}-id")).collect::<Vec<_>>(),
            "deps": deps.iter().map(|d| serde_json::json!({"name": d, "pkg": format!("{d}-id")})).collect::<Vec<_>>(),
            "features": features,
        })
    }

    #[test]
    fn a_weakly_named_optional_dependency_and_its_features_leave_the_analyzers_graph() {
        // `cargo metadata` lists `torch` (named only by `burn`'s weak feature) and unifies `cuda`
        // into `cubecl`; the build resolves neither.
        let mut metadata = serde_json::json!({
            "packages": [package("ctx"), package("burn"), package("cubecl"), package("torch"), package("serde")],
            "resolve": {"root": "ctx-id", "nodes": [
                node("ctx", &["burn"], &[]),
                node("burn", &["cubecl", "torch", "serde"], &["std"]),
                node("cubecl", &["serde"], &["cuda", "wgpu"]),
                node("torch", &[], &[]),
                node("serde", &[], &["std"]),
            ]},
        });
        let listing = "0ctx v1.0.0 (/tmp/ctx)|\n1burn v1.0.0|std\n2cubecl v1.0.0|wgpu\n\
                       3serde v1.0.0|std\n2serde v1.0.0|std (*)\n";
        let graph = ResolvedGraph::parse(listing);
        assert_eq!(graph.features.len(), 4);
        assert!(graph.apply(&mut metadata).is_some());
        let names: Vec<&str> = metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["ctx", "burn", "cubecl", "serde"]);
        let burn = &metadata["resolve"]["nodes"][1];
        assert_eq!(
            burn["dependencies"],
            serde_json::json!(["cubecl-id", "serde-id"])
        );
        assert_eq!(burn["deps"].as_array().unwrap().len(), 2);
        assert_eq!(
            metadata["resolve"]["nodes"][2]["features"],
            serde_json::json!(["wgpu"])
        );
    }

    #[test]
    fn a_listing_that_names_nothing_known_leaves_the_metadata_to_the_caller() {
        let mut metadata = serde_json::json!({
            "packages": [package("ctx")],
            "resolve": {"root": "ctx-id", "nodes": [node("ctx", &[], &[])]},
        });
        let before = metadata.clone();
        assert!(
            ResolvedGraph::parse("error: nothing\n")
                .apply(&mut metadata)
                .is_none()
        );
        assert_eq!(metadata, before);
    }

    #[test]
    fn flags_are_read_in_both_spellings() {
        let args: Vec<String> = [
            "metadata",
            "--manifest-path",
            "/a/Cargo.toml",
            "--filter-platform=x",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(flag_value(&args, "--manifest-path"), Some("/a/Cargo.toml"));
        assert_eq!(flag_value(&args, "--filter-platform"), Some("x"));
        assert_eq!(flag_value(&args, "--offline"), None);
    }
}
