//! The Qwen2 / Qwen2.5 teacher: config, weights, forward pass and KV cache.

pub mod cache;
pub mod causal_attention;
pub mod config;
pub mod model;
pub mod rope;

pub use cache::{KvCache, LayerKv};
pub use config::Qwen2Config;
pub use model::Qwen2ForCausalLM;
pub mod pretrained;
pub use crate::model_folder::save_pretrained;
pub use pretrained::PretrainedQwen2;

/// A human-readable summary of a loaded model folder (for `arwkv inspect`).
pub fn describe(t: &PretrainedQwen2) -> String {
    use std::fmt::Write;
    let c = &t.model.config;
    let mut s = String::new();
    let _ = writeln!(s, "folder:        {}", t.dir.display());
    let _ = writeln!(s, "architecture:  Qwen2ForCausalLM (qwen2)");
    let _ = writeln!(
        s,
        "shape:         {} layers, hidden {}, intermediate {}, vocab {}",
        c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.vocab_size
    );
    let _ = writeln!(
        s,
        "attention:     {} query heads, {} key/value heads (GQA {}:1), head dim {}, RoPE θ = {}",
        c.num_attention_heads,
        c.num_key_value_heads,
        c.gqa_groups(),
        c.head_dim,
        c.rope_theta
    );
    let _ = writeln!(s, "norm eps:      {}", c.rms_norm_eps);
    let _ = writeln!(
        s,
        "embeddings:    {}",
        if c.tie_word_embeddings {
            "tied to the LM head"
        } else {
            "separate LM head"
        }
    );
    let _ = writeln!(
        s,
        "dtype:         config {}, stored {} in {} file(s), computed in f32",
        c.dtype.as_deref().unwrap_or("unspecified"),
        t.stored_dtypes.join("/"),
        t.shard_count
    );
    let params = c.parameter_count();
    let _ = writeln!(
        s,
        "parameters:    {} ({:.2} M)",
        params,
        params as f64 / 1e6
    );
    match &t.tokenizer {
        Some(tok) => {
            let _ = writeln!(
                s,
                "tokenizer:     {} tokens ({} added/special), from {}",
                tok.vocab_size(),
                tok.added_token_count(),
                tok.path().display()
            );
        }
        None => {
            let _ = writeln!(s, "tokenizer:     none (no tokenizer.json)");
        }
    }
    match &t.chat_template {
        Some(tmpl) => {
            let _ = writeln!(
                s,
                "chat template: {} characters, from {}{}",
                tmpl.source.len(),
                tmpl.origin.display(),
                if tmpl.source.contains("<|im_start|>") {
                    " (ChatML)"
                } else {
                    ""
                }
            );
        }
        None => {
            let _ = writeln!(s, "chat template: none");
        }
    }
    let _ = writeln!(s, "stop tokens:   {:?}", t.stop_ids());
    s
}
