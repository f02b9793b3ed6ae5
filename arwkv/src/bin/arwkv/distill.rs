//! Training commands: distillation runs and presets, teacher pretraining, DPO pairs, the memory
//! planner.

use anyhow::{Context, Result};
use arwkv::generation::GenerationConfig;
use arwkv::sampling::SamplingConfig;
use clap::Args;

use crate::args::DeviceArg;

/// Arguments of `arwkv distill`.
#[derive(Args)]
pub struct DistillArgs {
    /// The run config.
    #[arg(long, required_unless_present = "preset", conflicts_with = "preset")]
    pub config: Option<std::path::PathBuf>,
    /// A named end-to-end job: `tiny` = the embedded default (CPU, minutes).
    #[arg(long)]
    pub preset: Option<String>,
    /// Run directory of a preset job.
    #[arg(long, default_value = "runs/tiny")]
    pub out: std::path::PathBuf,
    /// Choices of a preset job where we differ from the paper-era code: `ours`, or `reference`
    /// (no gate, frozen MLPs, untied head, its schedule, one padded document per row).
    /// Default: `ours`.
    #[arg(long)]
    pub recipe: Option<String>,
    /// Every stage's precision in a preset job: `f32`, `bf16-mixed` or `f16-mixed`. Default: the
    /// backend's (f32 on cpu, bf16-mixed on cuda and rocm). A run config sets its `precision` key.
    #[arg(long)]
    pub precision: Option<String>,
    /// Continue from the newest checkpoint in the run directory (made under the same config).
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Delete the run state the run directory holds (run.json, metrics, checkpoints, student)
    /// and start afresh; without it a run directory that holds a run is refused.
    #[arg(long)]
    pub overwrite: bool,
}

/// `arwkv distill`: one stage from a run config, or a whole preset job.
pub fn distill(args: DistillArgs) -> Result<()> {
    let start = start_of(args.resume, args.overwrite);
    if let Some(name) = &args.preset {
        let recipe: arwkv::distill::preset::Recipe =
            args.recipe.as_deref().unwrap_or("ours").parse()?;
        let mut plan = arwkv::distill::preset::preset_plan(name)?.with_recipe(recipe);
        if let Some(precision) = &args.precision {
            plan.precision = Some(
                precision
                    .parse()
                    .with_context(|| format!("--precision {precision}"))?,
            );
        }
        let summary = arwkv::distill::preset::run_plan(
            &plan,
            &args.out,
            start,
            &mut arwkv::train::TerminalProgress,
        )?;
        println!("{}", summary.to_markdown());
        println!("run directory: {} (open index.html)", args.out.display());
        return Ok(());
    }
    anyhow::ensure!(
        args.recipe.is_none(),
        "--recipe applies to --preset jobs; in a run config, set each switch itself (docs/DISTILL.md)"
    );
    anyhow::ensure!(
        args.precision.is_none(),
        "--precision applies to --preset jobs; in a run config, set its `precision` key"
    );
    let config = args.config.context("--config or --preset is required")?;
    let cfg = arwkv::distill::run::RunConfig::from_file(&config)?;
    let summary = arwkv::distill::run::run(&cfg, start, &mut arwkv::train::TerminalProgress)?;
    if let Some(last) = &summary.last {
        println!("{}", serde_json::to_string(last)?);
    }
    println!(
        "{:?} finished {} step(s); run directory {}",
        cfg.stage.kind(),
        summary.steps,
        summary.out.display()
    );
    Ok(())
}

/// How `arwkv distill` starts in its run directory, from its two flags (clap keeps them apart).
/// Arguments of `arwkv table1`.
#[derive(Args)]
pub struct Table1Args {
    /// The preset whose teacher, corpus and stage-1/2 budgets every student gets.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Seeds 0..N (each sets the students' initialisation and the data order).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Run directory (one folder per seed and student; table1.{md,json,html}).
    #[arg(long, default_value = "runs/table1")]
    pub out: std::path::PathBuf,
    /// Multiply every step count by this (a quick look; 1 = the preset's budget).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Continue the runs found in the run directory.
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Replace the runs found in the run directory.
    #[arg(long)]
    pub overwrite: bool,
}

/// `arwkv table1`: Table 1's three students from several seeds, compared with the teacher.
pub fn table1(args: Table1Args) -> Result<()> {
    anyhow::ensure!(
        args.scale > 0.0 && args.scale <= 1.0,
        "--scale must be in (0, 1], got {}",
        args.scale
    );
    anyhow::ensure!(args.seeds >= 1, "--seeds must be at least 1");
    let plan = arwkv::distill::preset::preset_plan(&args.preset)?.scaled(args.scale);
    let seeds: Vec<u64> = (0..args.seeds).collect();
    let report = arwkv::distill::table1::run_table1(
        &plan,
        &seeds,
        &args.out,
        start_of(args.resume, args.overwrite),
        &mut arwkv::train::TerminalProgress,
    )?;
    println!("{}", report.to_markdown());
    println!(
        "wall time {:.0} s; charts in {}",
        report.wall_s,
        args.out.join("table1.html").display()
    );
    Ok(())
}

fn start_of(resume: bool, overwrite: bool) -> arwkv::distill::run::Start {
    use arwkv::distill::run::Start;
    match (resume, overwrite) {
        (true, _) => Start::Resume,
        (false, true) => Start::Overwrite,
        (false, false) => Start::Fresh,
    }
}

/// Arguments of `arwkv pretrain`.
#[derive(Args)]
pub struct PretrainArgs {
    /// The config.
    #[arg(long)]
    pub config: std::path::PathBuf,
}

/// `arwkv pretrain`: pretrain a small teacher from scratch.
pub fn pretrain(args: PretrainArgs) -> Result<()> {
    let PretrainArgs { config } = args;
    let cfg = arwkv::pretrain::PretrainConfig::from_file(&config)?;
    let last = arwkv::pretrain::pretrain(&cfg, &mut arwkv::train::TerminalProgress)?;
    if let Some(m) = last {
        println!("{}", serde_json::to_string(&m)?);
    }
    println!("saved the teacher to {}", cfg.out.display());
    Ok(())
}

/// Arguments of `arwkv dpo-pairs`.
#[derive(Args)]
pub struct DpoPairsArgs {
    /// Student folder.
    #[arg(long)]
    pub student: String,
    /// Input JSONL: conversations ending in the answer, or {prompt, answer}.
    #[arg(long)]
    pub input: std::path::PathBuf,
    /// Output JSONL of {prompt, chosen, rejected}.
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// Most tokens per sampled answer.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Sampling temperature (reference: 0.7).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Top-k (reference: 40).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Top-p (reference: 0.9).
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f32,
    /// Seed (row n uses seed + n).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub device: DeviceArg,
}

/// `arwkv dpo-pairs`: build DPO pairs from a student's samples.
pub fn dpo_pairs(args: DpoPairsArgs) -> Result<()> {
    let DpoPairsArgs {
        student,
        input,
        out,
        max_new_tokens,
        temperature,
        top_k,
        top_p,
        seed,
        device,
    } = args;
    let device = device.device()?;
    let student = arwkv::student::PretrainedArwkv::load(&student, &device)?;
    let config = GenerationConfig {
        max_new_tokens,
        sampling: SamplingConfig {
            temperature,
            top_k,
            top_p,
            seed,
        },
        stop_ids: student.stop_ids(),
    };
    let (written, bad) =
        arwkv::distill::pairs::build_dpo_pairs(&student, &input, &out, &config, &device, |n| {
            eprint!("\rpairs: {n}")
        })?;
    eprintln!();
    if bad.count > 0 {
        eprintln!(
            "skipped {} bad row(s), e.g. {}",
            bad.count,
            bad.first.join("; ")
        );
    }
    println!("wrote {written} pair(s) to {}", out.display());
    Ok(())
}

/// Arguments of `arwkv plan`.
#[derive(Args)]
pub struct PlanArgs {
    /// The teacher: a folder, its config.json, or a hub id (only config.json is fetched).
    #[arg(long)]
    pub model: String,
    /// `align`, `kl`, `sft` or `dpo`.
    #[arg(long, default_value = "kl")]
    pub stage: String,
    /// Rows per optimiser step over all devices (DPO: pairs).
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Tokens per row.
    #[arg(long, default_value_t = 2048)]
    pub context: usize,
    /// `f32`, `bf16-mixed` or `f16-mixed`.
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Data-parallel devices.
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
    /// The run config's `loss_chunk_tokens`.
    #[arg(long)]
    pub loss_chunk: Option<usize>,
    /// A student without the output gate.
    #[arg(long)]
    pub no_gate: bool,
    /// Stages 2–3 with frozen MLPs (the run config's `freeze_mlp`).
    #[arg(long)]
    pub freeze_mlp: bool,
    /// Element-wise intermediates recomputed in the backward pass (the run config's
    /// `activation_checkpointing`).
    #[arg(long)]
    pub activation_checkpointing: bool,
    /// The run starts from a saved student (the run config's `student`), not one built from the
    /// teacher (DPO's reference is then a copy of its own).
    #[arg(long)]
    pub from_checkpoint: bool,
    /// Memory of one device, GiB.
    #[arg(long, default_value_t = 80.0)]
    pub memory_gib: f64,
    /// Sustained throughput of one device, TFLOP/s (for the step time).
    #[arg(long, default_value_t = 400.0)]
    pub tflops: f64,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `arwkv plan`: bytes per device and FLOPs of one step, before running it.
pub fn plan(args: PlanArgs) -> Result<()> {
    use arwkv::distill::plan::{PlanInput, Precision, plan};
    let config_path = arwkv::hub::resolve_config(&args.model)?;
    let teacher = arwkv::teacher::Qwen2Config::from_file(&config_path)?;
    let stage: arwkv::train::Stage = serde_json::from_value(serde_json::json!(args.stage))
        .ok()
        .filter(|s| *s != arwkv::train::Stage::Pretrain)
        .with_context(|| format!("--stage {}: expected align, kl, sft or dpo", args.stage))?;
    let precision: Precision = args
        .precision
        .parse()
        .with_context(|| format!("--precision {}", args.precision))?;
    if !(args.tflops.is_finite() && args.tflops > 0.0) {
        anyhow::bail!("--tflops must be a positive number");
    }
    if !(args.memory_gib.is_finite() && args.memory_gib > 0.0) {
        anyhow::bail!("--memory-gib must be a positive number");
    }
    let planned = plan(&PlanInput {
        teacher,
        stage,
        batch: args.batch,
        context: args.context,
        precision,
        devices: args.devices,
        loss_chunk: args.loss_chunk,
        gate: !args.no_gate,
        freeze_mlp: args.freeze_mlp,
        from_checkpoint: args.from_checkpoint,
        activation_checkpointing: args.activation_checkpointing,
        memory_gib: args.memory_gib,
        flops_per_s: args.tflops * 1e12,
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&planned)?);
    } else {
        println!(
            "{} · stage {} · batch {} × {} tokens · {} · {} device(s){}",
            config_path.display(),
            args.stage,
            args.batch,
            args.context,
            args.precision,
            args.devices,
            args.loss_chunk
                .map_or(String::new(), |c| format!(" · loss chunk {c}")),
        );
        if args.freeze_mlp {
            println!("MLPs frozen");
        }
        if args.activation_checkpointing {
            println!("activation checkpointing");
        }
        print!("{planned}");
    }
    Ok(())
}
