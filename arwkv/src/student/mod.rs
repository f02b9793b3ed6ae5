//! The ARWKV student: config (`rwkv_hybrid`), the RWKV-7 time mixer, the model built from a Qwen2
//! teacher, its recurrent state, and its checkpoints.

pub mod config;
pub mod init;
pub mod model;
pub mod pretrained;
pub mod state;
pub mod time_mixer;

pub use crate::model_folder::save_pretrained;
pub use config::{ArwkvConfig, LoraRanks};
pub use model::{ArwkvForCausalLM, GateInit, StudentOptions};
pub use pretrained::PretrainedArwkv;
pub use state::RecurrentState;
pub use time_mixer::{TimeMixState, TimeMixer};

/// A human-readable summary of a loaded student folder (for `arwkv inspect`).
pub fn describe(s: &PretrainedArwkv) -> String {
    use std::fmt::Write;
    let c = &s.model.config;
    let q = &c.qwen;
    let mut out = String::new();
    let _ = writeln!(out, "folder:        {}", s.dir.display());
    let _ = writeln!(
        out,
        "architecture:  RwkvHybridForCausalLM (rwkv_hybrid, ARWKV student)"
    );
    let _ = writeln!(
        out,
        "shape:         {} layers, hidden {}, intermediate {}, vocab {}",
        q.num_hidden_layers, q.hidden_size, q.intermediate_size, q.vocab_size
    );
    let _ = writeln!(
        out,
        "time mixing:   RWKV-7, {} heads of {}, gate {}, GroupNorm {}, LoRA ranks {}/{}/{}/{}",
        c.num_wkv_heads(),
        c.head_size,
        if c.has_gate { "on" } else { "off" },
        if c.has_group_norm { "on" } else { "off" },
        c.ranks.decay,
        c.ranks.iclr,
        c.ranks.value,
        c.ranks.gate
    );
    let _ = writeln!(
        out,
        "dtype:         stored {} in {} file(s), computed in f32",
        s.stored_dtypes.join("/"),
        s.shard_count
    );
    let p = c.parameter_count();
    let _ = writeln!(out, "parameters:    {p} ({:.2} M)", p as f64 / 1e6);
    let _ = writeln!(
        out,
        "state:         {} bytes per sequence, whatever the context length",
        q.num_hidden_layers * 4 * (q.hidden_size + c.num_wkv_heads() * c.head_size * c.head_size)
    );
    let _ = writeln!(out, "stop tokens:   {:?}", s.stop_ids());
    out
}
