//! Training-step throughput (and the process's peak memory) of stage 1 or 2 on the embedded default.

use crate::error::{Error, Result};

use super::BenchReport;

/// Stage and shape of the distillation step benchmark.
#[derive(Clone, Debug)]
pub struct DistillBench {
    /// `align` (stage 1) or `kl` (stage 2).
    pub stage: String,
    /// Teacher folder (default: the embedded tiny teacher).
    pub teacher: Option<String>,
    /// Rows per step.
    pub batch: usize,
    /// Tokens per row.
    pub seq: usize,
    /// Untimed warm-up steps.
    pub warmup: usize,
    /// Timed steps.
    pub iters: usize,
    /// Stage 2: positions per chunk of the head's loss (`loss_chunk_tokens`; absent: none).
    pub loss_chunk: Option<usize>,
    /// Recompute element-wise intermediates in the backward pass (`activation_checkpointing`).
    pub activation_checkpointing: bool,
    /// The run config's `precision` (absent: the backend's default).
    pub precision: Option<crate::Precision>,
}

/// Times full training steps (batch, forward, backward, global clipping, AdamW) of stage 1 or 2
/// on the embedded corpus, through the same `distill::run` the CLI uses.
pub fn bench_distill(args: &DistillBench, device_name: &str) -> Result<BenchReport> {
    use crate::data::DataConfig;
    use crate::distill::run::{Observer, RunConfig, Stage, StepMetrics, run};
    use crate::embedded::tiny_assets;

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
    cfg.loss_chunk_tokens = args.loss_chunk;
    cfg.activation_checkpointing = args.activation_checkpointing;
    cfg.precision = args.precision;
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
        peak_rss_bytes: super::peak_resident_bytes(),
    })
}
