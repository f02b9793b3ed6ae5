//! Staged distillation of a Qwen2 teacher into its ARWKV student (`docs/METHOD.md` §5–§9).

pub mod chunked_loss;
pub mod dpo;
pub mod loss;
pub mod objective;
pub mod pairs;
pub mod plan;
pub mod preset;
pub mod recipe;
pub mod run;
pub mod run_config;
pub mod run_dir;
pub mod stage1;
pub mod table1;

pub use loss::{
    AlignmentLoss, alignment_loss, kl_divergence, kl_divergence_top_k, next_token_cross_entropy,
};
