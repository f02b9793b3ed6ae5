//! `arwkv-kernel`: the ARWKV Lab Jupyter kernel (evcxr engine, live displays, cooperative
//! interrupt) and its installer.

mod identity;
mod jupyter;
mod notebook;
mod session;
#[cfg(test)]
mod untrusted_inputs;

use jupyter::{kernelspec, server};
use notebook::{export, notebook_file, parameters, runner};
use session::{analyzer_graph, build_dir, engine, shared_analyzer};

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "arwkv-kernel",
    version,
    about = "Jupyter kernel for ARWKV Lab (Rust, evcxr)"
)]
struct Cli {
    /// Connection file written by Jupyter (runs the kernel).
    #[arg(long = "connection-file", short = 'f')]
    connection_file: Option<PathBuf>,
    /// Do not preload `arwkv` (plain Rust kernel; also env ARWKV_KERNEL_NO_PRELUDE=1).
    #[arg(long)]
    no_prelude: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Install the kernelspec (default: for this user).
    Install {
        /// Into the user's Jupyter data dir.
        #[arg(long, conflicts_with_all = ["sys_prefix", "prefix"])]
        user: bool,
        /// Into the active conda / virtual environment.
        #[arg(long, conflicts_with = "prefix")]
        sys_prefix: bool,
        /// Into PREFIX/share/jupyter/kernels.
        #[arg(long)]
        prefix: Option<PathBuf>,
        /// Only write the kernelspec; the first notebook then builds Burn and arwkv itself.
        #[arg(long)]
        no_prebuild: bool,
        /// Cargo features of the preloaded `arwkv` (comma-separated: wgpu, cuda, rocm, hub); written
        /// into the kernelspec and pre-built. Default: $ARWKV_KERNEL_FEATURES, else the CPU only.
        #[arg(long, value_delimiter = ',')]
        features: Option<Vec<String>>,
    },
    /// Run a notebook headless with the kernel's engine and save its outputs (nbformat 4).
    Run {
        /// The notebook.
        notebook: PathBuf,
        /// Where to write the executed notebook (default: in place).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override a parameter of the cell tagged `parameters` (repeatable): NAME=VALUE.
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Print the cells' text output to the terminal while they run.
        #[arg(long)]
        echo: bool,
        /// Save each final plot as its static SVG image only, without the Plotly figure (the
        /// notebooks committed with their outputs, `scripts/run-notebooks.sh`).
        #[arg(long)]
        static_figures: bool,
    },
    /// Export a notebook as a Cargo project (default) or a jupytext `rs:percent` script.
    Export {
        /// The notebook.
        notebook: PathBuf,
        /// Output: a directory for the Cargo project, a file for `--format rs:percent`.
        #[arg(long)]
        out: PathBuf,
        /// `cargo` (a buildable program) or `rs:percent` (jupytext script).
        #[arg(long, default_value = "cargo")]
        format: String,
        /// Export in notebook order even when the saved execution counts disagree.
        #[arg(long)]
        notebook_order: bool,
    },
    /// The rust-analyzer that kernels with the same prelude share (started by the kernels).
    #[command(hide = true)]
    AnalyzerService {
        /// The service's own folder (socket, lock, manifest copy).
        #[arg(long)]
        dir: PathBuf,
        /// The build directory whose `Cargo.toml` and `Cargo.lock` it analyses.
        #[arg(long)]
        manifest_from: PathBuf,
    },
}

/// The workspace this kernel was built from (its `arwkv` crate and `Cargo.lock`).
fn workspace_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

/// The prelude's cargo features: `$ARWKV_KERNEL_FEATURES` (comma-separated; the kernelspec written by
/// `install --features` sets it), checked against the features `arwkv` has.
fn prelude_features() -> Result<Vec<String>> {
    let features = std::env::var("ARWKV_KERNEL_FEATURES").unwrap_or_default();
    parse_features(features.split(',').map(str::to_string).collect())
}

/// Sorted, de-duplicated features; an unknown one is an error naming it.
fn parse_features(features: Vec<String>) -> Result<Vec<String>> {
    const KNOWN: [&str; 5] = ["flex", "wgpu", "cuda", "rocm", "hub"];
    let mut out: Vec<String> = vec![];
    // `flex` (the CPU) is always built; naming it changes nothing.
    for f in features
        .iter()
        .map(|f| f.trim())
        .filter(|f| !f.is_empty() && *f != "flex")
    {
        anyhow::ensure!(
            KNOWN.contains(&f),
            "unknown prelude feature `{f}` (ARWKV_KERNEL_FEATURES / --features take {})",
            KNOWN.join(", ")
        );
        if !out.iter().any(|o| o == f) {
            out.push(f.to_string());
        }
    }
    out.sort();
    Ok(out)
}

fn engine_config(
    no_prelude: bool,
    features: Vec<String>,
    interrupt_file: PathBuf,
    build_dir: Option<PathBuf>,
) -> engine::EngineConfig {
    let no_prelude =
        no_prelude || std::env::var_os("ARWKV_KERNEL_NO_PRELUDE").is_some_and(|v| v != "0");
    engine::EngineConfig {
        arwkv_path: (!no_prelude).then(|| workspace_root().join("arwkv")),
        // ARWKV_KERNEL_STATIC_PRELUDE=1 links `arwkv` into every cell instead (the layout before
        // the shared library; each cell then has its own Burn statics, so GPU tensors do not survive
        // from one cell to the next — kept for platforms where a Rust dylib cannot be loaded).
        prelude_crate: (!no_prelude
            && std::env::var_os("ARWKV_KERNEL_STATIC_PRELUDE").is_none_or(|v| v == "0"))
        .then(|| workspace_root().join("kernel").join("prelude")),
        arwkv_features: features,
        interrupt_file,
        build_dir,
        workspace_lock: Some(workspace_root().join("Cargo.lock")),
    }
}

/// A build directory for a prelude with `features` (one pool per feature set, so a CPU kernel and
/// a WGPU kernel never rebuild each other's dependencies).
fn acquire_build_dir(features: &[String]) -> Result<build_dir::BuildDir> {
    build_dir::acquire(
        &build_dir::pool_root(),
        features,
        Some(&workspace_root().join("Cargo.lock")),
    )
}

fn main() -> Result<()> {
    analyzer_graph::on_process_start();
    evcxr::runtime_hook();
    let cli = Cli::parse();
    match (cli.command, cli.connection_file) {
        (
            Some(Command::Install {
                sys_prefix,
                prefix,
                no_prebuild,
                features,
                ..
            }),
            _,
        ) => {
            let target = match (sys_prefix, prefix) {
                (true, _) => kernelspec::InstallTarget::SysPrefix,
                (_, Some(p)) => kernelspec::InstallTarget::Prefix(p),
                _ => kernelspec::InstallTarget::User,
            };
            install(target, features, no_prebuild || cli.no_prelude)
        }
        (
            Some(Command::Run {
                notebook,
                out,
                params,
                echo,
                static_figures,
            }),
            _,
        ) => run_notebook(notebook, out, &params, echo, static_figures, cli.no_prelude),
        (
            Some(Command::Export {
                notebook,
                out,
                format,
                notebook_order,
            }),
            _,
        ) => export_notebook(&notebook, &out, &format, notebook_order),
        (Some(Command::AnalyzerService { dir, manifest_from }), _) => {
            shared_analyzer::serve(&dir, &manifest_from)
        }
        (None, Some(file)) => serve(file, cli.no_prelude),
        (None, None) => anyhow::bail!(
            "nothing to do: pass --connection-file FILE (Jupyter does, see `arwkv-kernel install`)"
        ),
    }
}

/// `arwkv-kernel install`: writes the kernelspec, then pre-builds the prelude unless told not to.
fn install(
    target: kernelspec::InstallTarget,
    features: Option<Vec<String>>,
    no_prebuild: bool,
) -> Result<()> {
    let features = match features {
        Some(f) => parse_features(f)?,
        None => prelude_features()?,
    };
    let exe = std::env::current_exe().context("locating this executable")?;
    let dir = kernelspec::install(&target, &exe, &features)?;
    println!(
        "installed kernelspec `{}` in {} (prelude features: {})",
        kernelspec::KERNEL_NAME,
        dir.display(),
        if features.is_empty() {
            "cpu".to_string()
        } else {
            features.join(",")
        }
    );
    if !no_prebuild {
        let build = acquire_build_dir(&features)?;
        let warm = build.path.join("target").is_dir();
        println!(
            "pre-building the arwkv prelude in {} ({}; later kernels start warm)…",
            build.path.display(),
            if warm {
                "found built, checking"
            } else {
                "first build: about 15 minutes on 2 cores for the CPU, 20–25 with a GPU backend"
            }
        );
        let interrupt = build.path.join("prebuild.interrupt");
        let config = engine_config(false, features, interrupt, Some(build.path.clone()));
        let took = engine::prebuild(&config)?;
        println!("prelude built in {:.1} s", took.as_secs_f64());
    }
    Ok(())
}

/// `arwkv-kernel run`: runs a notebook headless and saves it with its outputs.
fn run_notebook(
    notebook: PathBuf,
    out: Option<PathBuf>,
    params: &[String],
    echo: bool,
    static_figures: bool,
    no_prelude: bool,
) -> Result<()> {
    let parameters = params
        .iter()
        .map(|p| parameters::parse_assignment(p))
        .collect::<Result<Vec<_>>>()?;
    let mut config = engine_config(no_prelude, prelude_features()?, PathBuf::new(), None);
    let build = match config.arwkv_path {
        Some(_) => Some(acquire_build_dir(&config.arwkv_features)?),
        None => None,
    };
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    config.interrupt_file = scratch.path().join("interrupt");
    config.build_dir = build.as_ref().map(|b| b.path.clone());
    let options = runner::RunOptions {
        input: notebook,
        output: out,
        parameters,
        echo,
        static_figures,
    };
    match runner::run(&options, config) {
        Ok(_) => Ok(()),
        Err(e) => {
            eprintln!("arwkv-kernel run: {e:#}");
            std::process::exit(1);
        }
    }
}

/// `arwkv-kernel export`: a notebook as a Cargo project or a jupytext script.
fn export_notebook(
    notebook: &std::path::Path,
    out: &std::path::Path,
    format: &str,
    notebook_order: bool,
) -> Result<()> {
    let nb = notebook_file::Notebook::read(notebook)?;
    match format {
        "cargo" => {
            let config = engine_config(false, prelude_features()?, PathBuf::new(), None);
            let source = export::ExportSource {
                arwkv_path: workspace_root().join("arwkv"),
                arwkv_features: config.arwkv_features,
                workspace_lock: workspace_root().join("Cargo.lock"),
            };
            export::export_cargo(&nb, out, &source, notebook_order)?;
            println!(
                "exported {} to {} (build: cd {} && cargo run --release --locked --offline)",
                notebook.display(),
                out.display(),
                out.display()
            );
        }
        "rs:percent" | "percent" => {
            std::fs::write(out, export::percent_script(&nb))
                .with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {}", out.display());
        }
        other => anyhow::bail!("unknown --format `{other}` (cargo or rs:percent)"),
    }
    Ok(())
}

/// The kernel itself: serves the connection file Jupyter wrote.
fn serve(file: PathBuf, no_prelude: bool) -> Result<()> {
    let mut config = engine_config(
        no_prelude,
        prelude_features()?,
        file.with_extension("interrupt"),
        None,
    );
    // A plain Rust kernel builds in a fresh temporary dir; with the prelude, a warm pooled one.
    let build = match config.arwkv_path {
        Some(_) => Some(acquire_build_dir(&config.arwkv_features)?),
        None => None,
    };
    config.build_dir = build.as_ref().map(|b| b.path.clone());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(server::serve(file, config))
}
