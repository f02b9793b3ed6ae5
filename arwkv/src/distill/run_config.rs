//! The configuration of one distillation run: which stage with its own keys, teacher and student,
//! data, optimiser and schedule, read from TOML or JSON and validated before anything runs. The
//! file stays flat (`stage = "kl"` beside `temperature = 2.0`); in Rust the stage is a tagged
//! [`StageConfig`] whose variants are the settings each objective defines next to itself. A key
//! of another stage, and an unknown key, are refused, named with their line and column.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use super::objective::{AlignConfig, DpoConfig, KlConfig, SftConfig};
use crate::data::DataConfig;
use crate::error::{Error, Result, line_and_column};
use crate::student::StudentOptions;
pub use crate::train::Stage;
use crate::train::{AdamWConfig, LrSchedule};

/// The stage a run trains, with the keys only that stage reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum StageConfig {
    /// Stage 0 belongs to `arwkv pretrain` (its own config); a run config naming it is refused.
    Pretrain(PretrainKeys),
    /// Stage 1: per-layer alignment.
    Align(AlignConfig),
    /// Stage 2 and context extension: word-level KL.
    Kl(KlConfig),
    /// Stage 3: supervised fine-tuning.
    Sft(SftConfig),
    /// Stage 3: DPO.
    Dpo(DpoConfig),
}

/// A run config's stage 0 has no keys of its own (the run is refused anyway).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainKeys {}

impl StageConfig {
    /// `stage` with its keys at their defaults.
    pub fn defaults(stage: Stage) -> Self {
        match stage {
            Stage::Pretrain => Self::Pretrain(PretrainKeys {}),
            Stage::Align => Self::Align(AlignConfig::default()),
            Stage::Kl => Self::Kl(KlConfig::default()),
            Stage::Sft => Self::Sft(SftConfig::default()),
            Stage::Dpo => Self::Dpo(DpoConfig::default()),
        }
    }

    /// Which stage this is.
    pub fn kind(&self) -> Stage {
        match self {
            Self::Pretrain(_) => Stage::Pretrain,
            Self::Align(_) => Stage::Align,
            Self::Kl(_) => Stage::Kl,
            Self::Sft(_) => Stage::Sft,
            Self::Dpo(_) => Stage::Dpo,
        }
    }

    /// The config-file keys of `stage` (besides `stage` itself).
    fn keys(stage: Stage) -> BTreeSet<String> {
        object_keys(&Self::defaults(stage))
            .into_iter()
            .filter(|k| k != "stage")
            .collect()
    }
}

/// Everything one run needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The stage and its own keys (flattened: `stage = "kl"`, `temperature = …`).
    #[serde(flatten)]
    pub stage: StageConfig,
    /// Teacher folder or hub id.
    pub teacher: String,
    /// Student checkpoint to start from (stage 2: the stage-1 result); absent → built from the
    /// teacher with `student_options`.
    #[serde(default)]
    pub student: Option<String>,
    /// How a fresh student is built.
    #[serde(default)]
    pub student_options: StudentOptions,
    /// Run directory.
    pub out: PathBuf,
    /// Backend: cpu, wgpu, cuda, rocm.
    #[serde(default = "default_device")]
    pub device: String,
    /// Seed of the data order.
    #[serde(default)]
    pub seed: u64,
    /// Optimiser steps.
    pub steps: u64,
    /// Micro-batches per optimiser step and device.
    #[serde(default = "one")]
    pub grad_accum: u64,
    /// Data-parallel devices, each holding a copy of the student and the teacher (rank 0 alone the optimiser); a
    /// step reads the stream's next `devices × grad_accum` micro-batches. More than one needs the
    /// cuda backend (Burn 0.22.1's all-reduce is NCCL-only). A resume may change it.
    #[serde(default = "one_device")]
    pub devices: usize,
    /// Save a checkpoint every this many steps (and at the end).
    #[serde(default = "default_save_every")]
    pub save_every: u64,
    /// Data.
    pub data: DataConfig,
    /// Optimiser.
    #[serde(default)]
    pub optim: AdamWConfig,
    /// Learning-rate schedule (`total_steps` is set to `steps`).
    #[serde(default)]
    pub schedule: LrSchedule,
    /// Stages 2–3: stop gradients to the MLPs (the paper's frozen-MLP switch; stage 1 trains
    /// only the time mixers anyway).
    #[serde(default)]
    pub freeze_mlp: bool,
    /// Stages kl, sft and dpo: make the LM head's logits this many positions at a time, so the
    /// loss's memory grows with the chunk instead of batch × context × vocabulary (absent: the
    /// whole micro-batch at once). The loss and its gradients are the same either way.
    #[serde(default)]
    pub loss_chunk_tokens: Option<usize>,
    /// Recompute cheap intermediate values in the backward pass instead of keeping them (Burn's
    /// balanced gradient checkpointing): less memory, more time, the same gradients.
    #[serde(default)]
    pub activation_checkpointing: bool,
    /// Numeric precision: `f32`, `bf16-mixed` or `f16-mixed` (the frozen teacher stored and run
    /// in the low-precision dtype, the student's f32 master weights computing in it; norms, the
    /// WKV-7 state and the losses in f32). Absent: the backend's default (f32 on the CPU,
    /// bf16-mixed on CUDA and ROCm, the best the adapter supports on WGPU).
    #[serde(default)]
    pub precision: Option<crate::Precision>,
}

fn one_device() -> usize {
    1
}

fn default_device() -> String {
    "cpu".into()
}
fn one() -> u64 {
    1
}
fn default_save_every() -> u64 {
    100
}

/// The keys of a value that serialises to a JSON object.
fn object_keys(value: &impl Serialize) -> Vec<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => vec![],
    }
}

impl RunConfig {
    /// A config with every optional key at its config-file default (CPU, seed 0, no accumulation,
    /// the stage's own defaults: τ = 1, full-vocabulary KL, no CE, DPO β = ε = 0.1), saving only
    /// at the end.
    pub fn new(
        stage: Stage,
        teacher: impl Into<String>,
        out: impl Into<PathBuf>,
        steps: u64,
        data: DataConfig,
    ) -> Self {
        Self {
            stage: StageConfig::defaults(stage),
            teacher: teacher.into(),
            student: None,
            student_options: StudentOptions::default(),
            out: out.into(),
            device: default_device(),
            seed: 0,
            steps,
            grad_accum: one(),
            devices: one_device(),
            save_every: steps,
            data,
            optim: AdamWConfig::default(),
            schedule: LrSchedule::default(),
            freeze_mlp: false,
            loss_chunk_tokens: None,
            activation_checkpointing: false,
            precision: None,
        }
    }

    /// The keys every stage reads (besides `stage`).
    fn common_keys() -> BTreeSet<String> {
        let probe = Self::new(Stage::Sft, "", "", 1, DataConfig::default());
        let sft = StageConfig::keys(Stage::Sft);
        object_keys(&probe)
            .into_iter()
            .filter(|k| k != "stage" && !sft.contains(k))
            .collect()
    }

    /// Why `key` may not appear in a config of `stage`, or `None` when it may.
    fn misplaced_key(stage: Stage, key: &str) -> Option<String> {
        if key == "stage" || Self::common_keys().contains(key) {
            return None;
        }
        if StageConfig::keys(stage).contains(key) {
            return None;
        }
        let stages = [Stage::Align, Stage::Kl, Stage::Sft, Stage::Dpo];
        let owners: Vec<String> = stages
            .iter()
            .filter(|s| StageConfig::keys(**s).contains(key))
            .map(|s| stage_name(*s))
            .collect();
        let own: Vec<String> = StageConfig::keys(stage).into_iter().collect();
        let own = if own.is_empty() {
            "none".to_string()
        } else {
            own.join(", ")
        };
        Some(if owners.is_empty() {
            format!(
                "unknown key `{key}` (keys of every stage: stage, {}; of stage {}: {own})",
                Self::common_keys()
                    .into_iter()
                    .collect::<Vec<_>>()
                    .join(", "),
                stage_name(stage),
            )
        } else {
            format!(
                "`{key}` is a key of stage {}, not of stage {} (its own keys: {own})",
                owners.join(" and "),
                stage_name(stage),
            )
        })
    }

    /// Reads a `.toml` or `.json` config, naming the file and key on error.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::error::read_to_string(path)?;
        let cfg: Self = if path.extension().and_then(|e| e.to_str()) == Some("json") {
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::Json {
                    path: path.into(),
                    source: e,
                })?;
            check_json_keys(path, &value)?;
            serde_json::from_value(value).map_err(|e| Error::Json {
                path: path.into(),
                source: e,
            })?
        } else {
            check_toml_keys(path, &text)?;
            crate::error::parse_toml(path, &text)?
        };
        cfg.validate().map_err(|e| match e {
            Error::Setting { key, message, .. } => Error::Config {
                path: path.into(),
                key,
                message,
            },
            other => other,
        })?;
        Ok(cfg)
    }

    /// Checks ranges, and that the stage is one a distillation run trains ([`Error::Setting`]
    /// naming the key).
    pub fn validate(&self) -> Result<()> {
        // Each message starts with the key it is about.
        let bad = |m: &str| {
            let (key, message) = m.split_once(' ').unwrap_or((m, "is invalid"));
            Err(Error::Setting {
                scope: "run config".into(),
                key: key.into(),
                message: message.into(),
            })
        };
        if self.steps == 0 {
            return bad("steps must be at least 1");
        }
        if self.grad_accum == 0 || self.save_every == 0 {
            return bad("grad_accum and save_every must be at least 1");
        }
        if self.devices == 0 {
            return bad("devices must be at least 1");
        }
        if self.loss_chunk_tokens == Some(0) {
            return bad("loss_chunk_tokens must be at least 1 (leave it out for no chunking)");
        }
        let stage_problem = match &self.stage {
            StageConfig::Pretrain(_) => {
                Some("stage \"pretrain\" is run by `arwkv pretrain`".to_string())
            }
            StageConfig::Align(_) if self.freeze_mlp => Some(
                "freeze_mlp is for stages kl, sft and dpo (stage align trains only the time mixers)"
                    .to_string(),
            ),
            StageConfig::Align(c) => c.problem(),
            StageConfig::Kl(c) => c.problem(),
            StageConfig::Sft(c) => c.problem(),
            StageConfig::Dpo(c) => c.problem(),
        };
        if let Some(message) = stage_problem {
            return bad(&message);
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let non_negative = |v: f64| v.is_finite() && v >= 0.0;
        let checks = [
            (
                "schedule.lr must be a positive number",
                positive(self.schedule.lr),
            ),
            (
                "schedule.lr_final must be a number ≥ 0",
                non_negative(self.schedule.lr_final),
            ),
            (
                "optim.beta1 must be in [0, 1)",
                non_negative(self.optim.beta1) && self.optim.beta1 < 1.0,
            ),
            (
                "optim.beta2 must be in [0, 1)",
                non_negative(self.optim.beta2) && self.optim.beta2 < 1.0,
            ),
            (
                "optim.eps must be a positive number",
                positive(self.optim.eps),
            ),
            (
                "optim.weight_decay must be a number ≥ 0",
                non_negative(self.optim.weight_decay),
            ),
            (
                "optim.max_grad_norm must be a positive number",
                self.optim.max_grad_norm.is_none_or(positive),
            ),
        ];
        match checks.iter().find(|(_, ok)| !ok) {
            Some((message, _)) => bad(message),
            None => Ok(()),
        }
    }
}

/// The config-file name of a stage (`align`, `kl`, …).
fn stage_name(stage: Stage) -> String {
    serde_json::to_value(stage)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{stage:?}"))
}

/// The stage a config's `stage` value names, when it names one.
fn named_stage(value: Option<&str>) -> Option<Stage> {
    serde_json::from_value(serde_json::Value::String(value?.to_string())).ok()
}

/// Refuses a top-level TOML key that belongs to another stage or to none, by line and column.
fn check_toml_keys(path: &Path, text: &str) -> Result<()> {
    // A file that does not parse is left to the deserializer, which names the place.
    let Ok(table) = toml::de::DeTable::parse(text) else {
        return Ok(());
    };
    let table = table.get_ref();
    let stage = table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == "stage")
        .and_then(|(_, v)| named_stage(v.get_ref().as_str()));
    let Some(stage) = stage else {
        return Ok(());
    };
    for key in table.keys() {
        if let Some(message) = RunConfig::misplaced_key(stage, key.get_ref().as_ref()) {
            return Err(Error::Config {
                path: path.into(),
                key: line_and_column(text, key.span().start),
                message,
            });
        }
    }
    Ok(())
}

/// Refuses a top-level JSON key that belongs to another stage or to none.
fn check_json_keys(path: &Path, value: &serde_json::Value) -> Result<()> {
    let Some(map) = value.as_object() else {
        return Ok(());
    };
    let Some(stage) = named_stage(map.get("stage").and_then(|s| s.as_str())) else {
        return Ok(());
    };
    for key in map.keys() {
        if let Some(message) = RunConfig::misplaced_key(stage, key) {
            return Err(Error::Config {
                path: path.into(),
                key: key.clone(),
                message,
            });
        }
    }
    Ok(())
}
