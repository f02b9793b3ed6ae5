//! The evaluation engine: one thread owns evcxr's `CommandContext` (which is synchronous and
//! `&mut self`), takes requests from the shell, and hands every line its child prints to the
//! output router. The child inherits `ARWKV_KERNEL=1` (the library's displays then speak the marker
//! protocol) and `ARWKV_KERNEL_INTERRUPT_FILE` (the cooperative interrupt).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};
use jupyter_protocol::JupyterMessage;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::session::cell_error::CellError;
use crate::session::router::{CellReport, RouterCommand};

/// A MIME bundle.
pub type Bundle = BTreeMap<String, Value>;

/// What the shell asks of the engine.
pub enum EngineRequest {
    /// Run a cell.
    Execute {
        /// The code.
        code: String,
        /// The execute_request (outputs are its children).
        parent: Box<JupyterMessage>,
        /// Whether `input_request`s may be sent.
        allow_stdin: bool,
        /// The result bundle or the error.
        done: oneshot::Sender<Result<Bundle, CellError>>,
    },
    /// Completions at a byte offset.
    Complete {
        /// The code.
        code: String,
        /// Byte offset of the cursor.
        pos: usize,
        /// (matches, start, end) in bytes.
        done: oneshot::Sender<anyhow::Result<(Vec<String>, usize, usize)>>,
    },
    /// Documentation at a byte offset.
    Inspect {
        /// The code.
        code: String,
        /// Byte offset of the cursor.
        pos: usize,
        /// (plain, html).
        done: oneshot::Sender<anyhow::Result<(String, String)>>,
    },
}

/// A prompt for the front end, answered over the stdin channel.
pub struct InputBridge {
    /// The prompt.
    pub prompt: String,
    /// Hide the typed text.
    pub password: bool,
    /// The request it belongs to.
    pub parent: Box<JupyterMessage>,
    /// The answer.
    pub answer: std::sync::mpsc::Sender<String>,
}

/// How the engine starts.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The `arwkv` crate to preload (`None`: no prelude).
    pub arwkv_path: Option<PathBuf>,
    /// Cargo features of the preloaded `arwkv`.
    pub arwkv_features: Vec<String>,
    /// The `arwkv-prelude` crate: `arwkv` and Burn as one dylib that every cell links, so all cells
    /// share one copy of their statics (required for GPU devices; see that crate's manifest).
    pub prelude_crate: Option<PathBuf>,
    /// The interrupt file the child polls.
    pub interrupt_file: PathBuf,
    /// evcxr's build directory (`None`: a fresh temporary one).
    pub build_dir: Option<PathBuf>,
    /// The workspace `Cargo.lock` whose versions the prelude's dependencies keep.
    pub workspace_lock: Option<PathBuf>,
}

/// Re-seeds the build dir's `Cargo.lock` (see [`crate::session::build_dir::seed_lockfile`]).
fn seed_lock(config: &EngineConfig) -> anyhow::Result<()> {
    match &config.build_dir {
        Some(dir) if config.arwkv_path.is_some() => {
            crate::session::build_dir::seed_lockfile(dir, config.workspace_lock.as_deref())
        }
        _ => Ok(()),
    }
}

/// Whether the prelude is still loading, and what a cell that waits for it is told.
#[derive(Debug, Default)]
pub struct PreludeStatus {
    loading: Mutex<Option<String>>,
}

impl PreludeStatus {
    /// The notice for a cell that arrives while the prelude loads (`None` once it is ready).
    pub fn notice(&self) -> Option<String> {
        self.loading.lock().expect("prelude status").clone()
    }

    fn set(&self, notice: Option<String>) {
        *self.loading.lock().expect("prelude status") = notice;
    }
}

/// What a cell waiting for the prelude is told: a first build (no compiled prelude in the build
/// directory yet) takes many minutes, so it says how long and how to avoid it next time.
pub fn prelude_notice(config: &EngineConfig) -> Option<String> {
    config.arwkv_path.as_ref()?;
    let features = if config.arwkv_features.is_empty() {
        "cpu".to_string()
    } else {
        config.arwkv_features.join(",")
    };
    let built = config
        .build_dir
        .as_ref()
        .is_some_and(|d| crate::session::build_dir::prelude_library_built(d));
    Some(if built {
        format!("arwkv-kernel: loading the arwkv prelude (features: {features})…\n")
    } else {
        format!(
            "arwkv-kernel: building the arwkv prelude (features: {features}) for the first time — about 5 \
             minutes on 2 cores for the CPU, 15–20 with a GPU backend; cargo's progress follows. Next time \
             `arwkv-kernel install{}` pre-builds it.\n",
            if config.arwkv_features.is_empty() {
                String::new()
            } else {
                format!(" --features {}", config.arwkv_features.join(","))
            }
        )
    })
}

/// Handles the rest of the kernel keeps.
pub struct EngineHandles {
    /// Whether the prelude is still loading.
    pub prelude: Arc<PreludeStatus>,
    /// Requests.
    pub requests: Sender<EngineRequest>,
    /// The evaluation process (to kill after an ignored interrupt); set once the engine runs.
    pub child: Arc<Mutex<Option<Arc<Mutex<std::process::Child>>>>>,
}

/// The `use` line of the prelude (also the head of an exported program).
pub const PRELUDE_USE: &str =
    "use arwkv::notebook::{display, LossPlot, Progress, NotebookObserver};";

/// `, features = ["a", "b"]` for a dependency line (empty when there are none).
pub fn features_toml(features: &[String]) -> String {
    if features.is_empty() {
        return String::new();
    }
    let quoted: Vec<String> = features.iter().map(|f| format!("{f:?}")).collect();
    format!(", features = [{}]", quoted.join(", "))
}

/// The evcxr lines that make `arwkv` usable in every cell (run as one execution).
pub fn prelude(config: &EngineConfig) -> Vec<String> {
    let Some(path) = &config.arwkv_path else {
        return vec![];
    };
    let features = features_toml(&config.arwkv_features);
    let mut lines = vec![];
    if let Some(shared) = &config.prelude_crate {
        lines.push(format!(
            ":dep arwkv-prelude = {{ path = {:?}{features} }}",
            shared.display().to_string()
        ));
    }
    lines.push(format!(
        ":dep arwkv = {{ path = {:?}{features} }}",
        path.display().to_string()
    ));
    lines.push(
        ":dep burn = { version = \"=0.22.1\", default-features = false, features = [\"std\"] }"
            .into(),
    );
    if config.prelude_crate.is_some() {
        // Referencing the dylib makes rustc link it; `arwkv` and `burn` then resolve to its copy.
        lines.push(PRELUDE_LINK.into());
    }
    lines.push(PRELUDE_USE.into());
    lines.push(CELL_VALUE_USE.into());
    lines
}

/// Gives every `Debug` value an `evcxr_display` method, so a cell ending in an expression compiles
/// once instead of twice (see `arwkv::notebook::CellValue`). Not part of exported programs.
pub const CELL_VALUE_USE: &str = "#[allow(unused_imports)] use arwkv::notebook::CellValue;";

/// The item that makes every cell link the shared prelude library.
pub const PRELUDE_LINK: &str = "#[allow(unused_imports)] use arwkv_prelude;";

/// Rewrites our own magics into code or evcxr commands: `:device NAME` sets `ARWKV_DEVICE` in the
/// evaluation process.
pub fn translate_magics(code: &str) -> String {
    code.lines()
        .map(|line| match line.trim().strip_prefix(":device") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                let name = rest.trim();
                format!("unsafe {{ std::env::set_var(\"ARWKV_DEVICE\", {name:?}) }}")
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The cell's value as a bundle; a `()` value (a trailing `for` loop, a unit call) shows nothing,
/// as Jupyter front ends show nothing for Python's `None`.
fn bundle_of(outputs: &evcxr::EvalOutputs) -> Bundle {
    let unit = outputs.content_by_mime_type.len() == 1
        && outputs
            .content_by_mime_type
            .get("text/plain")
            .is_some_and(|t| t.trim() == "()");
    if unit {
        return Bundle::new();
    }
    outputs
        .content_by_mime_type
        .iter()
        .map(|(mime, content)| {
            let value = if mime.contains("json") {
                serde_json::from_str(content).unwrap_or_else(|_| Value::String(content.clone()))
            } else {
                Value::String(content.clone())
            };
            (mime.clone(), value)
        })
        .collect()
}

/// Jupyter's error content for an evcxr error, with compiler messages pointing into the cell.
pub fn cell_error(code: &str, error: &evcxr::Error) -> CellError {
    let lines: Vec<&str> = code.lines().collect();
    match error {
        evcxr::Error::CompilationErrors(errors) => {
            let mut traceback = vec![];
            for e in errors {
                let head = match e.code() {
                    Some(c) => format!("{}[{c}]: {}", e.level(), e.message()),
                    None => format!("{}: {}", e.level(), e.message()),
                };
                traceback.push(head);
                for m in e.spanned_messages() {
                    if let Some(span) = &m.span {
                        let src = lines.get(span.start_line.saturating_sub(1)).unwrap_or(&"");
                        traceback.push(format!("  --> cell line {}:{}", span.start_line, span.start_column));
                        traceback.push(format!("   | {src}"));
                        let width = span.end_column.saturating_sub(span.start_column).max(1);
                        traceback.push(format!(
                            "   | {}{} {}",
                            " ".repeat(span.start_column.saturating_sub(1)),
                            "^".repeat(if span.end_line == span.start_line { width } else { 1 }),
                            m.label
                        ));
                    }
                }
                for help in e.help() {
                    traceback.push(format!("help: {help}"));
                }
                if let Some(hint) = e.evcxr_extra_hint() {
                    traceback.push(format!("hint: {hint}"));
                }
            }
            CellError {
                ename: "CompilationError".into(),
                evalue: errors.first().map(|e| e.message()).unwrap_or_default(),
                traceback,
            }
        }
        evcxr::Error::SubprocessTerminated(message) => CellError {
            ename: "EvaluationProcessTerminated".into(),
            evalue: message.clone(),
            traceback: vec![
                message.clone(),
                "The evaluation process was restarted: variables are lost, definitions and dependencies are kept.".into(),
            ],
        },
        other => CellError {
            ename: "Error".into(),
            evalue: other.to_string(),
            traceback: other.to_string().lines().map(str::to_string).collect(),
        },
    }
}

/// Starts the engine thread; requests queue until evcxr is ready.
pub fn start(
    config: EngineConfig,
    router: Sender<RouterCommand>,
    stdin: Sender<InputBridge>,
) -> anyhow::Result<EngineHandles> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let child = Arc::new(Mutex::new(None));
    let child_slot = child.clone();
    // The evaluation process inherits our environment.
    // SAFETY: set before any other thread of ours reads the environment (the engine thread and evcxr's
    // child are started below).
    unsafe {
        std::env::set_var(arwkv::notebook::display::KERNEL_ENV, "1");
        std::env::set_var(
            arwkv::notebook::interrupt::INTERRUPT_FILE_ENV,
            &config.interrupt_file,
        );
    }
    use_build_dir(config.build_dir.as_deref());
    let prelude = Arc::new(PreludeStatus::default());
    prelude.set(prelude_notice(&config));
    let status = prelude.clone();
    std::thread::Builder::new()
        .name("evcxr-engine".into())
        .spawn(move || run(config, rx, router, stdin, child_slot, status))?;
    Ok(EngineHandles {
        prelude,
        requests: tx,
        child,
    })
}

/// Points evcxr at `dir` and lets its evaluation process find the toolchain's `libstd` there: cargo
/// writes an `$ORIGIN`-relative runpath for `target/<triple>/debug/deps`, but evcxr loads the copy one
/// directory up, which breaks that path whenever the build dir sits beside `~/.rustup` (it does under
/// `~/.cache`). Called before any thread of ours reads the environment.
/// The shared prelude library sits in `target/<host>/debug/deps` beside the cells' own copies; the
/// same runpath problem hides it, so that folder goes on `LD_LIBRARY_PATH` too.
fn use_build_dir(dir: Option<&std::path::Path>) {
    let Some(dir) = dir else { return };
    let rustc = |args: &[&str]| {
        std::process::Command::new("rustc")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
    };
    let mut libs: Vec<String> = vec![];
    if let Some(host) = rustc(&["-vV"]).and_then(|v| {
        v.lines()
            .find_map(|l| l.strip_prefix("host: ").map(|h| h.trim().to_string()))
    }) {
        match cells_library_dir(dir, &host) {
            Ok(deps) => libs.push(deps.display().to_string()),
            Err(e) => eprintln!("arwkv-kernel: could not create the cells' library folder: {e}"),
        }
    }
    if let Some(lib) = rustc(&["--print", "target-libdir"]) {
        libs.push(lib.trim().to_string());
    }
    if let Ok(old) = std::env::var("LD_LIBRARY_PATH")
        && !old.is_empty()
    {
        libs.push(old);
    }
    crate::session::analyzer_graph::route_analyzer_through_shim(dir);
    // SAFETY: see the function doc (single-threaded at this point).
    unsafe {
        std::env::set_var("EVCXR_TMPDIR", dir);
        std::env::set_var("LD_LIBRARY_PATH", libs.join(":"));
    }
}

/// Creates and returns `build_dir`'s `target/<host>/debug/deps`, where the prelude library and the
/// cells' libraries are built. It must exist before the evaluation process starts: the dynamic
/// loader marks a missing `LD_LIBRARY_PATH` folder as absent at process start and never looks in it
/// again, so after a first build (no `target/` yet when the kernel started) cells failed to load.
fn cells_library_dir(build_dir: &std::path::Path, host: &str) -> std::io::Result<PathBuf> {
    let deps = build_dir
        .join("target")
        .join(host)
        .join("debug")
        .join("deps");
    std::fs::create_dir_all(&deps)?;
    Ok(deps)
}

/// Compiles the prelude once in `config.build_dir` (what `arwkv-kernel install` does), so that the
/// first cell of a notebook finds Burn and `arwkv` built. Returns the time it took.
pub fn prebuild(config: &EngineConfig) -> anyhow::Result<std::time::Duration> {
    let started = std::time::Instant::now();
    use_build_dir(config.build_dir.as_deref());
    let (mut ctx, _outputs) =
        evcxr::CommandContext::new().map_err(|e| anyhow::anyhow!("evcxr could not start: {e}"))?;
    seed_lock(config)?;
    give_builds_the_real_cargo_home(&mut ctx)?;
    let cell = prelude(config).join("\n");
    ctx.execute(&cell)
        .map_err(|e| anyhow::anyhow!("building the arwkv prelude:\n{cell}\n{e}"))?;
    ctx.execute("arwkv::notebook::in_kernel()")
        .map_err(|e| anyhow::anyhow!("running a first cell against arwkv: {e}"))?;
    Ok(started.elapsed())
}

/// evcxr's cargo builds run with the user's `CARGO_HOME`, not the analyzer's shim (see
/// [`crate::session::analyzer_graph`]); a different home would move every registry source path and rebuild
/// the prelude.
fn give_builds_the_real_cargo_home(ctx: &mut evcxr::CommandContext) -> anyhow::Result<()> {
    let Some(home) = crate::session::analyzer_graph::cargo_home_for_builds() else {
        return Ok(());
    };
    ctx.execute(&format!(":build_env CARGO_HOME={}", home.display()))
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("setting CARGO_HOME for evcxr's builds: {e}"))
}

/// Lets rust-analyzer index the prelude's crate graph while no cell waits. Its first type query
/// over `arwkv` and Burn takes ~20 s on 2 cores (name resolution of every crate the cells can
/// see); without this the notebook's first `let` pays it. A completion request over a cell that
/// uses `arwkv` does the same indexing without compiling anything. With the shared analyzer
/// ([`crate::session::shared_analyzer`]) this warms the service, or costs ~0.3 s when it is warm.
fn warm_up_analyzer(ctx: &mut evcxr::CommandContext) {
    const PROBE: &str = "let warm_up = arwkv::notebook::in_kernel();\nwarm_up.";
    let _ = ctx.completions(PROBE, PROBE.len());
}

fn run(
    config: EngineConfig,
    requests: Receiver<EngineRequest>,
    router: Sender<RouterCommand>,
    stdin: Sender<InputBridge>,
    child_slot: Arc<Mutex<Option<Arc<Mutex<std::process::Child>>>>>,
    prelude_status: Arc<PreludeStatus>,
) {
    let (mut ctx, outputs) = match evcxr::CommandContext::new() {
        Ok(x) => x,
        Err(e) => {
            let _ = router.send(RouterCommand::Fatal(format!("evcxr could not start: {e}")));
            // Answer every request with the error.
            for req in requests {
                if let EngineRequest::Execute { done, .. } = req {
                    let _ = done.send(Err(CellError {
                        ename: "KernelStartError".into(),
                        evalue: e.to_string(),
                        traceback: vec![format!("evcxr could not start: {e}")],
                    }));
                }
            }
            return;
        }
    };
    *child_slot.lock().expect("child slot") = Some(ctx.process_handle());
    let _ = router.send(RouterCommand::Attach(outputs.stdout, outputs.stderr));
    let mut prelude_error = give_builds_the_real_cargo_home(&mut ctx)
        .and_then(|()| seed_lock(&config))
        .err()
        .map(|e| format!("{e:#}"));
    // One evcxr execution for the whole prelude: each one re-runs cargo and re-indexes the
    // dependency graph (about 15–30 s with Burn), so the `:dep` lines go together.
    let cell = prelude(&config).join("\n");
    if prelude_error.is_none()
        && !cell.is_empty()
        && let Err(e) = ctx.execute(&cell)
    {
        prelude_error = Some(format!("the arwkv prelude failed:\n{cell}\n{e}"));
    }
    if prelude_error.is_none()
        && !cell.is_empty()
        && let Some(socket) = config
            .build_dir
            .as_deref()
            .and_then(crate::session::shared_analyzer::attach)
    {
        ctx.use_shared_analyzer(socket);
    }
    if prelude_error.is_none() && !cell.is_empty() && requests.is_empty() {
        warm_up_analyzer(&mut ctx);
    }
    prelude_status.set(None);
    for req in requests {
        match req {
            EngineRequest::Execute {
                code,
                parent,
                allow_stdin,
                done,
            } => {
                let _ = std::fs::remove_file(&config.interrupt_file);
                let _ = router.send(RouterCommand::Begin(parent.clone()));
                if let Some(msg) = prelude_error.take() {
                    let _ = router.send(RouterCommand::Stderr(format!("{msg}\n")));
                }
                let ask = |prompt: String, password: bool| -> String {
                    if !allow_stdin {
                        return String::new();
                    }
                    let (answer, wait) = std::sync::mpsc::channel();
                    let bridge = InputBridge {
                        prompt,
                        password,
                        parent: parent.clone(),
                        answer,
                    };
                    match stdin.send(bridge) {
                        Ok(()) => wait.recv().unwrap_or_default(),
                        Err(_) => String::new(),
                    }
                };
                let code = translate_magics(&code);
                let result = ctx.execute_with_callbacks(
                    &code,
                    &mut evcxr::EvalCallbacks {
                        input_reader: &|req| ask(req.prompt, req.is_password),
                    },
                );
                let (ack, wait) = crossbeam_channel::bounded::<CellReport>(1);
                let _ = router.send(RouterCommand::Barrier(ack));
                let report = wait.recv().unwrap_or_default();
                let outcome = match result {
                    Ok(outputs) => match report.panic {
                        Some(panic) => Err(panic),
                        None => Ok(bundle_of(&outputs)),
                    },
                    Err(e) => Err(cell_error(&code, &e)),
                };
                let _ = done.send(outcome);
            }
            EngineRequest::Complete { code, pos, done } => {
                let result = ctx.completions(&code, pos).map(|c| {
                    let matches = c.completions.into_iter().map(|m| m.code).collect();
                    (matches, c.start_offset, c.end_offset)
                });
                let _ = done.send(result);
            }
            EngineRequest::Inspect { code, pos, done } => {
                let _ = done.send(ctx.hover_at(&code, pos));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_magic_becomes_code() {
        assert_eq!(
            translate_magics(":device wgpu\nlet x = 1;"),
            "unsafe { std::env::set_var(\"ARWKV_DEVICE\", \"wgpu\") }\nlet x = 1;"
        );
        assert_eq!(translate_magics(":dep x = \"1\""), ":dep x = \"1\"");
    }

    #[test]
    fn the_cells_library_folder_exists_before_the_first_build() {
        let root = tempfile::tempdir().unwrap();
        let deps = cells_library_dir(root.path(), "x86_64-unknown-linux-gnu").unwrap();
        assert!(deps.is_dir());
        assert!(deps.ends_with("target/x86_64-unknown-linux-gnu/debug/deps"));
        // Again on a warm build directory: nothing changes, no error.
        assert_eq!(
            cells_library_dir(root.path(), "x86_64-unknown-linux-gnu").unwrap(),
            deps
        );
    }
}
