//! Where a model lives: a local folder, the Hugging Face cache, or (feature `hub`) the Hub.
//!
//! `org/name` resolves through the cache layout that `huggingface_hub` writes:
//! `$HF_HUB_CACHE` (or `$HF_HOME/hub`, or `$XDG_CACHE_HOME/huggingface/hub`, or
//! `~/.cache/huggingface/hub`) / `models--org--name/refs/main` → `snapshots/<sha>/`.
//! `HF_HUB_OFFLINE=1` forbids downloads.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Files every model folder needs.
pub const REQUIRED_FILES: &[&str] = &["config.json"];
/// Files used when present.
pub const OPTIONAL_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
];

/// The Hugging Face hub cache directory, from the environment.
pub fn hub_cache_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = env("HF_HUB_CACHE").or_else(|| env("HUGGINGFACE_HUB_CACHE")) {
        return p;
    }
    if let Some(home) = env("HF_HOME") {
        return home.join("hub");
    }
    let cache = env("XDG_CACHE_HOME")
        .unwrap_or_else(|| env("HOME").unwrap_or_else(|| ".".into()).join(".cache"));
    cache.join("huggingface").join("hub")
}

/// Whether `HF_HUB_OFFLINE` is set to a true value.
pub fn offline() -> bool {
    matches!(
        std::env::var("HF_HUB_OFFLINE")
            .map(|v| v.to_ascii_lowercase())
            .as_deref(),
        Ok("1" | "true" | "yes" | "on")
    )
}

/// Whether a model argument names a hub repository (`org/name`) rather than a path.
pub fn looks_like_repo_id(model: &str) -> bool {
    let parts: Vec<&str> = model.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && *p != "."
                && *p != ".."
        })
}

/// Resolves `--model` to a local folder holding `config.json` and the weights.
pub fn resolve_model(model: &str) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.is_dir() {
        return check_folder(model, path);
    }
    // A link that cannot be followed (a loop, a dangling target) is named as such, not reported
    // as a cache miss.
    if let Ok(link) = std::fs::symlink_metadata(path)
        && link.file_type().is_symlink()
        && let Err(e) = std::fs::metadata(path)
    {
        return Err(Error::Resolve {
            model: model.into(),
            message: format!("is a symbolic link that cannot be followed: {e}"),
        });
    }
    if path.exists() {
        return Err(Error::Resolve {
            model: model.into(),
            message: "is a file; pass the model's folder".into(),
        });
    }
    if !looks_like_repo_id(model) {
        return Err(Error::Resolve {
            model: model.into(),
            message: "no such folder, and not a hub id of the form `org/name`".into(),
        });
    }
    let cache = hub_cache_dir();
    match cached_snapshot(&cache, model) {
        Some(snapshot) if has_model_files(&snapshot) => Ok(snapshot),
        found => fetch(model, &cache, found),
    }
}

/// Resolves a model's `config.json` alone: the file itself, a folder's, or a hub id's (from the
/// cache, else — with feature `hub` — downloading that one file, never the weights).
pub fn resolve_config(model: &str) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if path.is_dir() {
        let config = path.join("config.json");
        return match config.is_file() {
            true => Ok(config),
            false => Err(Error::Resolve {
                model: model.into(),
                message: "`config.json` is missing from the folder".into(),
            }),
        };
    }
    if !looks_like_repo_id(model) {
        return Err(Error::Resolve {
            model: model.into(),
            message: "no such file or folder, and not a hub id of the form `org/name`".into(),
        });
    }
    let cache = hub_cache_dir();
    if let Some(config) = cached_snapshot(&cache, model)
        .map(|s| s.join("config.json"))
        .filter(|c| c.is_file())
    {
        return Ok(config);
    }
    fetch_config(model, &cache)
}

#[cfg(not(feature = "hub"))]
fn fetch_config(model: &str, cache: &Path) -> Result<PathBuf> {
    Err(Error::Resolve {
        model: model.into(),
        message: format!(
            "its `config.json` is not in the Hugging Face cache {}; this build has no downloader \
             (feature `hub`): fetch it with `huggingface-cli download {model} config.json`, or pass \
             the file",
            cache.display()
        ),
    })
}

#[cfg(feature = "hub")]
fn fetch_config(model: &str, cache: &Path) -> Result<PathBuf> {
    let fail = |e: &dyn std::fmt::Display| Error::Resolve {
        model: model.into(),
        message: format!("downloading its config.json failed: {e}"),
    };
    if offline() {
        return Err(fail(
            &"HF_HUB_OFFLINE is set and the cache does not hold it",
        ));
    }
    let client = hf_hub::HFClient::builder()
        .cache_dir(cache.to_path_buf())
        .build_sync()
        .map_err(|e| fail(&e))?;
    let (owner, name) = model
        .split_once('/')
        .expect("checked by looks_like_repo_id");
    let dir = client
        .model(owner, name)
        .snapshot_download()
        .allow_patterns(vec!["config.json".into()])
        .send()
        .map_err(|e| fail(&e))?;
    Ok(dir.join("config.json"))
}

fn check_folder(model: &str, dir: &Path) -> Result<PathBuf> {
    for f in REQUIRED_FILES {
        if !dir.join(f).is_file() {
            return Err(Error::Resolve {
                model: model.into(),
                message: format!("`{f}` is missing from the folder"),
            });
        }
    }
    Ok(dir.to_path_buf())
}

fn has_model_files(dir: &Path) -> bool {
    dir.join("config.json").is_file() && weight_files_present(dir)
}

/// Whether the folder has a complete set of safetensors (single file, or index plus every shard).
pub fn weight_files_present(dir: &Path) -> bool {
    if dir.join(crate::weights::SINGLE_FILE).is_file() {
        return true;
    }
    match shard_names(dir) {
        Some(names) => names.iter().all(|n| dir.join(n).is_file()),
        None => false,
    }
}

fn shard_names(dir: &Path) -> Option<Vec<String>> {
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(crate::weights::INDEX_FILE)).ok()?)
            .ok()?;
    let mut names: Vec<String> = index
        .get("weight_map")?
        .as_object()?
        .values()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    names.sort();
    names.dedup();
    Some(names)
}

/// The snapshot folder of `org/name` in a cache, if `refs/main` points at one.
pub fn cached_snapshot(cache: &Path, repo_id: &str) -> Option<PathBuf> {
    let repo = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    let sha = std::fs::read_to_string(repo.join("refs").join("main")).ok()?;
    // A revision is a commit hash; anything else (say `../..`) is not followed.
    let sha = sha.trim();
    if sha.is_empty() || !sha.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let snapshot = repo.join("snapshots").join(sha);
    snapshot.is_dir().then_some(snapshot)
}

fn missing_files(snapshot: Option<&Path>) -> Vec<String> {
    let Some(dir) = snapshot else {
        return vec!["config.json".into(), crate::weights::SINGLE_FILE.into()];
    };
    let mut missing: Vec<String> = REQUIRED_FILES
        .iter()
        .filter(|f| !dir.join(f).is_file())
        .map(|f| f.to_string())
        .collect();
    if !weight_files_present(dir) {
        match shard_names(dir) {
            Some(names) => missing.extend(names.into_iter().filter(|n| !dir.join(n).is_file())),
            None => missing.push(format!(
                "{} (or {})",
                crate::weights::SINGLE_FILE,
                crate::weights::INDEX_FILE
            )),
        }
    }
    missing
}

#[cfg(not(feature = "hub"))]
fn fetch(model: &str, cache: &Path, snapshot: Option<PathBuf>) -> Result<PathBuf> {
    let missing = missing_files(snapshot.as_deref());
    Err(Error::Resolve {
        model: model.into(),
        message: format!(
            "`{}` not found in the Hugging Face cache {}; this build has no downloader (feature `hub`). \
             Fetch it with `huggingface-cli download {model}` (or `hf download {model}`), \
             or rebuild with `--features hub`",
            missing.join("`, `"),
            cache.display()
        ),
    })
}

#[cfg(feature = "hub")]
fn fetch(model: &str, cache: &Path, snapshot: Option<PathBuf>) -> Result<PathBuf> {
    let missing = missing_files(snapshot.as_deref());
    if offline() {
        return Err(Error::Resolve {
            model: model.into(),
            message: format!(
                "`{}` not found in the Hugging Face cache {} and HF_HUB_OFFLINE is set; \
                 unset it or fetch with `huggingface-cli download {model}`",
                missing.join("`, `"),
                cache.display()
            ),
        });
    }
    download(model, cache)
}

#[cfg(feature = "hub")]
fn download(model: &str, cache: &Path) -> Result<PathBuf> {
    let fail = |e: &dyn std::fmt::Display| Error::Resolve {
        model: model.into(),
        message: format!("download failed: {e}"),
    };
    let client = hf_hub::HFClient::builder()
        .cache_dir(cache.to_path_buf())
        .build_sync()
        .map_err(|e| fail(&e))?;
    let (owner, name) = model
        .split_once('/')
        .expect("checked by looks_like_repo_id");
    let repo = client.model(owner, name);
    let dir = repo
        .snapshot_download()
        .allow_patterns(vec![
            "*.safetensors".into(),
            "*.json".into(),
            "*.jinja".into(),
        ])
        .send()
        .map_err(|e| fail(&e))?;
    check_folder(model, &dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert!(looks_like_repo_id("Qwen/Qwen2.5-0.5B-Instruct"));
        assert!(!looks_like_repo_id("a/b/c"));
        assert!(!looks_like_repo_id("../x"));
        assert!(!looks_like_repo_id("plain"));
    }

    #[test]
    fn a_symlink_loop_is_named_and_a_bad_revision_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("org");
        std::fs::create_dir(&a).unwrap();
        let looped = a.join("name");
        std::os::unix::fs::symlink(&looped, &looped).unwrap();
        let e = resolve_model(looped.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("symbolic link that cannot be followed"), "{e}");

        let repo = dir.path().join("models--org--name");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots")).unwrap();
        std::fs::write(repo.join("refs/main"), "../../..\n").unwrap();
        assert_eq!(cached_snapshot(dir.path(), "org/name"), None);
        std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        assert_eq!(
            cached_snapshot(dir.path(), "org/name"),
            Some(repo.join("snapshots/abc123"))
        );
    }
}
