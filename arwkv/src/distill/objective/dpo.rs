//! Stage 3 DPO: the sigmoid preference loss with label smoothing against a frozen copy of the
//! starting student (`docs/METHOD.md` §7; the formulas are in `distill::dpo`).

use burn::prelude::*;

use crate::data::DataPosition;
use crate::distill::dpo::{PreferenceData, dpo_loss, sequence_logprobs};
use crate::error::Result;
use crate::student::ArwkvForCausalLM;
use crate::train::{MicroBatch, Objective};

/// DPO over (chosen, rejected) pairs.
pub struct Preference {
    /// The frozen reference policy (the run's starting student, also when resuming).
    pub reference: ArwkvForCausalLM,
    /// The pairs.
    pub data: PreferenceData,
    /// β.
    pub beta: f64,
    /// Label smoothing ε.
    pub label_smoothing: f64,
}

impl Objective<ArwkvForCausalLM> for Preference {
    fn micro_batch(
        &self,
        student: &ArwkvForCausalLM,
        pos: DataPosition,
        device: &Device,
    ) -> Result<(MicroBatch, DataPosition)> {
        let (batch, next) = self.data.batch(pos, device);
        let policy = sequence_logprobs(
            student.forward(batch.ids.clone(), None)?,
            batch.ids.clone(),
            batch.target_mask.clone(),
        );
        let reference = sequence_logprobs(
            self.reference.forward(batch.ids.clone(), None)?,
            batch.ids,
            batch.target_mask,
        );
        let d = dpo_loss(policy, reference, self.beta, self.label_smoothing);
        let mut m = MicroBatch::loss_only(d.loss, batch.tokens);
        m.preference = Some((d.accuracy, d.margin));
        Ok((m, next))
    }
}
