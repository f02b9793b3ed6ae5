//! Training-step throughput (and the process's peak memory) of stage 1, stage 2, SFT or DPO on the
//! embedded default.

use std::path::{Path, PathBuf};

use crate::distill::run::Stage;
use crate::error::{Error, Result};

use super::BenchReport;

/// Stage and shape of the distillation step benchmark.
#[derive(Clone, Debug)]
pub struct DistillBench {
    /// `align` (stage 1), `kl` (stage 2), `sft` or `dpo` (stage 3).
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

/// Times full training steps (batch, forward, backward, global clipping, AdamW) of stage 1, stage 2,
/// SFT or DPO on the embedded corpus, through the same `distill::run` the CLI uses. SFT rows and DPO
/// answers are cut from the corpus long enough to fill `seq`, so every row is `seq` real tokens
/// (a DPO step reads `2 × batch` rows: the chosen answers and the rejected ones).
pub fn bench_distill(args: &DistillBench, device_name: &str) -> Result<BenchReport> {
    use crate::data::DataConfig;
    use crate::distill::run::{Observer, RunConfig, StepMetrics, run};
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
        "sft" => Stage::Sft,
        "dpo" => Stage::Dpo,
        other => {
            return Err(Error::Invalid(format!(
                "--stage {other}: expected align, kl, sft or dpo"
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
    let corpus = tiny_assets().join("corpus").join("train.txt");
    let data = DataConfig {
        files: vec![match stage {
            Stage::Sft | Stage::Dpo => chat_rows(&corpus, stage, args.seq, out.path())?,
            _ => corpus,
        }],
        context: args.seq,
        batch_size: args.batch,
        pack: !matches!(stage, Stage::Sft | Stage::Dpo),
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

/// Rows of chat data for the SFT or DPO benchmark, written into `dir`: 64 turns cut from `corpus`,
/// each a one-line user prompt and an assistant answer long enough to fill `seq` tokens (about 12
/// characters a token is more than the tiny tokenizer ever needs). DPO pairs each answer, as the
/// chosen one, with the next row's answer as the rejected one.
fn chat_rows(corpus: &Path, stage: Stage, seq: usize, dir: &Path) -> Result<PathBuf> {
    use serde_json::json;
    const ROWS: usize = 64;
    let text = crate::error::read_to_string(corpus)?;
    let chars: Vec<char> = text.chars().collect();
    let answer_chars = seq * 12;
    let span = 80 + answer_chars;
    if chars.len() < span * (ROWS + 1) {
        return Err(Error::Invalid(format!(
            "--seq {seq}: the embedded corpus is too short for {ROWS} rows of {seq} tokens"
        )));
    }
    let cut = |i: usize| -> (String, String) {
        let start = i * span;
        let prompt: String = chars[start..start + 80].iter().collect();
        let answer: String = chars[start + 80..start + span].iter().collect();
        (prompt, answer)
    };
    let mut lines = String::new();
    for i in 0..ROWS {
        let (prompt, answer) = cut(i);
        let row = match stage {
            Stage::Dpo => {
                json!({"prompt": prompt, "chosen": answer, "rejected": cut(i + 1).1})
            }
            _ => json!({"messages": [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": answer},
            ]}),
        };
        lines.push_str(&row.to_string());
        lines.push('\n');
    }
    let path = dir.join("chat.jsonl");
    std::fs::write(&path, lines).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}
