//! Benchmarks run by `arwkv bench …`; the PyTorch twins live in `benches/` (see docs/BENCHMARKS.md).

use std::time::Instant;

use burn::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::teacher::{Qwen2Config, Qwen2ForCausalLM};

/// Shape and repetitions of the teacher forward benchmark.
#[derive(Clone, Debug, clap::Args)]
pub struct TeacherBenchArgs {
    /// Model width.
    #[arg(long, default_value_t = 512)]
    pub hidden: usize,
    /// Decoder layers.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Query heads.
    #[arg(long, default_value_t = 8)]
    pub heads: usize,
    /// Key/value heads.
    #[arg(long, default_value_t = 2)]
    pub kv_heads: usize,
    /// MLP width.
    #[arg(long, default_value_t = 1408)]
    pub intermediate: usize,
    /// Vocabulary size.
    #[arg(long, default_value_t = 8192)]
    pub vocab: usize,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Sequence length.
    #[arg(long, default_value_t = 512)]
    pub seq: usize,
    /// Untimed warm-up forwards.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed forwards.
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// Compute backend (default: $ARWKV_DEVICE, else cpu).
    #[arg(long)]
    pub device: Option<String>,
}

/// One benchmark result line.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// What was measured.
    pub bench: String,
    /// Implementation.
    pub implementation: String,
    /// The backend.
    pub device: String,
    /// Shape as text.
    pub shape: String,
    /// Median seconds per forward.
    pub median_s: f64,
    /// Tokens per second at the median.
    pub tokens_per_s: f64,
}

/// Times full forwards (logits of every position) of a random Qwen2.
pub fn bench_teacher(args: &TeacherBenchArgs, device: &Device) -> Result<BenchReport> {
    if args.iters == 0 {
        return Err(Error::Invalid("--iters must be at least 1".into()));
    }
    let config = Qwen2Config {
        vocab_size: args.vocab,
        hidden_size: args.hidden,
        intermediate_size: args.intermediate,
        num_hidden_layers: args.layers,
        num_attention_heads: args.heads,
        num_key_value_heads: args.kv_heads,
        head_dim: args.hidden / args.heads,
        max_position_embeddings: args.seq.max(1),
        rms_norm_eps: 1e-6,
        rope_theta: 1e6,
        tie_word_embeddings: true,
        dtype: Some("float32".into()),
        eos_token_ids: vec![],
        bos_token_id: None,
    };
    device.seed(0);
    let model = Qwen2ForCausalLM::random(config, device);
    let ids: Vec<i64> = (0..args.batch * args.seq)
        .map(|i| ((i * 7919) % args.vocab) as i64)
        .collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [args.batch, args.seq]), device);
    let run = || -> Result<()> {
        let logits = model.forward(ids.clone(), None)?;
        // Reading one value forces the whole computation on lazy backends.
        let _ = logits.slice([0..1, 0..1, 0..1]).into_data();
        Ok(())
    };
    for _ in 0..args.warmup {
        run()?;
    }
    let mut times = Vec::with_capacity(args.iters);
    for _ in 0..args.iters {
        let start = Instant::now();
        run()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok(BenchReport {
        bench: "teacher_forward".into(),
        implementation: "arwkv (burn)".into(),
        device: format!("{device:?}"),
        shape: format!(
            "B={} T={} C={} L={} H={} KV={} I={} V={}",
            args.batch,
            args.seq,
            args.hidden,
            args.layers,
            args.heads,
            args.kv_heads,
            args.intermediate,
            args.vocab
        ),
        median_s: median,
        tokens_per_s: (args.batch * args.seq) as f64 / median,
    })
}
