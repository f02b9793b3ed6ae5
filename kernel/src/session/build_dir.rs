//! Persistent evcxr build directories. evcxr compiles every cell as a crate in its "tmpdir"; a fresh
//! one per kernel would rebuild Burn and `arwkv` on each start. We keep a small pool of them under the
//! user's cache (`$ARWKV_KERNEL_BUILD_ROOT`, else `$XDG_CACHE_HOME/arwkv-kernel`, else
//! `~/.cache/arwkv-kernel`), each guarded by an exclusive file lock so two running kernels never
//! share one: the first free directory is taken, `install` pre-builds directory 0, and a restart finds
//! its dependencies already compiled. The workspace's `Cargo.lock` seeds each directory so the
//! cells resolve to the same crate versions as the library (and need no registry index).
//!
//! A second kernel running beside the first takes the next directory. If that one holds no built
//! prelude, it is seeded from a sibling that does ([`seed_from_sibling`]): cargo's outputs are
//! relocatable, so hard links to the sibling's compiled dependencies make the new directory fresh at
//! once, instead of a rebuild of many minutes and another copy of Burn on disk.

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
        if let Some(file) = try_lock_file(&path.join(".arwkv-kernel.lock"))? {
            seed_from_sibling(root, features, &path)?;
            seed_lockfile(&path, lock)?;
            return Ok(BuildDir { path, _lock: file });
        }
    }
    anyhow::bail!(
        "all {POOL_SIZE} kernel build directories under {} are in use by running kernels",
        root.display()
    )
}

/// Opens (creating it if needed) and exclusively locks `lock_path`; `None` while another process
/// holds the lock. The lock lasts as long as the returned file is open.
pub fn try_lock_file(lock_path: &Path) -> Result<Option<File>> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", lock_path.display()))
        }
    }
}

/// Whether `build_dir` holds a compiled prelude library (`libarwkv_prelude.so`).
pub fn prelude_library_built(build_dir: &Path) -> bool {
    prelude_library_time(build_dir).is_some()
}

/// When `build_dir`'s prelude library was last built (`None`: not built).
fn prelude_library_time(build_dir: &Path) -> Option<std::time::SystemTime> {
    let triples = std::fs::read_dir(build_dir.join("target")).ok()?;
    triples
        .flatten()
        .filter_map(|t| std::fs::read_dir(t.path().join("debug").join("deps")).ok())
        .flat_map(|deps| deps.flatten())
        .filter(|f| {
            f.file_name()
                .to_string_lossy()
                .starts_with("libarwkv_prelude")
                && f.path()
                    .extension()
                    .is_some_and(|e| e == "so" || e == "dylib")
        })
        .filter_map(|f| f.metadata().ok()?.modified().ok())
        .max()
}

/// Files at least this large are hard-linked when a directory is seeded; smaller ones (cargo's
/// fingerprints and dep-info, which cargo rewrites in place) are copied. rustc and the linker
/// replace their large outputs by renaming a new file over the old one, so a later rebuild in one
/// directory never changes the other's files.
const HARD_LINK_FROM_BYTES: u64 = 64 * 1024;

/// Seeds `dest`'s `target/` from the sibling slot (same feature set) whose prelude was built most
/// recently, when that is newer than `dest`'s own (or `dest` has none): `install` rebuilds slot 0
/// after the library changed, and a second kernel should start from that build, not from an older
/// one of its own. Incremental-compilation caches and earlier sessions' cell libraries are left
/// out. The copy is made beside `target/` and renamed into place, so a kernel killed while seeding
/// leaves no half-filled directory. Returns whether it seeded.
pub fn seed_from_sibling(root: &Path, features: &[String], dest: &Path) -> Result<bool> {
    let own = prelude_library_time(dest);
    let Some((_, source)) = (0..POOL_SIZE)
        .map(|i| root.join(slot_name(features, i)))
        .filter(|p| p != dest)
        .filter_map(|p| Some((prelude_library_time(&p)?, p)))
        .filter(|(built, _)| own.is_none_or(|own| *built > own))
        .max_by_key(|(built, _)| *built)
    else {
        return Ok(false);
    };
    let staging = dest.join("target.seeding");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("removing {}", staging.display()))?;
    }
    clone_tree(&source.join("target"), &staging).with_context(|| {
        format!(
            "seeding {} from the built prelude in {}",
            dest.display(),
            source.display()
        )
    })?;
    let target = dest.join("target");
    if target.exists() {
        std::fs::remove_dir_all(&target)
            .with_context(|| format!("removing the unfinished build in {}", target.display()))?;
    }
    std::fs::rename(&staging, &target)
        .with_context(|| format!("moving {} into place", staging.display()))?;
    Ok(true)
}

/// Copies the tree `from` to `to`: large files as hard links, small ones as copies (see
/// [`HARD_LINK_FROM_BYTES`]), skipping `incremental/` and evcxr's per-cell `libcode_N` libraries.
fn clone_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let name_text = name.to_string_lossy();
        if name_text == "incremental" || name_text.starts_with("libcode_") {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            clone_tree(&src, &dst)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if entry.metadata()?.len() < HARD_LINK_FROM_BYTES
            || std::fs::hard_link(&src, &dst).is_err()
        {
            copy_keeping_mtime(&src, &dst)?;
        }
    }
    Ok(())
}

/// Copies a file with its modification time: cargo decides what is stale by comparing the times of
/// outputs and fingerprints, so a copy stamped "now" would make everything after it rebuild.
fn copy_keeping_mtime(src: &Path, dst: &Path) -> Result<()> {
    std::fs::copy(src, dst)?;
    let modified = std::fs::metadata(src)?.modified()?;
    File::options()
        .write(true)
        .open(dst)?
        .set_modified(modified)?;
    Ok(())
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
        // The second directory had no prelude and no built sibling: nothing was seeded.
        assert!(!second.path.join("target").exists());
        let first_path = first.path.clone();
        drop(first);
        assert_eq!(acquire(root.path(), &[], None).unwrap().path, first_path);
    }

    #[test]
    fn a_second_directory_is_seeded_from_a_built_sibling_with_links_and_copies() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let built = root.path().join(slot_name(&[], 0));
        let deps = built.join("target/x86_64-unknown-linux-gnu/debug/deps");
        std::fs::create_dir_all(&deps).unwrap();
        std::fs::create_dir_all(
            built.join("target/x86_64-unknown-linux-gnu/debug/incremental/ctx-1"),
        )
        .unwrap();
        let big = vec![7u8; HARD_LINK_FROM_BYTES as usize];
        std::fs::write(deps.join("libarwkv_prelude.so"), &big).unwrap();
        std::fs::write(deps.join("libcode_3.so"), &big).unwrap();
        std::fs::write(deps.join("arwkv-1234.d"), "small").unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        File::options()
            .write(true)
            .open(deps.join("arwkv-1234.d"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let _first = acquire(root.path(), &[], None).unwrap();
        let second = acquire(root.path(), &[], None).unwrap();
        let seeded = second
            .path
            .join("target/x86_64-unknown-linux-gnu/debug/deps");
        assert!(prelude_library_built(&second.path));
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(
            ino(&seeded.join("libarwkv_prelude.so")),
            ino(&deps.join("libarwkv_prelude.so"))
        );
        assert_ne!(
            ino(&seeded.join("arwkv-1234.d")),
            ino(&deps.join("arwkv-1234.d"))
        );
        assert_eq!(
            std::fs::read_to_string(seeded.join("arwkv-1234.d")).unwrap(),
            "small"
        );
        let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        assert_eq!(
            mtime(&seeded.join("arwkv-1234.d")),
            mtime(&deps.join("arwkv-1234.d"))
        );
        assert!(!seeded.join("libcode_3.so").exists());
        assert!(
            !second
                .path
                .join("target/x86_64-unknown-linux-gnu/debug/incremental")
                .exists()
        );
        assert!(!second.path.join("target.seeding").exists());
        // A slot whose prelude is older than its sibling's is seeded again; a newer one is kept.
        let seeded_lib = seeded.join("libarwkv_prelude.so");
        std::fs::remove_file(&seeded_lib).unwrap();
        std::fs::write(&seeded_lib, &big).unwrap();
        File::options()
            .write(true)
            .open(&seeded_lib)
            .unwrap()
            .set_modified(old)
            .unwrap();
        drop(second);
        assert!(seed_from_sibling(root.path(), &[], &root.path().join(slot_name(&[], 1))).unwrap());
        assert_eq!(ino(&seeded_lib), ino(&deps.join("libarwkv_prelude.so")));
        assert!(
            !seed_from_sibling(root.path(), &[], &root.path().join(slot_name(&[], 1))).unwrap()
        );
        // A directory of another feature set is not seeded from this one.
        let gpu = acquire(root.path(), &["wgpu".into()], None).unwrap();
        assert!(!prelude_library_built(&gpu.path));
    }
}
