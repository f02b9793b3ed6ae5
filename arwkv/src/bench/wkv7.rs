//! WKV-7 forward + backward throughput: the CPU kernels directly, or `wkv7::wkv7` on a device.

use std::time::Instant;

use burn::prelude::*;

use crate::error::Result;

use super::{BenchReport, check_bench_shape};

/// Shape and repetitions of the WKV-7 CPU benchmark.
#[derive(Clone, Debug)]
pub struct Wkv7Bench {
    /// Batch size.
    pub batch: usize,
    /// Sequence length.
    pub seq: usize,
    /// Heads (C = heads · head size).
    pub heads: usize,
    /// Head size N.
    pub head_size: usize,
    /// Untimed warm-up runs.
    pub warmup: usize,
    /// Timed runs.
    pub iters: usize,
    /// Device path only: inputs and gradients stored in bf16 around the f32 recurrence (the time
    /// mixer under `bf16-mixed`).
    pub bf16: bool,
}

fn check_wkv7_args(args: &Wkv7Bench) -> Result<()> {
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

/// Times forward + backward of `wkv7::wkv7` (the device's kernels, autodiff backward) on random
/// inputs shaped like the time mixer's; one scalar read per run waits for the device.
pub fn bench_wkv7_device(args: &Wkv7Bench, device: &Device) -> Result<BenchReport> {
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
        uniform(-1.0, 1.0),
        uniform(-3.0, -0.5),
        uniform(-1.0, 1.0),
        uniform(-1.0, 1.0),
    );
    // Stored in the benchmark's dtype; the recurrence itself always runs in f32.
    let dtype = if args.bf16 {
        burn::tensor::DType::BF16
    } else {
        burn::tensor::DType::F32
    };
    let stored = |t: Tensor<4>| t.cast(dtype).detach().require_grad();
    let (r, w, k, v) = (stored(r), stored(w), stored(k), stored(v));
    let (a, b) = (stored(a), stored(b));
    let dy = uniform(-1.0, 1.0).cast(dtype);
    let f32 = |t: &Tensor<4>| t.clone().cast(burn::tensor::DType::F32);
    let run = || -> Result<()> {
        let out = crate::wkv7::wkv7(f32(&r), f32(&w), f32(&k), f32(&v), f32(&a), f32(&b), None)?;
        let grads = (out.y.cast(dtype) * dy.clone()).sum().backward();
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
            "B={} T={} H={} N={} {}",
            args.batch,
            args.seq,
            args.heads,
            args.head_size,
            if args.bf16 { "bf16" } else { "f32" }
        ),
        median_s: median,
        tokens_per_s: (args.batch * args.seq) as f64 / median,
        peak_rss_bytes: None,
    })
}

/// Times forward + backward of the hand-written CPU WKV-7 on random inputs shaped like the time
/// mixer's (unit-norm removal key, iclr in (0, 1), ω in [−3, −0.5]).
pub fn bench_wkv7_cpu(args: &Wkv7Bench) -> Result<BenchReport> {
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
        peak_rss_bytes: None,
    })
}
