//! Stage 2 and context extension: forward KL(teacher ‖ student) over the vocabulary at every
//! position, optionally over the teacher's top-k tokens, plus an optional next-token
//! cross-entropy (`docs/METHOD.md` §6).

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{DataPosition, Dataset};
use crate::distill::chunked_loss::{
    CrossEntropyTerm, HeadInput, next_token_targets, stage2_loss_chunked,
};
use crate::distill::loss::{kl_divergence, kl_divergence_top_k, next_token_cross_entropy};
use crate::error::Result;
use crate::student::ArwkvForCausalLM;
use crate::teacher::Qwen2ForCausalLM;
use crate::train::{MicroBatch, Objective};

/// Stage 2's own keys in a run config.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KlConfig {
    /// Softmax temperature τ (the loss is scaled by τ²).
    pub temperature: f64,
    /// KL over the teacher's k most likely tokens only (absent: the whole vocabulary).
    pub kl_top_k: Option<usize>,
    /// Weight of the student's next-token cross-entropy added to the KL (0: none).
    pub ce_weight: f64,
}

impl Default for KlConfig {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            kl_top_k: None,
            ce_weight: 0.0,
        }
    }
}

impl KlConfig {
    /// What is wrong with these values, if anything.
    pub fn problem(&self) -> Option<String> {
        let t = self.temperature;
        if !(t.is_finite() && t > 0.0) {
            return Some("temperature must be a positive number".into());
        }
        if self.kl_top_k == Some(0) {
            return Some(
                "kl_top_k must be at least 1 (leave it out for the full vocabulary)".into(),
            );
        }
        if !(self.ce_weight.is_finite() && self.ce_weight >= 0.0) {
            return Some("ce_weight must be a number ≥ 0".into());
        }
        None
    }
}

/// Word-level KL distillation from a frozen teacher.
pub struct WordLevelKl {
    /// The frozen teacher.
    pub teacher: Qwen2ForCausalLM,
    /// Token rows.
    pub data: Dataset,
    /// Temperature, top-k and CE weight.
    pub config: KlConfig,
    /// Positions per chunk of the head's loss (absent: the whole batch's logits at once).
    pub loss_chunk: Option<usize>,
}

impl WordLevelKl {
    /// The loss and its KL part with the logits made a chunk of positions at a time.
    fn chunked(
        &self,
        student: &ArwkvForCausalLM,
        batch: &crate::data::Batch,
        chunk: usize,
    ) -> Result<(Tensor<1>, f64)> {
        let teacher = HeadInput::new(
            self.teacher
                .hidden_states(batch.ids.clone(), None)?
                .detach(),
            self.teacher.head_weight().detach(),
        );
        let hidden = student.hidden_states_masked(batch.ids.clone(), None, batch.padding())?;
        let [b, t] = batch.ids.dims();
        let cross_entropy = (self.config.ce_weight > 0.0).then(|| {
            let (targets, weights) = next_token_targets(batch.ids.clone(), batch.mask.clone());
            CrossEntropyTerm {
                targets,
                weights,
                scale: self.config.ce_weight,
            }
        });
        Ok(stage2_loss_chunked(
            &teacher,
            &HeadInput::new(hidden, student.head_weight()),
            batch.mask.clone().reshape([b * t]),
            self.config.temperature,
            self.config.kl_top_k,
            cross_entropy,
            chunk,
        ))
    }
}

impl Objective<ArwkvForCausalLM> for WordLevelKl {
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
            let (loss, kl) = self.chunked(student, &batch, chunk)?;
            let mut m = MicroBatch::loss_only(loss, batch.tokens);
            m.kl = Some(kl);
            return Ok((m, next));
        }
        let teacher_logits = self.teacher.forward(batch.ids.clone(), None)?.detach();
        let logits = match batch.padding() {
            Some(mask) => student.forward_masked(batch.ids.clone(), mask)?,
            None => student.forward(batch.ids.clone(), None)?,
        };
        let kl = match self.config.kl_top_k {
            Some(k) => kl_divergence_top_k(
                teacher_logits,
                logits.clone(),
                batch.mask.clone(),
                self.config.temperature,
                k,
            ),
            None => kl_divergence(
                teacher_logits,
                logits.clone(),
                batch.mask.clone(),
                self.config.temperature,
            ),
        };
        let kl_value = kl.clone().into_scalar::<f64>();
        let loss = if self.config.ce_weight > 0.0 {
            kl + next_token_cross_entropy(logits, batch.ids, batch.mask) * self.config.ce_weight
        } else {
            kl
        };
        let mut m = MicroBatch::loss_only(loss, batch.tokens);
        m.kl = Some(kl_value);
        Ok((m, next))
    }
}
