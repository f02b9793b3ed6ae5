//! Stage 3 preference tuning: DPO with a frozen reference copy (`docs/METHOD.md` §7).
//!
//! For a pair (chosen c, rejected r) with summed completion log-probabilities under the policy π
//! and the reference π_ref:
//!
//! ```text
//! Δ = (log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))
//! ℓ = −(1 − ε)·log σ(β Δ) − ε·log σ(−β Δ)          (β = 0.1, ε = 0.1 by default)
//! ```
//!
//! averaged over the batch. Data: JSONL rows `{prompt, chosen, rejected}`; the prompt is a user turn,
//! each answer an assistant turn of the model's chat template, and only the answer's tokens count.

use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, log_softmax};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::Value;

use crate::chat::{ChatMessage, ChatTemplate};
use crate::data::{DataPosition, Document, render_conversation, tokenise};
use crate::error::{Error, Result};
use crate::jsonl::BadRows;
use crate::tokenizer::TextTokenizer;

/// Summed log-probability of the target tokens of each row: logits `[N, T, V]` at t score
/// `ids[t + 1]`, counted where `target_mask[t + 1]` is 1. Returns `[N]`.
pub fn sequence_logprobs(
    logits: Tensor<3>,
    ids: Tensor<2, Int>,
    target_mask: Tensor<2>,
) -> Tensor<1> {
    let logits = crate::precision::f32(logits);
    let [n, t, v] = logits.dims();
    let logp = log_softmax(logits.slice([0..n, 0..t - 1, 0..v]), 2);
    let picked = logp
        .gather(2, ids.slice([0..n, 1..t]).reshape([n, t - 1, 1]))
        .reshape([n, t - 1]);
    (picked * target_mask.slice([0..n, 1..t]))
        .sum_dim(1)
        .reshape([n])
}

/// What one DPO batch measured.
#[derive(Clone, Debug)]
pub struct DpoLoss {
    /// The loss to minimise.
    pub loss: Tensor<1>,
    /// Fraction of pairs with Δ > 0.
    pub accuracy: f64,
    /// Mean β·Δ.
    pub margin: f64,
}

/// The sigmoid DPO loss from policy and reference log-probabilities, each `[2B]` with the chosen
/// answers first and the rejected ones second.
pub fn dpo_loss(
    policy: Tensor<1>,
    reference: Tensor<1>,
    beta: f64,
    label_smoothing: f64,
) -> DpoLoss {
    let [n] = policy.dims();
    let b = n / 2;
    let ratio = policy - reference.detach();
    let delta = ratio.clone().slice(0..b) - ratio.slice(b..n);
    let z = delta * beta;
    let loss = (log_sigmoid(z.clone()) * (-(1.0 - label_smoothing))
        + log_sigmoid(z.clone().neg()) * (-label_smoothing))
        .mean();
    let values = z
        .into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .unwrap_or_default();
    let accuracy = values.iter().filter(|&&x| x > 0.0).count() as f64 / b.max(1) as f64;
    let margin = values.iter().sum::<f64>() / b.max(1) as f64;
    DpoLoss {
        loss,
        accuracy,
        margin,
    }
}

/// Which tokens of an answer DPO scores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompletionSpan {
    /// The assistant turn as the chat template renders it: the answer, its end token and the
    /// newline the template writes after that.
    #[default]
    Template,
    /// As the paper-era code: the turn ends at its end token, without the template's trailing
    /// whitespace (neither scored nor in the row).
    Reference,
}

impl CompletionSpan {
    /// Applies the span to a rendered prompt + answer (one assistant turn, the last).
    fn apply(self, doc: &mut Document) {
        if self == Self::Template {
            return;
        }
        if let Some(last) = doc.targets.as_mut().and_then(|t| t.last_mut()) {
            last.end = last.start + doc.text[last.clone()].trim_end().len();
            doc.text.truncate(last.end);
        }
    }
}

/// A tokenised answer: ids and which of them are the answer.
type Tokens = (Vec<u32>, Vec<bool>);

/// Preference pairs, cut to a context length, read in a seeded order.
#[derive(Clone, Debug)]
pub struct PreferenceData {
    pairs: Vec<(Tokens, Tokens)>,
    context: usize,
    batch_size: usize,
    pad_id: u32,
    seed: u64,
    /// Rows skipped while reading.
    pub bad_rows: BadRows,
}

/// One DPO batch: `2B` rows, the chosen answers first.
#[derive(Clone, Debug)]
pub struct PreferenceBatch {
    /// `[2B, T]` ids.
    pub ids: Tensor<2, Int>,
    /// `[2B, T]` 1 on answer tokens.
    pub target_mask: Tensor<2>,
    /// Real tokens in the batch.
    pub tokens: usize,
}

impl PreferenceData {
    /// Reads `{prompt, chosen, rejected}` JSONL files; `span` says which answer tokens count.
    pub fn load(
        files: &[PathBuf],
        tokenizer: &TextTokenizer,
        template: Option<&ChatTemplate>,
        (context, batch_size): (usize, usize),
        span: CompletionSpan,
        seed: u64,
    ) -> Result<Self> {
        let mut bad = BadRows::default();
        let mut pairs = vec![];
        for path in files {
            pairs.extend(crate::jsonl::read_rows(path, &mut bad, |_, row| {
                let field = |k: &str| row.get(k).and_then(Value::as_str).map(str::to_string);
                let (Some(prompt), Some(chosen), Some(rejected)) =
                    (field("prompt"), field("chosen"), field("rejected"))
                else {
                    return Err("needs `prompt`, `chosen` and `rejected` strings".into());
                };
                let answer = |a: String| -> std::result::Result<Tokens, String> {
                    let messages = [
                        ChatMessage::new("user", prompt.clone()),
                        ChatMessage::new("assistant", a),
                    ];
                    let mut doc = render_conversation(&messages, template)?;
                    span.apply(&mut doc);
                    let (mut ids, mut targets) =
                        tokenise(tokenizer, &doc).map_err(|e| e.to_string())?;
                    ids.truncate(context);
                    targets.truncate(context);
                    if !targets.iter().any(|&t| t) {
                        return Err(format!(
                            "the prompt fills the whole context of {context} tokens"
                        ));
                    }
                    Ok((ids, targets))
                };
                Ok((answer(chosen)?, answer(rejected)?))
            })?);
        }
        if pairs.len() < batch_size || batch_size == 0 {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            return Err(Error::Data {
                source_name: format!("DPO data ({})", names.join(", ")),
                message: format!(
                    "{} usable pair(s), fewer than one batch of {batch_size} ({} bad row(s) \
                     skipped{})",
                    pairs.len(),
                    bad.count,
                    bad.example()
                ),
            });
        }
        Ok(Self {
            pairs,
            context,
            batch_size,
            pad_id: tokenizer.token_to_id("<|endoftext|>").unwrap_or(0),
            seed,
            bad_rows: bad,
        })
    }

    /// Full batches per pass.
    pub fn batches_per_epoch(&self) -> u64 {
        (self.pairs.len() / self.batch_size) as u64
    }

    /// The position after the batch at `pos`, without reading it.
    pub fn next_position(&self, pos: DataPosition) -> DataPosition {
        pos.after(self.batches_per_epoch())
    }

    /// The batch at `pos` and the position after it.
    pub fn batch(&self, pos: DataPosition, device: &Device) -> (PreferenceBatch, DataPosition) {
        let next = self.next_position(pos);
        let pos = pos.wrapped(self.batches_per_epoch());
        let mut order: Vec<usize> = (0..self.pairs.len()).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(
            self.seed ^ pos.epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        order.shuffle(&mut rng);
        let picked = &order[pos.batch as usize * self.batch_size..][..self.batch_size];
        let t = self.context;
        let rows: Vec<&Tokens> = picked
            .iter()
            .map(|&i| &self.pairs[i].0)
            .chain(picked.iter().map(|&i| &self.pairs[i].1))
            .collect();
        let mut ids = Vec::with_capacity(rows.len() * t);
        let mut mask = Vec::with_capacity(rows.len() * t);
        let mut tokens = 0;
        for (row_ids, row_targets) in &rows {
            tokens += row_ids.len();
            ids.extend(row_ids.iter().map(|&x| x as i64));
            ids.extend(std::iter::repeat_n(self.pad_id as i64, t - row_ids.len()));
            mask.extend(row_targets.iter().map(|&x| if x { 1.0f32 } else { 0.0 }));
            mask.extend(std::iter::repeat_n(0.0f32, t - row_targets.len()));
        }
        let n = rows.len();
        let batch = PreferenceBatch {
            ids: Tensor::from_data(TensorData::new(ids, [n, t]), device),
            target_mask: Tensor::from_data(TensorData::new(mask, [n, t]), device),
            tokens,
        };
        (batch, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(span: CompletionSpan) -> (PreferenceData, TextTokenizer) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pairs.jsonl");
        let row = r#"{"prompt": "Who speaks?", "chosen": "The king.", "rejected": "A fool."}"#;
        std::fs::write(&file, format!("{row}\n{row}\n")).unwrap();
        let tokenizer = TextTokenizer::from_file(
            &crate::embedded::tiny_assets().join("teacher/tokenizer.json"),
        )
        .unwrap();
        let data = PreferenceData::load(&[file], &tokenizer, None, (64, 1), span, 0).unwrap();
        (data, tokenizer)
    }

    #[test]
    fn the_reference_span_ends_at_the_turns_end_token() {
        let (template, tokenizer) = pairs(CompletionSpan::Template);
        let (reference, _) = pairs(CompletionSpan::Reference);
        let scored = |t: &Tokens| -> String {
            let ids: Vec<u32> =
                t.0.iter()
                    .zip(&t.1)
                    .filter(|(_, m)| **m)
                    .map(|(i, _)| *i)
                    .collect();
            tokenizer.decode(&ids, false).unwrap()
        };
        for ((t_chosen, t_rejected), (r_chosen, r_rejected)) in
            template.pairs.iter().zip(&reference.pairs)
        {
            for (t, r, answer) in [
                (t_chosen, r_chosen, "The king."),
                (t_rejected, r_rejected, "A fool."),
            ] {
                assert_eq!(scored(t), format!("{answer}<|im_end|>\n"));
                assert_eq!(scored(r), format!("{answer}<|im_end|>"));
                // The reference row is the template row without its last (newline) token.
                assert_eq!(r.0[..], t.0[..t.0.len() - 1]);
                assert!(r.1.last() == Some(&true));
            }
        }
    }
}
