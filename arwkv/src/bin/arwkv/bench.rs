//! `arwkv bench …`: the benchmarks of docs/BENCHMARKS.md, one JSON line per report.

use anyhow::Result;
use arwkv::BackendKind;
use clap::Subcommand;

/// What to benchmark.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Forward tokens/s of a randomly initialised Qwen2 of the given shape.
    Teacher(TeacherBenchArgs),
    /// Forward + backward tokens/s of the CPU WKV-7 recurrence.
    Wkv7(Wkv7BenchArgs),
    /// Decode tokens/s and state memory: teacher (KV cache) vs student (recurrent state).
    Decode(DecodeBenchArgs),
    /// Training-step tokens/s of stage 1 (align) or stage 2 (kl) on the embedded default.
    Distill(DistillBenchArgs),
}

/// `arwkv bench`: runs one benchmark and prints its report.
pub fn bench(what: BenchCommand) -> Result<()> {
    match what {
        BenchCommand::Teacher(args) => {
            let device = BackendKind::from_flag_or_env(args.device.as_deref())?.device()?;
            let report = arwkv::bench::bench_teacher(&args.config(), &device)?;
            println!("{}", serde_json::to_string(&report)?);
        }
        BenchCommand::Distill(args) => {
            let kind = BackendKind::from_flag_or_env(args.device.as_deref())?;
            let name = format!("{kind:?}").to_lowercase();
            let report = arwkv::bench::bench_distill(&args.config(), &name)?;
            println!("{}", serde_json::to_string(&report)?);
        }
        BenchCommand::Decode(args) => {
            let device = BackendKind::from_flag_or_env(args.device.as_deref())?.device()?;
            for report in arwkv::bench::bench_decode(&args.config(), &device)? {
                println!("{}", serde_json::to_string(&report)?);
            }
        }
        BenchCommand::Wkv7(args) => {
            if !["f32", "bf16"].contains(&args.dtype.as_str()) {
                anyhow::bail!("--dtype {}: expected f32 or bf16", args.dtype);
            }
            let report = match args.device.as_deref() {
                None => arwkv::bench::bench_wkv7_cpu(&args.config())?,
                Some(name) => {
                    let device = BackendKind::from_flag_or_env(Some(name))?.device()?;
                    arwkv::bench::bench_wkv7_device(&args.config(), &device)?
                }
            };
            println!("{}", serde_json::to_string(&report)?);
        }
    }
    Ok(())
}

/// Shape and repetitions of the teacher forward benchmark.
#[derive(Clone, Debug, clap::Args)]
pub struct TeacherBenchArgs {
    /// Model width.
    #[arg(long, default_value_t = 512)]
    hidden: usize,
    /// Decoder layers.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Query heads.
    #[arg(long, default_value_t = 8)]
    heads: usize,
    /// Key/value heads.
    #[arg(long, default_value_t = 2)]
    kv_heads: usize,
    /// MLP width.
    #[arg(long, default_value_t = 1408)]
    intermediate: usize,
    /// Vocabulary size.
    #[arg(long, default_value_t = 8192)]
    vocab: usize,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Sequence length.
    #[arg(long, default_value_t = 512)]
    seq: usize,
    /// Untimed warm-up forwards.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed forwards.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Compute backend (default: $ARWKV_DEVICE, else cpu).
    #[arg(long)]
    device: Option<String>,
}

/// Shape and repetitions of the WKV-7 CPU benchmark.
#[derive(Clone, Debug, clap::Args)]
pub struct Wkv7BenchArgs {
    /// Batch size.
    #[arg(long, default_value_t = 2)]
    batch: usize,
    /// Sequence length.
    #[arg(long, default_value_t = 256)]
    seq: usize,
    /// Heads (C = heads · head size).
    #[arg(long, default_value_t = 8)]
    heads: usize,
    /// Head size N.
    #[arg(long, default_value_t = 64)]
    head_size: usize,
    /// Untimed warm-up runs.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Run through `wkv7::wkv7` with autodiff on this backend (cpu, wgpu, cuda, rocm) instead of
    /// calling the CPU kernels directly.
    #[arg(long)]
    device: Option<String>,
    /// With `--device`: `f32`, or `bf16` for inputs and gradients stored in bf16 around the f32
    /// recurrence (what the time mixer does under `bf16-mixed`).
    #[arg(long, default_value = "f32", requires = "device")]
    dtype: String,
}

/// Shape of the decode benchmark (teacher with KV cache vs student with recurrent state).
#[derive(Clone, Debug, clap::Args)]
pub struct DecodeBenchArgs {
    /// Model width (a multiple of 64).
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    /// Decoder layers.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Teacher query heads.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Teacher key/value heads.
    #[arg(long, default_value_t = 2)]
    kv_heads: usize,
    /// MLP width.
    #[arg(long, default_value_t = 704)]
    intermediate: usize,
    /// Vocabulary size.
    #[arg(long, default_value_t = 4096)]
    vocab: usize,
    /// Context lengths read before decoding, comma-separated.
    #[arg(long, default_value = "4096,16384", value_delimiter = ',')]
    contexts: Vec<usize>,
    /// Tokens decoded (timed) after each context.
    #[arg(long, default_value_t = 32)]
    decode: usize,
    /// Prefill chunk length.
    #[arg(long, default_value_t = 1024)]
    chunk: usize,
    /// Compute backend (default: $ARWKV_DEVICE, else cpu).
    #[arg(long)]
    device: Option<String>,
}

/// Stage and shape of the distillation step benchmark.
#[derive(Clone, Debug, clap::Args)]
pub struct DistillBenchArgs {
    /// `align` (stage 1), `kl` (stage 2), `sft` or `dpo` (stage 3).
    #[arg(long, default_value = "kl")]
    stage: String,
    /// Teacher folder (default: the embedded tiny teacher).
    #[arg(long)]
    teacher: Option<String>,
    /// Rows per step.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Tokens per row.
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 8)]
    iters: usize,
    /// Stage 2: make the head's logits this many positions at a time (the run config's
    /// `loss_chunk_tokens`).
    #[arg(long)]
    loss_chunk: Option<usize>,
    /// Recompute element-wise intermediates in the backward pass (the run config's
    /// `activation_checkpointing`).
    #[arg(long)]
    activation_checkpointing: bool,
    /// `f32`, `bf16-mixed` or `f16-mixed` (the run config's `precision`; default: the backend's).
    #[arg(long)]
    precision: Option<arwkv::Precision>,
    /// Compute backend (default: $ARWKV_DEVICE, else cpu).
    #[arg(long)]
    device: Option<String>,
}

impl TeacherBenchArgs {
    /// The library's configuration of this benchmark.
    fn config(&self) -> arwkv::bench::TeacherBench {
        arwkv::bench::TeacherBench {
            hidden: self.hidden,
            layers: self.layers,
            heads: self.heads,
            kv_heads: self.kv_heads,
            intermediate: self.intermediate,
            vocab: self.vocab,
            batch: self.batch,
            seq: self.seq,
            warmup: self.warmup,
            iters: self.iters,
        }
    }
}

impl Wkv7BenchArgs {
    /// The library's configuration of this benchmark.
    fn config(&self) -> arwkv::bench::Wkv7Bench {
        arwkv::bench::Wkv7Bench {
            batch: self.batch,
            seq: self.seq,
            heads: self.heads,
            head_size: self.head_size,
            warmup: self.warmup,
            iters: self.iters,
            bf16: self.dtype == "bf16",
        }
    }
}

impl DecodeBenchArgs {
    /// The library's configuration of this benchmark.
    fn config(&self) -> arwkv::bench::DecodeBench {
        arwkv::bench::DecodeBench {
            hidden: self.hidden,
            layers: self.layers,
            heads: self.heads,
            kv_heads: self.kv_heads,
            intermediate: self.intermediate,
            vocab: self.vocab,
            contexts: self.contexts.clone(),
            decode: self.decode,
            chunk: self.chunk,
        }
    }
}

impl DistillBenchArgs {
    /// The library's configuration of this benchmark.
    fn config(&self) -> arwkv::bench::DistillBench {
        arwkv::bench::DistillBench {
            stage: self.stage.clone(),
            teacher: self.teacher.clone(),
            batch: self.batch,
            seq: self.seq,
            warmup: self.warmup,
            iters: self.iters,
            loss_chunk: self.loss_chunk,
            activation_checkpointing: self.activation_checkpointing,
            precision: self.precision,
        }
    }
}
