//! `arwkv-kernel`: the ARWKV Lab Jupyter kernel (evcxr engine, live displays, cooperative
//! interrupt) and its installer.

mod build_dir;
mod cargo_progress;
mod cell_code;
mod completeness;
mod engine;
mod export;
mod history;
mod kernelspec;
mod notebook_file;
mod parameters;
mod router;
mod runner;
mod server;
mod wire;

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
}

/// The workspace this kernel was built from (its `arwkv` crate and `Cargo.lock`).
fn workspace_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

fn engine_config(
    no_prelude: bool,
    interrupt_file: PathBuf,
    build_dir: Option<PathBuf>,
) -> engine::EngineConfig {
    let no_prelude =
        no_prelude || std::env::var_os("ARWKV_KERNEL_NO_PRELUDE").is_some_and(|v| v != "0");
    let features = std::env::var("ARWKV_KERNEL_FEATURES").unwrap_or_default();
    engine::EngineConfig {
        arwkv_path: (!no_prelude).then(|| workspace_root().join("arwkv")),
        arwkv_features: features
            .split(',')
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect(),
        interrupt_file,
        build_dir,
        workspace_lock: Some(workspace_root().join("Cargo.lock")),
    }
}

fn acquire_build_dir() -> Result<build_dir::BuildDir> {
    build_dir::acquire(
        &build_dir::pool_root(),
        Some(&workspace_root().join("Cargo.lock")),
    )
}

fn main() -> Result<()> {
    evcxr::runtime_hook();
    let cli = Cli::parse();
    match (cli.command, cli.connection_file) {
        (
            Some(Command::Install {
                sys_prefix,
                prefix,
                no_prebuild,
                ..
            }),
            _,
        ) => {
            let target = match (sys_prefix, prefix) {
                (true, _) => kernelspec::InstallTarget::SysPrefix,
                (_, Some(p)) => kernelspec::InstallTarget::Prefix(p),
                _ => kernelspec::InstallTarget::User,
            };
            let exe = std::env::current_exe().context("locating this executable")?;
            let dir = kernelspec::install(&target, &exe)?;
            println!(
                "installed kernelspec `{}` in {}",
                kernelspec::KERNEL_NAME,
                dir.display()
            );
            if !no_prebuild && !cli.no_prelude {
                let build = acquire_build_dir()?;
                println!(
                    "pre-building the arwkv prelude in {} (once; later kernels start warm)…",
                    build.path.display()
                );
                let interrupt = build.path.join("prebuild.interrupt");
                let took =
                    engine::prebuild(&engine_config(false, interrupt, Some(build.path.clone())))?;
                println!("prelude built in {:.1} s", took.as_secs_f64());
            }
            Ok(())
        }
        (
            Some(Command::Run {
                notebook,
                out,
                params,
                echo,
            }),
            _,
        ) => {
            let parameters = params
                .iter()
                .map(|p| parameters::parse_assignment(p))
                .collect::<Result<Vec<_>>>()?;
            let mut config = engine_config(cli.no_prelude, PathBuf::new(), None);
            let build = match config.arwkv_path {
                Some(_) => Some(acquire_build_dir()?),
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
            };
            match runner::run(&options, config) {
                Ok(_) => Ok(()),
                Err(e) => {
                    eprintln!("arwkv-kernel run: {e:#}");
                    std::process::exit(1);
                }
            }
        }
        (
            Some(Command::Export {
                notebook,
                out,
                format,
                notebook_order,
            }),
            _,
        ) => {
            let nb = notebook_file::Notebook::read(&notebook)?;
            match format.as_str() {
                "cargo" => {
                    let config = engine_config(false, PathBuf::new(), None);
                    let source = export::ExportSource {
                        arwkv_path: workspace_root().join("arwkv"),
                        arwkv_features: config.arwkv_features,
                        workspace_lock: workspace_root().join("Cargo.lock"),
                    };
                    export::export_cargo(&nb, &out, &source, notebook_order)?;
                    println!(
                        "exported {} to {} (build: cd {} && cargo run --release --locked --offline)",
                        notebook.display(),
                        out.display(),
                        out.display()
                    );
                }
                "rs:percent" | "percent" => {
                    std::fs::write(&out, export::percent_script(&nb))
                        .with_context(|| format!("writing {}", out.display()))?;
                    println!("wrote {}", out.display());
                }
                other => anyhow::bail!("unknown --format `{other}` (cargo or rs:percent)"),
            }
            Ok(())
        }
        (None, Some(file)) => {
            let mut config = engine_config(cli.no_prelude, file.with_extension("interrupt"), None);
            // A plain Rust kernel builds in a fresh temporary dir; with the prelude, a warm pooled one.
            let build = match config.arwkv_path {
                Some(_) => Some(acquire_build_dir()?),
                None => None,
            };
            config.build_dir = build.as_ref().map(|b| b.path.clone());
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(server::serve(file, config))
        }
        (None, None) => anyhow::bail!(
            "nothing to do: pass --connection-file FILE (Jupyter does, see `arwkv-kernel install`)"
        ),
    }
}
