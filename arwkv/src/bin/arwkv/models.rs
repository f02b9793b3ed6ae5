//! Commands on one model folder: logits, generation, description, building a student, a random
//! teacher of a given shape.

use std::io::Write;

use anyhow::{Context, Result};
use arwkv::BackendKind;
use arwkv::chat::ChatMessage;
use arwkv::generation::GenerationConfig;
use arwkv::pretrained::Pretrained;
use arwkv::sampling::SamplingConfig;
use arwkv::tokenizer::StreamDecoder;
use clap::Args;

use crate::args::{DeviceArg, parse_ids};

/// Arguments of `arwkv logits`.
#[derive(Args)]
pub struct LogitsArgs {
    /// Model folder or hub id (org/name).
    #[arg(long)]
    pub model: String,
    /// Comma-separated token ids, e.g. 1,2,3.
    #[arg(long)]
    pub ids: String,
    #[command(flatten)]
    pub device: DeviceArg,
}

/// `arwkv logits`: the logits of every position as JSON.
pub fn logits(args: LogitsArgs) -> Result<()> {
    let LogitsArgs { model, ids, device } = args;
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
    Ok(())
}

/// Arguments of `arwkv generate`.
#[derive(Args)]
pub struct GenerateArgs {
    /// Model folder or hub id (org/name).
    #[arg(long)]
    pub model: String,
    /// The prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Optional system message (with --chat).
    #[arg(long)]
    pub system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus probability mass.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the generated token ids as JSON instead of text.
    #[arg(long)]
    pub ids_only: bool,
    #[command(flatten)]
    pub device: DeviceArg,
}

/// `arwkv generate`: text from a prompt, streamed to stdout.
pub fn generate(args: GenerateArgs) -> Result<()> {
    let GenerateArgs {
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
    } = args;
    let device = device.device()?;
    let loaded = Pretrained::load(&model, &device)?;
    let tokenizer = loaded.tokenizer()?;
    let text = if chat {
        let template = loaded
            .chat_template()
            .with_context(|| format!("--chat: {} has no chat template", loaded.dir().display()))?;
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
    Ok(())
}

/// Arguments of `arwkv inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// Model folder or hub id (org/name).
    #[arg(long)]
    pub model: String,
}

/// `arwkv inspect`: describe a model folder.
pub fn inspect(args: InspectArgs) -> Result<()> {
    let InspectArgs { model } = args;
    let device = BackendKind::Cpu.device()?;
    print!("{}", Pretrained::load(&model, &device)?.describe());
    Ok(())
}

/// Arguments of `arwkv build-student`.
#[derive(Args)]
pub struct BuildStudentArgs {
    /// Teacher folder or hub id (org/name).
    #[arg(long)]
    pub teacher: String,
    /// Output folder.
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// Leave out the output gate (the paper's gate-free variant).
    #[arg(long)]
    pub no_gate: bool,
    /// Add GroupNorm on the WKV output.
    #[arg(long)]
    pub group_norm: bool,
    /// Copy the teacher's q/k/v/o projections into r/k/v/o (GQA expanded).
    #[arg(long)]
    pub init_from_attention: bool,
    /// Seed of the time mixers' initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Give a tied teacher's student its own LM head (a copy of the embeddings).
    #[arg(long)]
    pub untie_head: bool,
    /// Largest safetensors shard in bytes (default 5 GB).
    #[arg(long, default_value_t = arwkv::save::DEFAULT_MAX_SHARD_BYTES)]
    pub max_shard_bytes: usize,
}

/// `arwkv build-student`: build an ARWKV student from a teacher and save it.
pub fn build_student(args: BuildStudentArgs) -> Result<()> {
    let BuildStudentArgs {
        teacher,
        out,
        no_gate,
        group_norm,
        init_from_attention,
        seed,
        untie_head,
        max_shard_bytes,
    } = args;
    let device = BackendKind::Cpu.device()?;
    let teacher = arwkv::teacher::PretrainedQwen2::load_weights_only(&teacher, &device)?;
    let options = arwkv::student::StudentOptions {
        gate: !no_gate,
        group_norm,
        init_from_attention,
        seed,
        untie_head,
        ..Default::default()
    };
    let student = arwkv::student::ArwkvForCausalLM::from_teacher(&teacher.model, &options)?;
    arwkv::student::save_pretrained(&student, &out, Some(&teacher.dir), max_shard_bytes)?;
    println!(
        "saved an ARWKV student ({} parameters) to {}",
        student.config.parameter_count(),
        out.display()
    );
    Ok(())
}

/// Arguments of `arwkv random-teacher`.
#[derive(Args)]
pub struct RandomTeacherArgs {
    /// A Qwen2 `config.json` (for instance Qwen2.5-0.5B's): the shape, and nothing else, is read.
    #[arg(long)]
    pub config: std::path::PathBuf,
    /// Folder whose tokenizer files are copied beside the weights (its ids must fit the config's
    /// vocabulary).
    #[arg(long)]
    pub tokenizer: std::path::PathBuf,
    /// Output folder.
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// Seed of the N(0, 0.02²) weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `arwkv random-teacher`: a Qwen2 teacher of a given shape with random weights, made from its
/// `config.json` alone (rehearsals and memory checks at a real shape without downloading it).
pub fn random_teacher(args: RandomTeacherArgs) -> Result<()> {
    let config = arwkv::teacher::Qwen2Config::from_file(&args.config)?;
    let tokenizer =
        arwkv::tokenizer::TextTokenizer::from_file(&args.tokenizer.join("tokenizer.json"))?;
    if tokenizer.vocab_size() > config.vocab_size {
        anyhow::bail!(
            "--tokenizer {}: {} tokens do not fit the config's vocabulary of {}",
            args.tokenizer.display(),
            tokenizer.vocab_size(),
            config.vocab_size
        );
    }
    let device = BackendKind::Cpu.device()?;
    device.seed(args.seed);
    let model = arwkv::teacher::Qwen2ForCausalLM::random(config, &device);
    arwkv::teacher::save_pretrained(
        &model,
        &args.out,
        Some(&args.tokenizer),
        arwkv::save::DEFAULT_MAX_SHARD_BYTES,
    )?;
    println!(
        "saved a random Qwen2 teacher ({} parameters) to {}",
        model.config.parameter_count(),
        args.out.display()
    );
    Ok(())
}
