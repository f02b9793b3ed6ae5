//! A run directory's state and how a run treats what it finds there: a fresh run refuses a
//! directory that holds another run, `--overwrite` deletes that run's state whole, `--resume`
//! continues only a checkpoint made under the same config (checked by name against `run.json`
//! and by the config fingerprint each checkpoint records) and never a `.partial` folder.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::run_config::RunConfig;
use crate::data::DataPosition;
use crate::error::{Error, Result};

/// How a run starts in its directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// A new run; refused when the directory already holds a run's state.
    Fresh,
    /// Continue from the newest complete checkpoint made under the same config (or start at step
    /// 0 when there is none and the directory holds no other run).
    Resume,
    /// A new run that first deletes whatever run state the directory holds (files a run does not
    /// write are left alone).
    Overwrite,
}

impl Start {
    /// `Resume` when `resume`, else `Fresh` (the CLI's and older callers' flag).
    pub fn resume_if(resume: bool) -> Self {
        if resume { Start::Resume } else { Start::Fresh }
    }
}

/// The entries a run writes into its directory; together they are "a run's state".
pub const RUN_STATE: [&str; 5] = [
    "run.json",
    "metrics.jsonl",
    "loss.html",
    "checkpoints",
    "student",
];

/// Config keys that may change between a run and its resume (where it runs, how often it saves,
/// how it trades memory for time); any other difference would continue one run with another's
/// settings.
const RESUMABLE_CHANGES: [&str; 7] = [
    "device",
    "devices",
    "save_every",
    "out",
    "loss_chunk_tokens",
    "precision",
    "activation_checkpointing",
];

/// `trainer_state.json` of a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TrainerState {
    pub step: u64,
    pub data: DataPosition,
    pub optimizer_step: u64,
    /// [`config_fingerprint`] of the run that made the checkpoint (absent in older checkpoints).
    #[serde(default)]
    pub config_sha256: Option<String>,
}

fn checkpoints(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

/// The folder of the checkpoint at `step`.
pub(crate) fn checkpoint_dir(out: &Path, step: u64) -> PathBuf {
    checkpoints(out).join(format!("step-{step:06}"))
}

/// Whether a checkpoint folder's name is a finished one (`step-000040`, not `step-000040.partial`).
fn is_finished_checkpoint_name(name: &str) -> bool {
    name.strip_prefix("step-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The newest complete checkpoint of a run directory, if any (`.partial` folders, left by a run
/// killed while saving, never count).
pub fn latest_checkpoint(out: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(checkpoints(out))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| is_finished_checkpoint_name(&n.to_string_lossy()))
                && p.join("trainer_state.json").is_file()
        })
        .collect();
    dirs.sort();
    dirs.pop()
}

/// Removes the `.partial` checkpoint folders a run killed while saving left behind.
fn remove_partial_checkpoints(out: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(checkpoints(out)) else {
        return Ok(());
    };
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if path.extension().is_some_and(|e| e == "partial") {
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// The config as JSON without the keys a resume may change.
fn comparable(cfg: &RunConfig) -> serde_json::Map<String, serde_json::Value> {
    let serde_json::Value::Object(mut map) =
        serde_json::to_value(cfg).expect("a run config serialises to a JSON object")
    else {
        unreachable!("a run config serialises to a JSON object")
    };
    for key in RESUMABLE_CHANGES {
        map.remove(key);
    }
    map
}

/// SHA-256 of the config without the keys a resume may change: what a checkpoint records so
/// that a resume under another config is caught even when `run.json` was replaced.
pub(crate) fn config_fingerprint(cfg: &RunConfig) -> String {
    let text = serde_json::to_string(&comparable(cfg)).expect("JSON values serialise");
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The top-level keys of `run.json` in `out` that differ from `cfg` (ignoring the keys a resume
/// may change); `None` when there is no `run.json`.
fn differing_keys(cfg: &RunConfig, out: &Path) -> Result<Option<Vec<String>>> {
    let recorded = out.join("run.json");
    if !recorded.is_file() {
        return Ok(None);
    }
    let before: serde_json::Value = crate::error::read_json(&recorded)?;
    let now = comparable(cfg);
    let empty = serde_json::Map::new();
    let before = before.as_object().unwrap_or(&empty);
    let mut differ: Vec<String> = before
        .keys()
        .chain(now.keys())
        .filter(|k| !RESUMABLE_CHANGES.contains(&k.as_str()) && before.get(*k) != now.get(*k))
        .cloned()
        .collect();
    differ.sort();
    differ.dedup();
    Ok(Some(differ))
}

fn different_config(out: &Path, what: &str, keys: &[String]) -> Error {
    let named = if keys.is_empty() {
        String::new()
    } else {
        format!(" ({} differ)", keys.join(", "))
    };
    Error::RunDirectory {
        dir: out.to_path_buf(),
        message: format!(
            "{what} was made under a different config{named}; resume with the recorded config, \
             pass --overwrite to replace the run, or choose another run directory"
        ),
    }
}

/// Refuses to resume `checkpoint` when it lies beyond `cfg.steps` or was made under a different
/// config (naming the keys when `run.json` tells them).
fn check_resumable(cfg: &RunConfig, checkpoint: &Path) -> Result<TrainerState> {
    let state: TrainerState = crate::error::read_json(&checkpoint.join("trainer_state.json"))?;
    if state.step > cfg.steps {
        return Err(Error::RunDirectory {
            dir: checkpoint.to_path_buf(),
            message: format!(
                "resume: the checkpoint is at step {}, beyond this config's steps = {}",
                state.step, cfg.steps
            ),
        });
    }
    let keys = differing_keys(cfg, &cfg.out)?.unwrap_or_default();
    let fingerprint_differs = state
        .config_sha256
        .as_ref()
        .is_some_and(|h| *h != config_fingerprint(cfg));
    if !keys.is_empty() || fingerprint_differs {
        let what = format!("resume: {}", checkpoint.display());
        return Err(different_config(&cfg.out, &what, &keys));
    }
    Ok(state)
}

/// The run-state entries present in `out`.
pub fn found_state(out: &Path) -> Vec<&'static str> {
    RUN_STATE
        .into_iter()
        .filter(|name| out.join(name).symlink_metadata().is_ok())
        .collect()
}

/// Deletes the run state in `out` (only the entries a run writes).
fn delete_state(out: &Path) -> Result<()> {
    for name in found_state(out) {
        let path = out.join(name);
        let meta = path.symlink_metadata().map_err(|e| Error::io(&path, e))?;
        let removed = if meta.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// Makes `cfg.out` ready for a run started as `start`, and returns the checkpoint to resume from
/// with its trainer state (for [`Start::Resume`] when there is one).
pub(crate) fn prepare(cfg: &RunConfig, start: Start) -> Result<Option<(PathBuf, TrainerState)>> {
    let out = &cfg.out;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    match start {
        Start::Overwrite => delete_state(out)?,
        Start::Fresh => {
            let found = found_state(out);
            if !found.is_empty() {
                return Err(Error::RunDirectory {
                    dir: out.clone(),
                    message: format!(
                        "already holds a run ({}); pass --resume to continue it, --overwrite to \
                         replace it, or choose another run directory",
                        found.join(", ")
                    ),
                });
            }
        }
        Start::Resume => {
            remove_partial_checkpoints(out)?;
            if let Some(dir) = latest_checkpoint(out) {
                let state = check_resumable(cfg, &dir)?;
                return Ok(Some((dir, state)));
            }
            // Nothing to resume: start at step 0, but never over another config's run.
            if let Some(keys) = differing_keys(cfg, out)?
                && !keys.is_empty()
            {
                return Err(different_config(out, "its run.json", &keys));
            }
            delete_state(out)?;
        }
    }
    Ok(None)
}
