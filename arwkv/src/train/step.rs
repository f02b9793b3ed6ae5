//! What one optimiser step reports (a line of `metrics.jsonl`) and who watches the steps of a run:
//! the [`Observer`] trait, with terminal progress here and live notebook plots in `notebook`.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Which stage a run trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Stage 0: pretraining a teacher from scratch (`arwkv pretrain`, next-token objective).
    Pretrain,
    /// Stage 1: per-layer alignment of time-mixer outputs to attention outputs (teacher forcing).
    Align,
    /// Stage 2: word-level KL from teacher logits (also context extension at a longer context).
    Kl,
    /// Stage 3: supervised fine-tuning, loss on assistant tokens (all tokens of plain text).
    Sft,
    /// Stage 3: DPO on `{prompt, chosen, rejected}` pairs against a frozen copy of the start.
    Dpo,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepMetrics {
    /// Stage.
    pub stage: Stage,
    /// Optimiser step (1-based).
    pub step: u64,
    /// Loss minimised (mean over micro-batches).
    pub loss: f64,
    /// Stage 1: loss per layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_layer: Vec<f64>,
    /// Stage 2: KL part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl: Option<f64>,
    /// DPO: fraction of pairs where the policy prefers the chosen answer more than the reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preference_accuracy: Option<f64>,
    /// DPO: mean β·Δ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_margin: Option<f64>,
    /// Learning rate of the step.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Real tokens per second over the step.
    pub tokens_per_s: f64,
    /// Seconds since the run (or resume) started.
    pub elapsed_s: f64,
}

/// The `metrics.jsonl` rows of the run in `out` (none when it has not run).
pub fn read_metrics(out: &Path) -> Vec<StepMetrics> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Sees a run as it goes (terminal progress, notebook plots). Returning `false` stops the run
/// after a checkpoint (used for interrupts).
pub trait Observer {
    /// Called after every optimiser step.
    fn on_step(&mut self, metrics: &StepMetrics, total_steps: u64) -> bool;
    /// Called after a checkpoint was written.
    fn on_checkpoint(&mut self, _dir: &Path) {}
}

/// An observer that prints a one-line progress bar to stderr.
pub struct TerminalProgress;

impl Observer for TerminalProgress {
    fn on_step(&mut self, m: &StepMetrics, total: u64) -> bool {
        let width = 24;
        let done = ((m.step as f64 / total as f64) * width as f64) as usize;
        eprint!(
            "\r{:?} [{}{}] {}/{} loss {:.4} lr {:.2e} |g| {:.3} {:.0} tok/s   ",
            m.stage,
            "#".repeat(done),
            ".".repeat(width - done),
            m.step,
            total,
            m.loss,
            m.lr,
            m.grad_norm,
            m.tokens_per_s
        );
        if m.step == total {
            eprintln!();
        }
        true
    }
}
