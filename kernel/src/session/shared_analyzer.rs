//! One rust-analyzer for every kernel with the same prelude, kept warm across kernel starts.
//!
//! evcxr types each cell's new variables with rust-analyzer, which must first load and
//! name-resolve the prelude's crate graph (Burn, CubeCL, `arwkv`: ~350 crates): 20–25 s on 2 cores,
//! paid again by every kernel start, restart and headless run, and ~2 GB of memory per kernel. A
//! kernel instead asks an analyzer service (`arwkv-kernel analyzer-service`, evcxr's
//! `serve_analyzer`), which it starts if none runs for its manifest: the first kernel pays the
//! load once, later ones find it warm. The service exits after [`IDLE_EXIT`] without a connected
//! kernel. Each query carries the whole analysis source, so kernels never see one another's cells;
//! a kernel whose manifest changed (a `:dep` of its own) or that cannot reach the service answers
//! with its own in-process analyzer, as before. `ARWKV_KERNEL_SHARED_ANALYZER=0` turns it off.

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::session::build_dir::try_lock_file;

/// `0` turns the shared analyzer off (each kernel loads its own).
pub const SWITCH_ENV: &str = "ARWKV_KERNEL_SHARED_ANALYZER";
/// How long a service waits without any connected kernel before it exits (also the window in
/// which a restart finds it warm). `ARWKV_KERNEL_ANALYZER_IDLE_S` overrides it.
pub const IDLE_EXIT: Duration = Duration::from_secs(15 * 60);

/// The socket a kernel with build directory `build_dir` should ask, starting the service if none
/// listens there; `None` (the kernel's own analyzer answers) when turned off or not possible.
/// Call after the prelude ran, when `build_dir/Cargo.toml` is the cells' manifest.
pub fn attach(build_dir: &Path) -> Option<PathBuf> {
    if std::env::var_os(SWITCH_ENV).is_some_and(|v| v == "0") {
        return None;
    }
    let dir = service_dir(build_dir)?;
    let socket = dir.join("socket");
    if UnixStream::connect(&socket).is_ok() {
        return Some(socket);
    }
    match start_service(&dir, build_dir) {
        Ok(()) => Some(socket),
        Err(e) => {
            eprintln!("arwkv-kernel: no shared analyzer, this kernel loads its own ({e:#})");
            None
        }
    }
}

/// `<pool root>/analyzer-<key>`: one service per manifest and kernel executable, so a rebuilt
/// kernel or another prelude never talks to a service that cannot answer it.
fn service_dir(build_dir: &Path) -> Option<PathBuf> {
    let manifest =
        evcxr::canonical_manifest(&std::fs::read_to_string(build_dir.join("Cargo.toml")).ok()?);
    let exe = std::env::current_exe().ok()?;
    let built = std::fs::metadata(&exe).and_then(|m| m.modified()).ok()?;
    let mut key = std::collections::hash_map::DefaultHasher::new();
    (manifest, exe, built).hash(&mut key);
    let root = build_dir.parent()?;
    Some(root.join(format!("analyzer-{:016x}", key.finish())))
}

fn start_service(dir: &Path, build_dir: &Path) -> Result<()> {
    create_private_dir(dir)?;
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join("service.log"))
        .with_context(|| format!("opening {}", dir.join("service.log").display()))?;
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut command = Command::new(exe);
    command
        .arg("analyzer-service")
        .arg("--dir")
        .arg(dir)
        .arg("--manifest-from")
        .arg(build_dir)
        // Not the kernel's folder, which may be a temporary one removed while the service runs.
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Its own process group: a kernel's interrupt or kill does not reach it.
        .process_group(0);
    crate::session::analyzer_graph::with_real_cargo_home(&mut command);
    let mut child = command.spawn().context("starting the analyzer service")?;
    // Reaped when it exits (it outlives this kernel if other kernels use it).
    std::thread::spawn(move || child.wait());
    Ok(())
}

/// `arwkv-kernel analyzer-service`: serves until idle. Returns at once when another service holds
/// `dir`. Must run before this process starts any thread (it routes the analyzer's cargo).
pub fn serve(dir: &Path, manifest_from: &Path) -> Result<()> {
    close_inherited_descriptors();
    create_private_dir(dir)?;
    // Held until this process exits: a second service for the same folder returns at once.
    let Some(_lock) = try_lock_file(&dir.join("service.lock"))? else {
        return Ok(());
    };
    remove_idle_siblings(dir);
    for file in ["Cargo.toml", "Cargo.lock"] {
        let from = manifest_from.join(file);
        if from.is_file() {
            std::fs::copy(&from, dir.join(file))
                .with_context(|| format!("copying {}", from.display()))?;
        }
    }
    crate::session::analyzer_graph::route_analyzer_through_shim(dir);
    let socket = dir.join("socket");
    let _ = std::fs::remove_file(&socket);
    let listener =
        UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
    let idle = std::env::var("ARWKV_KERNEL_ANALYZER_IDLE_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(IDLE_EXIT);
    std::fs::write(dir.join("pid"), std::process::id().to_string())
        .with_context(|| format!("writing {}", dir.join("pid").display()))?;
    let served = evcxr::serve_analyzer(dir, listener, idle);
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(dir.join("pid"));
    served
}

/// Creates `dir` readable by this user only: its socket then accepts no other user's connection.
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))
}

/// Removes the folders of services that no longer run (an older kernel or prelude's).
fn remove_idle_siblings(dir: &Path) {
    let (Some(root), Some(own)) = (dir.parent(), dir.file_name()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name == own || !name.to_string_lossy().starts_with("analyzer-") {
            continue;
        }
        let lock_path = entry.path().join("service.lock");
        let idle = lock_path.is_file() && matches!(try_lock_file(&lock_path), Ok(Some(_)));
        if idle {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Closes every descriptor but stdin, stdout and stderr. The service outlives the kernel that
/// started it, and a pipe inherited from the kernel's own parent (a test harness, a CI job's log)
/// would keep that reader waiting for the service to exit.
fn close_inherited_descriptors() {
    let open: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => (3..1024).collect(),
    };
    for fd in open.into_iter().filter(|&fd| fd > 2) {
        // SAFETY: runs first in this process, before anything of ours opened a descriptor; the
        // read_dir above is dropped, so its descriptor is already closed (EBADF is harmless).
        unsafe {
            libc::close(fd);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn manifests_that_differ_only_in_line_order_share_a_service_and_others_do_not() {
        let a = "[package]\nname = \"ctx\"\n\n[dependencies]\nburn = \"=0.22.1\"\narwkv = { path = \"/a\" }\n";
        let b = "[package]\nname = \"ctx\"\n\n[dependencies]\narwkv = { path = \"/a\" }\nburn = \"=0.22.1\"\n";
        let other_path = a.replace("/a", "/b");
        let moved_table = "[package]\nname = \"ctx\"\nburn = \"=0.22.1\"\n\n[dependencies]\narwkv = { path = \"/a\" }\n";
        let canonical = evcxr::canonical_manifest;
        assert_eq!(canonical(a), canonical(b));
        assert_ne!(canonical(a), canonical(&other_path));
        assert_ne!(canonical(a), canonical(moved_table));
    }
}
