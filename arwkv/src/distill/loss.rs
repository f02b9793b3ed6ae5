//! The distillation losses (`docs/METHOD.md` §5–§7), in f32.
//!
//! * Stage 1, per layer: `L = mean_{b,t} ‖A_T − A_S‖₂ / √C` (the per-token RMS of the difference),
//!   or the MSE as an option, over the real (unpadded) positions; the run averages it over layers.
//! * Stage 2: forward `KL(p_T ‖ p_S) = Σ_v p_T (log p_T − log p_S)` over the full vocabulary at
//!   temperature τ (scaled by τ² so gradients keep their size), averaged over positions weighted by
//!   the mask: `Σ KL·m / (Σ m + 1e-6)`. A teacher with a larger vocabulary is cut to the student's.
//! * SFT / CE: standard next-token alignment — logits at t predict id t+1 — with a mask on the
//!   *target* positions (not the reference's doubly shifted labels).

use crate::precision::f32;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};

/// Keeps the square root's gradient finite where teacher and student agree exactly.
const SQRT_EPS: f64 = 1e-12;

/// The stage-1 per-layer loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlignmentLoss {
    /// Mean over tokens of ‖A_T − A_S‖₂ / √C (the reference).
    #[default]
    L2Rms,
    /// Mean squared error over all elements.
    Mse,
}

/// Stage-1 loss of one layer between the teacher's attention output and the time mixer's,
/// both `[B, T, C]` (after the output projection, before the residual add). With a padding `mask`
/// `[B, T]` (1 = real token) the mean is over real positions only (the reference counts padding).
pub fn alignment_loss(
    teacher: Tensor<3>,
    student: Tensor<3>,
    mask: Option<&Tensor<2>>,
    kind: AlignmentLoss,
) -> Tensor<1> {
    let (teacher, student) = (f32(teacher), f32(student));
    let [b, t, c] = student.dims();
    let sq = (student - teacher).powi_scalar(2);
    let per_token = match kind {
        AlignmentLoss::L2Rms => (sq.sum_dim(2) + SQRT_EPS).sqrt() / (c as f64).sqrt(),
        AlignmentLoss::Mse => sq.mean_dim(2),
    };
    match mask {
        None => per_token.mean(),
        Some(mask) => {
            let real = mask.clone().greater_elem(0.5).float();
            (per_token.reshape([b, t]) * real.clone()).sum() / real.sum().clamp_min(1.0)
        }
    }
}

/// Stage-2 forward KL between teacher and student logits `[B, T, V]`, mask `[B, T]` (1 = counted).
pub fn kl_divergence(
    teacher_logits: Tensor<3>,
    student_logits: Tensor<3>,
    mask: Tensor<2>,
    temperature: f64,
) -> Tensor<1> {
    let (teacher_logits, student_logits) = (f32(teacher_logits), f32(student_logits));
    let [b, t, v] = student_logits.dims();
    let [_, _, vt] = teacher_logits.dims();
    let teacher_logits = if vt > v {
        teacher_logits.slice([0..b, 0..t, 0..v])
    } else {
        teacher_logits
    };
    let log_pt = log_softmax(teacher_logits / temperature, 2);
    let log_ps = log_softmax(student_logits / temperature, 2);
    let kl = (log_pt.clone().exp() * (log_pt - log_ps))
        .sum_dim(2)
        .reshape([b, t]);
    (kl * mask.clone()).sum() / (mask.sum() + 1e-6) * (temperature * temperature)
}

/// Stage-2 KL restricted to the teacher's `k` most likely tokens per position: the teacher's
/// distribution renormalised over its top k, against the student's full-vocabulary log-probabilities
/// of those tokens (sparse KD; cheaper to store, ignores the teacher's tail).
pub fn kl_divergence_top_k(
    teacher_logits: Tensor<3>,
    student_logits: Tensor<3>,
    mask: Tensor<2>,
    temperature: f64,
    k: usize,
) -> Tensor<1> {
    let (teacher_logits, student_logits) = (f32(teacher_logits), f32(student_logits));
    let [b, t, v] = student_logits.dims();
    let [_, _, vt] = teacher_logits.dims();
    let teacher_logits = if vt > v {
        teacher_logits.slice([0..b, 0..t, 0..v])
    } else {
        teacher_logits
    };
    let (values, indices) = teacher_logits.topk_with_indices(k.clamp(1, v), 2);
    let log_pt = log_softmax(values / temperature, 2);
    let log_ps = log_softmax(student_logits / temperature, 2).gather(2, indices);
    let kl = (log_pt.clone().exp() * (log_pt - log_ps))
        .sum_dim(2)
        .reshape([b, t]);
    (kl * mask.clone()).sum() / (mask.sum() + 1e-6) * (temperature * temperature)
}

/// Mean next-token cross-entropy: logits `[B, T, V]` at t score `ids[t + 1]`; `target_mask`
/// `[B, T]` says which ids count as targets (position 0 is never one).
pub fn next_token_cross_entropy(
    logits: Tensor<3>,
    ids: Tensor<2, Int>,
    target_mask: Tensor<2>,
) -> Tensor<1> {
    let logits = f32(logits);
    let [b, t, v] = logits.dims();
    if t < 2 {
        return Tensor::zeros([1], &logits.device());
    }
    let logp = log_softmax(logits.slice([0..b, 0..t - 1, 0..v]), 2);
    let targets = ids.slice([0..b, 1..t]).reshape([b, t - 1, 1]);
    let nll = logp.gather(2, targets).reshape([b, t - 1]).neg();
    let mask = target_mask.slice([0..b, 1..t]);
    (nll * mask.clone()).sum() / (mask.sum() + 1e-6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_masked_alignment_loss_is_the_loss_of_the_real_positions_alone() {
        let device = Device::flex();
        let values = |seed: f32| -> Vec<f32> {
            (0..2 * 4 * 3)
                .map(|i| ((i as f32 + seed) * 0.37).sin())
                .collect()
        };
        let t = |v: Vec<f32>| Tensor::<3>::from_data(TensorData::new(v, [2, 4, 3]), &device);
        let (teacher, student) = (t(values(0.0)), t(values(5.0)));
        // Row 0 is full; row 1 is padded after two tokens.
        let mask = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 1., 1., 1., 1., 1., 0., 0.], [2, 4]),
            &device,
        );
        for kind in [AlignmentLoss::L2Rms, AlignmentLoss::Mse] {
            let masked: f64 =
                alignment_loss(teacher.clone(), student.clone(), Some(&mask), kind).into_scalar();
            let real = |x: Tensor<3>| {
                Tensor::cat(
                    vec![
                        x.clone().slice([0..1, 0..4, 0..3]).reshape([1, 4, 3]),
                        x.slice([1..2, 0..2, 0..3]).reshape([1, 2, 3]),
                    ],
                    1,
                )
            };
            let alone: f64 =
                alignment_loss(real(teacher.clone()), real(student.clone()), None, kind)
                    .into_scalar();
            assert!(
                (masked - alone).abs() < 1e-6,
                "{kind:?}: {masked} vs {alone}"
            );
            let all: f64 =
                alignment_loss(teacher.clone(), student.clone(), None, kind).into_scalar();
            assert!(
                (masked - all).abs() > 1e-4,
                "{kind:?}: the padding must not count"
            );
        }
    }
}
