//! What each stage minimises, one objective per file: stage-1 alignment (`align`), word-level KL
//! for stage 2 and context extension (`kl`), SFT cross-entropy (`sft`) and DPO (`dpo`). The training
//! loop (`distill::run`) asks its objective for one micro-batch's loss at a data position and does
//! the rest (accumulation, clipping, the optimiser step, metrics, checkpoints) the same way for all.

mod align;
mod dpo;
mod kl;
mod sft;

use burn::prelude::*;

pub use align::Alignment;
pub use dpo::Preference;
pub use kl::WordLevelKl;
pub use sft::AssistantCrossEntropy;

use super::data::DataPosition;
use crate::error::Result;
use crate::student::ArwkvForCausalLM;

/// One micro-batch's loss and the numbers the stage reports besides it.
pub struct MicroBatch {
    /// What is minimised (a scalar with the student's gradient).
    pub loss: Tensor<1>,
    /// Stage 1: the loss of each layer.
    pub per_layer: Vec<f64>,
    /// Stage 2: the KL part of the loss.
    pub kl: Option<f64>,
    /// DPO: fraction of pairs ranked right, and the mean reward margin β·Δ.
    pub preference: Option<(f64, f64)>,
    /// Real (unpadded) tokens read.
    pub tokens: usize,
}

impl MicroBatch {
    /// A micro-batch that reports only its loss.
    pub fn loss_only(loss: Tensor<1>, tokens: usize) -> Self {
        Self {
            loss,
            per_layer: vec![],
            kl: None,
            preference: None,
            tokens,
        }
    }
}

/// A stage's objective over its own data.
pub trait Objective {
    /// The loss of the micro-batch at `pos` for `student`, and the position after it.
    fn micro_batch(
        &self,
        student: &ArwkvForCausalLM,
        pos: DataPosition,
        device: &Device,
    ) -> Result<(MicroBatch, DataPosition)>;
}
