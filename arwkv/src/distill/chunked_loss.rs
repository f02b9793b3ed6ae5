//! The LM head's losses over chunks of positions: peak memory grows with the chunk, not with
//! B × T × V (DECISIONS "Memory-lean losses"; the losses themselves are `docs/METHOD.md` §6–§7).
//!
//! A chunk's logits `z = h Wᵀ` are made, used and dropped inside the forward. Each loss knows its
//! gradient with respect to the logits in closed form,
//!
//! ```text
//! τ²·KL(q ‖ softmax(z/τ))   →  ∂/∂z = τ·(softmax(z/τ) − q)     (q: the teacher's distribution)
//! log softmax(z)[y]         →  ∂/∂z = onehot(y) − softmax(z)
//! ```
//!
//! so the chunk's share of the gradients of the hidden states, `G_h = (∂L/∂z) W`, and of the head,
//! `G_W = (∂L/∂z)ᵀ h`, is summed on the spot. Autodiff receives them through a linear surrogate
//! `S = Σ h ⊙ G_h + Σ W ⊙ G_W`, whose gradients are exactly `G_h` and `G_W`: the returned tensor
//! is `L + (S − S.detach())`, the loss's value with S's gradient. It is exact, needs no custom
//! backward and runs on every backend. The loss must reach the objective linearly (summed or
//! scaled, as every stage does), since its gradient is fixed when it is made.

use std::ops::Range;

use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;
use burn::tensor::activation::{log_softmax, sigmoid};

use super::dpo::{DpoLoss, dpo_loss};

/// Hidden states of N positions `[N, C]` and the head `[V, C]` that makes their logits `h Wᵀ`.
#[derive(Clone, Debug)]
pub struct HeadInput {
    /// `[N, C]`, with the model's gradient when it is being trained.
    pub hidden: Tensor<2>,
    /// `[V, C]` (the embeddings of a tied model); its gradient is formed only when it needs one.
    pub weight: Tensor<2>,
}

impl HeadInput {
    /// Folds hidden states `[B, T, C]` into rows `[B·T, C]`.
    pub fn new(hidden: Tensor<3>, weight: Tensor<2>) -> Self {
        let [b, t, c] = hidden.dims();
        Self {
            hidden: crate::precision::f32(hidden.reshape([b * t, c])),
            weight: crate::precision::f32(weight),
        }
    }

    fn rows(&self) -> usize {
        self.hidden.dims()[0]
    }

    /// The logits `[n, V]` of `rows`, as a constant.
    fn logits(&self, rows: Range<usize>) -> Tensor<2> {
        let c = self.hidden.dims()[1];
        constant(self.hidden.clone())
            .slice([rows, 0..c])
            .matmul(constant(self.weight.clone()).transpose())
    }
}

/// `t` as a constant off the autodiff graph, on the backend under it. Chunks computed from
/// merely detached tensors stayed resident one after another (measured: a stage-2 step at a
/// 151,936-token vocabulary peaked higher chunked than whole); on the inner backend each chunk's
/// logits are freed before the next.
fn constant<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    t.detach().without_autodiff()
}

/// The chunks of `0..n`, `chunk` rows each (the last one shorter).
fn chunks(n: usize, chunk: usize) -> impl Iterator<Item = Range<usize>> {
    let chunk = chunk.max(1);
    (0..n).step_by(chunk).map(move |s| s..(s + chunk).min(n))
}

/// Sums `∂L/∂z` of every chunk into the gradients of the hidden states and of the head, and
/// returns `S − S.detach()`: zero, with those gradients (a loss's value is added to it).
fn head_gradients(
    input: &HeadInput,
    chunk: usize,
    mut grad_of_logits: impl FnMut(Range<usize>, Tensor<2>) -> Tensor<2>,
) -> Tensor<1> {
    let weight = constant(input.weight.clone());
    let head_trained = input.weight.is_require_grad();
    let mut grad_hidden = Vec::new();
    let mut grad_weight: Option<Tensor<2>> = None;
    let c = input.hidden.dims()[1];
    for rows in chunks(input.rows(), chunk) {
        let g = grad_of_logits(rows.clone(), input.logits(rows.clone()));
        grad_hidden.push(g.clone().matmul(weight.clone()));
        if head_trained {
            let h = constant(input.hidden.clone()).slice([rows, 0..c]);
            let gw = g.transpose().matmul(h);
            grad_weight = Some(match grad_weight {
                None => gw,
                Some(acc) => acc + gw,
            });
        }
    }
    let mut surrogate = (input.hidden.clone() * Tensor::cat(grad_hidden, 0)).sum();
    if let Some(gw) = grad_weight {
        surrogate = surrogate + (input.weight.clone() * gw).sum();
    }
    surrogate.clone() - surrogate.detach()
}

/// Each position's next-token id and its weight, `[B, T]` → `[B·T]`: position t scores `ids[t + 1]`
/// with weight `mask[t + 1]`; the last position of a row scores nothing.
pub fn next_token_targets(ids: Tensor<2, Int>, mask: Tensor<2>) -> (Tensor<1, Int>, Tensor<1>) {
    let [b, t] = ids.dims();
    let device = ids.device();
    let ids = Tensor::cat(
        vec![ids.slice([0..b, 1..t]), Tensor::zeros([b, 1], &device)],
        1,
    );
    let mask = Tensor::cat(
        vec![mask.slice([0..b, 1..t]), Tensor::zeros([b, 1], &device)],
        1,
    );
    (ids.reshape([b * t]), mask.reshape([b * t]))
}

/// `[n, V]` rows that are one at `ids` `[n]` and zero elsewhere.
fn one_hot(ids: Tensor<1, Int>, v: usize) -> Tensor<2> {
    let [n] = ids.dims();
    let device = ids.device();
    Tensor::zeros([n, v], &device).scatter(
        1,
        ids.reshape([n, 1]),
        Tensor::ones([n, 1], &device),
        IndexingUpdateOp::Add,
    )
}

/// A weighted next-token cross-entropy term: targets and weights `[N]` (from
/// [`next_token_targets`]), divided by the weights' sum, times `scale`.
#[derive(Clone, Debug)]
pub struct CrossEntropyTerm {
    /// Target id of each position.
    pub targets: Tensor<1, Int>,
    /// Weight of each position (0: not a target).
    pub weights: Tensor<1>,
    /// Factor on the mean.
    pub scale: f64,
}

impl CrossEntropyTerm {
    fn denominator(&self) -> Tensor<1> {
        constant(self.weights.clone()).sum() + 1e-6
    }

    /// Adds this term's loss sum over `rows` (logits `z`) to `sum`, and returns its `∂/∂z`.
    fn chunk(&self, rows: Range<usize>, z: Tensor<2>, denominator: &Tensor<1>) -> Chunk {
        let [n, v] = z.dims();
        let targets = self.targets.clone().without_autodiff().slice(rows.clone());
        let w = constant(self.weights.clone()).slice(rows).reshape([n, 1]);
        let log_p = log_softmax(z, 1);
        let nll = log_p
            .clone()
            .gather(1, targets.clone().reshape([n, 1]))
            .neg();
        let sum = (nll * w.clone()).sum();
        let grad = (log_p.exp() - one_hot(targets, v))
            * (w / denominator.clone().reshape([1, 1]) * self.scale);
        Chunk { sum, grad }
    }
}

/// One chunk's contribution: its loss sum and `∂L/∂z`.
struct Chunk {
    sum: Tensor<1>,
    grad: Tensor<2>,
}

/// Mean next-token cross-entropy over [`CrossEntropyTerm`]'s weights, chunk by chunk; equals
/// `loss::next_token_cross_entropy` in value and gradient.
pub fn next_token_cross_entropy_chunked(
    student: &HeadInput,
    term: CrossEntropyTerm,
    chunk: usize,
) -> Tensor<1> {
    let denominator = term.denominator();
    let mut sum = Tensor::zeros([1], &denominator.device());
    let gradients = head_gradients(student, chunk, |rows, z| {
        let c = term.chunk(rows, z, &denominator);
        sum = sum.clone() + c.sum;
        c.grad
    });
    gradients + sum / denominator * term.scale
}

/// Stage 2 chunk by chunk: forward KL(teacher ‖ student) at temperature τ (over the teacher's top
/// k tokens when given), averaged over `mask` `[N]` and scaled by τ², plus an optional
/// cross-entropy term. Returns the loss and the KL part's value; equals `loss::kl_divergence`
/// (or `kl_divergence_top_k`) plus `next_token_cross_entropy` in value and gradient.
pub fn stage2_loss_chunked(
    teacher: &HeadInput,
    student: &HeadInput,
    mask: Tensor<1>,
    temperature: f64,
    top_k: Option<usize>,
    cross_entropy: Option<CrossEntropyTerm>,
    chunk: usize,
) -> (Tensor<1>, f64) {
    let mask = constant(mask);
    let device = mask.device();
    let tau = temperature;
    let v = student.weight.dims()[0];
    let kl_denominator = mask.clone().sum() + 1e-6;
    let ce_denominator = cross_entropy.as_ref().map(CrossEntropyTerm::denominator);
    let mut kl_sum = Tensor::zeros([1], &device);
    let mut ce_sum = Tensor::zeros([1], &device);
    let gradients = head_gradients(student, chunk, |rows, z| {
        let n = rows.len();
        let zt = teacher.logits(rows.clone()).slice([0..n, 0..v]);
        let log_ps = log_softmax(z.clone() / tau, 1);
        // q: the teacher's distribution on the full vocabulary (zero off its top k).
        let (q, kl_rows) = match top_k {
            None => {
                let log_q = log_softmax(zt / tau, 1);
                let q = log_q.clone().exp();
                let kl = (q.clone() * (log_q - log_ps.clone())).sum_dim(1);
                (q, kl)
            }
            Some(k) => {
                let (values, indices) = zt.topk_with_indices(k.clamp(1, v), 1);
                let log_q = log_softmax(values / tau, 1);
                let q_top = log_q.clone().exp();
                let kl = (q_top.clone() * (log_q - log_ps.clone().gather(1, indices.clone())))
                    .sum_dim(1);
                let q = Tensor::zeros([n, v], &z.device()).scatter(
                    1,
                    indices,
                    q_top,
                    IndexingUpdateOp::Add,
                );
                (q, kl)
            }
        };
        let m = mask.clone().slice(rows.clone()).reshape([n, 1]);
        kl_sum = kl_sum.clone() + (kl_rows * m.clone()).sum();
        let mut grad = (log_ps.exp() - q) * (m / kl_denominator.clone().reshape([1, 1]) * tau);
        if let (Some(term), Some(d)) = (&cross_entropy, &ce_denominator) {
            let c = term.chunk(rows, z, d);
            ce_sum = ce_sum.clone() + c.sum;
            grad = grad + c.grad;
        }
        grad
    });
    let kl = kl_sum / kl_denominator * (tau * tau);
    let kl_value = kl.clone().into_scalar::<f64>();
    let mut value = kl;
    if let (Some(term), Some(d)) = (&cross_entropy, ce_denominator) {
        value = value + ce_sum / d * term.scale;
    }
    (gradients + value, kl_value)
}

/// Summed log-probability of each row's target tokens, without a gradient: `ids` and
/// `target_mask` `[R, T]` as `dpo::sequence_logprobs` (logits at t score `ids[t + 1]`, counted
/// where `target_mask[t + 1]` is 1), the hidden states of the same `R·T` positions. Returns `[R]`.
pub fn sequence_logprobs_chunked(
    input: &HeadInput,
    ids: Tensor<2, Int>,
    target_mask: Tensor<2>,
    chunk: usize,
) -> Tensor<1> {
    let [r, t] = ids.dims();
    let (targets, weights) = next_token_targets(ids.without_autodiff(), constant(target_mask));
    let per_position: Vec<Tensor<1>> = chunks(input.rows(), chunk)
        .map(|rows| {
            let n = rows.len();
            let log_p = log_softmax(input.logits(rows.clone()), 1);
            log_p
                .gather(1, targets.clone().slice(rows).reshape([n, 1]))
                .reshape([n])
        })
        .collect();
    (Tensor::cat(per_position, 0) * weights)
        .reshape([r, t])
        .sum_dim(1)
        .reshape([r])
}

/// DPO chunk by chunk: the policy's sequence log-probabilities in a first pass, the loss's
/// gradient with respect to each of them in closed form
/// (`∂ℓ/∂z = ε·σ(z) − (1 − ε)·σ(−z)` at `z = βΔ`), and a second pass that turns it into the
/// policy's gradient. Equals `dpo::dpo_loss` over `dpo::sequence_logprobs` in value and gradient.
pub fn dpo_loss_chunked(
    policy: &HeadInput,
    reference: Tensor<1>,
    ids: Tensor<2, Int>,
    target_mask: Tensor<2>,
    beta: f64,
    label_smoothing: f64,
    chunk: usize,
) -> DpoLoss {
    let values = sequence_logprobs_chunked(policy, ids.clone(), target_mask.clone(), chunk);
    let measured = dpo_loss(values.clone(), reference.clone(), beta, label_smoothing);
    let [rows] = values.dims();
    let pairs = rows / 2;
    let ratio = values - constant(reference);
    let z = (ratio.clone().slice(0..pairs) - ratio.slice(pairs..rows)) * beta;
    let dz = (sigmoid(z.clone()) * label_smoothing - sigmoid(z.neg()) * (1.0 - label_smoothing))
        / pairs.max(1) as f64
        * beta;
    // ∂ℓ/∂log π of each row (chosen +, rejected −), then of each of its target positions.
    let per_row = Tensor::cat(vec![dz.clone(), dz.neg()], 0);
    let [_, t] = ids.dims();
    let (targets, weights) = next_token_targets(ids.without_autodiff(), constant(target_mask));
    let per_position = per_row
        .reshape([rows, 1])
        .repeat_dim(1, t)
        .reshape([rows * t])
        * weights;
    let gradients = head_gradients(policy, chunk, |range, z| {
        let [n, v] = z.dims();
        let g = per_position.clone().slice(range.clone()).reshape([n, 1]);
        (one_hot(targets.clone().slice(range), v) - log_softmax(z, 1).exp()) * g
    });
    let loss = gradients + measured.loss.clone();
    DpoLoss { loss, ..measured }
}
