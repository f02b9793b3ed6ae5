//! Named end-to-end distillation jobs. `tiny` is the embedded default: the committed Shakespeare
//! teacher, distilled on CPU through stage 1 (alignment), stage 2 (KL) and stage 3 (context
//! extension, SFT and DPO on dialogue tasks cut from the corpus), then compared with its students
//! on the held-out play. `qwen2.5-0.5b` is the same job for a hub teacher on a GPU. The run directory gets each stage's own run directory, one page
//! with every stage's curves, and `summary.json` / `summary.md`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::pairs::build_dpo_pairs;
use super::run::{Observer, RunConfig, Stage, run};
use super::run_dir::{Start, found_state};
use crate::data::DataConfig;
use crate::embedded::dialogue_tasks::dialogue_tasks;
use crate::embedded::tiny_assets;
use crate::error::{Error, Result};
use crate::eval::heldout::{HeldoutReport, compare_on_heldout};
use crate::generation::GenerationConfig;
use crate::sampling::SamplingConfig;
use crate::save::write_atomic;
use crate::student::PretrainedArwkv;
use crate::teacher::PretrainedQwen2;
use crate::train::read_metrics;

pub use super::recipe::Recipe;

/// The names `--preset` accepts.
pub const PRESETS: [&str; 2] = ["tiny", "qwen2.5-0.5b"];

/// One stage's line of the summary.
#[derive(Clone, Debug, Serialize)]
pub struct StageRow {
    /// The stage.
    pub stage: String,
    /// Optimiser steps.
    pub steps: u64,
    /// Loss of the last step.
    pub final_loss: f64,
    /// Mean training tokens per second.
    pub tokens_per_s: f64,
    /// DPO: preference accuracy of the last step.
    pub preference_accuracy: Option<f64>,
}

/// What a preset run reports.
#[derive(Clone, Debug, Serialize)]
pub struct PresetSummary {
    /// The preset.
    pub preset: String,
    /// Its recipe.
    pub recipe: Recipe,
    /// Every stage, in order.
    pub stages: Vec<StageRow>,
    /// Held-out comparison of the teacher with the student after stage 2 and after stage 3.
    pub heldout: Vec<(String, HeldoutReport)>,
    /// Seconds from start to summary.
    pub wall_s: f64,
}

impl PresetSummary {
    /// The summary as Markdown tables.
    pub fn to_markdown(&self) -> String {
        let recipe = match self.recipe {
            Recipe::Ours => String::new(),
            Recipe::Reference => " (recipe `reference`)".into(),
        };
        let mut s = format!("| preset `{}`{recipe} | teacher |", self.preset);
        for (label, _) in &self.heldout {
            s.push_str(&format!(" student {label} |"));
        }
        s.push_str("\n|---|---:|");
        s.push_str(&"---:|".repeat(self.heldout.len()));
        s.push('\n');
        let Some((_, first)) = self.heldout.first() else {
            return s;
        };
        let mut row = |name: &str, teacher: String, f: &dyn Fn(&HeldoutReport) -> String| {
            s.push_str(&format!("| {name} | {teacher} |"));
            for (_, r) in &self.heldout {
                s.push_str(&format!(" {} |", f(r)));
            }
            s.push('\n');
        };
        row(
            "held-out perplexity",
            format!("{:.2}", first.teacher_perplexity),
            &|r| format!("{:.2}", r.student_perplexity),
        );
        row(
            "perplexity ratio (student / teacher)",
            String::new(),
            &|r| format!("{:.3}", r.perplexity_ratio),
        );
        row("mean KL(teacher ‖ student), nats", String::new(), &|r| {
            format!("{:.4}", r.mean_kl)
        });
        row("top-1 agreement", String::new(), &|r| {
            format!("{:.1} %", 100.0 * r.top1_agreement)
        });
        row(
            "top-5 agreement (teacher's choice in the student's top 5)",
            String::new(),
            &|r| format!("{:.1} %", 100.0 * r.topk_agreement),
        );
        row(
            "forward tokens/s",
            format!("{:.0}", first.teacher_tokens_per_s),
            &|r| format!("{:.0}", r.student_tokens_per_s),
        );
        s.push_str(&format!(
            "\n({} held-out tokens)\n\n| stage | steps | final loss | train tokens/s |\n|---|---:|---:|---:|\n",
            first.tokens
        ));
        for st in &self.stages {
            let acc = st
                .preference_accuracy
                .map(|a| format!(" (preference accuracy {:.0} %)", 100.0 * a))
                .unwrap_or_default();
            s.push_str(&format!(
                "| {} | {} | {:.4}{acc} | {:.0} |\n",
                st.stage, st.steps, st.final_loss, st.tokens_per_s
            ));
        }
        s.push_str(&format!(
            "| **wall time** | | | **{:.0} s** |\n",
            self.wall_s
        ));
        s
    }
}

/// Length and learning rate of one stage of a preset.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct StageBudget {
    /// Optimiser steps.
    pub steps: u64,
    /// Peak learning rate (the recipe sets the schedule around it).
    pub lr: f64,
}

/// Everything a preset job trains on, and for how long.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PresetPlan {
    /// The preset's name.
    pub name: String,
    /// Teacher folder or hub id.
    pub teacher: String,
    /// Backend of every stage.
    pub device: String,
    /// Training text (stages 1, 2, context extension, and the source of the stage-3 tasks).
    pub corpus: PathBuf,
    /// Held-out text of the final comparison.
    pub heldout: PathBuf,
    /// Tokens per row in stages 1–2 and in the evaluation.
    pub context: usize,
    /// Rows per step.
    pub batch_size: usize,
    /// Stage 1: attention alignment.
    pub align: StageBudget,
    /// Stage 2: KL distillation.
    pub kl: StageBudget,
    /// Stage 3a: context extension (KL at `long_context`).
    pub extend: StageBudget,
    /// Tokens per row of the context extension.
    pub long_context: usize,
    /// Stage 3b: SFT on conversations derived from the corpus.
    pub sft: StageBudget,
    /// SFT conversations generated.
    pub sft_rows: usize,
    /// Tokens per conversation row (SFT, DPO).
    pub chat_context: usize,
    /// Stage 3c: DPO against the SFT student.
    pub dpo: StageBudget,
    /// DPO pairs built (rejected answers sampled from the SFT student).
    pub dpo_pairs: usize,
    /// Held-out tokens scored.
    pub heldout_tokens: usize,
    /// Positions per chunk of the head's loss in stages 2–3 (`loss_chunk_tokens`; none: whole
    /// logits).
    pub loss_chunk_tokens: Option<usize>,
    /// Every stage's `precision` (none: the backend's default, f32 on the CPU and bf16-mixed on
    /// CUDA and ROCm).
    pub precision: Option<crate::Precision>,
    /// Our choices or the paper-era code's, where they differ.
    pub recipe: Recipe,
}

/// The plan of preset `name`.
pub fn preset_plan(name: &str) -> Result<PresetPlan> {
    let assets = tiny_assets();
    let corpus = assets.join("corpus").join("train.txt");
    let heldout = assets.join("corpus").join("heldout.txt");
    let budget = |steps, lr| StageBudget { steps, lr };
    match name {
        "tiny" => Ok(PresetPlan {
            name: name.into(),
            teacher: assets.join("teacher").to_string_lossy().into_owned(),
            device: "cpu".into(),
            corpus,
            heldout,
            context: 128,
            batch_size: 8,
            align: budget(150, 3e-3),
            kl: budget(300, 1e-3),
            extend: budget(20, 3e-4),
            long_context: 512,
            sft: budget(60, 5e-4),
            sft_rows: 600,
            chat_context: 160,
            dpo: budget(24, 2e-4),
            dpo_pairs: 48,
            heldout_tokens: 16_384,
            // 4096 tokens: whole logits are a small part of a step.
            loss_chunk_tokens: None,
            // f32 on the CPU, where it runs: the embedded default's results.
            precision: None,
            recipe: Recipe::Ours,
        }),
        // GPU preset with a hub teacher (downloads with feature `hub`, or reads the HF cache).
        "qwen2.5-0.5b" => Ok(PresetPlan {
            name: name.into(),
            teacher: "Qwen/Qwen2.5-0.5B-Instruct".into(),
            device: std::env::var("ARWKV_DEVICE").unwrap_or_else(|_| "cuda".into()),
            corpus,
            heldout,
            context: 512,
            batch_size: 8,
            align: budget(600, 1e-3),
            kl: budget(2000, 3e-4),
            extend: budget(200, 1e-4),
            long_context: 2048,
            sft: budget(300, 5e-5),
            sft_rows: 4000,
            chat_context: 256,
            dpo: budget(100, 5e-6),
            dpo_pairs: 400,
            heldout_tokens: 65_536,
            // 151,936 tokens: whole logits would be 5 × 2.5 GB at the context extension's 2 × 2048
            // positions (`arwkv plan`).
            loss_chunk_tokens: Some(1024),
            // bf16-mixed on CUDA and ROCm (the backends' default), f32 if run on the CPU.
            precision: None,
            recipe: Recipe::Ours,
        }),
        _ => Err(Error::UnknownPreset {
            name: name.into(),
            available: PRESETS.join(", "),
        }),
    }
}

impl PresetPlan {
    /// The same plan with every step count, row count and the held-out budget times `scale`
    /// (tests use a small scale; at least 2 steps and 8 rows remain).
    pub fn scaled(mut self, scale: f64) -> Self {
        let n = |x: usize, min: usize| ((x as f64 * scale).round() as usize).max(min);
        for stage in [
            &mut self.align,
            &mut self.kl,
            &mut self.extend,
            &mut self.sft,
            &mut self.dpo,
        ] {
            stage.steps = n(stage.steps as usize, 2) as u64;
        }
        self.sft_rows = n(self.sft_rows, 8);
        self.dpo_pairs = n(self.dpo_pairs, 8);
        self.heldout_tokens = n(self.heldout_tokens, 512);
        self
    }

    /// The run config of stage 1 (`Align`) or 2 (`Kl`) on the preset's corpus, with its budget,
    /// writing under `out` (what a notebook starts from; stage 2 of a fresh student unless `student`
    /// is set afterwards).
    pub fn stage_config(&self, stage: Stage, out: impl Into<PathBuf>) -> Result<RunConfig> {
        let budget = match stage {
            Stage::Align => self.align,
            Stage::Kl => self.kl,
            other => {
                return Err(Error::Invalid(format!(
                    "preset {}: stage_config covers align and kl; {other:?} needs derived data (run_plan builds it)",
                    self.name
                )));
            }
        };
        Ok(self.stage(stage, vec![self.corpus.clone()], out.into(), budget))
    }

    /// The same plan with `recipe`.
    pub fn with_recipe(mut self, recipe: Recipe) -> Self {
        self.recipe = recipe;
        self
    }

    /// The run config of one stage reading `files` with `budget`, under the plan's recipe
    /// (ours: cosine schedule, 10 % warm-up, packed rows).
    pub fn stage(
        &self,
        stage: Stage,
        files: Vec<PathBuf>,
        out: PathBuf,
        budget: StageBudget,
    ) -> RunConfig {
        let steps = budget.steps;
        let data = DataConfig {
            files,
            context: self.context,
            batch_size: self.batch_size,
            pack: true,
        };
        let mut cfg = RunConfig::new(stage, self.teacher.clone(), out, steps, data);
        cfg.device = self.device.clone();
        cfg.schedule.lr = budget.lr;
        cfg.loss_chunk_tokens = self.loss_chunk_tokens;
        cfg.precision = self.precision;
        self.recipe.configure(&mut cfg);
        cfg
    }
}

/// Where a stage run leaves its student.
pub(crate) fn student_of(cfg: &RunConfig) -> String {
    cfg.out.join("student").to_string_lossy().into_owned()
}

fn write_jsonl(path: &Path, rows: &[serde_json::Value]) -> Result<()> {
    let mut text = String::new();
    for row in rows {
        text.push_str(&row.to_string());
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

/// The files of stage 3 (SFT conversations, DPO prompts, and where the DPO pairs go).
#[derive(Clone, Debug, PartialEq)]
pub struct Stage3Data {
    /// SFT conversations (JSONL `messages`).
    pub sft: PathBuf,
    /// DPO prompts with their chosen answers (rejected ones are sampled later).
    pub dpo_prompts: PathBuf,
    /// Where `build_dpo_pairs` writes the pairs.
    pub dpo: PathBuf,
}

impl PresetPlan {
    /// Cuts the stage-3 dialogue tasks from the corpus into `dir` (`sft.jsonl`,
    /// `dpo-prompts.jsonl`; `dpo.jsonl` is written by `build_dpo_pairs`).
    pub fn stage3_data(&self, dir: &Path) -> Result<Stage3Data> {
        let text = crate::error::read_to_string(&self.corpus)?;
        let tasks = dialogue_tasks(&text, self.sft_rows, self.dpo_pairs, 0);
        let data = Stage3Data {
            sft: dir.join("sft.jsonl"),
            dpo_prompts: dir.join("dpo-prompts.jsonl"),
            dpo: dir.join("dpo.jsonl"),
        };
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        write_jsonl(&data.sft, &tasks.sft)?;
        write_jsonl(&data.dpo_prompts, &tasks.dpo)?;
        Ok(data)
    }
}

/// Runs preset `name` into `out`, started as `start` says for every stage; `scale` (0, 1]
/// shortens every stage (tests use a small one).
pub fn run_preset(
    name: &str,
    out: &Path,
    scale: f64,
    start: Start,
    observer: &mut dyn Observer,
) -> Result<PresetSummary> {
    run_plan(&preset_plan(name)?.scaled(scale), out, start, observer)
}

/// The stage run directories of a preset run in `out`.
const STAGE_DIRS: [&str; 5] = [
    "stage1-align",
    "stage2-kl",
    "stage3-extend",
    "stage3-sft",
    "stage3-dpo",
];

/// Refuses a fresh preset run in `out` when any stage directory there holds a run, before a
/// stage has run (so that the error names the preset's directory, not its third stage).
fn check_fresh(out: &Path) -> Result<()> {
    let held: Vec<&str> = STAGE_DIRS
        .into_iter()
        .filter(|stage| !found_state(&out.join(stage)).is_empty())
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    Err(Error::RunDirectory {
        dir: out.to_path_buf(),
        message: format!(
            "already holds a preset run ({}); pass --resume to continue it, --overwrite to \
             replace it, or choose another --out",
            held.join(", ")
        ),
    })
}

/// Runs stage 1 → 2 → 3 (context extension, SFT, DPO) of `plan`, then compares teacher and
/// students on the held-out text and writes `index.html`, `summary.md` and `summary.json`.
pub fn run_plan(
    plan: &PresetPlan,
    out: &Path,
    start: Start,
    observer: &mut dyn Observer,
) -> Result<PresetSummary> {
    let started = Instant::now();
    if start == Start::Fresh {
        check_fresh(out)?;
    }
    for f in [&plan.corpus, &plan.heldout] {
        if !f.is_file() {
            return Err(Error::Invalid(format!(
                "preset {}: missing {} (run scripts/make-embedded-default.sh)",
                plan.name,
                f.display()
            )));
        }
    }
    let device = plan.device.parse::<crate::BackendKind>()?.device()?;
    let [s1, s2, s3a, s3b, s3c] = run_stages(plan, out, start, observer, &device)?;
    let heldout = compare_on_heldout_text(
        plan,
        &[("after stage 2", &s2), ("after stage 3", &s3c)],
        &device,
    )?;
    let stages = [
        ("stage 1 — attention alignment", &s1),
        ("stage 2 — KL distillation", &s2),
        ("stage 3 — context extension", &s3a),
        ("stage 3 — SFT", &s3b),
        ("stage 3 — DPO", &s3c),
    ];
    write_report(plan, out, &stages, heldout, started.elapsed().as_secs_f64())
}

/// Stage 1, stage 2, then stage 3 (context extension, SFT, DPO pairs sampled from the SFT
/// student, DPO), each starting from the previous stage's student. Returns their configurations.
fn run_stages(
    plan: &PresetPlan,
    out: &Path,
    start: Start,
    observer: &mut dyn Observer,
    device: &burn::prelude::Device,
) -> Result<[RunConfig; 5]> {
    let corpus = vec![plan.corpus.clone()];

    let s1 = plan.stage(
        Stage::Align,
        corpus.clone(),
        out.join(STAGE_DIRS[0]),
        plan.align,
    );
    run(&s1, start, observer)?;
    let mut s2 = plan.stage(Stage::Kl, corpus.clone(), out.join(STAGE_DIRS[1]), plan.kl);
    s2.student = Some(student_of(&s1));
    run(&s2, start, observer)?;
    let mut s3a = plan.stage(Stage::Kl, corpus, out.join(STAGE_DIRS[2]), plan.extend);
    s3a.student = Some(student_of(&s2));
    s3a.data.context = plan.long_context;
    s3a.data.batch_size = (plan.batch_size * plan.context / plan.long_context).max(1);
    run(&s3a, start, observer)?;

    let Stage3Data {
        sft: sft_file,
        dpo_prompts,
        dpo: dpo_file,
    } = plan.stage3_data(&out.join("data"))?;
    let mut s3b = plan.stage(
        Stage::Sft,
        vec![sft_file],
        out.join(STAGE_DIRS[3]),
        plan.sft,
    );
    s3b.student = Some(student_of(&s3a));
    s3b.data.context = plan.chat_context;
    s3b.data.pack = false;
    run(&s3b, start, observer)?;

    let sft_student = PretrainedArwkv::load(&student_of(&s3b), device)?;
    let sampling = GenerationConfig {
        max_new_tokens: 40,
        sampling: SamplingConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        },
        stop_ids: sft_student.stop_ids(),
    };
    build_dpo_pairs(
        &sft_student,
        &dpo_prompts,
        &dpo_file,
        &sampling,
        device,
        |_| {},
    )?;
    drop(sft_student);
    let mut s3c = plan.stage(
        Stage::Dpo,
        vec![dpo_file],
        out.join(STAGE_DIRS[4]),
        plan.dpo,
    );
    s3c.student = Some(student_of(&s3b));
    s3c.data.context = plan.chat_context;
    s3c.data.pack = false;
    run(&s3c, start, observer)?;
    Ok([s1, s2, s3a, s3b, s3c])
}

/// Teacher against each given stage's student on the held-out text (its first
/// `plan.heldout_tokens` tokens).
pub(crate) fn compare_on_heldout_text(
    plan: &PresetPlan,
    students: &[(&str, &RunConfig)],
    device: &burn::prelude::Device,
) -> Result<Vec<(String, HeldoutReport)>> {
    let teacher = PretrainedQwen2::load(&plan.teacher, device)?;
    let heldout_text = crate::error::read_to_string(&plan.heldout)?;
    let mut ids = teacher.tokenizer()?.encode(&heldout_text, false)?;
    ids.truncate(plan.heldout_tokens);
    let mut heldout = vec![];
    for &(label, cfg) in students {
        let student = PretrainedArwkv::load_weights_only(&student_of(cfg), device)?;
        let report = compare_on_heldout(
            &|x| teacher.model.forward(x, None),
            &|x| student.model.forward(x, None),
            &ids,
            plan.context,
            plan.batch_size,
            5,
            device,
            |_, _| {},
        )?;
        heldout.push((label.to_string(), report));
    }

    Ok(heldout)
}

/// Writes `index.html` (every stage's curves and the summary), `summary.md` and `summary.json`.
fn write_report(
    plan: &PresetPlan,
    out: &Path,
    stages: &[(&str, &RunConfig)],
    heldout: Vec<(String, HeldoutReport)>,
    wall_s: f64,
) -> Result<PresetSummary> {
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ARWKV distillation</title>",
    );
    page.push_str(&plotly::Plot::offline_js_sources());
    page.push_str(&format!(
        "</head><body><h1>ARWKV distillation — preset {}</h1>",
        plan.name
    ));
    let mut stage_rows = vec![];
    for (i, (label, cfg)) in stages.iter().enumerate() {
        let m = read_metrics(&cfg.out);
        let mean = m.iter().map(|x| x.tokens_per_s).sum::<f64>() / m.len().max(1) as f64;
        let last = m.last();
        stage_rows.push(StageRow {
            stage: label.to_string(),
            steps: cfg.steps,
            final_loss: last.map(|x| x.loss).unwrap_or(f64::NAN),
            tokens_per_s: mean,
            preference_accuracy: last.and_then(|x| x.preference_accuracy),
        });
        page.push_str(&format!("<h2>{label}</h2>"));
        page.push_str(
            &crate::train::loss_page::loss_figure(&m).to_inline_html(Some(&format!("stage{i}"))),
        );
    }
    let summary = PresetSummary {
        preset: plan.name.clone(),
        recipe: plan.recipe,
        stages: stage_rows,
        heldout,
        wall_s,
    };
    let md = summary.to_markdown();
    page.push_str("<h2>Summary</h2><pre>");
    page.push_str(&md);
    page.push_str("</pre></body></html>");
    write_atomic(&out.join("index.html"), page.as_bytes())?;
    write_atomic(&out.join("summary.md"), md.as_bytes())?;
    write_atomic(
        &out.join("summary.json"),
        serde_json::to_string_pretty(&summary)
            .expect("summary serialises")
            .as_bytes(),
    )?;
    Ok(summary)
}
