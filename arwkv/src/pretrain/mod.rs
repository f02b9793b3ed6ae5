//! Stage 0: pretraining a small Qwen2 teacher from scratch on a corpus (the embedded default's
//! teacher), with the same data, optimiser, metrics and loss page as the distillation stages; the
//! result is a Hugging Face Qwen2 folder that loads like any hub Qwen2.5. It runs the one training
//! loop (`train::trainer`) with the next-token objective of [`next_token`].

mod next_token;

use std::path::PathBuf;

use burn::module::Module;
use serde::{Deserialize, Serialize};

use crate::data::{DataConfig, Dataset};
use crate::error::{Error, Result};
use crate::teacher::{Qwen2Config, Qwen2ForCausalLM, save_pretrained};
use crate::tokenizer::TextTokenizer;
use crate::train::{
    AdamW, AdamWConfig, LoopStart, LrSchedule, Observer, Ranks, Stage, StepMetrics, TrainLoop,
    train,
};
pub use next_token::NextToken;

/// The shape of the model to pretrain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelShape {
    /// Width C.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA).
    pub num_key_value_heads: usize,
    /// RoPE base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Longest position.
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
}

fn default_theta() -> f64 {
    10000.0
}
fn default_positions() -> usize {
    4096
}

/// A pretraining run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    /// Folder with `tokenizer.json` (+ `tokenizer_config.json` with the chat template).
    pub tokenizer: PathBuf,
    /// Output folder (the model) — metrics and the loss page go beside it in `<out>-run/`.
    pub out: PathBuf,
    /// Backend.
    #[serde(default = "default_device")]
    pub device: String,
    /// Seed of the initial weights and of the data order.
    #[serde(default)]
    pub seed: u64,
    /// Optimiser steps.
    pub steps: u64,
    /// Model shape.
    pub model: ModelShape,
    /// Data.
    pub data: DataConfig,
    /// Optimiser.
    #[serde(default)]
    pub optim: AdamWConfig,
    /// Schedule (`total_steps` is set to `steps`).
    #[serde(default)]
    pub schedule: LrSchedule,
}

fn default_device() -> String {
    "cpu".into()
}

impl PretrainConfig {
    /// Reads a TOML config.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = crate::error::read_to_string(path)?;
        crate::error::parse_toml(path, &text)
    }
}

/// Pretrains and saves the teacher; returns the last step's metrics.
pub fn pretrain(cfg: &PretrainConfig, observer: &mut dyn Observer) -> Result<Option<StepMetrics>> {
    if cfg.steps == 0 {
        return Err(Error::Setting {
            scope: "pretrain".into(),
            key: "steps".into(),
            message: "must be at least 1".into(),
        });
    }
    let device = crate::BackendKind::from_flag_or_env(Some(&cfg.device))?
        .device()?
        .autodiff();
    let tokenizer = TextTokenizer::from_file(&cfg.tokenizer.join("tokenizer.json"))?;
    let eos: Vec<u32> = ["<|im_end|>", "<|endoftext|>"]
        .iter()
        .filter_map(|t| tokenizer.token_to_id(t))
        .collect();
    let m = &cfg.model;
    if m.num_attention_heads == 0
        || m.num_key_value_heads == 0
        || !m.hidden_size.is_multiple_of(m.num_attention_heads)
        || !m.num_attention_heads.is_multiple_of(m.num_key_value_heads)
    {
        return Err(Error::Setting {
            scope: "pretrain".into(),
            key: "model".into(),
            message: format!("has inconsistent head counts: {m:?}"),
        });
    }
    let config = Qwen2Config {
        vocab_size: tokenizer.vocab_size(),
        hidden_size: m.hidden_size,
        intermediate_size: m.intermediate_size,
        num_hidden_layers: m.num_hidden_layers,
        num_attention_heads: m.num_attention_heads,
        num_key_value_heads: m.num_key_value_heads,
        head_dim: m.hidden_size / m.num_attention_heads,
        max_position_embeddings: m.max_position_embeddings,
        rms_norm_eps: 1e-6,
        rope_theta: m.rope_theta,
        tie_word_embeddings: true,
        dtype: Some("float32".into()),
        eos_token_ids: eos,
        bos_token_id: None,
    };
    let dataset = Dataset::load(&cfg.data, &tokenizer, None, cfg.seed)?;
    device.seed(cfg.seed);
    let model = Qwen2ForCausalLM::random(config, &device);
    let run_dir = cfg.out.with_file_name(format!(
        "{}-run",
        cfg.out
            .file_name()
            .map_or("teacher".into(), |n| n.to_string_lossy().into_owned())
    ));
    std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
    let train_loop = TrainLoop {
        stage: Stage::Pretrain,
        steps: cfg.steps,
        grad_accum: 1,
        // The model is saved once, at the end (or when the observer stops the run).
        save_every: cfg.steps,
        schedule: cfg.schedule.clone(),
        out: run_dir,
    };
    let mut save = |model: &Qwen2ForCausalLM, _: &AdamW, _, _| {
        save_pretrained(
            &model.clone().no_grad(),
            &cfg.out,
            Some(&cfg.tokenizer),
            crate::save::DEFAULT_MAX_SHARD_BYTES,
        )?;
        Ok(cfg.out.clone())
    };
    let start = LoopStart::fresh(model, AdamW::new(cfg.optim.clone()));
    let objective = NextToken { data: dataset };
    let end = train(
        &train_loop,
        start,
        &Ranks::single(&objective, &device),
        &mut save,
        observer,
    )?;
    Ok(end.last)
}
