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

use super::data::{DataPosition, Dataset};
use super::dpo::PreferenceData;
use super::objective::{
    Alignment, AssistantCrossEntropy, MicroBatch, Objective, Preference, WordLevelKl,
};
pub use super::run_config::{RunConfig, Stage};
pub use super::run_dir::{Start, latest_checkpoint};
use super::run_dir::{TrainerState, checkpoint_dir, config_fingerprint, prepare};
pub use super::step::{Observer, StepMetrics, TerminalProgress};
use crate::error::{Error, Result};
use crate::save::{NamedTensor, save_safetensors, write_atomic};
use crate::student::{ArwkvForCausalLM, PretrainedArwkv, save_pretrained};
use crate::teacher::{PretrainedQwen2, Qwen2ForCausalLM};
use crate::train::{AdamW, AdamWConfig};
use crate::weights::Checkpoint;

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
    let source = load_source(cfg, tokenizer, teacher.chat_template.as_ref())?;
    let teacher_model = teacher.model.clone().no_grad();
    let initial_student = || initial_student(cfg, &teacher_model, &device);

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
    let objective = objective_for(cfg, teacher_model, source, reference);
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
    let mut lines = metric_lines_up_to(&metrics_path, resume_from.is_some(), step)?;

    let started = Instant::now();
    let mut last = None;
    let mut interrupted = false;
    while step < cfg.steps {
        let lr = schedule.lr_at(step);
        let t0 = Instant::now();
        let (grads, sums) =
            accumulate_gradients(cfg, objective.as_ref(), &student, &mut pos, step, &device)?;
        let StepSums {
            loss: loss_sum,
            kl: kl_sum,
            tokens,
            accuracy: acc_sum,
            margin: margin_sum,
            per_layer: per_layer_sum,
        } = sums;
        let (next, stats) = opt.step(student, grads, lr);
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
            write_loss_page(&cfg.out, &lines)?;
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

/// The student a fresh run starts from: `cfg.student`'s weights, else built from the teacher.
fn initial_student(
    cfg: &RunConfig,
    teacher: &Qwen2ForCausalLM,
    device: &Device,
) -> Result<ArwkvForCausalLM> {
    match &cfg.student {
        Some(path) => Ok(PretrainedArwkv::load_weights_only(path, device)?.model),
        None => ArwkvForCausalLM::from_teacher(teacher, &cfg.student_options),
    }
}

/// Rewrites the run's loss page from its metric lines.
fn write_loss_page(out: &Path, lines: &[String]) -> Result<()> {
    let all: Vec<StepMetrics> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    super::plot::write_loss_page(out, &all)
}

/// The stage's data: preference pairs for DPO, token rows otherwise; bad rows are reported once.
fn load_source(
    cfg: &RunConfig,
    tokenizer: &crate::tokenizer::TextTokenizer,
    template: Option<&crate::chat::ChatTemplate>,
) -> Result<Source> {
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
    Ok(source)
}

/// The `metrics.jsonl` lines a run continues from: none for a fresh run (an old file is removed),
/// those up to the checkpoint's `step` for a resumed one.
fn metric_lines_up_to(path: &std::path::Path, resumed: bool, step: u64) -> Result<Vec<String>> {
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
    loss: f64,
    kl: f64,
    tokens: usize,
    accuracy: f64,
    margin: f64,
    per_layer: Vec<f64>,
}

/// One optimiser step's gradients: `cfg.grad_accum` micro-batches of the objective, each loss
/// scaled by 1/grad_accum, backward, summed. A non-finite loss stops the run, naming the last
/// checkpoint. (Where the next capabilities plug in: the forward precision is chosen inside
/// `objective.micro_batch`, activation checkpointing wraps the student's layers there, and data
/// parallelism all-reduces the returned gradients before the optimiser step.)
fn accumulate_gradients(
    cfg: &RunConfig,
    objective: &dyn Objective,
    student: &ArwkvForCausalLM,
    pos: &mut DataPosition,
    step: u64,
    device: &Device,
) -> Result<(GradientsParams, StepSums)> {
    let mut grads: Option<GradientsParams> = None;
    let mut sums = StepSums::default();
    for _ in 0..cfg.grad_accum {
        let (micro, next) = objective.micro_batch(student, *pos, device)?;
        *pos = next;
        sums.tokens += micro.tokens;
        let MicroBatch {
            loss,
            per_layer,
            kl,
            preference,
            ..
        } = micro;
        if let Some((accuracy, margin)) = preference {
            sums.accuracy += accuracy;
            sums.margin += margin;
        }
        let value = loss.clone().into_scalar::<f64>();
        if !value.is_finite() {
            return Err(Error::Invalid(format!(
                "{:?}: the loss became {value} at step {}; stopped. Last checkpoint: {}",
                cfg.stage,
                step + 1,
                latest_checkpoint(&cfg.out).map_or("none".into(), |p| p.display().to_string())
            )));
        }
        sums.loss += value;
        sums.kl += kl.unwrap_or(0.0);
        if sums.per_layer.is_empty() {
            sums.per_layer = vec![0.0; per_layer.len()];
        }
        sums.per_layer
            .iter_mut()
            .zip(&per_layer)
            .for_each(|(a, b)| *a += b);
        let g = GradientsParams::from_grads((loss / cfg.grad_accum as f64).backward(), student);
        grads = Some(match grads {
            None => g,
            Some(acc) => accumulate(acc, g, student),
        });
    }
    Ok((grads.expect("grad_accum is at least 1 (validated)"), sums))
}

/// The objective of `cfg.stage` over the data loaded for it.
fn objective_for(
    cfg: &RunConfig,
    teacher: Qwen2ForCausalLM,
    source: Source,
    reference: Option<ArwkvForCausalLM>,
) -> Box<dyn Objective> {
    match (cfg.stage, source, reference) {
        (Stage::Align, Source::Tokens(data), _) => Box::new(Alignment {
            teacher,
            data,
            loss: cfg.alignment_loss,
        }),
        (Stage::Kl, Source::Tokens(data), _) => Box::new(WordLevelKl {
            teacher,
            data,
            temperature: cfg.temperature,
            top_k: cfg.kl_top_k,
            ce_weight: cfg.ce_weight,
        }),
        (Stage::Sft, Source::Tokens(data), _) => Box::new(AssistantCrossEntropy { data }),
        (Stage::Dpo, Source::Pairs(data), Some(reference)) => Box::new(Preference {
            reference,
            data,
            beta: cfg.dpo_beta,
            label_smoothing: cfg.label_smoothing,
        }),
        _ => unreachable!("data and reference are loaded for the stage; pretraining is refused"),
    }
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
