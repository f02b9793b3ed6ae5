//! A distillation run: one [`RunConfig`] (TOML or JSON), a run directory with the config,
//! `metrics.jsonl` and checkpoints, an [`Observer`] that sees every step (terminal progress, live
//! notebook plots), exact resume on CPU, and a stop with a clear error on a non-finite loss. This
//! module prepares the stage (teacher, data, the student and what it trains, the objective, resume)
//! and hands it to the one training loop, [`crate::train::train`].
//!
//! Run directory:
//!
//! ```text
//! run.json                      the resolved config
//! metrics.jsonl                 one line per optimiser step
//! loss.html                     the curves (plotly, works offline), rewritten at each checkpoint
//! checkpoints/step-000040/      student (rwkv_hybrid layout) + optimizer/ + trainer_state.json
//! student/                      the final student
//! ```

use std::path::{Path, PathBuf};

use burn::prelude::*;

use super::dpo::{CompletionSpan, PreferenceData};
use super::objective::{Alignment, AssistantCrossEntropy, Preference, WordLevelKl};
pub use super::run_config::{RunConfig, Stage, StageConfig};
pub use super::run_dir::{Start, latest_checkpoint};
use super::run_dir::{TrainerState, checkpoint_dir, config_fingerprint, prepare};
use crate::data::{DataPosition, Dataset};
use crate::error::{Error, Result};
use crate::save::write_atomic;
use crate::student::{ArwkvForCausalLM, PretrainedArwkv, save_pretrained};
use crate::teacher::{PretrainedQwen2, Qwen2ForCausalLM};
use crate::train::{AdamW, BurnAllReduce, LoopStart, Objective, Rank, Ranks, TrainLoop};
pub use crate::train::{Observer, StepMetrics, TerminalProgress};

/// The data a stage reads.
#[derive(Clone)]
enum Source {
    /// Token rows (stages 1, 2, SFT).
    Tokens(Dataset),
    /// Preference pairs (DPO).
    Pairs(PreferenceData),
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
    opt.save(&tmp)?;
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
    let backend = crate::BackendKind::from_flag_or_env(Some(&cfg.device))?;
    // One device per data-parallel rank; rank 0's holds the model the loop trains.
    let training = |d: Device| match cfg.activation_checkpointing {
        true => d.autodiff().gradient_checkpointing(),
        false => d.autodiff(),
    };
    let mut rank_devices: Vec<Device> = backend
        .devices(cfg.devices)?
        .into_iter()
        .map(training)
        .collect();
    let device = rank_devices.remove(0);
    let precision = match cfg.precision {
        Some(precision) => precision,
        None => crate::Precision::default_for(backend, &device),
    };
    precision.check_supported(backend, &device)?;
    let resume_from = prepare(cfg, start)?;
    let teacher = PretrainedQwen2::load(&cfg.teacher, &device)?;
    let tokenizer = teacher.tokenizer()?;
    let source = load_source(cfg, tokenizer, teacher.chat_template.as_ref())?;
    // The folder's own copy of the network is dropped here: only `teacher_model` holds it (and,
    // under a mixed precision, only in the low-precision dtype once the student is built).
    let teacher_dir = teacher.dir;
    let mut teacher_model = teacher.model.no_grad();
    // Stage 1 trains only the time mixers: its student shares the rest with the teacher, so the
    // teacher drops to the low precision first and only the mixers are f32. The other stages train
    // everything, so their student is built from the f32 teacher and keeps f32 master weights.
    if cfg.stage.kind() == Stage::Align {
        teacher_model = teacher_model.with_weights_in(precision.compute_dtype());
    }
    let initial_student =
        || initial_student(cfg, &teacher_model, &device).map(|s| s.time_mixers_in_f32());

    let start = match resume_from {
        Some((dir, state)) => LoopStart {
            model: PretrainedArwkv::load_weights_only(&dir.to_string_lossy(), &device)?.model,
            opt: AdamW::load(cfg.optim.clone(), state.optimizer_step, &dir, &device)?,
            step: state.step,
            pos: state.data,
            checkpoint: Some(dir),
        },
        None => LoopStart::fresh(initial_student()?, AdamW::new(cfg.optim.clone())),
    };
    // DPO's reference is the run's starting point, also when resuming; frozen, so stored in the
    // precision's dtype like the teacher.
    let reference = match cfg.stage.kind() {
        Stage::Dpo => Some(initial_student()?.no_grad().stored_in(precision)),
        _ => None,
    };
    let model = start.model.computing_in(precision);
    let start = LoopStart {
        model: match cfg.stage.kind() {
            Stage::Align => model.only_time_mixers_trainable(),
            _ if cfg.freeze_mlp => model.freeze_mlp(),
            _ => model,
        },
        ..start
    };
    // The student is built; the teacher now drops to the low precision (a no-op in stage 1).
    let teacher_model = teacher_model.with_weights_in(precision.compute_dtype());
    // Ranks 1.. get their own copies of the teacher, the data and DPO's reference.
    let other_objectives: Vec<_> = rank_devices
        .iter()
        .map(|d| {
            objective_for(
                cfg,
                teacher_model.clone().to_device(d),
                source.clone(),
                reference.clone().map(|r| r.to_device(d)),
            )
        })
        .collect();
    let objective = objective_for(cfg, teacher_model, source, reference);
    // Recorded once the run can start, so a config that fails to load leaves no run behind.
    write_atomic(
        &cfg.out.join("run.json"),
        serde_json::to_string_pretty(cfg)
            .expect("config serialises")
            .as_bytes(),
    )?;
    let train_loop = TrainLoop {
        stage: cfg.stage.kind(),
        steps: cfg.steps,
        grad_accum: cfg.grad_accum,
        save_every: cfg.save_every,
        schedule: cfg.schedule.clone(),
        out: cfg.out.clone(),
    };
    let mut checkpoint = |student: &ArwkvForCausalLM, opt: &AdamW, step, pos| {
        save_checkpoint(cfg, step, student, &teacher_dir, opt, pos)
    };
    let collective;
    let ranks =
        match rank_devices.is_empty() {
            true => Ranks::single(objective.as_ref(), &device),
            false => {
                let mut all = vec![Rank {
                    objective: objective.as_ref(),
                    device: device.clone(),
                }];
                all.extend(other_objectives.iter().zip(&rank_devices).map(
                    |(objective, device)| Rank {
                        objective: objective.as_ref(),
                        device: device.clone(),
                    },
                ));
                collective = BurnAllReduce::start(all.iter().map(|r| r.device.clone()).collect());
                Ranks::data_parallel(all, &collective)?
            }
        };
    let end = crate::train::train(&train_loop, start, &ranks, &mut checkpoint, observer)?;
    if !end.interrupted {
        save_pretrained(
            &end.model,
            &cfg.out.join("student"),
            Some(&teacher_dir),
            crate::save::DEFAULT_MAX_SHARD_BYTES,
        )?;
    }
    Ok(RunSummary {
        steps: end.steps,
        last: end.last,
        out: cfg.out.clone(),
        interrupted: end.interrupted,
        student: end.model,
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

/// The stage's data: preference pairs for DPO, token rows otherwise; bad rows are reported once.
fn load_source(
    cfg: &RunConfig,
    tokenizer: &crate::tokenizer::TextTokenizer,
    template: Option<&crate::chat::ChatTemplate>,
) -> Result<Source> {
    let source = match cfg.stage.kind() {
        Stage::Dpo => Source::Pairs(PreferenceData::load(
            &cfg.data.files,
            tokenizer,
            template,
            (cfg.data.context, cfg.data.batch_size),
            match &cfg.stage {
                StageConfig::Dpo(dpo) => dpo.completion_span,
                _ => CompletionSpan::default(),
            },
            cfg.seed,
        )?),
        _ => Source::Tokens(Dataset::load_for(
            &cfg.data,
            tokenizer,
            template,
            cfg.seed,
            cfg.stage.kind() == Stage::Sft,
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

/// The objective of `cfg.stage` over the data loaded for it.
fn objective_for(
    cfg: &RunConfig,
    teacher: Qwen2ForCausalLM,
    source: Source,
    reference: Option<ArwkvForCausalLM>,
) -> Box<dyn Objective<ArwkvForCausalLM>> {
    match (&cfg.stage, source, reference) {
        (StageConfig::Align(config), Source::Tokens(data), _) => Box::new(Alignment {
            teacher,
            data,
            config: *config,
        }),
        (StageConfig::Kl(config), Source::Tokens(data), _) => Box::new(WordLevelKl {
            teacher,
            data,
            config: *config,
            loss_chunk: cfg.loss_chunk_tokens,
        }),
        (StageConfig::Sft(_), Source::Tokens(data), _) => Box::new(AssistantCrossEntropy {
            data,
            loss_chunk: cfg.loss_chunk_tokens,
        }),
        (StageConfig::Dpo(config), Source::Pairs(data), Some(reference)) => Box::new(Preference {
            reference,
            data,
            config: *config,
            loss_chunk: cfg.loss_chunk_tokens,
        }),
        _ => unreachable!("data and reference are loaded for the stage; pretraining is refused"),
    }
}
