//! What each stage minimises, one objective per file, each with the run-config keys it reads: stage-1 alignment (`align`), word-level KL
//! for stage 2 and context extension (`kl`), SFT cross-entropy (`sft`) and DPO (`dpo`). The training
//! loop (`train::trainer`, started by `distill::run`) asks its objective for one micro-batch's loss at a data position and does
//! the rest (accumulation, clipping, the optimiser step, metrics, checkpoints) the same way for all.

mod align;
mod dpo;
mod kl;
mod sft;

pub use align::{AlignConfig, Alignment};
pub use dpo::{DpoConfig, Preference};
pub use kl::{KlConfig, WordLevelKl};
pub use sft::{AssistantCrossEntropy, SftConfig};
