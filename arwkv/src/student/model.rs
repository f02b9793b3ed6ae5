//! The ARWKV student: Qwen2 with every self-attention replaced by an RWKV-7 time mixer
//! (`docs/METHOD.md` §1). Names follow the `rwkv_hybrid` checkpoint
//! (`model.layers.i.self_attn.time_mixer.*`).

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::module::embedding;

use super::config::ArwkvConfig;
use super::init::InitRng;
use super::state::RecurrentState;
use super::time_mixer::{TimeMixOutput, TimeMixState, TimeMixer, unused_in_layer_zero};
use crate::error::{Error, Result};
use crate::nn::{Fill, Linear, RmsNorm};
use crate::param_tree::{ModelTensors, fill, named_tensors};
use crate::save::NamedTensor;
use crate::teacher::Qwen2ForCausalLM;
use crate::teacher::model::{Embedding, Qwen2Mlp};
use crate::weights::Checkpoint;

/// The attention slot of a decoder layer, holding the time mixer (`self_attn.time_mixer`).
#[derive(Module, Debug)]
pub struct RwkvAttention {
    /// RWKV-7 time mixing.
    pub time_mixer: TimeMixer,
}

/// One pre-norm decoder layer: `h = x + TimeMix(norm(x))`, `y = h + MLP(norm(h))`.
#[derive(Module, Debug)]
pub struct ArwkvDecoderLayer {
    /// Norm before the time mixer (the teacher's).
    pub input_layernorm: RmsNorm,
    /// The time mixer.
    pub self_attn: RwkvAttention,
    /// Norm before the MLP (the teacher's).
    pub post_attention_layernorm: RmsNorm,
    /// SwiGLU MLP (the teacher's).
    pub mlp: Qwen2Mlp,
}

/// The decoder stack (`model.*`).
#[derive(Module, Debug)]
pub struct ArwkvModel {
    /// Token embeddings.
    pub embed_tokens: Embedding,
    /// Decoder layers.
    pub layers: Vec<ArwkvDecoderLayer>,
    /// Final norm.
    pub norm: RmsNorm,
}

/// Decoder plus LM head (tied to the embeddings when `lm_head` is `None`).
#[derive(Module, Debug)]
pub struct ArwkvForCausalLM {
    /// The decoder.
    pub model: ArwkvModel,
    /// `[vocab, C]`; absent when tied.
    pub lm_head: Option<Linear>,
    /// Validated configuration.
    #[module(skip)]
    pub config: ArwkvConfig,
    /// The dtype the forward computes in: f32, or bf16/f16 under a mixed precision policy (the
    /// weights stay as stored; each is cast where it is used).
    #[module(skip)]
    pub compute_dtype: FloatDType,
}

/// How a student is made from a teacher. In a config file every key is optional (the defaults
/// below) and an unknown key is an error.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StudentOptions {
    /// Output gate (the released `ARWKV-7B-Preview-0.1` has one).
    pub gate: bool,
    /// GroupNorm on the WKV output (no released model has one).
    pub group_norm: bool,
    /// Copy the teacher's q/k/v/o into r/k/v/o (our extension; GQA expanded per kv head).
    pub init_from_attention: bool,
    /// Seed of the time mixers' initialisation.
    pub seed: u64,
    /// Give a tied teacher's student its own LM head, a copy of the embeddings (the paper-era code
    /// clones it from stage 2 on; the head is frozen in stage 1, so copying it here is the same).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub untie_head: bool,
    /// How the gate LoRA starts (gated students).
    #[serde(skip_serializing_if = "GateInit::is_identity")]
    pub gate_init: GateInit,
}

/// The gate LoRA's starting values (`docs/METHOD.md` §4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateInit {
    /// `g1 = 0`, `g2 = 2/rank`: the gate is exactly 1 at the start and both matrices learn.
    #[default]
    Identity,
    /// The paper-era code's `g1 = g2 = ones`: every channel starts with the same scalar gate.
    Ones,
}

impl GateInit {
    fn is_identity(&self) -> bool {
        *self == Self::Identity
    }
}

impl Default for StudentOptions {
    fn default() -> Self {
        Self {
            gate: true,
            group_norm: false,
            init_from_attention: false,
            seed: 0,
            untie_head: false,
            gate_init: GateInit::Identity,
        }
    }
}

impl ArwkvDecoderLayer {
    /// Runs the layer on `x: [B, T, C]` (with an optional padding mask `[B, T]`, as
    /// [`TimeMixer::forward`]); returns the new hidden states and the time mixer's output.
    pub fn forward(
        &self,
        x: Tensor<3>,
        v_first: Option<Tensor<3>>,
        state: Option<TimeMixState>,
        mask: Option<&Tensor<2>>,
    ) -> Result<(Tensor<3>, TimeMixOutput)> {
        let mixed = self.self_attn.time_mixer.forward(
            self.input_layernorm.forward(x.clone()),
            v_first,
            state,
            mask,
        )?;
        let h = x + mixed.out.clone();
        let y = h.clone() + self.mlp.forward(self.post_attention_layernorm.forward(h));
        Ok((y, mixed))
    }
}

/// Expands a GQA projection `[KV·d, C]` to `[H·d, C]`: query head h reads kv head ⌊h / groups⌋.
fn expand_kv_rows(weight: Tensor<2>, kv_heads: usize, groups: usize) -> Tensor<2> {
    let [rows, c] = weight.dims();
    let d = rows / kv_heads;
    weight
        .reshape([kv_heads, 1, d, c])
        .expand([kv_heads, groups, d, c])
        .reshape([kv_heads * groups * d, c])
}

impl ArwkvForCausalLM {
    /// A student of `config`: time mixers drawn from `rng` (deferred when `None`), everything the
    /// teacher provides (embeddings, norms, MLPs, head) deferred, to be filled from a teacher or a
    /// checkpoint.
    fn new(config: ArwkvConfig, mut rng: Option<&mut InitRng>, device: &Device) -> Self {
        let q = &config.qwen;
        let (c, eps, deferred) = (q.hidden_size, q.rms_norm_eps, Fill::Deferred);
        let layers = (0..q.num_hidden_layers)
            .map(|i| ArwkvDecoderLayer {
                input_layernorm: RmsNorm::new(c, eps, deferred, device),
                self_attn: RwkvAttention {
                    time_mixer: match rng.as_deref_mut() {
                        Some(rng) => TimeMixer::init(i, &config, rng, device),
                        None => TimeMixer::skeleton(i, &config, device),
                    },
                },
                post_attention_layernorm: RmsNorm::new(c, eps, deferred, device),
                mlp: Qwen2Mlp::new(c, q.intermediate_size, deferred, device),
            })
            .collect();
        Self {
            model: ArwkvModel {
                embed_tokens: Embedding {
                    weight: deferred.tensor([q.vocab_size, c], device),
                },
                layers,
                norm: RmsNorm::new(c, eps, deferred, device),
            },
            lm_head: (!q.tie_word_embeddings)
                .then(|| Linear::new(c, q.vocab_size, false, deferred, device)),
            config,
            compute_dtype: FloatDType::F32,
        }
    }

    /// A student of `teacher`: embeddings, norms, MLPs and head taken from it under the same names;
    /// every attention replaced by a freshly initialised time mixer (or one copied from it, with
    /// `init_from_attention`).
    pub fn from_teacher(teacher: &Qwen2ForCausalLM, options: &StudentOptions) -> Result<Self> {
        let config = ArwkvConfig::from_teacher(&teacher.config, options.gate, options.group_norm)?;
        let device = teacher.model.embed_tokens.weight.val().device();
        let q = &teacher.config;
        if options.init_from_attention && q.num_attention_heads * q.head_dim != q.hidden_size {
            return Err(Error::Invalid(format!(
                "init_from_attention: the teacher's {} heads × {} do not span hidden_size {}",
                q.num_attention_heads, q.head_dim, q.hidden_size
            )));
        }
        let mut rng = InitRng::new(options.seed);
        let fresh = Self::new(config, Some(&mut rng), &device);
        let mut student = fill(fresh, &ModelTensors::of(teacher), "", &device, |name| {
            name.contains(".time_mixer.")
        })?;
        if options.init_from_attention {
            for (layer, t) in student.model.layers.iter_mut().zip(&teacher.model.layers) {
                let (mixer, a) = (&mut layer.self_attn.time_mixer, &t.self_attn);
                let groups = a.num_heads / a.num_kv_heads;
                // Detached: the student's own leaves, not nodes of the teacher's graph.
                let set = |w: Tensor<2>| Linear {
                    weight: Param::from_tensor(w.detach()),
                    bias: None,
                };
                let expand = |w: &Linear| expand_kv_rows(w.weight.val(), a.num_kv_heads, groups);
                mixer.receptance = set(a.q_proj.weight.val());
                mixer.key = set(expand(&a.k_proj));
                mixer.value = set(expand(&a.v_proj));
                mixer.output = set(a.o_proj.weight.val());
            }
        }
        if options.gate_init == GateInit::Ones {
            for layer in &mut student.model.layers {
                let mixer = &mut layer.self_attn.time_mixer;
                let ones =
                    |p: &Param<Tensor<2>>| Param::from_tensor(Tensor::ones(p.dims(), &device));
                mixer.g1 = mixer.g1.as_ref().map(ones);
                mixer.g2 = mixer.g2.as_ref().map(ones);
            }
        }
        if options.untie_head && student.lm_head.is_none() {
            student.lm_head = Some(Linear {
                // Detached: a new leaf, or head and embeddings would share one gradient.
                weight: Param::from_tensor(student.model.embed_tokens.weight.val().detach()),
                bias: None,
            });
            student.config.qwen.tie_word_embeddings = false;
        }
        Ok(student)
    }

    /// Loads every tensor of an `rwkv_hybrid` checkpoint; fails on missing, misshapen or
    /// unexpected tensors, naming them.
    pub fn load(config: ArwkvConfig, ck: &Checkpoint, device: &Device) -> Result<Self> {
        ck.check_layer_count(config.qwen.num_hidden_layers)?;
        let tied = config.qwen.tie_word_embeddings;
        let gate_free = !config.has_gate;
        let skeleton = Self::new(config, None, device);
        let model = fill(skeleton, ck, "", device, |name| {
            name.starts_with("model.layers.0.") && unused_in_layer_zero(name)
        })?;
        // The training code creates x_g even without a gate; tied checkpoints may carry the head.
        ck.ensure_all_used(|name| {
            (tied && name == "lm_head.weight") || (gate_free && name.ends_with("time_mixer.x_g"))
        })?;
        Ok(model)
    }

    /// The model computing as `precision` says: its forward in the low-precision dtype with the
    /// weights kept as they are (the student being trained: f32 master weights).
    pub fn computing_in(mut self, precision: crate::Precision) -> Self {
        self.compute_dtype = precision.compute_dtype();
        self
    }

    /// The model with its time mixers' parameters in f32: a student built from a teacher stored in
    /// a low precision shares the teacher's tensors elsewhere (stage 1 trains only the mixers).
    pub fn time_mixers_in_f32(mut self) -> Self {
        for layer in &mut self.model.layers {
            let mixer = layer.self_attn.time_mixer.clone();
            layer.self_attn.time_mixer = crate::precision::cast_parameters(mixer, FloatDType::F32);
        }
        self
    }

    /// The model stored and computing in `precision`'s dtype (a frozen copy: DPO's reference).
    pub fn stored_in(self, precision: crate::Precision) -> Self {
        crate::precision::cast_parameters(self, precision.compute_dtype()).computing_in(precision)
    }

    /// Every parameter with its checkpoint name, in checkpoint order.
    pub fn named_tensors(&self) -> Vec<NamedTensor> {
        named_tensors(self)
    }

    /// Only the time mixers keep gradients (stage 1's trainable set, `docs/METHOD.md` §5).
    pub fn only_time_mixers_trainable(mut self) -> Self {
        self.model.embed_tokens = self.model.embed_tokens.no_grad();
        self.model.norm = self.model.norm.no_grad();
        self.lm_head = self.lm_head.map(|h| h.no_grad());
        self.model.layers = self
            .model
            .layers
            .into_iter()
            .map(|mut l| {
                l.input_layernorm = l.input_layernorm.no_grad();
                l.post_attention_layernorm = l.post_attention_layernorm.no_grad();
                l.mlp = l.mlp.no_grad();
                l
            })
            .collect();
        self
    }

    /// Stops gradients to every MLP (the paper's "frozen MLP" switch).
    pub fn freeze_mlp(mut self) -> Self {
        self.model.layers = self
            .model
            .layers
            .into_iter()
            .map(|mut l| {
                l.mlp = l.mlp.no_grad();
                l
            })
            .collect();
        self
    }

    /// Final hidden states `[B, T, C]` for ids `[B, T]`; with a state, continues after it.
    pub fn hidden_states(
        &self,
        ids: Tensor<2, Int>,
        state: Option<&mut RecurrentState>,
    ) -> Result<Tensor<3>> {
        self.hidden_states_masked(ids, state, None)
    }

    /// [`Self::hidden_states`] of padded rows: `mask` `[B, T]` is 1 on real tokens. Padded
    /// positions leave every layer's recurrent state as it was (the time mixer's padding), so a
    /// left- or right-padded row gets its unpadded hidden states at its real positions.
    pub fn hidden_states_masked(
        &self,
        ids: Tensor<2, Int>,
        mut state: Option<&mut RecurrentState>,
        mask: Option<&Tensor<2>>,
    ) -> Result<Tensor<3>> {
        let [_, t] = ids.dims();
        if t == 0 {
            return Err(Error::EmptyInput);
        }
        crate::teacher::model::check_ids(&ids, self.config.qwen.vocab_size)?;
        let mut x = embedding(self.model.embed_tokens.weight.val(), ids).cast(self.compute_dtype);
        let mut v_first = None;
        for (i, layer) in self.model.layers.iter().enumerate() {
            let prev = state.as_deref().and_then(|s| s.layer(i).cloned());
            let (y, mixed) = layer.forward(x, v_first.take(), prev, mask)?;
            x = y;
            // Later layers read layer 0's values without a gradient path back (as the reference).
            v_first = Some(mixed.v_first.detach());
            if let Some(s) = state.as_deref_mut() {
                s.set_layer(i, mixed.state);
            }
        }
        if let Some(s) = state {
            s.advance(t);
        }
        Ok(self.model.norm.forward(x))
    }

    /// Projects hidden states `[B, T, C]` to logits `[B, T, V]`.
    pub fn project(&self, hidden: Tensor<3>) -> Tensor<3> {
        crate::nn::linear_hf(hidden, self.head_weight(), None)
    }

    /// The LM head's weight `[V, C]`: the embeddings when tied (the head has no bias).
    pub fn head_weight(&self) -> Tensor<2> {
        match &self.lm_head {
            Some(head) => head.weight.val(),
            None => self.model.embed_tokens.weight.val(),
        }
    }

    /// Logits `[B, T, V]` for ids `[B, T]`; with a state, continues after the tokens it has seen.
    pub fn forward(
        &self,
        ids: Tensor<2, Int>,
        state: Option<&mut RecurrentState>,
    ) -> Result<Tensor<3>> {
        Ok(self.project(self.hidden_states(ids, state)?))
    }

    /// Logits `[B, T, V]` of padded rows (`mask` `[B, T]`, 1 = real token), as
    /// [`Self::hidden_states_masked`]; the logits at padded positions mean nothing.
    pub fn forward_masked(&self, ids: Tensor<2, Int>, mask: &Tensor<2>) -> Result<Tensor<3>> {
        Ok(self.project(self.hidden_states_masked(ids, None, Some(mask))?))
    }
}
