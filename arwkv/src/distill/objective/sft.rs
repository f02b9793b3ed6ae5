//! Stage 3 SFT: next-token cross-entropy on the assistant tokens of chat data, logits at t
//! predicting token t+1 (`docs/METHOD.md` §7).

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{DataPosition, Dataset};
use crate::distill::loss::next_token_cross_entropy;
use crate::error::Result;
use crate::student::ArwkvForCausalLM;
use crate::train::{MicroBatch, Objective};

/// SFT's own keys in a run config: none (the data decides which tokens are targets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftConfig {}

impl SftConfig {
    /// What is wrong with these values, if anything.
    pub fn problem(&self) -> Option<String> {
        None
    }
}

/// Cross-entropy on assistant tokens only.
pub struct AssistantCrossEntropy {
    /// Chat rows with their target masks.
    pub data: Dataset,
}

impl Objective<ArwkvForCausalLM> for AssistantCrossEntropy {
    fn micro_batch(
        &self,
        student: &ArwkvForCausalLM,
        pos: DataPosition,
        device: &Device,
    ) -> Result<(MicroBatch, DataPosition)> {
        let (batch, next) = self.data.batch(pos, device);
        let logits = match batch.padding() {
            Some(mask) => student.forward_masked(batch.ids.clone(), mask)?,
            None => student.forward(batch.ids.clone(), None)?,
        };
        let loss = next_token_cross_entropy(logits, batch.ids, batch.target_mask);
        Ok((MicroBatch::loss_only(loss, batch.tokens), next))
    }
}
