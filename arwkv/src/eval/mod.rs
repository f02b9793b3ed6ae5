//! Evaluation from local files (the paper's Table 1, offline): perplexity and teacher–student
//! agreement on text, multiple-choice log-likelihood tasks (MMLU, ARC, WinoGrande-style) and
//! generative exact-match tasks (GSM8K-style), for teachers and students alike.
//!
//! ```no_run
//! # fn main() -> arwkv::Result<()> {
//! use arwkv::eval::{EvalOptions, evaluate, load_task, task::TaskOptions};
//! let device = arwkv::BackendKind::Cpu.device()?;
//! let teacher = arwkv::pretrained::Pretrained::load("arwkv/assets/tiny/teacher", &device)?;
//! let student = arwkv::pretrained::Pretrained::load("runs/tiny/stage3-dpo/student", &device)?;
//! let tasks = vec![load_task("arc.jsonl".as_ref(), &TaskOptions::default())?];
//! let report = evaluate(&[("teacher", &teacher), ("student", &student)], &tasks,
//!     &EvalOptions::default(), &device, &mut |_| {})?;
//! println!("{}", report.to_markdown());
//! # Ok(()) }
//! ```

pub mod choice;
pub mod flip_flop;
pub mod generative;
pub mod heldout;
mod mean_sd;
pub mod task;

use burn::prelude::*;
use serde::Serialize;

pub use mean_sd::MeanSd;
pub use task::{RowFormat, Task, TaskItems, TaskOptions, load_task};

use crate::chat::ChatMessage;
use crate::error::Result;
use crate::pretrained::Pretrained;

/// How models are run on the tasks.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Sequences per forward.
    pub batch: usize,
    /// Window of perplexity tasks and longest input of a scored option.
    pub context: usize,
    /// Longest generation.
    pub max_new_tokens: usize,
    /// Wrap generative prompts in the model's chat template (when it has one).
    pub chat: bool,
    /// k of the top-k agreement.
    pub top_k: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            batch: 8,
            context: 512,
            max_new_tokens: 256,
            chat: true,
            top_k: 5,
        }
    }
}

/// One progress event: model, task, items done, items in all.
#[derive(Clone, Debug)]
pub struct EvalProgress<'a> {
    /// Model label.
    pub model: &'a str,
    /// Task name.
    pub task: &'a str,
    /// Units done.
    pub done: usize,
    /// Units in all.
    pub total: usize,
}

/// One metric of one model on one task.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Score {
    /// Task name.
    pub task: String,
    /// Metric name (`acc`, `acc_norm`, `exact_match`, `perplexity`, `kl`, `top1_agreement`, …).
    pub metric: String,
    /// Model label.
    pub model: String,
    /// The value.
    pub value: f64,
}

/// One evaluated task.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TaskInfo {
    /// Task name.
    pub name: String,
    /// Items scored (windows for perplexity).
    pub items: usize,
    /// Malformed rows skipped, with the first few named by line.
    pub bad_rows: Vec<String>,
    /// Count of malformed rows.
    pub bad_count: usize,
    /// The metric shown in the headline table.
    pub headline: String,
}

/// Everything `evaluate` measured.
#[derive(Clone, Debug, Serialize, Default)]
pub struct EvalReport {
    /// Model labels, in column order.
    pub models: Vec<String>,
    /// Tasks in order.
    pub tasks: Vec<TaskInfo>,
    /// All scores.
    pub scores: Vec<Score>,
    /// Tokens per second per model (mean over its tasks).
    pub tokens_per_s: Vec<f64>,
}

/// The metric a task shows in the headline table.
fn headline(format: Option<RowFormat>) -> &'static str {
    match format {
        None => "perplexity",
        Some(RowFormat::Mmlu | RowFormat::Winogrande) => "acc",
        Some(RowFormat::Arc | RowFormat::Choice) => "acc_norm",
        Some(RowFormat::Gsm8k | RowFormat::Generate) => "exact_match",
    }
}

impl EvalReport {
    /// A score, if measured.
    pub fn get(&self, task: &str, metric: &str, model: &str) -> Option<f64> {
        self.scores
            .iter()
            .find(|s| s.task == task && s.metric == metric && s.model == model)
            .map(|s| s.value)
    }

    fn metrics_of(&self, task: &str) -> Vec<&str> {
        let mut out: Vec<&str> = vec![];
        for s in self.scores.iter().filter(|s| s.task == task) {
            if !out.contains(&s.metric.as_str()) {
                out.push(&s.metric);
            }
        }
        out
    }

    fn cell(&self, task: &str, metric: &str, model: &str) -> String {
        let percent =
            metric.starts_with("acc") || metric.contains("agreement") || metric == "exact_match";
        match self.get(task, metric, model) {
            None => "–".into(),
            Some(v) if percent => format!("{:.1}", 100.0 * v),
            Some(v) if metric == "perplexity" => format!("{v:.2}"),
            Some(v) => format!("{v:.4}"),
        }
    }

    /// Table 1's shape (a row per model, a column per task with its headline metric), then every
    /// metric per task. Accuracies, exact match and agreements in %.
    pub fn to_markdown(&self) -> String {
        let mut s = String::from("| model |");
        for t in &self.tasks {
            s.push_str(&format!(" {} ({}) |", t.name, t.headline));
        }
        s.push_str(" tokens/s |\n|---|");
        s.push_str(&"---:|".repeat(self.tasks.len() + 1));
        s.push('\n');
        for (model, tps) in self.models.iter().zip(&self.tokens_per_s) {
            s.push_str(&format!("| {model} |"));
            for t in &self.tasks {
                s.push_str(&format!(" {} |", self.cell(&t.name, &t.headline, model)));
            }
            s.push_str(&format!(" {tps:.0} |\n"));
        }
        s.push_str("\n| task | items | metric |");
        for m in &self.models {
            s.push_str(&format!(" {m} |"));
        }
        s.push_str("\n|---|---:|---|");
        s.push_str(&"---:|".repeat(self.models.len()));
        s.push('\n');
        for t in &self.tasks {
            for metric in self.metrics_of(&t.name) {
                s.push_str(&format!("| {} | {} | {metric} |", t.name, t.items));
                for m in &self.models {
                    s.push_str(&format!(" {} |", self.cell(&t.name, metric, m)));
                }
                s.push('\n');
            }
        }
        for t in self.tasks.iter().filter(|t| t.bad_count > 0) {
            s.push_str(&format!(
                "\n{}: skipped {} malformed row(s): {}\n",
                t.name,
                t.bad_count,
                t.bad_rows.join("; ")
            ));
        }
        s
    }
}

/// The prompt ids of a generative item: through the chat template when asked and available.
fn prompt_ids(model: &Pretrained, prompt: &str, chat: bool) -> Result<Vec<u32>> {
    let rendered = match model.chat_template() {
        Some(t) if chat => t.render(&[ChatMessage::new("user", prompt.to_string())], true)?,
        _ => prompt.to_string(),
    };
    model.tokenizer()?.encode(&rendered, false)
}

/// Evaluates every model on every task. With two or more models, the first is the reference
/// (the teacher): the others also get KL, top-1 and top-k agreement with it on perplexity tasks.
pub fn evaluate(
    models: &[(&str, &Pretrained)],
    tasks: &[Task],
    options: &EvalOptions,
    device: &Device,
    progress: &mut dyn FnMut(EvalProgress),
) -> Result<EvalReport> {
    if options.batch == 0 || options.context == 0 || options.top_k == 0 {
        return Err(crate::error::Error::Setting {
            scope: "eval".into(),
            key: "batch, context and top_k".into(),
            message: "must be at least 1".into(),
        });
    }
    let mut report = EvalReport {
        models: models.iter().map(|(l, _)| l.to_string()).collect(),
        ..Default::default()
    };
    let mut speed: Vec<Vec<f64>> = vec![vec![]; models.len()];
    let mut push = |task: &str, metric: &str, model: &str, value: f64| {
        report.scores.push(Score {
            task: task.into(),
            metric: metric.into(),
            model: model.into(),
            value,
        })
    };
    for task in tasks {
        let name = task.name.as_str();
        let mut items = 0;
        for (m, (label, model)) in models.iter().enumerate() {
            let mut tick = |done, total| {
                progress(EvalProgress {
                    model: label,
                    task: name,
                    done,
                    total,
                })
            };
            let reference = (m > 0).then(|| models[0].1);
            let scored = match &task.items {
                TaskItems::Perplexity(text) => {
                    score_perplexity(model, reference, text, options, device, &mut tick)?
                }
                TaskItems::Choice(list) => score_choice(model, list, options, device, &mut tick)?,
                TaskItems::Generate(list) => {
                    let format = task.format.unwrap_or(RowFormat::Generate);
                    score_generate(model, list, format, options, device, &mut tick)?
                }
            };
            items = scored.items;
            for (metric, value) in scored.metrics {
                push(name, &metric, label, value);
            }
            speed[m].push(scored.tokens_per_s);
        }
        report.tasks.push(TaskInfo {
            name: name.to_string(),
            items,
            bad_rows: task.bad.first.clone(),
            bad_count: task.bad.count,
            headline: headline(task.format).to_string(),
        });
    }
    report.tokens_per_s = speed
        .iter()
        .map(|s| s.iter().sum::<f64>() / s.len().max(1) as f64)
        .collect();
    Ok(report)
}

/// What one model scored on one task.
struct TaskScores {
    /// Items scored (windows for perplexity).
    items: usize,
    /// Metric name and value.
    metrics: Vec<(String, f64)>,
    /// Throughput while scoring.
    tokens_per_s: f64,
}

/// Perplexity over windows of `text`; against the first model (`reference`) also the ratio, KL and
/// top-1 / top-k agreement.
fn score_perplexity(
    model: &Pretrained,
    reference: Option<&Pretrained>,
    text: &str,
    options: &EvalOptions,
    device: &Device,
    tick: &mut dyn FnMut(usize, usize),
) -> Result<TaskScores> {
    let forward = |x: Tensor<2, Int>| model.forward(x);
    let ids = model.tokenizer()?.encode(text, false)?;
    let ppl = heldout::perplexity(&forward, &ids, options.context, options.batch, device, tick)?;
    let mut metrics = vec![("perplexity".to_string(), ppl.perplexity)];
    if let Some(reference) = reference {
        let teacher = |x: Tensor<2, Int>| reference.forward(x);
        let r = heldout::compare_on_heldout(
            &teacher,
            &forward,
            &ids,
            options.context,
            options.batch,
            options.top_k,
            device,
            |_, _| {},
        )?;
        metrics.push(("ppl_ratio_vs_first".into(), r.perplexity_ratio));
        metrics.push(("kl_vs_first".into(), r.mean_kl));
        metrics.push(("top1_agreement".into(), r.top1_agreement));
        metrics.push((format!("top{}_agreement", r.top_k), r.topk_agreement));
    }
    Ok(TaskScores {
        items: ppl.tokens / (options.context - 1),
        metrics,
        tokens_per_s: ppl.tokens_per_s,
    })
}

/// Multiple choice: the option with the highest log-likelihood (`acc`), per byte (`acc_norm`).
fn score_choice(
    model: &Pretrained,
    list: &[task::ChoiceItem],
    options: &EvalOptions,
    device: &Device,
    tick: &mut dyn FnMut(usize, usize),
) -> Result<TaskScores> {
    let forward = |x: Tensor<2, Int>| model.forward(x);
    let tokenizer = model.tokenizer()?;
    let mut requests = vec![];
    for item in list {
        for (context, continuation) in &item.options {
            requests.push(choice::encode_pair(tokenizer, context, continuation)?);
        }
    }
    let total = requests.len();
    let mut done = 0;
    let (flat, tps) = choice::loglikelihoods(
        &forward,
        &requests,
        options.batch,
        options.context,
        device,
        |n| {
            done += n;
            tick(done, total)
        },
    )?;
    let mut offset = 0;
    let logliks: Vec<Vec<f64>> = list
        .iter()
        .map(|item| {
            let n = item.options.len();
            offset += n;
            flat[offset - n..offset].to_vec()
        })
        .collect();
    let (acc, acc_norm) = choice::choice_accuracy(list, &logliks);
    Ok(TaskScores {
        items: list.len(),
        metrics: vec![("acc".into(), acc), ("acc_norm".into(), acc_norm)],
        tokens_per_s: tps,
    })
}

/// Generative exact match: greedy decoding to the format's stop strings, the answer extracted and
/// compared with the target.
fn score_generate(
    model: &Pretrained,
    list: &[task::GenerateItem],
    format: RowFormat,
    options: &EvalOptions,
    device: &Device,
    tick: &mut dyn FnMut(usize, usize),
) -> Result<TaskScores> {
    let tokenizer = model.tokenizer()?;
    let stop_ids = model.stop_ids();
    let (mut hits, mut tokens) = (0usize, 0usize);
    let t0 = std::time::Instant::now();
    for (i, item) in list.iter().enumerate() {
        let prompt = prompt_ids(model, &item.prompt, options.chat)?;
        let output = model.greedy_until(
            tokenizer,
            &prompt,
            options.max_new_tokens,
            &stop_ids,
            generative::stop_strings(format),
            device,
        )?;
        tokens += prompt.len() + tokenizer.encode(&output, false)?.len();
        let answer = generative::extract_answer(format, &output);
        hits += usize::from(generative::is_exact_match(format, &answer, &item.target));
        tick(i + 1, list.len());
    }
    Ok(TaskScores {
        items: list.len(),
        metrics: vec![("exact_match".into(), hits as f64 / list.len().max(1) as f64)],
        tokens_per_s: tokens as f64 / t0.elapsed().as_secs_f64().max(1e-9),
    })
}
