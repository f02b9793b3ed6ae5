//! Stage 0's objective: next-token cross-entropy over every real token of the pretraining text,
//! logits at t predicting token t+1.

use burn::prelude::*;

use crate::data::{DataPosition, Dataset};
use crate::distill::loss::next_token_cross_entropy;
use crate::error::Result;
use crate::teacher::Qwen2ForCausalLM;
use crate::train::{MicroBatch, Objective};

/// Next-token prediction on packed text rows.
pub struct NextToken {
    /// The pretraining rows.
    pub data: Dataset,
}

impl Objective<Qwen2ForCausalLM> for NextToken {
    fn next_position(&self, pos: DataPosition) -> DataPosition {
        self.data.next_position(pos)
    }

    fn micro_batch(
        &self,
        model: &Qwen2ForCausalLM,
        pos: DataPosition,
        device: &Device,
    ) -> Result<(MicroBatch, DataPosition)> {
        let (batch, next) = self.data.batch(pos, device);
        let logits = model.forward(batch.ids.clone(), None)?;
        let loss = next_token_cross_entropy(logits, batch.ids, batch.target_mask);
        Ok((MicroBatch::loss_only(loss, batch.tokens), next))
    }
}
