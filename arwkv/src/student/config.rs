//! `config.json` of an ARWKV student in the Hugging Face `rwkv_hybrid` layout (`docs/METHOD.md` §10).
//!
//! The Qwen2 part (vocabulary, widths, norms, MLP, RoPE fields kept for the record) is validated by
//! [`Qwen2Config`]; the RWKV part adds the head size, the gate / GroupNorm switches and the LoRA
//! ranks (named as in fla's `RWKV7Config`; absent keys take the reference's fixed 64/64/32/128).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::teacher::Qwen2Config;

/// RWKV-7 head size; the reference hard-codes 64 (`docs/METHOD.md` §1).
pub const HEAD_SIZE: usize = 64;
/// `head_size_divisor` of the reference; GroupNorm eps = 1e-5 · divisor².
pub const HEAD_SIZE_DIVISOR: usize = 8;

/// LoRA ranks of the time mixer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoraRanks {
    /// Decay LoRA `w1 [C,r] / w2 [r,C]` (reference: 64).
    pub decay: usize,
    /// In-context learning rate LoRA `a1 / a2` (reference: 64).
    pub iclr: usize,
    /// Value-residual LoRA `v1 / v2` (reference: 32).
    pub value: usize,
    /// Output-gate LoRA `g1 / g2` (reference: 128).
    pub gate: usize,
}

impl Default for LoraRanks {
    fn default() -> Self {
        Self {
            decay: 64,
            iclr: 64,
            value: 32,
            gate: 128,
        }
    }
}

/// The RWKV keys of an `rwkv_hybrid` config.json, as stored.
#[derive(Debug, Default, Deserialize)]
struct RawRwkvFields {
    model_type: Option<String>,
    head_size: Option<usize>,
    head_size_divisor: Option<usize>,
    wkv_version: Option<u32>,
    wkv_has_gate: Option<bool>,
    wkv_has_group_norm: Option<bool>,
    wkv_use_vfirst: Option<bool>,
    wkv_layers: Option<Value>,
    decay_low_rank_dim: Option<usize>,
    a_low_rank_dim: Option<usize>,
    v_low_rank_dim: Option<usize>,
    gate_low_rank_dim: Option<usize>,
}

/// A validated ARWKV student configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArwkvConfig {
    /// The Qwen2 dimensions the student keeps (embeddings, norms, MLP, head).
    pub qwen: Qwen2Config,
    /// RWKV head size N (64).
    pub head_size: usize,
    /// GroupNorm eps divisor (8 → eps 6.4e-4).
    pub head_size_divisor: usize,
    /// Output gate `g = σ(x_g·G1)·G2` present.
    pub has_gate: bool,
    /// GroupNorm `ln_x` on the WKV output present.
    pub has_group_norm: bool,
    /// LoRA ranks.
    pub ranks: LoraRanks,
}

/// The largest head size, head-size divisor or LoRA rank a student `config.json` may ask for.
pub const MAX_RWKV_SIZE: usize = 1 << 12;

impl ArwkvConfig {
    /// A student config for a teacher: same widths, every attention replaced by a time mixer.
    pub fn from_teacher(
        teacher: &Qwen2Config,
        has_gate: bool,
        has_group_norm: bool,
    ) -> Result<Self> {
        let cfg = Self {
            qwen: teacher.clone(),
            head_size: HEAD_SIZE,
            head_size_divisor: HEAD_SIZE_DIVISOR,
            has_gate,
            has_group_norm,
            ranks: LoraRanks::default(),
        };
        cfg.check_width().map_err(|m| {
            Error::Invalid(format!(
                "cannot build an ARWKV student of this teacher: {m}"
            ))
        })?;
        Ok(cfg)
    }

    /// Reads and validates an `rwkv_hybrid` `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let value: Value = crate::error::read_json(path)?;
        Self::from_value(value, path)
    }

    /// Validates an already parsed `config.json`; `path` is only used in messages.
    pub fn from_value(mut value: Value, path: &Path) -> Result<Self> {
        let err = |key: &str, message: String| Error::Config {
            path: path.to_path_buf(),
            key: key.into(),
            message,
        };
        let raw: RawRwkvFields = serde_path_to_error::deserialize(value.clone())
            .map_err(|e| err(&e.path().to_string(), e.inner().to_string()))?;
        match raw.model_type.as_deref() {
            Some("rwkv_hybrid") => {}
            Some(other) => {
                return Err(err(
                    "model_type",
                    format!("`{other}` is not an ARWKV student (expected \"rwkv_hybrid\")"),
                ));
            }
            None => {
                return Err(err(
                    "model_type",
                    "missing (expected \"rwkv_hybrid\")".into(),
                ));
            }
        }
        // The Qwen2 validator checks the shared keys; it only knows model_type "qwen2".
        if let Some(map) = value.as_object_mut() {
            map.insert("model_type".into(), "qwen2".into());
        }
        let qwen = Qwen2Config::from_value(value, path)?;
        if let Some(v) = raw.wkv_version
            && v != 7
        {
            return Err(err(
                "wkv_version",
                format!("{v} is not supported (only RWKV-7)"),
            ));
        }
        if raw.wkv_use_vfirst == Some(false) {
            return Err(err(
                "wkv_use_vfirst",
                "RWKV-7 needs the value residual (true)".into(),
            ));
        }
        match &raw.wkv_layers {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "full" => {}
            Some(Value::Array(layers))
                if layers.len() == qwen.num_hidden_layers
                    && layers
                        .iter()
                        .enumerate()
                        .all(|(i, l)| l.as_u64() == Some(i as u64)) => {}
            Some(other) => {
                return Err(err(
                    "wkv_layers",
                    format!(
                        "{other} keeps some softmax-attention layers; only all-RWKV students \
                         are supported"
                    ),
                ));
            }
        }
        // Bounded like the teacher's sizes: a hostile rank would overflow the parameter count and
        // ask for an impossible allocation at init.
        let rank = |key: &str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(err(key, "must be greater than 0".into())),
            Some(v) if v > MAX_RWKV_SIZE => Err(err(
                key,
                format!("{v} is larger than the supported {MAX_RWKV_SIZE}"),
            )),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        let defaults = LoraRanks::default();
        let cfg = Self {
            qwen,
            head_size: rank("head_size", raw.head_size, HEAD_SIZE)?,
            head_size_divisor: rank(
                "head_size_divisor",
                raw.head_size_divisor,
                HEAD_SIZE_DIVISOR,
            )?,
            has_gate: raw.wkv_has_gate.unwrap_or(false),
            // RwkvHybridConfig defaults this to true when absent (`docs/METHOD.md` §10).
            has_group_norm: raw.wkv_has_group_norm.unwrap_or(true),
            ranks: LoraRanks {
                decay: rank("decay_low_rank_dim", raw.decay_low_rank_dim, defaults.decay)?,
                iclr: rank("a_low_rank_dim", raw.a_low_rank_dim, defaults.iclr)?,
                value: rank("v_low_rank_dim", raw.v_low_rank_dim, defaults.value)?,
                gate: rank("gate_low_rank_dim", raw.gate_low_rank_dim, defaults.gate)?,
            },
        };
        cfg.check_width().map_err(|m| err("head_size", m))?;
        Ok(cfg)
    }

    fn check_width(&self) -> std::result::Result<(), String> {
        let c = self.qwen.hidden_size;
        if self.head_size == 0 || !c.is_multiple_of(self.head_size) {
            return Err(format!(
                "hidden_size {c} is not a multiple of the RWKV head size {}",
                self.head_size
            ));
        }
        Ok(())
    }

    /// RWKV heads H = C / N.
    pub fn num_wkv_heads(&self) -> usize {
        self.qwen.hidden_size / self.head_size
    }

    /// GroupNorm epsilon: 1e-5 · head_size_divisor².
    pub fn group_norm_eps(&self) -> f64 {
        1e-5 * (self.head_size_divisor * self.head_size_divisor) as f64
    }

    /// Parameters of one time mixer.
    pub fn time_mixer_parameter_count(&self) -> usize {
        let c = self.qwen.hidden_size;
        let r = &self.ranks;
        let lerps = if self.has_gate { 6 } else { 5 };
        let vectors = lerps * c + 5 * c; // x_*, then w0 a0 v0 k_k k_a
        let loras =
            2 * c * (r.decay + r.iclr + r.value) + if self.has_gate { 2 * c * r.gate } else { 0 };
        let bonus = self.num_wkv_heads() * self.head_size;
        let projections = 4 * c * c;
        let group_norm = if self.has_group_norm { 2 * c } else { 0 };
        vectors + loras + bonus + projections + group_norm
    }

    /// Parameter count of the whole student (embedding and head counted once when tied).
    pub fn parameter_count(&self) -> usize {
        let q = &self.qwen;
        let c = q.hidden_size;
        let layer = self.time_mixer_parameter_count() + 3 * c * q.intermediate_size + 2 * c;
        let embed = q.vocab_size * c;
        let head = if q.tie_word_embeddings { 0 } else { embed };
        embed + head + q.num_hidden_layers * layer + c
    }

    /// The config as written next to a checkpoint: Qwen2 keys (classic layout) + RWKV keys.
    pub fn to_json(&self) -> Value {
        let q = &self.qwen;
        json!({
            "architectures": ["RwkvHybridForCausalLM"],
            "model_type": "rwkv_hybrid",
            "vocab_size": q.vocab_size,
            "hidden_size": q.hidden_size,
            "intermediate_size": q.intermediate_size,
            "num_hidden_layers": q.num_hidden_layers,
            "num_attention_heads": q.num_attention_heads,
            "num_key_value_heads": q.num_key_value_heads,
            "head_dim": q.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": q.rms_norm_eps,
            "max_position_embeddings": q.max_position_embeddings,
            "rope_theta": q.rope_theta,
            "tie_word_embeddings": q.tie_word_embeddings,
            "bos_token_id": q.bos_token_id,
            "eos_token_id": match q.eos_token_ids.as_slice() {
                [one] => json!(one),
                many => json!(many),
            },
            "torch_dtype": "float32",
            "use_cache": true,
            "head_size": self.head_size,
            "head_size_divisor": self.head_size_divisor,
            "wkv_version": 7,
            "wkv_has_gate": self.has_gate,
            "wkv_has_group_norm": self.has_group_norm,
            "wkv_use_vfirst": true,
            "decay_low_rank_dim": self.ranks.decay,
            "a_low_rank_dim": self.ranks.iclr,
            "v_low_rank_dim": self.ranks.value,
            "gate_low_rank_dim": self.ranks.gate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// config.json of `RWKV-Red-Team/ARWKV-7B-Preview-0.1` (`docs/METHOD.md` §10).
    fn arwkv_7b() -> Value {
        json!({
            "architectures": ["RwkvHybridForCausalLM"],
            "auto_map": {"AutoConfig": "configuration_rwkv_hybrid.RwkvHybridConfig",
                         "AutoModelForCausalLM": "modeling_rwkv_hybrid.RwkvHybridForCausalLM"},
            "model_type": "rwkv_hybrid", "hidden_size": 3584, "intermediate_size": 18944,
            "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
            "head_size": 64, "head_size_divisor": 8, "hidden_act": "silu", "rms_norm_eps": 1e-6,
            "vocab_size": 152064, "tie_word_embeddings": false, "rope_theta": 1000000.0,
            "max_position_embeddings": 32768, "bos_token_id": 151643, "eos_token_id": 151645,
            "wkv_version": 7, "wkv_has_gate": true, "wkv_has_group_norm": false,
            "use_cache": true, "torch_dtype": "float16", "transformers_version": "4.49.0.dev0"
        })
    }

    #[test]
    fn the_released_7b_config_parses_and_counts_its_parameters() {
        let c = ArwkvConfig::from_value(arwkv_7b(), Path::new("config.json")).unwrap();
        assert!(c.has_gate && !c.has_group_norm);
        assert_eq!(c.num_wkv_heads(), 56);
        // The reference's 7B: 53,487,616 per time mixer; 8,291,057,152 in all (= total_size / 4 of the index).
        assert_eq!(c.time_mixer_parameter_count(), 53_487_616);
        assert_eq!(c.parameter_count(), 8_291_057_152);
    }

    #[test]
    fn round_trips_through_json() {
        let c = ArwkvConfig::from_value(arwkv_7b(), Path::new("config.json")).unwrap();
        let back = ArwkvConfig::from_value(c.to_json(), Path::new("config.json")).unwrap();
        assert_eq!(c.has_gate, back.has_gate);
        assert_eq!(c.ranks, back.ranks);
        assert_eq!(c.qwen.eos_token_ids, back.qwen.eos_token_ids);
        assert_eq!(c.parameter_count(), back.parameter_count());
    }

    #[test]
    fn bad_rwkv_keys_are_named() {
        let check = |key: &str, value: Value| {
            let mut v = arwkv_7b();
            v[key] = value;
            let e = ArwkvConfig::from_value(v, Path::new("config.json"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("config key `{key}`")), "{e}");
        };
        check("model_type", json!("qwen2"));
        check("wkv_version", json!(6));
        check("wkv_layers", json!([0, 1]));
        check("head_size", json!(100));
        check("wkv_has_gate", json!("yes"));
        check("a_low_rank_dim", json!(0));
    }
}
