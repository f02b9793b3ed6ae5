//! What a stage minimises, seen from the training loop: an [`Objective`] gives one micro-batch's
//! loss for the model at a data position, with the numbers the stage reports besides it. Each
//! stage's objective lives in its own file (`distill/objective/` for stages 1–3,
//! `pretrain/next_token.rs` for pretraining); the loop (`train::trainer`) does the rest.

use burn::prelude::*;

use crate::data::DataPosition;
use crate::error::Result;

/// One micro-batch's loss and the numbers the stage reports besides it.
pub struct MicroBatch {
    /// What is minimised (a scalar with the model's gradient).
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

/// A stage's objective over its own data, for the model type `M` it trains. `Sync` because the
/// ranks of a data-parallel run read it from their own threads.
pub trait Objective<M>: Sync {
    /// The loss of the micro-batch at `pos` for `model`, and the position after it.
    fn micro_batch(
        &self,
        model: &M,
        pos: DataPosition,
        device: &Device,
    ) -> Result<(MicroBatch, DataPosition)>;

    /// The position after the micro-batch at `pos`, without reading it (how a data-parallel
    /// step deals out its micro-batches).
    fn next_position(&self, pos: DataPosition) -> DataPosition;
}
