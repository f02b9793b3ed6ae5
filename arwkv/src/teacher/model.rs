//! The Qwen2 / Qwen2.5 decoder, numerically as transformers' `Qwen2ForCausalLM`.
//!
//! Module and field names follow the Hugging Face tensor names (`model.layers.N.self_attn.q_proj`).

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::silu;
use burn::tensor::module::{attention, embedding};
use burn::tensor::ops::AttentionModuleOptions;

use super::cache::{KvCache, LayerKv};
use super::causal_attention::causal_attention;
use super::config::Qwen2Config;
use super::rope::{RotaryEmbedding, apply_rotary};
use crate::error::{Error, Result};
use crate::nn::{Fill, Linear, RmsNorm};
use crate::param_tree::{fill, named_tensors};
use crate::precision::{cast_like, cast_parameters, f32};
use crate::weights::Checkpoint;

/// Token embedding table `[vocab, hidden]`.
#[derive(Module, Debug)]
pub struct Embedding {
    /// `[vocab_size, hidden_size]`.
    pub weight: Param<Tensor<2>>,
}

/// Grouped-query self-attention with q/k/v biases and rotate-half RoPE.
#[derive(Module, Debug)]
pub struct Qwen2Attention {
    /// `[heads·d, C]` + bias.
    pub q_proj: Linear,
    /// `[kv_heads·d, C]` + bias.
    pub k_proj: Linear,
    /// `[kv_heads·d, C]` + bias.
    pub v_proj: Linear,
    /// `[C, heads·d]`, no bias.
    pub o_proj: Linear,
    /// Query heads.
    #[module(skip)]
    pub num_heads: usize,
    /// Key/value heads.
    #[module(skip)]
    pub num_kv_heads: usize,
    /// Per-head width.
    #[module(skip)]
    pub head_dim: usize,
}

/// SwiGLU MLP: down(silu(gate(x)) · up(x)).
#[derive(Module, Debug)]
pub struct Qwen2Mlp {
    /// `[I, C]`.
    pub gate_proj: Linear,
    /// `[I, C]`.
    pub up_proj: Linear,
    /// `[C, I]`.
    pub down_proj: Linear,
}

/// One pre-norm decoder layer.
#[derive(Module, Debug)]
pub struct Qwen2DecoderLayer {
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Self-attention.
    pub self_attn: Qwen2Attention,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
    /// Feed-forward block.
    pub mlp: Qwen2Mlp,
}

/// The decoder stack (`model.*` in the checkpoint).
#[derive(Module, Debug)]
pub struct Qwen2Model {
    /// Token embeddings.
    pub embed_tokens: Embedding,
    /// Decoder layers.
    pub layers: Vec<Qwen2DecoderLayer>,
    /// Final norm.
    pub norm: RmsNorm,
}

/// Decoder plus language-model head (tied to the embeddings when `lm_head` is `None`).
#[derive(Module, Debug)]
pub struct Qwen2ForCausalLM {
    /// The decoder.
    pub model: Qwen2Model,
    /// `[vocab, C]`; absent when tied.
    pub lm_head: Option<Linear>,
    /// Validated configuration.
    #[module(skip)]
    pub config: Qwen2Config,
    /// RoPE frequencies.
    #[module(skip)]
    pub rope: RotaryEmbedding,
}

impl Qwen2Attention {
    /// Attention over `x: [B, T, C]` at absolute positions given by `cos`/`sin`; extends `cache`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        cache: Option<&mut LayerKv>,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (h, kvh, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let heads = |y: Tensor<3>, n: usize| y.reshape([b, t, n, d]).swap_dims(1, 2);
        let q = apply_rotary(heads(self.q_proj.forward(x.clone()), h), cos, sin);
        let mut k = apply_rotary(heads(self.k_proj.forward(x.clone()), kvh), cos, sin);
        let mut v = heads(self.v_proj.forward(x), kvh);
        let scale = 1.0 / (d as f64).sqrt();
        if let Some(cache) = cache {
            (k, v) = cache.append(k, v);
            if t == 1 {
                let y = decode_attention(q, k, v, scale);
                return self.o_proj.forward(y.reshape([b, 1, h * d]));
            }
        }
        let y = match causal_attention(&q, &k, &v, scale) {
            Some(y) => y,
            None => {
                let (k, v) = (repeat_kv(k, h / kvh), repeat_kv(v, h / kvh));
                let options = AttentionModuleOptions {
                    scale: Some(scale),
                    softcap: None,
                    is_causal: true,
                };
                attention(q, k, v, None, None, options)
            }
        };
        self.o_proj
            .forward(y.swap_dims(1, 2).reshape([b, t, h * d]))
    }
}

/// Attention of one new token `q: [B, H, 1, D]` over every cached key and value
/// (`[B, KV, L, D]`), as `softmax(q kᵀ · scale) v` per head: the query heads that share a key/value
/// head are stacked as rows, so the cache is read where it lies (no repeated heads, no copy) and no
/// causal mask is needed (the new token sees every position); the softmax runs in f32. Returns
/// `[B, H, D]`.
pub fn decode_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, scale: f64) -> Tensor<3> {
    let [b, h, _, d] = q.dims();
    let kvh = k.dims()[1];
    let q = q.reshape([b, kvh, h / kvh, d]);
    let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
    let weights = cast_like(burn::tensor::activation::softmax(f32(scores), 3), &v);
    weights.matmul(v).reshape([b, h, d])
}

/// Repeats each key/value head `groups` times: `[B, KV, T, D]` → `[B, KV·groups, T, D]`.
pub fn repeat_kv(x: Tensor<4>, groups: usize) -> Tensor<4> {
    if groups == 1 {
        return x;
    }
    let [b, kv, t, d] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, kv, groups, t, d])
        .reshape([b, kv * groups, t, d])
}

impl Qwen2Mlp {
    /// An MLP of width `c` and inner width `inter`; the teacher and the student (which keeps the
    /// teacher's MLPs) both build it here.
    pub fn new(c: usize, inter: usize, fill: Fill, device: &Device) -> Self {
        Self {
            gate_proj: Linear::new(c, inter, false, fill, device),
            up_proj: Linear::new(c, inter, false, fill, device),
            down_proj: Linear::new(inter, c, false, fill, device),
        }
    }

    /// down(silu(gate(x)) · up(x)).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.down_proj
            .forward(silu(self.gate_proj.forward(x.clone())) * self.up_proj.forward(x))
    }
}

impl Qwen2DecoderLayer {
    /// A layer of `config`: its two norms, attention and MLP.
    fn new(config: &Qwen2Config, fill: Fill, device: &Device) -> Self {
        let c = config.hidden_size;
        let (h, kvh, d) = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        );
        let eps = config.rms_norm_eps;
        Qwen2DecoderLayer {
            input_layernorm: RmsNorm::new(c, eps, fill, device),
            self_attn: Qwen2Attention {
                q_proj: Linear::new(c, h * d, true, fill, device),
                k_proj: Linear::new(c, kvh * d, true, fill, device),
                v_proj: Linear::new(c, kvh * d, true, fill, device),
                o_proj: Linear::new(h * d, c, false, fill, device),
                num_heads: h,
                num_kv_heads: kvh,
                head_dim: d,
            },
            post_attention_layernorm: RmsNorm::new(c, eps, fill, device),
            mlp: Qwen2Mlp::new(c, config.intermediate_size, fill, device),
        }
    }

    /// x + attn(norm(x)), then + mlp(norm(·)).
    pub fn forward(
        &self,
        x: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        cache: Option<&mut LayerKv>,
    ) -> Tensor<3> {
        let x = x.clone()
            + self
                .self_attn
                .forward(self.input_layernorm.forward(x), cos, sin, cache);
        x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x))
    }
}

impl Qwen2ForCausalLM {
    /// A model of `config` with values as `fill` says (layers first, then the embeddings and the
    /// head: the order random draws are taken in).
    pub fn new(config: Qwen2Config, fill: Fill, device: &Device) -> Self {
        let c = config.hidden_size;
        let layers = (0..config.num_hidden_layers)
            .map(|_| Qwen2DecoderLayer::new(&config, fill, device))
            .collect();
        let embed_tokens = Embedding {
            weight: fill.tensor([config.vocab_size, c], device),
        };
        let lm_head = (!config.tie_word_embeddings)
            .then(|| Linear::new(c, config.vocab_size, false, fill, device));
        let rope = RotaryEmbedding::new(config.head_dim, config.rope_theta);
        Self {
            model: Qwen2Model {
                embed_tokens,
                layers,
                norm: RmsNorm::new(c, config.rms_norm_eps, fill, device),
            },
            lm_head,
            config,
            rope,
        }
    }

    /// Loads every tensor of a checkpoint into a model of this config; fails on missing,
    /// misshapen or unexpected tensors.
    pub fn load(config: Qwen2Config, ck: &Checkpoint, device: &Device) -> Result<Self> {
        ck.check_layer_count(config.num_hidden_layers)?;
        let tied = config.tie_word_embeddings;
        let model = fill(
            Self::new(config, Fill::Deferred, device),
            ck,
            "",
            device,
            |_| false,
        )?;
        // Tied checkpoints sometimes carry a copy of the head; old ones carry RoPE buffers.
        ck.ensure_all_used(|name| {
            (tied && name == "lm_head.weight") || name.ends_with("rotary_emb.inv_freq")
        })?;
        Ok(model)
    }

    /// The model with every weight stored in `dtype`; it then computes in `dtype` (a frozen
    /// teacher under a mixed precision policy). Norms and attention's decode softmax stay f32.
    pub fn with_weights_in(self, dtype: burn::tensor::FloatDType) -> Self {
        cast_parameters(self, dtype)
    }

    /// Every parameter with its Hugging Face name.
    pub fn named_tensors(&self) -> Vec<crate::save::NamedTensor> {
        named_tensors(self)
    }

    /// A model of this config with N(0, 0.02²) weights (benchmarks, tests, pretraining from scratch).
    pub fn random(config: Qwen2Config, device: &Device) -> Self {
        Self::new(config, Fill::Normal(0.02), device)
    }

    /// Final hidden states `[B, T, C]` (after the last norm) for token ids `[B, T]`.
    pub fn hidden_states(
        &self,
        ids: Tensor<2, Int>,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor<3>> {
        let [_, t] = ids.dims();
        if t == 0 {
            return Err(Error::EmptyInput);
        }
        check_ids(&ids, self.config.vocab_size)?;
        let start = cache.as_ref().map_or(0, |c| c.len());
        let device = ids.device();
        let (cos, sin) = self.rope.tables(start, t, &device);
        let mut x = embedding(self.model.embed_tokens.weight.val(), ids);
        if let Some(c) = cache.as_deref_mut() {
            c.ensure_layers(self.model.layers.len());
        }
        for (i, layer) in self.model.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| c.layer_mut(i));
            x = layer.forward(x, &cos, &sin, slot);
        }
        Ok(self.model.norm.forward(x))
    }

    /// Projects hidden states `[B, T, C]` to logits `[B, T, V]`.
    pub fn project(&self, hidden: Tensor<3>) -> Tensor<3> {
        crate::nn::linear_hf(hidden, self.head_weight(), None)
    }

    /// The LM head's weight `[V, C]`: the embeddings when tied (Qwen2's head has no bias).
    pub fn head_weight(&self) -> Tensor<2> {
        match &self.lm_head {
            Some(head) => head.weight.val(),
            None => self.model.embed_tokens.weight.val(),
        }
    }

    /// Logits `[B, T, V]` for token ids `[B, T]`; with a cache, continues after its positions.
    pub fn forward(&self, ids: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Result<Tensor<3>> {
        Ok(self.project(self.hidden_states(ids, cache)?))
    }
}

/// Fails when an id of `ids` is outside `0..vocab` (an embedding lookup would read garbage).
pub fn check_ids(ids: &Tensor<2, Int>, vocab: usize) -> Result<()> {
    let vocab = vocab as i64;
    let data = ids.to_data().convert::<i64>();
    let values = data
        .as_slice::<i64>()
        .map_err(|e| Error::Invalid(format!("token ids: {e:?}")))?;
    if let Some(bad) = values.iter().find(|&&id| id < 0 || id >= vocab) {
        return Err(Error::TokenOutOfVocabulary {
            id: *bad,
            vocab: vocab as usize,
        });
    }
    Ok(())
}
