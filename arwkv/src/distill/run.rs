//! A distillation run: one [`RunConfig`] (TOML or JSON), a run directory with the config,
//! `metrics.jsonl` and checkpoints, an [`Observer`] that sees every step (terminal progress, live
//! notebook plots), exact resume on CPU, and a stop with a clear error on a non-finite loss.
//!
//! Run directory:
//!
//! ```text
//! run.json                      the resolved config
//! metrics.jsonl                 one line per optimiser step
//! loss.html                     the curves (plotly, works offline), rewritten at each checkpoint
//! checkpoints/step-000040/      student (rwkv_hybrid layout) + optimizer.safetensors + trainer_state.json
//! student/                      the final student
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::optim::GradientsParams;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::data::{DataConfig, DataPosition, Dataset};
use super::dpo::{PreferenceData, dpo_loss, sequence_logprobs};
use super::loss::{AlignmentLoss, kl_divergence, kl_divergence_top_k, next_token_cross_entropy};
pub use super::run_dir::{Start, latest_checkpoint};
use super::run_dir::{TrainerState, checkpoint_dir, config_fingerprint, prepare};
use super::stage1::alignment_losses;
use crate::error::{Error, Result};
use crate::save::{NamedTensor, save_safetensors, write_atomic};
use crate::student::{ArwkvForCausalLM, PretrainedArwkv, StudentOptions, save_pretrained};
use crate::teacher::PretrainedQwen2;
use crate::train::{AdamW, AdamWConfig, LrSchedule};
use crate::weights::Checkpoint;

/// Which stage a run trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Stage 0: pretraining a teacher from scratch (`arwkv pretrain`, not a distillation run).
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

/// The data a stage reads.
enum Source {
    /// Token rows (stages 1, 2, SFT).
    Tokens(Dataset),
    /// Preference pairs (DPO).
    Pairs(PreferenceData),
}

fn save_optimizer(opt: &AdamW, dir: &Path) -> Result<()> {
    let mut tensors = vec![];
    for (path, m) in &opt.moments {
        tensors.push(NamedTensor::D1(
            format!("{path}.exp_avg"),
            m.exp_avg.clone(),
        ));
        tensors.push(NamedTensor::D1(
            format!("{path}.exp_avg_sq"),
            m.exp_avg_sq.clone(),
        ));
    }
    let sub = dir.join("optimizer");
    save_safetensors(&sub, &tensors, usize::MAX)
}

fn load_optimizer(config: AdamWConfig, step: u64, dir: &Path, device: &Device) -> Result<AdamW> {
    let mut opt = AdamW::new(config);
    opt.step = step;
    let ck = Checkpoint::open_dir(&dir.join("optimizer"))?;
    for name in ck.names() {
        if let Some(path) = name.strip_suffix(".exp_avg") {
            let len = ck.shape(&name).unwrap_or_default().iter().product();
            let sq = format!("{path}.exp_avg_sq");
            opt.moments.insert(
                path.to_string(),
                crate::train::optim::Moments {
                    exp_avg: ck.load(&name, [len], device)?,
                    exp_avg_sq: ck.load(&sq, [len], device)?,
                },
            );
        }
    }
    Ok(opt)
}

/// Writes a checkpoint atomically: into a temporary sibling, renamed when complete.
fn save_checkpoint(
    cfg: &RunConfig,
    step: u64,
    student: &ArwkvForCausalLM,
    teacher_dir: &Path,
    opt: &AdamW,
    data: DataPosition,
) -> Result<PathBuf> {
    let final_dir = checkpoint_dir(&cfg.out, step);
    let tmp = final_dir.with_extension("partial");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    save_pretrained(
        student,
        &tmp,
        Some(teacher_dir),
        crate::save::DEFAULT_MAX_SHARD_BYTES,
    )?;
    save_optimizer(opt, &tmp)?;
    let state = TrainerState {
        step,
        data,
        optimizer_step: opt.step,
        config_sha256: Some(config_fingerprint(cfg)),
    };
    write_atomic(
        &tmp.join("trainer_state.json"),
        serde_json::to_string_pretty(&state)
            .expect("state serialises")
            .as_bytes(),
    )?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| Error::io(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
    Ok(final_dir)
}

/// What a finished (or stopped) run reports.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// Steps completed.
    pub steps: u64,
    /// Metrics of the last step.
    pub last: Option<StepMetrics>,
    /// The run directory.
    pub out: PathBuf,
    /// Whether the observer stopped the run early.
    pub interrupted: bool,
    /// The student as trained so far (also saved under `out`): an interrupted notebook cell keeps it.
    pub student: ArwkvForCausalLM,
}

/// Runs the configured stage in `cfg.out`, started as `start` says (fresh, resumed from the newest
/// checkpoint made under the same config, or over a run that is deleted first).
pub fn run(cfg: &RunConfig, start: Start, observer: &mut dyn Observer) -> Result<RunSummary> {
    cfg.validate()?;
    if cfg.stage == Stage::Pretrain {
        return Err(Error::Invalid(
            "run config: stage \"pretrain\" is run by `arwkv pretrain`".into(),
        ));
    }
    let device = crate::BackendKind::from_flag_or_env(Some(&cfg.device))?
        .device()?
        .autodiff();
    let resume_from = prepare(cfg, start)?;
    let teacher = PretrainedQwen2::load(&cfg.teacher, &device)?;
    let tokenizer = teacher.tokenizer()?;
    let template = teacher.chat_template.as_ref();
    let source = match cfg.stage {
        Stage::Dpo => Source::Pairs(PreferenceData::load(
            &cfg.data.files,
            tokenizer,
            template,
            cfg.data.context,
            cfg.data.batch_size,
            cfg.seed,
        )?),
        _ => Source::Tokens(Dataset::load_for(
            &cfg.data,
            tokenizer,
            template,
            cfg.seed,
            cfg.stage == Stage::Sft,
        )?),
    };
    let bad = match &source {
        Source::Tokens(d) => &d.bad_rows,
        Source::Pairs(p) => &p.bad_rows,
    };
    if bad.count > 0 {
        eprintln!(
            "data: skipped {} bad row(s), e.g. {}",
            bad.count,
            bad.first.join("; ")
        );
    }
    let teacher_model = teacher.model.clone().no_grad();
    let initial_student = || -> Result<ArwkvForCausalLM> {
        match &cfg.student {
            Some(path) => Ok(PretrainedArwkv::load_weights_only(path, &device)?.model),
            None => ArwkvForCausalLM::from_teacher(&teacher_model, &cfg.student_options),
        }
    };

    let (mut student, mut opt, mut step, mut pos) = match &resume_from {
        Some((dir, state)) => {
            let s = PretrainedArwkv::load_weights_only(&dir.to_string_lossy(), &device)?.model;
            let o = load_optimizer(cfg.optim.clone(), state.optimizer_step, dir, &device)?;
            (s, o, state.step, state.data)
        }
        None => (
            initial_student()?,
            AdamW::new(cfg.optim.clone()),
            0,
            DataPosition::default(),
        ),
    };
    // DPO's reference is the run's starting point, also when resuming.
    let reference = match cfg.stage {
        Stage::Dpo => Some(initial_student()?.no_grad()),
        _ => None,
    };
    student = match cfg.stage {
        Stage::Align => student.only_time_mixers_trainable(),
        _ if cfg.freeze_mlp => student.freeze_mlp(),
        _ => student,
    };
    // Recorded once the run can start, so a config that fails to load leaves no run behind.
    write_atomic(
        &cfg.out.join("run.json"),
        serde_json::to_string_pretty(cfg)
            .expect("config serialises")
            .as_bytes(),
    )?;
    let mut schedule = cfg.schedule.clone();
    schedule.total_steps = cfg.steps;
    let metrics_path = cfg.out.join("metrics.jsonl");
    if resume_from.is_none() && metrics_path.exists() {
        std::fs::remove_file(&metrics_path).map_err(|e| Error::io(&metrics_path, e))?;
    }
    // A resumed run drops metric lines written after its checkpoint.
    let mut lines: Vec<String> = std::fs::read_to_string(&metrics_path)
        .unwrap_or_default()
        .lines()
        .filter(|l| serde_json::from_str::<StepMetrics>(l).is_ok_and(|m| m.step <= step))
        .map(str::to_string)
        .collect();

    let started = Instant::now();
    let mut last = None;
    let mut interrupted = false;
    while step < cfg.steps {
        let lr = schedule.lr_at(step);
        let t0 = Instant::now();
        let mut grads: Option<GradientsParams> = None;
        let (mut loss_sum, mut kl_sum, mut tokens) = (0.0, 0.0, 0usize);
        let (mut acc_sum, mut margin_sum) = (0.0, 0.0);
        let mut per_layer_sum: Vec<f64> = vec![];
        for _ in 0..cfg.grad_accum {
            let (loss, per_layer, kl) = match &source {
                Source::Pairs(pairs) => {
                    let (batch, next) = pairs.batch(pos, &device);
                    pos = next;
                    tokens += batch.tokens;
                    let policy = sequence_logprobs(
                        student.forward(batch.ids.clone(), None)?,
                        batch.ids.clone(),
                        batch.target_mask.clone(),
                    );
                    let reference = reference.as_ref().expect("DPO has a reference");
                    let ref_logps = sequence_logprobs(
                        reference.forward(batch.ids.clone(), None)?,
                        batch.ids,
                        batch.target_mask,
                    );
                    let d = dpo_loss(policy, ref_logps, cfg.dpo_beta, cfg.label_smoothing);
                    acc_sum += d.accuracy;
                    margin_sum += d.margin;
                    (d.loss, vec![], None)
                }
                Source::Tokens(dataset) => {
                    let (batch, next) = dataset.batch(pos, &device);
                    pos = next;
                    tokens += batch.tokens;
                    match cfg.stage {
                        Stage::Sft => {
                            let logits = student.forward(batch.ids.clone(), None)?;
                            (
                                next_token_cross_entropy(logits, batch.ids, batch.target_mask),
                                vec![],
                                None,
                            )
                        }
                        Stage::Align => {
                            let l = alignment_losses(
                                &teacher_model,
                                &student,
                                batch.ids,
                                cfg.alignment_loss,
                            )?;
                            let per: Vec<f64> = l
                                .per_layer
                                .iter()
                                .map(|x| x.clone().into_scalar::<f64>())
                                .collect();
                            (l.loss, per, None)
                        }
                        Stage::Kl => {
                            let teacher_logits =
                                teacher_model.forward(batch.ids.clone(), None)?.detach();
                            let logits = student.forward(batch.ids.clone(), None)?;
                            let kl = match cfg.kl_top_k {
                                Some(k) => kl_divergence_top_k(
                                    teacher_logits,
                                    logits.clone(),
                                    batch.mask.clone(),
                                    cfg.temperature,
                                    k,
                                ),
                                None => kl_divergence(
                                    teacher_logits,
                                    logits.clone(),
                                    batch.mask.clone(),
                                    cfg.temperature,
                                ),
                            };
                            let kl_value = kl.clone().into_scalar::<f64>();
                            let loss = if cfg.ce_weight > 0.0 {
                                kl + next_token_cross_entropy(logits, batch.ids, batch.mask)
                                    * cfg.ce_weight
                            } else {
                                kl
                            };
                            (loss, vec![], Some(kl_value))
                        }
                        Stage::Dpo | Stage::Pretrain => {
                            unreachable!("DPO reads pairs; pretraining is refused above")
                        }
                    }
                }
            };
            let value = loss.clone().into_scalar::<f64>();
            if !value.is_finite() {
                return Err(Error::Invalid(format!(
                    "{:?}: the loss became {value} at step {}; stopped. Last checkpoint: {}",
                    cfg.stage,
                    step + 1,
                    latest_checkpoint(&cfg.out).map_or("none".into(), |p| p.display().to_string())
                )));
            }
            loss_sum += value;
            kl_sum += kl.unwrap_or(0.0);
            if per_layer_sum.is_empty() {
                per_layer_sum = vec![0.0; per_layer.len()];
            }
            per_layer_sum
                .iter_mut()
                .zip(&per_layer)
                .for_each(|(a, b)| *a += b);
            let g =
                GradientsParams::from_grads((loss / cfg.grad_accum as f64).backward(), &student);
            grads = Some(match grads {
                None => g,
                Some(acc) => accumulate(acc, g, &student),
            });
        }
        let (next, stats) = opt.step(student, grads.expect("at least one micro-batch"), lr);
        student = next;
        if !stats.grad_norm.is_finite() {
            return Err(Error::Invalid(format!(
                "{:?}: the gradient norm became {} at step {}; stopped",
                cfg.stage,
                stats.grad_norm,
                step + 1
            )));
        }
        step += 1;
        let n = cfg.grad_accum as f64;
        let m = StepMetrics {
            stage: cfg.stage,
            step,
            loss: loss_sum / n,
            per_layer: per_layer_sum.iter().map(|x| x / n).collect(),
            kl: (cfg.stage == Stage::Kl).then_some(kl_sum / n),
            preference_accuracy: (cfg.stage == Stage::Dpo).then_some(acc_sum / n),
            reward_margin: (cfg.stage == Stage::Dpo).then_some(margin_sum / n),
            lr,
            grad_norm: stats.grad_norm,
            tokens_per_s: tokens as f64 / t0.elapsed().as_secs_f64(),
            elapsed_s: started.elapsed().as_secs_f64(),
        };
        lines.push(serde_json::to_string(&m).expect("metrics serialise"));
        write_atomic(&metrics_path, (lines.join("\n") + "\n").as_bytes())?;
        let go_on = observer.on_step(&m, cfg.steps);
        last = Some(m);
        if step % cfg.save_every == 0 || step == cfg.steps || !go_on {
            let dir = save_checkpoint(cfg, step, &student, &teacher.dir, &opt, pos)?;
            let all: Vec<StepMetrics> = lines
                .iter()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            super::plot::write_loss_page(&cfg.out, &all)?;
            observer.on_checkpoint(&dir);
        }
        if !go_on {
            interrupted = true;
            break;
        }
    }
    if !interrupted {
        save_pretrained(
            &student,
            &cfg.out.join("student"),
            Some(&teacher.dir),
            crate::save::DEFAULT_MAX_SHARD_BYTES,
        )?;
    }
    Ok(RunSummary {
        steps: step,
        last,
        out: cfg.out.clone(),
        interrupted,
        student,
    })
}

/// Adds the gradients of `b` into `a`, parameter by parameter.
fn accumulate<M: burn::module::Module>(
    mut a: GradientsParams,
    mut b: GradientsParams,
    module: &M,
) -> GradientsParams {
    struct Add<'a> {
        a: &'a mut GradientsParams,
        b: &'a mut GradientsParams,
    }
    impl burn::module::ModuleVisitor for Add<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            if let Some(gb) = self.b.remove::<D>(param.id) {
                let sum = match self.a.remove::<D>(param.id) {
                    Some(ga) => ga + gb,
                    None => gb,
                };
                self.a.register::<D>(param.id, sum);
            }
        }
    }
    module.visit(&mut Add {
        a: &mut a,
        b: &mut b,
    });
    a
}
