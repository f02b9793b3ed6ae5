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
    })
}

/// Shape and repetitions of the WKV-7 CPU benchmark.
#[derive(Clone, Debug, clap::Args)]
pub struct Wkv7BenchArgs {
    /// Batch size.
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    /// Sequence length.
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
    /// Heads (C = heads · head size).
    #[arg(long, default_value_t = 8)]
    pub heads: usize,
    /// Head size N.
    #[arg(long, default_value_t = 64)]
    pub head_size: usize,
    /// Untimed warm-up runs.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// Run through `wkv7::wkv7` with autodiff on this backend (cpu, wgpu, cuda, rocm) instead of
    /// calling the CPU kernels directly.
    #[arg(long)]
    pub device: Option<String>,
}

/// The most elements one benchmark tensor may hold (4 GiB of f32): larger shapes are refused before
/// anything is allocated, instead of aborting the process on a failed allocation.
pub const MAX_BENCH_ELEMENTS: usize = 1 << 30;

/// Checks that every dimension is at least 1 and that their product stays within
/// [`MAX_BENCH_ELEMENTS`]; errors name the flags.
pub fn check_bench_shape(dims: &[(&str, usize)]) -> Result<()> {
    if let Some((flag, _)) = dims.iter().find(|(_, v)| *v == 0) {
        return Err(Error::Invalid(format!("{flag} must be at least 1")));
    }
    let elements = dims
        .iter()
        .try_fold(1usize, |acc, (_, v)| acc.checked_mul(*v))
        .filter(|&n| n <= MAX_BENCH_ELEMENTS);
    if elements.is_none() {
        let flags: Vec<String> = dims.iter().map(|(f, v)| format!("{f} {v}")).collect();
        return Err(Error::Invalid(format!(
            "{} make a tensor of more than {MAX_BENCH_ELEMENTS} elements; choose smaller sizes",
            flags.join(" × ")
        )));
    }
    Ok(())
}

fn check_wkv7_args(args: &Wkv7BenchArgs) -> Result<()> {
    check_bench_shape(&[("--iters", args.iters)])?;
    // The backward keeps a state of head-size² per head and step.
    check_bench_shape(&[
        ("--batch", args.batch),
        ("--seq", args.seq),
        ("--heads", args.heads),
        ("--head-size", args.head_size),
        ("--head-size", args.head_size),
    ])
}

fn check_teacher_args(args: &TeacherBenchArgs) -> Result<()> {
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

/// Times forward + backward of `wkv7::wkv7` (the device's kernels, autodiff backward) on random
/// inputs shaped like the time mixer's; one scalar read per run waits for the device.
pub fn bench_wkv7_device(args: &Wkv7BenchArgs, device: &Device) -> Result<BenchReport> {
    use burn::tensor::Distribution;
    check_wkv7_args(args)?;
    let device = device.clone().autodiff();
    device.seed(0);
    let shape = [args.batch, args.seq, args.heads, args.head_size];
    let uniform =
        |lo: f64, hi: f64| Tensor::<4>::random(shape, Distribution::Uniform(lo, hi), &device);
    let kappa = uniform(-1.0, 1.0);
    let kappa = kappa.clone() / kappa.powi_scalar(2).sum_dim(3).sqrt().clamp_min(1e-12);
    let iclr = uniform(0.0, 1.0);
    let a = kappa.clone().neg().detach();
    let b = (kappa * iclr).detach();
    let (r, w, k, v) = (
        uniform(-1.0, 1.0).require_grad(),
        uniform(-3.0, -0.5).require_grad(),
        uniform(-1.0, 1.0).require_grad(),
        uniform(-1.0, 1.0).require_grad(),
    );
    let (a, b) = (a.require_grad(), b.require_grad());
    let dy = uniform(-1.0, 1.0);
    let run = || -> Result<()> {
        let out = crate::wkv7::wkv7(
            r.clone(),
            w.clone(),
            k.clone(),
            v.clone(),
            a.clone(),
            b.clone(),
            None,
        )?;
        let grads = (out.y * dy.clone()).sum().backward();
        let gw = w.grad(&grads).expect("gradient of w");
        let _ = gw.slice([0..1, 0..1, 0..1, 0..1]).into_data();
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
        bench: "wkv7_fwd_bwd".into(),
        implementation: "arwkv wkv7::wkv7 (autodiff)".into(),
        device: format!("{device:?}"),
        shape: format!(
            "B={} T={} H={} N={}",
            args.batch, args.seq, args.heads, args.head_size
        ),
        median_s: median,
        tokens_per_s: (args.batch * args.seq) as f64 / median,
    })
}

/// Times forward + backward of the hand-written CPU WKV-7 on random inputs shaped like the time
/// mixer's (unit-norm removal key, iclr in (0, 1), ω in [−3, −0.5]).
pub fn bench_wkv7_cpu(args: &Wkv7BenchArgs) -> Result<BenchReport> {
    use crate::wkv7::cpu::{Wkv7Dims, Wkv7Inputs, backward, forward};
    use rand::{Rng, SeedableRng};
    check_wkv7_args(args)?;
    let dims = Wkv7Dims {
        batch: args.batch,
        seq: args.seq,
        heads: args.heads,
        head_size: args.head_size,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut uniform = |lo: f32, hi: f32| {
        (0..dims.seq_len())
            .map(|_| rng.random_range(lo..hi))
            .collect::<Vec<f32>>()
    };
    let (r, k, v, kappa) = (
        uniform(-1.0, 1.0),
        uniform(-1.0, 1.0),
        uniform(-1.0, 1.0),
        uniform(-1.0, 1.0),
    );
    let (w, iclr, dy) = (uniform(-3.0, -0.5), uniform(0.0, 1.0), uniform(-1.0, 1.0));
    let n = args.head_size;
    let mut a = vec![0.0; dims.seq_len()];
    let mut b = vec![0.0; dims.seq_len()];
    for (h, chunk) in kappa.chunks(n).enumerate() {
        let norm = chunk.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        for j in 0..n {
            a[h * n + j] = -chunk[j] / norm;
            b[h * n + j] = chunk[j] / norm * iclr[h * n + j];
        }
    }
    let inputs = Wkv7Inputs {
        r: &r,
        w: &w,
        k: &k,
        v: &v,
        a: &a,
        b: &b,
    };
    let run = || {
        let fwd = forward(dims, inputs, None);
        std::hint::black_box(backward(dims, inputs, &fwd.snapshots, &dy, None));
    };
    for _ in 0..args.warmup {
        run();
    }
    let mut times: Vec<f64> = (0..args.iters)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok(BenchReport {
        bench: "wkv7_fwd_bwd".into(),
        implementation: "arwkv wkv7::cpu".into(),
        device: format!("cpu x{} threads", rayon::current_num_threads()),
        shape: format!(
            "B={} T={} H={} N={}",
            args.batch, args.seq, args.heads, args.head_size
        ),
        median_s: median,
        tokens_per_s: (args.batch * args.seq) as f64 / median,
    })
}

/// Shape of the decode benchmark (teacher with KV cache vs student with recurrent state).
#[derive(Clone, Debug, clap::Args)]
pub struct DecodeBenchArgs {
    /// Model width (a multiple of 64).
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    /// Decoder layers.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Teacher query heads.
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Teacher key/value heads.
    #[arg(long, default_value_t = 2)]
    pub kv_heads: usize,
    /// MLP width.
    #[arg(long, default_value_t = 704)]
    pub intermediate: usize,
    /// Vocabulary size.
    #[arg(long, default_value_t = 4096)]
    pub vocab: usize,
    /// Context lengths read before decoding, comma-separated.
    #[arg(long, default_value = "4096,16384", value_delimiter = ',')]
    pub contexts: Vec<usize>,
    /// Tokens decoded (timed) after each context.
    #[arg(long, default_value_t = 32)]
    pub decode: usize,
    /// Prefill chunk length.
    #[arg(long, default_value_t = 1024)]
    pub chunk: usize,
    /// Compute backend (default: $ARWKV_DEVICE, else cpu).
    #[arg(long)]
    pub device: Option<String>,
}

/// One decode measurement.
#[derive(Debug, Serialize)]
pub struct DecodeReport {
    /// "teacher (KV cache)" or "student (recurrent state)".
    pub model: String,
    /// The backend.
    pub device: String,
    /// Tokens read before decoding.
    pub context: usize,
    /// Seconds to read the context (chunked prefill).
    pub prefill_s: f64,
    /// Decode tokens per second after the context.
    pub decode_tokens_per_s: f64,
    /// Bytes of KV cache / recurrent state after decoding.
    pub state_bytes: usize,
    /// Resident memory of the process after decoding (Linux), bytes.
    pub rss_bytes: Option<usize>,
}

fn resident_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Decode speed and state memory of a random teacher and its student at several context lengths.
pub fn bench_decode(args: &DecodeBenchArgs, device: &Device) -> Result<Vec<DecodeReport>> {
    use crate::generation::CausalLm;
    use crate::student::{ArwkvForCausalLM, StudentOptions};
    if args.decode == 0 || args.chunk == 0 {
        return Err(Error::Invalid(
            "--decode and --chunk must be at least 1".into(),
        ));
    }
    let config = Qwen2Config {
        vocab_size: args.vocab,
        hidden_size: args.hidden,
        intermediate_size: args.intermediate,
        num_hidden_layers: args.layers,
        num_attention_heads: args.heads,
        num_key_value_heads: args.kv_heads,
        head_dim: args.hidden / args.heads,
        max_position_embeddings: args.contexts.iter().max().copied().unwrap_or(1) + args.decode,
        rms_norm_eps: 1e-6,
        rope_theta: 1e6,
        tie_word_embeddings: true,
        dtype: Some("float32".into()),
        eos_token_ids: vec![],
        bos_token_id: None,
    };
    device.seed(0);
    let teacher = Qwen2ForCausalLM::random(config.clone(), device);
    let student = ArwkvForCausalLM::from_teacher(&teacher, &StudentOptions::default())?;
    let ids = |start: usize, len: usize| {
        let v: Vec<i64> = (start..start + len)
            .map(|i| ((i * 7919) % args.vocab) as i64)
            .collect();
        Tensor::<2, Int>::from_data(TensorData::new(v, [1, len]), device)
    };
    fn run<M: CausalLm>(
        model: &M,
        args: &DecodeBenchArgs,
        context: usize,
        ids: &dyn Fn(usize, usize) -> Tensor<2, Int>,
    ) -> Result<(f64, f64, M::State)> {
        let force = |t: Tensor<3>| {
            let _ = t.slice([0..1, 0..1, 0..1]).into_data();
        };
        let mut state = model.empty_state();
        let start = Instant::now();
        let mut pos = 0;
        while pos < context {
            let len = args.chunk.min(context - pos);
            force(model.forward_with(ids(pos, len), &mut state)?);
            pos += len;
        }
        let prefill = start.elapsed().as_secs_f64();
        let start = Instant::now();
        for i in 0..args.decode {
            force(model.forward_with(ids(context + i, 1), &mut state)?);
        }
        let decode = args.decode as f64 / start.elapsed().as_secs_f64();
        Ok((prefill, decode, state))
    }
    let kv_bytes = |len: usize| {
        2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * len * 4
    };
    let mut reports = vec![];
    for &context in &args.contexts {
        let (prefill_s, decode, cache) = run(&teacher, args, context, &ids)?;
        reports.push(DecodeReport {
            model: "teacher (KV cache)".into(),
            device: format!("{device:?}"),
            context,
            prefill_s,
            decode_tokens_per_s: decode,
            state_bytes: kv_bytes(cache.len()),
            rss_bytes: resident_bytes(),
        });
        drop(cache);
        let (prefill_s, decode, state) = run(&student, args, context, &ids)?;
        reports.push(DecodeReport {
            model: "student (recurrent state)".into(),
            device: format!("{device:?}"),
            context,
            prefill_s,
            decode_tokens_per_s: decode,
            state_bytes: state.size_bytes(),
            rss_bytes: resident_bytes(),
        });
    }
    Ok(reports)
}

/// Stage and shape of the distillation step benchmark.
#[derive(Clone, Debug, clap::Args)]
pub struct DistillBenchArgs {
    /// `align` (stage 1) or `kl` (stage 2).
    #[arg(long, default_value = "kl")]
    pub stage: String,
    /// Teacher folder (default: the embedded tiny teacher).
    #[arg(long)]
    pub teacher: Option<String>,
    /// Rows per step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Tokens per row.
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 8)]
    pub iters: usize,
    /// Compute backend (default: $ARWKV_DEVICE, else cpu).
    #[arg(long)]
    pub device: Option<String>,
}

/// Times full training steps (batch, forward, backward, global clipping, AdamW) of stage 1 or 2
/// on the embedded corpus, through the same `distill::run` the CLI uses.
pub fn bench_distill(args: &DistillBenchArgs, device_name: &str) -> Result<BenchReport> {
    use crate::distill::data::DataConfig;
    use crate::distill::preset::tiny_assets;
    use crate::distill::run::{Observer, RunConfig, Stage, StepMetrics, run};

    struct Collect(Vec<f64>);
    impl Observer for Collect {
        fn on_step(&mut self, m: &StepMetrics, _total: u64) -> bool {
            self.0.push(m.tokens_per_s);
            true
        }
    }
    let stage = match args.stage.as_str() {
        "align" => Stage::Align,
        "kl" => Stage::Kl,
        other => {
            return Err(Error::Invalid(format!(
                "--stage {other}: expected align or kl"
            )));
        }
    };
    if args.iters == 0 {
        return Err(Error::Invalid("--iters must be at least 1".into()));
    }
    let out = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let steps = (args.warmup + args.iters) as u64;
    let teacher = args
        .teacher
        .clone()
        .unwrap_or_else(|| tiny_assets().join("teacher").to_string_lossy().into_owned());
    let data = DataConfig {
        files: vec![tiny_assets().join("corpus").join("train.txt")],
        context: args.seq,
        batch_size: args.batch,
        pack: true,
    };
    let mut cfg = RunConfig::new(stage, teacher, out.path().join("run"), steps, data);
    cfg.device = device_name.to_string();
    let mut seen = Collect(vec![]);
    run(&cfg, crate::distill::run::Start::Fresh, &mut seen)?;
    let mut timed: Vec<f64> = seen.0.into_iter().skip(args.warmup).collect();
    timed.sort_by(f64::total_cmp);
    let tokens_per_s = timed[timed.len() / 2];
    let tokens = (args.batch * args.seq) as f64;
    Ok(BenchReport {
        bench: format!("distill-{}", args.stage),
        implementation: "arwkv".into(),
        device: device_name.to_string(),
        shape: format!("B{}xT{}", args.batch, args.seq),
        median_s: tokens / tokens_per_s,
        tokens_per_s,
    })
}

#[cfg(test)]
mod shape_tests {
    use super::*;

    #[test]
    fn zero_and_oversized_shapes_are_refused_naming_the_flags() {
        let err = check_bench_shape(&[("--batch", 1), ("--heads", 0)]).unwrap_err();
        assert!(
            err.to_string().contains("--heads must be at least 1"),
            "{err}"
        );
        let err = check_bench_shape(&[("--batch", 100_000), ("--seq", 100_000)]).unwrap_err();
        assert!(
            err.to_string().contains("--batch 100000 × --seq 100000"),
            "{err}"
        );
        let err = check_bench_shape(&[("--batch", usize::MAX), ("--seq", 2)]).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
        check_bench_shape(&[
            ("--batch", 4),
            ("--seq", 256),
            ("--heads", 8),
            ("--head-size", 64),
        ])
        .unwrap();
    }
}
