//! `config.json` of a Qwen2 / Qwen2.5 checkpoint, in both layouts seen in the wild.
//!
//! * classic (hub Qwen2.5, transformers < 5): `rope_theta`, `rope_scaling`, `torch_dtype` at top level;
//! * transformers >= 5: `rope_parameters: {rope_type, rope_theta}` and `dtype`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// The checkpoint's config as stored (field names mirror `config.json`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawQwen2Config {
    /// `model_type`, "qwen2" for Qwen2 and Qwen2.5.
    pub model_type: Option<String>,
    /// Vocabulary rows of the embedding and LM head.
    pub vocab_size: Option<usize>,
    /// Model width C.
    pub hidden_size: Option<usize>,
    /// MLP width.
    pub intermediate_size: Option<usize>,
    /// Number of decoder layers.
    pub num_hidden_layers: Option<usize>,
    /// Query heads.
    pub num_attention_heads: Option<usize>,
    /// Key/value heads (GQA); defaults to `num_attention_heads`.
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    /// Longest position the RoPE table is built for.
    pub max_position_embeddings: Option<usize>,
    /// RMSNorm epsilon.
    pub rms_norm_eps: Option<f64>,
    /// MLP activation; only "silu" is supported.
    pub hidden_act: Option<String>,
    /// Classic layout: RoPE base.
    pub rope_theta: Option<f64>,
    /// Classic layout: RoPE scaling (null or type "default" supported).
    pub rope_scaling: Option<Value>,
    /// transformers >= 5 layout: `{rope_type, rope_theta, ...}`.
    pub rope_parameters: Option<Value>,
    /// LM head shares the embedding matrix.
    pub tie_word_embeddings: Option<bool>,
    /// Whether sliding-window attention is on (unsupported when true).
    pub use_sliding_window: Option<bool>,
    /// Sliding-window size (ignored while `use_sliding_window` is false).
    pub sliding_window: Option<Value>,
    /// Layers that use full attention when sliding windows are on.
    pub max_window_layers: Option<usize>,
    /// transformers >= 5: per-layer attention kind.
    pub layer_types: Option<Vec<String>>,
    /// Classic layout: stored dtype.
    pub torch_dtype: Option<String>,
    /// transformers >= 5 layout: stored dtype.
    pub dtype: Option<String>,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<Value>,
    /// End-of-sequence token id(s).
    pub eos_token_id: Option<Value>,
    /// Attention dropout (inference ignores it).
    pub attention_dropout: Option<f64>,
}

/// A validated Qwen2 configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Qwen2Config {
    /// Vocabulary rows of the embedding and LM head.
    pub vocab_size: usize,
    /// Model width C.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    pub num_key_value_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Longest position the model was trained for.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// LM head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Stored dtype as the config names it ("float32", "bfloat16", ...), if named.
    pub dtype: Option<String>,
    /// End-of-sequence token ids.
    pub eos_token_ids: Vec<u32>,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<u32>,
}

impl Qwen2Config {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let value: Value = crate::error::read_json(path)?;
        Self::from_value(value, path)
    }

    /// Validates an already parsed `config.json`; `path` is only used in messages.
    pub fn from_value(value: Value, path: &Path) -> Result<Self> {
        let cfg = ConfigCheck {
            path: path.to_path_buf(),
        };
        if !value.is_object() {
            return Err(cfg.err("<root>", "expected a JSON object"));
        }
        let raw: RawQwen2Config = serde_path_to_error::deserialize(value)
            .map_err(|e| cfg.err(&e.path().to_string(), &e.inner().to_string()))?;
        cfg.validate(raw)
    }

    /// Parameter count (embedding and LM head counted once when tied).
    pub fn parameter_count(&self) -> usize {
        let c = self.hidden_size;
        let kv = self.num_key_value_heads * self.head_dim;
        let q = self.num_attention_heads * self.head_dim;
        let attn = c * q + q + 2 * (c * kv + kv) + q * c;
        let mlp = 3 * c * self.intermediate_size;
        let layer = attn + mlp + 2 * c;
        let embed = self.vocab_size * c;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + head + self.num_hidden_layers * layer + c
    }

    /// `config.json` as transformers writes it for Qwen2 (classic keys).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": null,
            "tie_word_embeddings": self.tie_word_embeddings,
            "use_sliding_window": false,
            "sliding_window": null,
            "max_window_layers": self.num_hidden_layers,
            "attention_dropout": 0.0,
            "use_cache": true,
            "torch_dtype": "float32",
            "bos_token_id": self.bos_token_id,
            "eos_token_id": match self.eos_token_ids.as_slice() {
                [one] => serde_json::json!(one),
                many => serde_json::json!(many),
            },
        })
    }

    /// How many query heads share one key/value head.
    pub fn gqa_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }
}

/// The largest value a `config.json` size may take: generous bounds (Qwen2.5-72B is well inside
/// them) that keep a hostile file from asking for impossible allocations.
pub fn size_limit(key: &str) -> usize {
    match key {
        "vocab_size" => 1 << 24,
        "hidden_size" => 1 << 16,
        "intermediate_size" => 1 << 18,
        "num_hidden_layers" | "num_attention_heads" | "num_key_value_heads" => 1 << 10,
        "head_dim" => 1 << 12,
        "max_position_embeddings" => 1 << 24,
        _ => usize::MAX,
    }
}

struct ConfigCheck {
    path: PathBuf,
}

impl ConfigCheck {
    fn err(&self, key: &str, message: &str) -> Error {
        Error::Config {
            path: self.path.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// A size that must be present, at least 1 and at most its [`size_limit`]: a model folder is
    /// untrusted, and sizes are checked before anything is allocated from them.
    fn required(&self, key: &str, v: Option<usize>) -> Result<usize> {
        match v {
            Some(0) => Err(self.err(key, "must be greater than 0")),
            Some(v) if v > size_limit(key) => Err(self.err(
                key,
                &format!(
                    "{v} is larger than any supported model (at most {})",
                    size_limit(key)
                ),
            )),
            Some(v) => Ok(v),
            None => Err(self.err(key, "missing")),
        }
    }

    fn validate(&self, raw: RawQwen2Config) -> Result<Qwen2Config> {
        match raw.model_type.as_deref() {
            Some("qwen2") => {}
            Some(mt) => {
                return Err(self.err(
                    "model_type",
                    &format!("`{mt}` is not a Qwen2 model (expected \"qwen2\")"),
                ));
            }
            None => return Err(self.err("model_type", "missing (expected \"qwen2\")")),
        }
        let hidden_size = self.required("hidden_size", raw.hidden_size)?;
        let heads = self.required("num_attention_heads", raw.num_attention_heads)?;
        let kv_heads = self.required(
            "num_key_value_heads",
            raw.num_key_value_heads.or(Some(heads)),
        )?;
        if heads % kv_heads != 0 {
            return Err(self.err(
                "num_key_value_heads",
                &format!("{kv_heads} does not divide num_attention_heads = {heads}"),
            ));
        }
        let head_dim = match raw.head_dim {
            Some(d) => self.required("head_dim", Some(d))?,
            None => {
                if hidden_size % heads != 0 {
                    return Err(self.err(
                        "num_attention_heads",
                        &format!("{heads} does not divide hidden_size = {hidden_size}"),
                    ));
                }
                hidden_size / heads
            }
        };
        if head_dim % 2 != 0 {
            return Err(self.err(
                "head_dim",
                &format!("{head_dim} is odd; rotary embeddings need an even width"),
            ));
        }
        if let Some(act) = &raw.hidden_act
            && act != "silu"
        {
            return Err(self.err(
                "hidden_act",
                &format!("`{act}` is not supported (only \"silu\")"),
            ));
        }
        if raw.use_sliding_window == Some(true) {
            return Err(self.err(
                "use_sliding_window",
                "sliding-window attention is not supported",
            ));
        }
        if let Some(types) = &raw.layer_types
            && let Some(bad) = types.iter().find(|t| t.as_str() != "full_attention")
        {
            return Err(self.err(
                "layer_types",
                &format!("layer type `{bad}` is not supported (only full_attention)"),
            ));
        }
        let rope_theta = self.rope_theta(&raw)?;
        let rms_norm_eps = raw.rms_norm_eps.unwrap_or(1e-6);
        if !(rms_norm_eps > 0.0 && rms_norm_eps.is_finite()) {
            return Err(self.err("rms_norm_eps", "must be a positive number"));
        }
        Ok(Qwen2Config {
            vocab_size: self.required("vocab_size", raw.vocab_size)?,
            hidden_size,
            intermediate_size: self.required("intermediate_size", raw.intermediate_size)?,
            num_hidden_layers: self.required("num_hidden_layers", raw.num_hidden_layers)?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            max_position_embeddings: self.required(
                "max_position_embeddings",
                raw.max_position_embeddings.or(Some(32768)),
            )?,
            rms_norm_eps,
            rope_theta,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            dtype: raw.dtype.or(raw.torch_dtype),
            eos_token_ids: self.token_ids("eos_token_id", raw.eos_token_id.as_ref())?,
            bos_token_id: self
                .token_ids("bos_token_id", raw.bos_token_id.as_ref())?
                .first()
                .copied(),
        })
    }

    fn rope_theta(&self, raw: &RawQwen2Config) -> Result<f64> {
        let mut theta = raw.rope_theta;
        if let Some(scaling) = &raw.rope_scaling {
            self.check_rope_type("rope_scaling", scaling)?;
        }
        if let Some(params) = &raw.rope_parameters {
            self.check_rope_type("rope_parameters", params)?;
            if let Some(t) = params.get("rope_theta") {
                theta =
                    Some(t.as_f64().ok_or_else(|| {
                        self.err("rope_parameters.rope_theta", "expected a number")
                    })?);
            }
        }
        let theta = theta.unwrap_or(10000.0);
        if !(theta > 0.0 && theta.is_finite()) {
            return Err(self.err("rope_theta", "must be a positive number"));
        }
        Ok(theta)
    }

    fn check_rope_type(&self, key: &str, v: &Value) -> Result<()> {
        match v {
            Value::Null => Ok(()),
            Value::Object(map) => {
                let kind = map.get("rope_type").or_else(|| map.get("type"));
                match kind {
                    None | Some(Value::Null) => Ok(()),
                    Some(Value::String(s)) if s == "default" => Ok(()),
                    Some(other) => Err(self.err(
                        key,
                        &format!(
                            "RoPE scaling type {other} is not supported (only none/\"default\")"
                        ),
                    )),
                }
            }
            _ => Err(self.err(key, "expected an object or null")),
        }
    }

    fn token_ids(&self, key: &str, v: Option<&Value>) -> Result<Vec<u32>> {
        let as_id = |x: &Value| x.as_u64().and_then(|n| u32::try_from(n).ok());
        match v {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|x| {
                    as_id(x).ok_or_else(|| self.err(key, "expected non-negative integer token ids"))
                })
                .collect(),
            Some(x) => as_id(x)
                .map(|id| vec![id])
                .ok_or_else(|| self.err(key, "expected a token id")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"model_type": "qwen2", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
               "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "torch_dtype": "float32",
               "tie_word_embeddings": true, "eos_token_id": [5, 6]})
    }

    fn parse(v: Value) -> Result<Qwen2Config> {
        Qwen2Config::from_value(v, Path::new("config.json"))
    }

    #[test]
    fn classic_layout() {
        let c = parse(base()).unwrap();
        assert_eq!((c.head_dim, c.rope_theta, c.gqa_groups()), (8, 1e6, 2));
        assert_eq!(c.eos_token_ids, vec![5, 6]);
        assert_eq!(c.dtype.as_deref(), Some("float32"));
    }

    #[test]
    fn transformers5_layout() {
        let mut v = base();
        let m = v.as_object_mut().unwrap();
        m.remove("rope_theta");
        m.remove("torch_dtype");
        m.insert(
            "rope_parameters".into(),
            json!({"rope_type": "default", "rope_theta": 5000.0}),
        );
        m.insert("dtype".into(), json!("bfloat16"));
        let c = parse(v).unwrap();
        assert_eq!(c.rope_theta, 5000.0);
        assert_eq!(c.dtype.as_deref(), Some("bfloat16"));
    }

    fn expect_key(v: Value, key: &str) {
        let err = parse(v).unwrap_err().to_string();
        assert!(err.contains(&format!("config key `{key}`")), "{err}");
    }

    #[test]
    fn unsupported_settings_name_the_key() {
        let mut v = base();
        v["rope_scaling"] = json!({"type": "yarn", "factor": 4.0});
        expect_key(v, "rope_scaling");
        let mut v = base();
        v["rope_parameters"] = json!({"rope_type": "linear", "rope_theta": 1.0});
        expect_key(v, "rope_parameters");
        let mut v = base();
        v["use_sliding_window"] = json!(true);
        expect_key(v, "use_sliding_window");
        let mut v = base();
        v["num_key_value_heads"] = json!(3);
        expect_key(v, "num_key_value_heads");
        let mut v = base();
        v["hidden_act"] = json!("gelu");
        expect_key(v, "hidden_act");
        let mut v = base();
        v.as_object_mut().unwrap().remove("vocab_size");
        expect_key(v, "vocab_size");
        let mut v = base();
        v["hidden_size"] = json!("wide");
        expect_key(v, "hidden_size");
        let mut v = base();
        v["model_type"] = json!("llama");
        expect_key(v, "model_type");
    }

    #[test]
    fn hostile_sizes_are_refused_before_anything_is_allocated() {
        for (key, value) in [
            ("num_hidden_layers", json!(1u64 << 60)),
            ("num_hidden_layers", json!(1_000_000_000u64)),
            ("vocab_size", json!(u64::MAX)),
            ("hidden_size", json!(1u64 << 40)),
            ("max_position_embeddings", json!(0)),
            ("model_type", Value::Null),
        ] {
            let mut v = base();
            v[key] = value;
            expect_key(v, key);
        }
    }
}
