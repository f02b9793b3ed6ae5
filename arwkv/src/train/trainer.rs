//! The one training loop every stage runs (pretraining, stage-1 alignment, stage-2 KL, SFT, DPO):
//! per optimiser step, `grad_accum` micro-batches of the stage's [`Objective`] (each loss scaled by
//! 1/grad_accum, backward, gradients summed), global clipping and AdamW, a stop with a clear error
//! on a non-finite loss or gradient, one `metrics.jsonl` line, the [`Observer`] (progress, live
//! plots, interrupt), and every `save_every` steps, at the end and on an interrupt a checkpoint
//! through the caller's [`Checkpointer`] and the rewritten loss page.
//!
//! Where the other capabilities sit: the precision policy is the models' own (`crate::precision`,
//! set when a run is prepared), activation checkpointing is the training device's, and data
//! parallelism ([`super::data_parallel`]) deals a step's micro-batches to the [`Ranks`] and sums
//! their gradients before rank 0's optimiser step (one rank: the plain loop).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;

use super::data_parallel::{Rank, RankShare, Ranks};
use super::objective::MicroBatch;
use super::optim::AdamW;
use super::schedule::LrSchedule;
use super::step::{Observer, Stage, StepMetrics};
use crate::data::DataPosition;
use crate::error::{Error, Result};
use crate::save::write_atomic;

/// What the loop needs to know besides the model and its objective.
#[derive(Clone, Debug)]
pub struct TrainLoop {
    /// The stage (labels the metrics and the errors).
    pub stage: Stage,
    /// Optimiser steps of the whole run.
    pub steps: u64,
    /// Micro-batches per optimiser step and rank (at least 1).
    pub grad_accum: u64,
    /// A checkpoint every this many steps (and at the end, and on an interrupt).
    pub save_every: u64,
    /// The learning-rate schedule (`total_steps` is set to `steps`).
    pub schedule: LrSchedule,
    /// The run directory: `metrics.jsonl` and `loss.html` are written there.
    pub out: PathBuf,
}

/// Where the loop starts: a fresh model and optimiser at step 0, or a resumed checkpoint's.
pub struct LoopStart<M> {
    /// The model, with the parameters the stage trains marked trainable.
    pub model: M,
    /// The optimiser (with its moments when resuming).
    pub opt: AdamW,
    /// Steps already done.
    pub step: u64,
    /// Where the data continues.
    pub pos: DataPosition,
    /// The checkpoint resumed from (named by errors until a newer one is written).
    pub checkpoint: Option<PathBuf>,
}

impl<M> LoopStart<M> {
    /// A fresh start: step 0, the data's first batch, no checkpoint.
    pub fn fresh(model: M, opt: AdamW) -> Self {
        Self {
            model,
            opt,
            step: 0,
            pos: DataPosition::default(),
            checkpoint: None,
        }
    }
}

/// Writes a checkpoint of the model, the optimiser and the data position at a step; returns its
/// folder.
pub type Checkpointer<'a, M> = dyn FnMut(&M, &AdamW, u64, DataPosition) -> Result<PathBuf> + 'a;

/// How the loop ended.
pub struct LoopEnd<M> {
    /// The model as trained so far.
    pub model: M,
    /// Steps completed.
    pub steps: u64,
    /// Metrics of the last step run here.
    pub last: Option<StepMetrics>,
    /// Whether the observer stopped the run early.
    pub interrupted: bool,
}

/// Runs `cfg.steps - start.step` optimiser steps of the ranks' objective on `start.model`
/// (on rank 0's device; `Ranks::single` for one device).
pub fn train<M: Module + Clone>(
    cfg: &TrainLoop,
    start: LoopStart<M>,
    ranks: &Ranks<'_, M>,
    checkpoint: &mut Checkpointer<'_, M>,
    observer: &mut dyn Observer,
) -> Result<LoopEnd<M>> {
    if cfg.grad_accum == 0 || cfg.save_every == 0 {
        return Err(Error::Setting {
            scope: "training loop".into(),
            key: "grad_accum and save_every".into(),
            message: "must be at least 1".into(),
        });
    }
    let LoopStart {
        mut model,
        mut opt,
        mut step,
        mut pos,
        checkpoint: mut last_checkpoint,
    } = start;
    let mut schedule = cfg.schedule.clone();
    schedule.total_steps = cfg.steps;
    let metrics_path = cfg.out.join("metrics.jsonl");
    let mut lines = metric_lines_up_to(&metrics_path, last_checkpoint.is_some(), step)?;
    let started = Instant::now();
    let mut last = None;
    let mut interrupted = false;
    while step < cfg.steps {
        let lr = schedule.lr_at(step);
        let t0 = Instant::now();
        let (grads, sums) = step_gradients(
            cfg,
            ranks,
            &model,
            &mut pos,
            (step, last_checkpoint.as_deref()),
        )?;
        let (next, stats) = opt.step(model, grads, lr);
        model = next;
        if !stats.grad_norm.is_finite() {
            return Err(Error::Diverged {
                stage: format!("{:?}", cfg.stage),
                step: step + 1,
                quantity: "gradient norm",
                value: stats.grad_norm,
                last_checkpoint,
            });
        }
        step += 1;
        let m = sums.metrics(cfg, step, lr, stats.grad_norm, t0, started);
        lines.push(serde_json::to_string(&m).expect("metrics serialise"));
        write_atomic(&metrics_path, (lines.join("\n") + "\n").as_bytes())?;
        let go_on = observer.on_step(&m, cfg.steps);
        last = Some(m);
        if step % cfg.save_every == 0 || step == cfg.steps || !go_on {
            let dir = checkpoint(&model, &opt, step, pos)?;
            write_loss_page(&cfg.out, &lines)?;
            observer.on_checkpoint(&dir);
            last_checkpoint = Some(dir);
        }
        if !go_on {
            interrupted = true;
            break;
        }
    }
    Ok(LoopEnd {
        model,
        steps: step,
        last,
        interrupted,
    })
}

/// Rewrites the run's loss page from its metric lines.
fn write_loss_page(out: &Path, lines: &[String]) -> Result<()> {
    let all: Vec<StepMetrics> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    super::loss_page::write_loss_page(out, &all)
}

/// The `metrics.jsonl` lines a run continues from: none for a fresh run (an old file is removed),
/// those up to the checkpoint's `step` for a resumed one.
fn metric_lines_up_to(path: &Path, resumed: bool, step: u64) -> Result<Vec<String>> {
    if !resumed && path.exists() {
        std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
    }
    Ok(std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| serde_json::from_str::<StepMetrics>(l).is_ok_and(|m| m.step <= step))
        .map(str::to_string)
        .collect())
}

/// Sums over one step's micro-batches (divided by their number for the step's metrics).
#[derive(Default)]
struct StepSums {
    micro_batches: usize,
    loss: f64,
    kl: f64,
    tokens: usize,
    accuracy: f64,
    margin: f64,
    per_layer: Vec<f64>,
}

impl StepSums {
    /// Adds one micro-batch's report (its loss value already read).
    fn add(&mut self, micro: &MicroBatch, loss: f64) {
        let (accuracy, margin) = micro.preference.unwrap_or_default();
        self.merge(StepSums {
            micro_batches: 1,
            loss,
            kl: micro.kl.unwrap_or(0.0),
            tokens: micro.tokens,
            accuracy,
            margin,
            per_layer: micro.per_layer.clone(),
        });
    }

    /// Adds another rank's sums.
    fn merge(&mut self, other: StepSums) {
        self.micro_batches += other.micro_batches;
        self.loss += other.loss;
        self.kl += other.kl;
        self.tokens += other.tokens;
        self.accuracy += other.accuracy;
        self.margin += other.margin;
        if self.per_layer.is_empty() {
            self.per_layer = vec![0.0; other.per_layer.len()];
        }
        self.per_layer
            .iter_mut()
            .zip(&other.per_layer)
            .for_each(|(a, b)| *a += b);
    }

    /// The step's `metrics.jsonl` line: means over the micro-batches.
    fn metrics(
        self,
        cfg: &TrainLoop,
        step: u64,
        lr: f64,
        grad_norm: f64,
        step_started: Instant,
        run_started: Instant,
    ) -> StepMetrics {
        let n = self.micro_batches as f64;
        StepMetrics {
            stage: cfg.stage,
            step,
            loss: self.loss / n,
            per_layer: self.per_layer.iter().map(|x| x / n).collect(),
            kl: (cfg.stage == Stage::Kl).then_some(self.kl / n),
            preference_accuracy: (cfg.stage == Stage::Dpo).then_some(self.accuracy / n),
            reward_margin: (cfg.stage == Stage::Dpo).then_some(self.margin / n),
            lr,
            grad_norm,
            tokens_per_s: self.tokens as f64 / step_started.elapsed().as_secs_f64(),
            elapsed_s: run_started.elapsed().as_secs_f64(),
        }
    }
}

/// One optimiser step's gradients: the stream's next `grad_accum` micro-batches per rank, dealt
/// round-robin, each loss scaled by 1/(their number), backward, summed on each rank and then over
/// the ranks. A non-finite loss stops the run, naming the step and the last checkpoint (`at`).
fn step_gradients<M: Module + Clone>(
    cfg: &TrainLoop,
    ranks: &Ranks<'_, M>,
    model: &M,
    pos: &mut DataPosition,
    at: (u64, Option<&Path>),
) -> Result<(GradientsParams, StepSums)> {
    let count = ranks.len() * cfg.grad_accum as usize;
    let mut positions = Vec::with_capacity(count);
    for _ in 0..count {
        positions.push(*pos);
        *pos = ranks.lead().objective.next_position(*pos);
    }
    let share = |rank: &Rank<'_, M>, replica: M, mine: &[DataPosition]| {
        let mut grads: Option<GradientsParams> = None;
        let mut sums = StepSums::default();
        for &p in mine {
            let (micro, _) = rank.objective.micro_batch(&replica, p, &rank.device)?;
            let value = micro.loss.clone().into_scalar::<f64>();
            if !value.is_finite() {
                let (step, checkpoint) = at;
                return Err(Error::Diverged {
                    stage: format!("{:?}", cfg.stage),
                    step: step + 1,
                    quantity: "loss",
                    value,
                    last_checkpoint: checkpoint.map(Path::to_path_buf),
                });
            }
            sums.add(&micro, value);
            let g = GradientsParams::from_grads((micro.loss / count as f64).backward(), &replica);
            grads = Some(match grads {
                None => g,
                Some(acc) => accumulate(acc, g, &replica),
            });
        }
        let grads = grads.unwrap_or_default();
        Ok(RankShare::new(replica, grads, sums))
    };
    let (grads, per_rank) = ranks.step(model, &positions, &share)?;
    let mut sums = StepSums::default();
    per_rank.into_iter().for_each(|s| sums.merge(s));
    Ok((grads, sums))
}

/// Adds the gradients of `b` into `a`, parameter by parameter.
fn accumulate<M: Module>(
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
