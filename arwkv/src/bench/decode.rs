//! Decode speed and state memory: the teacher with its KV cache against the student with its
//! recurrent state.

use std::time::Instant;

use burn::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};

use crate::teacher::{Qwen2Config, Qwen2ForCausalLM};

/// Shape of the decode benchmark (teacher with KV cache vs student with recurrent state).
#[derive(Clone, Debug)]
pub struct DecodeBench {
    /// Model width (a multiple of 64).
    pub hidden: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Teacher query heads.
    pub heads: usize,
    /// Teacher key/value heads.
    pub kv_heads: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Context lengths read before decoding, comma-separated.
    pub contexts: Vec<usize>,
    /// Tokens decoded (timed) after each context.
    pub decode: usize,
    /// Prefill chunk length.
    pub chunk: usize,
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
pub fn bench_decode(args: &DecodeBench, device: &Device) -> Result<Vec<DecodeReport>> {
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
        args: &DecodeBench,
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
