//! Persistent evcxr build directories. evcxr compiles every cell as a crate in its "tmpdir"; a fresh
//! one per kernel would rebuild Burn and `arwkv` on each start. We keep a small pool of them under the
//! user's cache (`$ARWKV_KERNEL_BUILD_ROOT`, else `$XDG_CACHE_HOME/arwkv-kernel`, else
//! `~/.cache/arwkv-kernel`), each guarded by an exclusive file lock so two running kernels never
//! share one: the first free directory is taken, `install` pre-builds directory 0, and a restart finds
//! its dependencies already compiled. The workspace's `Cargo.lock` seeds each directory so the
//! cells resolve to the same crate versions as the library (and need no registry index).

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// How many kernels may run at once before they queue for a free directory.
pub const POOL_SIZE: usize = 8;

/// A locked build directory, released when dropped.
#[derive(Debug)]
pub struct BuildDir {
    /// The evcxr tmpdir.
    pub path: PathBuf,
    _lock: File,
}

/// Root of the pool.
pub fn pool_root() -> PathBuf {
    if let Some(root) = std::env::var_os("ARWKV_KERNEL_BUILD_ROOT") {
        return PathBuf::from(root);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("arwkv-kernel")
}

/// The pool's directory name for slot `i` of a prelude built with `features` (`build-3`,
/// `build-hub+wgpu-0`): one pool per feature set, so kernels of different backends never rebuild
/// each other's dependencies.
pub fn slot_name(features: &[String], i: usize) -> String {
    if features.is_empty() {
        format!("build-{i}")
    } else {
        format!("build-{}-{i}", features.join("+"))
    }
}

/// Takes the first free directory of the pool under `root` for a prelude with `features`, seeding
/// its `Cargo.lock` from `lock`.
pub fn acquire(root: &Path, features: &[String], lock: Option<&Path>) -> Result<BuildDir> {
    for i in 0..POOL_SIZE {
        let path = root.join(slot_name(features, i));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("creating the build directory {}", path.display()))?;
        let lock_path = path.join(".arwkv-kernel.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        match file.try_lock() {
            Ok(()) => {
                seed_lockfile(&path, lock)?;
                return Ok(BuildDir { path, _lock: file });
            }
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", lock_path.display()));
            }
        }
    }
    anyhow::bail!(
        "all {POOL_SIZE} kernel build directories under {} are in use by running kernels",
        root.display()
    )
}

/// Copies the workspace `Cargo.lock` into `dir` unless the one there already pins `arwkv`. evcxr's
/// first (dependency-free) build prunes a lock to nothing, so this runs again right before the
/// prelude's `:dep` lines: cargo then keeps the workspace's versions instead of resolving afresh.
pub fn seed_lockfile(dir: &Path, lock: Option<&Path>) -> Result<()> {
    let target = dir.join("Cargo.lock");
    let pins_arwkv = std::fs::read_to_string(&target)
        .map(|text| text.contains("name = \"arwkv\""))
        .unwrap_or(false);
    if let Some(lock) = lock.filter(|l| l.is_file())
        && !pins_arwkv
    {
        std::fs::copy(lock, &target)
            .with_context(|| format!("seeding {} from {}", target.display(), lock.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_kernels_get_different_directories_and_a_released_one_is_reused() {
        let root = tempfile::tempdir().unwrap();
        let lock = root.path().join("workspace.lock");
        std::fs::write(&lock, "[[package]]\nname = \"arwkv\"\n").unwrap();
        let first = acquire(root.path(), &[], Some(&lock)).unwrap();
        let second = acquire(root.path(), &[], Some(&lock)).unwrap();
        let gpu = acquire(root.path(), &["wgpu".into()], Some(&lock)).unwrap();
        assert!(gpu.path.ends_with("build-wgpu-0"), "{}", gpu.path.display());
        assert_ne!(first.path, second.path);
        assert!(
            std::fs::read_to_string(first.path.join("Cargo.lock"))
                .unwrap()
                .contains("arwkv")
        );
        // A lock pruned by a dependency-free build is seeded again; one that pins arwkv is kept.
        std::fs::write(first.path.join("Cargo.lock"), "version = 4\n").unwrap();
        seed_lockfile(&first.path, Some(&lock)).unwrap();
        assert!(
            std::fs::read_to_string(first.path.join("Cargo.lock"))
                .unwrap()
                .contains("arwkv")
        );
        let first_path = first.path.clone();
        drop(first);
        assert_eq!(acquire(root.path(), &[], None).unwrap().path, first_path);
    }
}
