//! Stage 1: per-layer alignment of each time mixer's output to its layer's attention output, with
//! the teacher's residual stream (`docs/METHOD.md` §5; the computation is `distill::stage1`).

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{DataPosition, Dataset};
use crate::distill::loss::AlignmentLoss;
use crate::distill::stage1::alignment_losses;
use crate::error::Result;
use crate::student::ArwkvForCausalLM;
use crate::teacher::Qwen2ForCausalLM;
use crate::train::{MicroBatch, Objective};

/// Stage 1's own keys in a run config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlignConfig {
    /// The per-layer loss: `l2_rms` (the reference) or `mse`.
    pub alignment_loss: AlignmentLoss,
}

impl AlignConfig {
    /// What is wrong with these values, if anything.
    pub fn problem(&self) -> Option<String> {
        None
    }
}

/// Stage 1's objective: the mean over layers of the per-layer alignment loss.
pub struct Alignment {
    /// The frozen teacher.
    pub teacher: Qwen2ForCausalLM,
    /// Token rows.
    pub data: Dataset,
    /// The per-layer loss.
    pub config: AlignConfig,
}

impl Objective<ArwkvForCausalLM> for Alignment {
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
        let l = alignment_losses(
            &self.teacher,
            student,
            batch.ids.clone(),
            batch.padding(),
            self.config.alignment_loss,
        )?;
        let per_layer = l
            .per_layer
            .iter()
            .map(|x| x.clone().into_scalar::<f64>())
            .collect();
        let mut m = MicroBatch::loss_only(l.loss, batch.tokens);
        m.per_layer = per_layer;
        Ok((m, next))
    }
}
