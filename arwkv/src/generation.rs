//! Autoregressive generation for teachers (KV cache) and students (recurrent state), streaming
//! each token to a callback, and greedy decoding until a stop string (used by evaluation).

use burn::prelude::*;

use crate::error::{Error, Result};
use crate::nn::token_row;
use crate::sampling::{Sampler, SamplingConfig};
use crate::student::{ArwkvForCausalLM, RecurrentState};
use crate::teacher::{KvCache, Qwen2ForCausalLM};
use crate::tokenizer::TextTokenizer;

/// A causal language model that continues from a state of what it has read.
pub trait CausalLm {
    /// What the model keeps between calls (KV cache, recurrent state).
    type State;
    /// The state before any token.
    fn empty_state(&self) -> Self::State;
    /// Logits `[B, T, V]` of `ids: [B, T]` read after `state`, which is advanced.
    fn forward_with(&self, ids: Tensor<2, Int>, state: &mut Self::State) -> Result<Tensor<3>>;
}

impl CausalLm for Qwen2ForCausalLM {
    type State = KvCache;
    fn empty_state(&self) -> KvCache {
        KvCache::new()
    }
    fn forward_with(&self, ids: Tensor<2, Int>, state: &mut KvCache) -> Result<Tensor<3>> {
        self.forward(ids, Some(state))
    }
}

impl CausalLm for ArwkvForCausalLM {
    type State = RecurrentState;
    fn empty_state(&self) -> RecurrentState {
        RecurrentState::new()
    }
    fn forward_with(&self, ids: Tensor<2, Int>, state: &mut RecurrentState) -> Result<Tensor<3>> {
        self.forward(ids, Some(state))
    }
}

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

/// The most new tokens one call may ask for (about a million: far beyond any model's context,
/// small enough that nothing sized by it can exhaust memory).
pub const MAX_NEW_TOKENS: usize = 1 << 20;

/// Generates after `prompt`; calls `on_token` with each new id and returns them all.
pub fn generate<M: CausalLm>(
    model: &M,
    prompt: &[u32],
    config: &GenerationConfig,
    device: &Device,
    mut on_token: impl FnMut(u32) -> Result<()>,
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(Error::EmptyInput);
    }
    if config.max_new_tokens > MAX_NEW_TOKENS {
        return Err(Error::Setting {
            scope: "generation".into(),
            key: "max_new_tokens".into(),
            message: format!(
                "= {} is more than {MAX_NEW_TOKENS}, the most one generation may ask for",
                config.max_new_tokens
            ),
        });
    }
    let mut sampler = Sampler::new(config.sampling.clone())?;
    let mut state = model.empty_state();
    let ids = |v: &[u32]| token_row(v, device);
    let mut logits = last_logits(model.forward_with(ids(prompt), &mut state)?)?;
    let mut out = Vec::with_capacity(config.max_new_tokens.min(4096));
    for _ in 0..config.max_new_tokens {
        let next = sampler.sample(&logits);
        out.push(next);
        on_token(next)?;
        if config.stop_ids.contains(&next) || out.len() == config.max_new_tokens {
            break;
        }
        logits = last_logits(model.forward_with(ids(&[next]), &mut state)?)?;
    }
    Ok(out)
}

/// Greedy continuation of `prompt` until a stop id, a stop string or `max_new_tokens`; the text
/// before the stop string.
pub fn greedy_until<M: CausalLm>(
    model: &M,
    tokenizer: &TextTokenizer,
    prompt: &[u32],
    max_new_tokens: usize,
    stop_ids: &[u32],
    stops: &[&str],
    device: &Device,
) -> Result<String> {
    let tensor = |ids: &[u32]| token_row(ids, device);
    let mut state = model.empty_state();
    let mut logits = model.forward_with(tensor(prompt), &mut state)?;
    let mut out = vec![];
    while out.len() < max_new_tokens {
        let [_, t, v] = logits.dims();
        let next = logits
            .slice([0..1, t - 1..t, 0..v])
            .argmax(2)
            .reshape([1])
            .into_scalar::<i64>() as u32;
        if stop_ids.contains(&next) {
            break;
        }
        out.push(next);
        let text = tokenizer.decode(&out, false)?;
        if let Some(cut) = stops.iter().filter_map(|s| text.find(s)).min() {
            return Ok(text[..cut].to_string());
        }
        logits = model.forward_with(tensor(&[next]), &mut state)?;
    }
    tokenizer.decode(&out, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::teacher::Qwen2Config;

    #[test]
    fn an_impossible_token_budget_is_refused_before_anything_is_allocated() {
        let config = Qwen2Config::from_value(
            serde_json::json!({"model_type": "qwen2", "vocab_size": 16, "hidden_size": 8,
                "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2}),
            std::path::Path::new("config.json"),
        )
        .unwrap();
        let device = crate::device::BackendKind::Cpu.device().unwrap();
        let model = Qwen2ForCausalLM::random(config, &device);
        let ask = |n| GenerationConfig {
            max_new_tokens: n,
            ..GenerationConfig::default()
        };
        let err = generate(&model, &[1, 2], &ask(usize::MAX), &device, |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("max_new_tokens"), "{err}");
        assert_eq!(
            generate(&model, &[1, 2], &ask(3), &device, |_| Ok(()))
                .unwrap()
                .len(),
            3
        );
    }
}
