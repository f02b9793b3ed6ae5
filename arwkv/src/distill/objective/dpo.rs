//! Stage 3 DPO: the sigmoid preference loss with label smoothing against a frozen copy of the
//! starting student (`docs/METHOD.md` §7; the formulas are in `distill::dpo`).

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::DataPosition;
use crate::distill::chunked_loss::{HeadInput, dpo_loss_chunked, sequence_logprobs_chunked};
use crate::distill::dpo::{CompletionSpan, PreferenceData, dpo_loss, sequence_logprobs};
use crate::error::Result;
use crate::student::ArwkvForCausalLM;
use crate::train::{MicroBatch, Objective};

/// DPO's own keys in a run config.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DpoConfig {
    /// β, the strength of the pull towards the reference.
    pub dpo_beta: f64,
    /// Label smoothing ε (the assumed fraction of flipped preferences).
    pub label_smoothing: f64,
    /// Which answer tokens are scored: `template` (the rendered turn) or `reference`.
    pub completion_span: CompletionSpan,
}

impl Default for DpoConfig {
    fn default() -> Self {
        Self {
            dpo_beta: 0.1,
            label_smoothing: 0.1,
            completion_span: CompletionSpan::Template,
        }
    }
}

impl DpoConfig {
    /// What is wrong with these values, if anything.
    pub fn problem(&self) -> Option<String> {
        if !(self.dpo_beta.is_finite() && self.dpo_beta > 0.0) {
            return Some("dpo_beta must be a positive number".into());
        }
        let e = self.label_smoothing;
        if !(e.is_finite() && (0.0..0.5).contains(&e)) {
            return Some("label_smoothing must be in [0, 0.5)".into());
        }
        None
    }
}

/// DPO over (chosen, rejected) pairs.
pub struct Preference {
    /// The frozen reference policy (the run's starting student, also when resuming).
    pub reference: ArwkvForCausalLM,
    /// The pairs.
    pub data: PreferenceData,
    /// β and ε.
    pub config: DpoConfig,
    /// Positions per chunk of the head's log-probabilities (absent: the whole batch's logits at
    /// once).
    pub loss_chunk: Option<usize>,
}

impl Objective<ArwkvForCausalLM> for Preference {
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
        if let Some(chunk) = self.loss_chunk {
            let head = |model: &ArwkvForCausalLM| -> Result<HeadInput> {
                let hidden = model.hidden_states(batch.ids.clone(), None)?;
                Ok(HeadInput::new(hidden, model.head_weight()))
            };
            let reference = sequence_logprobs_chunked(
                &head(&self.reference)?,
                batch.ids.clone(),
                batch.target_mask.clone(),
                chunk,
            );
            let d = dpo_loss_chunked(
                &head(student)?,
                reference,
                batch.ids,
                batch.target_mask,
                self.config.dpo_beta,
                self.config.label_smoothing,
                chunk,
            );
            let mut m = MicroBatch::loss_only(d.loss, batch.tokens);
            m.preference = Some((d.accuracy, d.margin));
            return Ok((m, next));
        }
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
        let d = dpo_loss(
            policy,
            reference,
            self.config.dpo_beta,
            self.config.label_smoothing,
        );
        let mut m = MicroBatch::loss_only(d.loss, batch.tokens);
        m.preference = Some((d.accuracy, d.margin));
        Ok((m, next))
    }
}
