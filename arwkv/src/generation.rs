//! Autoregressive generation with a KV cache, streaming each token to a callback.

use burn::prelude::*;

use crate::error::{Error, Result};
use crate::sampling::{Sampler, SamplingConfig};
use crate::teacher::{KvCache, Qwen2ForCausalLM};

/// Limits and sampling of one generation.
#[derive(Clone, Debug)]
pub struct GenerationConfig {
    /// Tokens to generate at most.
    pub max_new_tokens: usize,
    /// Token choice.
    pub sampling: SamplingConfig,
    /// Generation stops after any of these ids (the id is kept in the output).
    pub stop_ids: Vec<u32>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            sampling: SamplingConfig::default(),
            stop_ids: vec![],
        }
    }
}

/// Reads the last position's logits of `[1, T, V]` to the host.
fn last_logits(logits: Tensor<3>) -> Result<Vec<f32>> {
    let [_, t, v] = logits.dims();
    let row = logits.slice([0..1, t - 1..t, 0..v]);
    row.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::Invalid(format!("reading logits: {e:?}")))
}

/// Generates after `prompt`; calls `on_token` with each new id and returns them all.
pub fn generate(
    model: &Qwen2ForCausalLM,
    prompt: &[u32],
    config: &GenerationConfig,
    device: &Device,
    mut on_token: impl FnMut(u32) -> Result<()>,
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(Error::Invalid("the prompt has no tokens".into()));
    }
    let mut sampler = Sampler::new(config.sampling.clone())?;
    let mut cache = KvCache::new();
    let ids = |v: &[u32]| {
        let data: Vec<i64> = v.iter().map(|&x| x as i64).collect();
        Tensor::<2, Int>::from_data(TensorData::new(data, [1, v.len()]), device)
    };
    let mut logits = last_logits(model.forward(ids(prompt), Some(&mut cache))?)?;
    let mut out = Vec::with_capacity(config.max_new_tokens);
    for _ in 0..config.max_new_tokens {
        let next = sampler.sample(&logits);
        out.push(next);
        on_token(next)?;
        if config.stop_ids.contains(&next) || out.len() == config.max_new_tokens {
            break;
        }
        logits = last_logits(model.forward(ids(&[next]), Some(&mut cache))?)?;
    }
    Ok(out)
}
