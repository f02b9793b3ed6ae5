//! `arwkv-kernel install`: the kernelspec (`kernel.json` with `interrupt_mode: message`, a logo),
//! written where Jupyter looks for it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Where to install.
#[derive(Clone, Debug)]
pub enum InstallTarget {
    /// The user's Jupyter data dir.
    User,
    /// `sys.prefix` of the active Python environment (`$CONDA_PREFIX` or `$VIRTUAL_ENV`).
    SysPrefix,
    /// An explicit prefix (`PREFIX/share/jupyter/kernels/arwkv`).
    Prefix(PathBuf),
}

pub use crate::identity::{DISPLAY_NAME, KERNEL_NAME};

/// The kernels directory of `target`.
pub fn kernels_dir(target: &InstallTarget) -> Result<PathBuf> {
    Ok(match target {
        InstallTarget::User => {
            if let Some(p) = std::env::var_os("JUPYTER_DATA_DIR") {
                PathBuf::from(p).join("kernels")
            } else if cfg!(target_os = "macos") {
                home()?.join("Library/Jupyter/kernels")
            } else {
                let data = std::env::var_os("XDG_DATA_HOME")
                    .map(PathBuf::from)
                    .unwrap_or(home()?.join(".local/share"));
                data.join("jupyter/kernels")
            }
        }
        InstallTarget::SysPrefix => {
            let prefix = std::env::var_os("CONDA_PREFIX")
                .or_else(|| std::env::var_os("VIRTUAL_ENV"))
                .context("--sys-prefix needs an active conda or virtual environment ($CONDA_PREFIX / $VIRTUAL_ENV)")?;
            PathBuf::from(prefix).join("share/jupyter/kernels")
        }
        InstallTarget::Prefix(p) => p.join("share/jupyter/kernels"),
    })
}

fn home() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("$HOME is not set")
}

/// `kernel.json` for `exe`, whose prelude is built with the cargo `features` (none: the CPU only).
pub fn kernel_json(exe: &Path, features: &[String]) -> serde_json::Value {
    let mut spec = serde_json::json!({
        "argv": [exe.to_string_lossy(), "--connection-file", "{connection_file}"],
        "display_name": DISPLAY_NAME,
        "language": "rust",
        "interrupt_mode": "message",
        "metadata": {"debugger": false},
    });
    if !features.is_empty() {
        spec["env"] = serde_json::json!({ "ARWKV_KERNEL_FEATURES": features.join(",") });
    }
    spec
}

const LOGO_SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64"><rect width="64" height="64" rx="10" fill="#3b2f63"/><path d="M10 46 Q22 14 32 32 T54 18" fill="none" stroke="#ffb347" stroke-width="5" stroke-linecap="round"/><text x="32" y="58" font-family="sans-serif" font-size="11" fill="#fff" text-anchor="middle">ARWKV</text></svg>"##;

/// Writes the kernelspec (prelude built with `features`); returns its folder.
pub fn install(target: &InstallTarget, exe: &Path, features: &[String]) -> Result<PathBuf> {
    let dir = kernels_dir(target)?.join(KERNEL_NAME);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = serde_json::to_string_pretty(&kernel_json(exe, features))?;
    std::fs::write(dir.join("kernel.json"), json)
        .with_context(|| format!("writing {}", dir.join("kernel.json").display()))?;
    std::fs::write(dir.join("logo-svg.svg"), LOGO_SVG)
        .with_context(|| format!("writing the logo into {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernelspec_asks_for_message_interrupts() {
        let dir = tempfile::tempdir().unwrap();
        let spec = install(
            &InstallTarget::Prefix(dir.path().into()),
            Path::new("/bin/arwkv-kernel"),
            &[],
        )
        .unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(spec.join("kernel.json")).unwrap())
                .unwrap();
        assert_eq!(json["interrupt_mode"], "message");
        assert_eq!(json["argv"][2], "{connection_file}");
        assert!(spec.ends_with("share/jupyter/kernels/arwkv"));
        assert!(
            json.get("env").is_none(),
            "a CPU prelude needs no environment"
        );
        let gpu = kernel_json(
            Path::new("/bin/arwkv-kernel"),
            &["hub".into(), "wgpu".into()],
        );
        assert_eq!(gpu["env"]["ARWKV_KERNEL_FEATURES"], "hub,wgpu");
    }
}
