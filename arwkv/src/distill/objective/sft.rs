//! Stage 3 SFT: next-token cross-entropy on the assistant tokens of chat data, logits at t
//! predicting token t+1 (`docs/METHOD.md` §7).

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{DataPosition, Dataset};
use crate::distill::chunked_loss::{
    CrossEntropyTerm, HeadInput, next_token_cross_entropy_chunked, next_token_targets,
};
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
    /// Positions per chunk of the head's loss (absent: the whole batch's logits at once).
    pub loss_chunk: Option<usize>,
}

impl Objective<ArwkvForCausalLM> for AssistantCrossEntropy {
    fn next_position(&self, pos: DataPosition) -> DataPosition {
        self.data.next_position(pos)
    }

    fn micro_batch(
        &self,
        student: &ArwkvForCausalLM,
        pos: DataPosition,
        device: &Device,
    ) -> Result<(MicroBatch, DataPosition)> {
        let (batch, next) = self.data.batch(pos, device);
        let hidden = student.hidden_states_masked(batch.ids.clone(), None, batch.padding())?;
        let loss = match self.loss_chunk {
            Some(chunk) => {
                let (targets, weights) = next_token_targets(batch.ids, batch.target_mask);
                let term = CrossEntropyTerm {
                    targets,
                    weights,
                    scale: 1.0,
                };
                let head = HeadInput::new(hidden, student.head_weight());
                next_token_cross_entropy_chunked(&head, term, chunk)
            }
            None => next_token_cross_entropy(student.project(hidden), batch.ids, batch.target_mask),
        };
        Ok((MicroBatch::loss_only(loss, batch.tokens), next))
    }
}
