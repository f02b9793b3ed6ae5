//! `arwkv eval`: local task files, one model or a teacher–student comparison.

use anyhow::Result;
use arwkv::pretrained::Pretrained;
use clap::Args;

use crate::args::DeviceArg;

/// Arguments of `arwkv eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// Model folder or hub id (teacher or student).
    #[arg(long)]
    pub model: String,
    /// Reference teacher: evaluated too, first column; KL and agreement on perplexity tasks.
    #[arg(long)]
    pub teacher: Option<String>,
    /// Task file (repeatable): .txt (perplexity) or .jsonl rows.
    #[arg(long = "task", required = true)]
    pub tasks: Vec<std::path::PathBuf>,
    /// Solved examples before every question.
    #[arg(long, default_value_t = 0)]
    pub num_fewshot: usize,
    /// Where the examples come from (default: the first rows of each task, then not scored).
    #[arg(long)]
    pub fewshot_file: Option<std::path::PathBuf>,
    /// Score at most this many items per task.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Sequences per forward.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Perplexity window and longest scored input, in tokens.
    #[arg(long, default_value_t = 512)]
    pub context: usize,
    /// Longest generation of generative tasks.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Do not wrap generative prompts in the chat template.
    #[arg(long)]
    pub no_chat: bool,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub device: DeviceArg,
}

/// `arwkv eval`: evaluate models on local task files.
pub fn eval(args: EvalArgs) -> Result<()> {
    let EvalArgs {
        model,
        teacher,
        tasks,
        num_fewshot,
        fewshot_file,
        limit,
        batch,
        context,
        max_new_tokens,
        no_chat,
        json,
        device,
    } = args;
    use arwkv::eval::{EvalOptions, evaluate, load_task, task::TaskOptions};
    let device = device.device()?;
    let task_options = TaskOptions {
        num_fewshot,
        fewshot_file,
        limit,
    };
    let tasks = tasks
        .iter()
        .map(|t| load_task(t, &task_options))
        .collect::<arwkv::Result<Vec<_>>>()?;
    let mut loaded = vec![];
    if let Some(t) = &teacher {
        loaded.push(("teacher".to_string(), Pretrained::load(t, &device)?));
    }
    let label = if teacher.is_some() {
        "model"
    } else {
        model.as_str()
    };
    loaded.push((label.to_string(), Pretrained::load(&model, &device)?));
    let models: Vec<(&str, &Pretrained)> = loaded.iter().map(|(l, m)| (l.as_str(), m)).collect();
    let options = EvalOptions {
        batch,
        context,
        max_new_tokens,
        chat: !no_chat,
        ..Default::default()
    };
    let report = evaluate(&models, &tasks, &options, &device, &mut |p| {
        eprint!("\r{} · {}: {}/{}   ", p.model, p.task, p.done, p.total)
    })?;
    eprintln!();
    if let Some(path) = json {
        arwkv::save::write_atomic(&path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    println!("{}", report.to_markdown());
    Ok(())
}
