//! The configuration of one distillation run: which stage, teacher and student, data, optimiser,
//! schedule and the stage's own knobs, read from TOML or JSON (unknown keys refused, errors named
//! by line and column) and validated before anything runs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::loss::AlignmentLoss;
use crate::data::DataConfig;
use crate::error::{Error, Result};
use crate::student::StudentOptions;
pub use crate::train::Stage;
use crate::train::{AdamWConfig, LrSchedule};

/// Everything one run needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The stage.
    pub stage: Stage,
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
    /// Micro-batches per optimiser step.
    #[serde(default = "one")]
    pub grad_accum: u64,
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
    /// Stage 1: the per-layer loss.
    #[serde(default)]
    pub alignment_loss: AlignmentLoss,
    /// Stage 2: softmax temperature of the KL.
    #[serde(default = "one_f")]
    pub temperature: f64,
    /// Stage 2: restrict the KL to the teacher's k most likely tokens (absent: full vocabulary).
    #[serde(default)]
    pub kl_top_k: Option<usize>,
    /// Stage 2: weight of the student's next-token CE added to the KL.
    #[serde(default)]
    pub ce_weight: f64,
    /// Stages 2–3: stop gradients to the MLPs (the paper's frozen-MLP switch).
    #[serde(default)]
    pub freeze_mlp: bool,
    /// DPO: β.
    #[serde(default = "default_beta")]
    pub dpo_beta: f64,
    /// DPO: label smoothing ε.
    #[serde(default = "default_beta")]
    pub label_smoothing: f64,
}

fn default_beta() -> f64 {
    0.1
}

fn default_device() -> String {
    "cpu".into()
}
fn one() -> u64 {
    1
}
fn one_f() -> f64 {
    1.0
}
fn default_save_every() -> u64 {
    100
}

impl RunConfig {
    /// A config with every optional key at its config-file default (CPU, seed 0, no accumulation,
    /// τ = 1, full-vocabulary KL, no CE, DPO β = ε = 0.1), saving only at the end.
    pub fn new(
        stage: Stage,
        teacher: impl Into<String>,
        out: impl Into<PathBuf>,
        steps: u64,
        data: DataConfig,
    ) -> Self {
        Self {
            stage,
            teacher: teacher.into(),
            student: None,
            student_options: StudentOptions::default(),
            out: out.into(),
            device: default_device(),
            seed: 0,
            steps,
            grad_accum: one(),
            save_every: steps,
            data,
            optim: AdamWConfig::default(),
            schedule: LrSchedule::default(),
            alignment_loss: AlignmentLoss::default(),
            temperature: one_f(),
            kl_top_k: None,
            ce_weight: 0.0,
            freeze_mlp: false,
            dpo_beta: default_beta(),
            label_smoothing: default_beta(),
        }
    }

    /// Reads a `.toml` or `.json` config, naming the file and key on error.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::error::read_to_string(path)?;
        let cfg: Self = if path.extension().and_then(|e| e.to_str()) == Some("json") {
            serde_json::from_str(&text).map_err(|e| Error::Json {
                path: path.into(),
                source: e,
            })?
        } else {
            toml::from_str(&text).map_err(|e| Error::Config {
                path: path.into(),
                key: e
                    .span()
                    .map(|s| line_and_column(&text, s.start))
                    .unwrap_or_default(),
                message: e.message().to_string(),
            })?
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Invalid(format!("run config: {m}")));
        if self.steps == 0 {
            return bad("steps must be at least 1");
        }
        if self.grad_accum == 0 || self.save_every == 0 {
            return bad("grad_accum and save_every must be at least 1");
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let non_negative = |v: f64| v.is_finite() && v >= 0.0;
        let checks = [
            (
                "temperature must be a positive number",
                positive(self.temperature),
            ),
            (
                "schedule.lr must be a positive number",
                positive(self.schedule.lr),
            ),
            (
                "schedule.lr_final must be a number ≥ 0",
                non_negative(self.schedule.lr_final),
            ),
            (
                "kl_top_k must be at least 1 (leave it out for the full vocabulary)",
                self.kl_top_k != Some(0),
            ),
            (
                "ce_weight must be a number ≥ 0",
                non_negative(self.ce_weight),
            ),
            (
                "dpo_beta must be a positive number",
                positive(self.dpo_beta),
            ),
            (
                "label_smoothing must be in [0, 0.5)",
                non_negative(self.label_smoothing) && self.label_smoothing < 0.5,
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

/// `line L, column C` (1-based, columns in characters) of a byte offset into `text`.
fn line_and_column(text: &str, offset: usize) -> String {
    let before = &text[..text.floor_char_boundary(offset.min(text.len()))];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("line {line}, column {column}")
}
