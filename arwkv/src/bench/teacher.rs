//! Teacher forward throughput: full forwards of a randomly initialised Qwen2.

use std::time::Instant;

use burn::prelude::*;

use crate::error::{Error, Result};
use crate::teacher::{Qwen2Config, Qwen2ForCausalLM};

use super::{BenchReport, check_bench_shape};

/// Shape and repetitions of the teacher forward benchmark.
#[derive(Clone, Debug)]
pub struct TeacherBench {
    /// Model width.
    pub hidden: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Batch size.
    pub batch: usize,
    /// Sequence length.
    pub seq: usize,
    /// Untimed warm-up forwards.
    pub warmup: usize,
    /// Timed forwards.
    pub iters: usize,
}

/// Times full forwards (logits of every position) of a random Qwen2.
pub fn bench_teacher(args: &TeacherBench, device: &Device) -> Result<BenchReport> {
    check_teacher_args(args)?;
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
        peak_rss_bytes: None,
    })
}

fn check_teacher_args(args: &TeacherBench) -> Result<()> {
    for (flag, v) in [
        ("--iters", args.iters),
        ("--layers", args.layers),
        ("--kv-heads", args.kv_heads),
    ] {
        check_bench_shape(&[(flag, v)])?;
    }
    // Logits, attention scores and the two largest weights.
    check_bench_shape(&[
        ("--batch", args.batch),
        ("--seq", args.seq),
        ("--vocab", args.vocab),
    ])?;
    check_bench_shape(&[
        ("--batch", args.batch),
        ("--heads", args.heads),
        ("--seq", args.seq),
        ("--seq", args.seq),
    ])?;
    check_bench_shape(&[("--vocab", args.vocab), ("--hidden", args.hidden)])?;
    check_bench_shape(&[
        ("--intermediate", args.intermediate),
        ("--hidden", args.hidden),
    ])?;
    if !args.hidden.is_multiple_of(args.heads) || !(args.hidden / args.heads).is_multiple_of(2) {
        return Err(Error::Invalid(format!(
            "--heads {} must divide --hidden {} into an even head width",
            args.heads, args.hidden
        )));
    }
    if !args.heads.is_multiple_of(args.kv_heads) {
        return Err(Error::Invalid(format!(
            "--kv-heads {} must divide --heads {}",
            args.kv_heads, args.heads
        )));
    }
    Ok(())
}
