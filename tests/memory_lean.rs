//! Memory for time, with the same numbers. The chunked head losses (`arwkv::distill::chunked_loss`)
//! against the plain ones of `distill::loss` and `distill::dpo`: the same value and the same
//! gradient for every parameter of the student (tied and untied heads, a frozen head, padded rows,
//! chunks that do not divide the batch), on the CPU in f32. And activation checkpointing (the
//! autodiff device's gradient checkpointing): the same loss and gradients.

use arwkv::distill::chunked_loss::{
    CrossEntropyTerm, HeadInput, dpo_loss_chunked, next_token_cross_entropy_chunked,
    next_token_targets, sequence_logprobs_chunked, stage2_loss_chunked,
};
use arwkv::distill::dpo::{dpo_loss, sequence_logprobs};
use arwkv::distill::loss::{kl_divergence, kl_divergence_top_k, next_token_cross_entropy};
use arwkv::student::{ArwkvForCausalLM, StudentOptions};
use arwkv::teacher::Qwen2ForCausalLM;
use arwkv_tests::{fixture_teacher as teacher, parameter_gradients, spread_ids as ids};
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Gradients;

/// Largest relative difference allowed between the chunked gradient and the plain one, as
/// ‖chunked − plain‖ / ‖plain‖ over all parameters together. Both are f32 computations of the
/// same formula in another order; the differences are rounding (the same with one chunk as
/// with many).
const GRADIENT_TOLERANCE: f64 = 1e-6;
/// The same for each parameter alone: a deep parameter with a small gradient shows the rounding
/// of the layers above it (worst seen: 1.1e-6, with one chunk as with many).
const PARAMETER_TOLERANCE: f64 = 1e-5;
/// The same for the loss value.
const VALUE_TOLERANCE: f64 = 1e-6;

fn student(teacher: &Qwen2ForCausalLM, untie_head: bool) -> ArwkvForCausalLM {
    let options = StudentOptions {
        untie_head,
        ..Default::default()
    };
    ArwkvForCausalLM::from_teacher(teacher, &options).unwrap()
}

/// Row 0 whole, row 1 padded after `real` tokens.
fn mask(len: usize, real: usize, device: &Device) -> Tensor<2> {
    let data: Vec<f32> = (0..2 * len)
        .map(|i| if i < len || i - len < real { 1.0 } else { 0.0 })
        .collect();
    Tensor::from_data(TensorData::new(data, [2, len]), device)
}

/// Every parameter's gradient with its id, in the model's order.
fn gradients(model: &ArwkvForCausalLM, grads: &Gradients) -> Vec<(String, Vec<f32>)> {
    parameter_gradients(model, grads)
        .into_iter()
        .map(|(id, _, values)| (id, values))
        .collect()
}

fn scalar(t: &Tensor<1>) -> f64 {
    t.clone().into_scalar::<f64>()
}

/// The chunked and the plain loss agree in value and in every parameter's gradient (each made
/// from its own forward pass: a graph is consumed by its backward).
fn assert_same(
    what: &str,
    model: &ArwkvForCausalLM,
    chunked: impl FnOnce() -> Tensor<1>,
    plain: impl FnOnce() -> Tensor<1>,
) -> usize {
    let (chunked, plain) = (chunked(), plain());
    let (a, b) = (scalar(&chunked), scalar(&plain));
    assert!(
        (a - b).abs() <= VALUE_TOLERANCE * b.abs().max(1.0),
        "{what}: loss {a} vs {b}"
    );
    let ga = gradients(model, &chunked.backward());
    let gb = gradients(model, &plain.backward());
    let ids = |g: &[(String, Vec<f32>)]| g.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&ga),
        ids(&gb),
        "{what}: the same parameters get gradients"
    );
    let (mut diff_all, mut norm_all) = (0.0, 0.0);
    for ((id, plain), (_, chunked)) in gb.iter().zip(&ga) {
        let diff: f64 = chunked
            .iter()
            .zip(plain)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum();
        let norm: f64 = plain.iter().map(|y| (*y as f64).powi(2)).sum();
        assert!(
            diff.sqrt() <= PARAMETER_TOLERANCE * norm.sqrt().max(1e-12),
            "{what}: parameter {id}: ‖Δ‖ {:e} vs ‖g‖ {:e}",
            diff.sqrt(),
            norm.sqrt()
        );
        (diff_all, norm_all) = (diff_all + diff, norm_all + norm);
    }
    let relative = (diff_all / norm_all).sqrt();
    assert!(
        relative <= GRADIENT_TOLERANCE,
        "{what}: the gradients differ by {relative:e} relative"
    );
    gb.len()
}

#[test]
fn stage2_kl_and_cross_entropy_over_chunks_equal_the_full_logits() {
    let device = Device::flex().autodiff();
    let teacher = teacher(&device);
    let v = teacher.config.vocab_size;
    let (b, t) = (2, 9);
    let ids = ids(b, t, v, &device);
    let mask = mask(t, 6, &device);
    let t_hidden = teacher.hidden_states(ids.clone(), None).unwrap().detach();
    let t_logits = teacher.project(t_hidden.clone()).detach();
    for untie_head in [false, true] {
        let student = student(&teacher, untie_head);
        for (top_k, ce_weight, tau, chunk) in [
            (None, 0.0, 1.0, 5),
            (None, 0.5, 2.0, 4),
            (Some(7), 0.0, 1.5, 7),
            (Some(3), 0.25, 1.0, 1),
            (None, 0.0, 1.0, 64),
        ] {
            let what = format!(
                "untied {untie_head}, top-k {top_k:?}, ce {ce_weight}, τ {tau}, chunk {chunk}"
            );
            let hidden = || {
                student
                    .hidden_states_masked(ids.clone(), None, Some(&mask))
                    .unwrap()
            };
            let plain = || {
                let logits = student.project(hidden());
                let kl = match top_k {
                    None => kl_divergence(t_logits.clone(), logits.clone(), mask.clone(), tau),
                    Some(k) => {
                        kl_divergence_top_k(t_logits.clone(), logits.clone(), mask.clone(), tau, k)
                    }
                };
                let kl_value = scalar(&kl);
                let ce = next_token_cross_entropy(logits, ids.clone(), mask.clone());
                (kl + ce * ce_weight, kl_value)
            };
            let chunked = || {
                let ce = (ce_weight > 0.0).then(|| {
                    let (targets, weights) = next_token_targets(ids.clone(), mask.clone());
                    CrossEntropyTerm {
                        targets,
                        weights,
                        scale: ce_weight,
                    }
                });
                stage2_loss_chunked(
                    &HeadInput::new(t_hidden.clone(), teacher.head_weight().detach()),
                    &HeadInput::new(hidden(), student.head_weight()),
                    mask.clone().reshape([b * t]),
                    tau,
                    top_k,
                    ce,
                    chunk,
                )
            };
            let (kl, plain_kl) = (chunked().1, plain().1);
            assert!((kl - plain_kl).abs() <= VALUE_TOLERANCE, "{what}: KL part");
            let counted = assert_same(&what, &student, || chunked().0, || plain().0);
            assert!(counted > 10, "{what}: every trained parameter compared");
        }
    }
}

#[test]
fn sft_cross_entropy_over_chunks_equals_the_full_logits_also_with_a_frozen_head() {
    let device = Device::flex().autodiff();
    let teacher = teacher(&device);
    let v = teacher.config.vocab_size;
    let (b, t) = (2, 11);
    let ids = ids(b, t, v, &device);
    // Targets: a span of each row, as an assistant turn.
    let targets = Tensor::<2>::from_data(
        TensorData::new(
            (0..b * t)
                .map(|i| {
                    if (4..9).contains(&(i % t)) {
                        1.0f32
                    } else {
                        0.0
                    }
                })
                .collect::<Vec<_>>(),
            [b, t],
        ),
        &device,
    );
    for (untie_head, frozen_head) in [(false, false), (true, false), (true, true)] {
        let mut student = student(&teacher, untie_head);
        if frozen_head {
            student.lm_head = student.lm_head.map(|h| h.no_grad());
        }
        for chunk in [3, 22, 100] {
            let what = format!("untied {untie_head}, frozen head {frozen_head}, chunk {chunk}");
            let hidden = || student.hidden_states(ids.clone(), None).unwrap();
            let plain = || {
                next_token_cross_entropy(student.project(hidden()), ids.clone(), targets.clone())
            };
            let chunked = || {
                let (target_ids, weights) = next_token_targets(ids.clone(), targets.clone());
                let term = CrossEntropyTerm {
                    targets: target_ids,
                    weights,
                    scale: 1.0,
                };
                next_token_cross_entropy_chunked(
                    &HeadInput::new(hidden(), student.head_weight()),
                    term,
                    chunk,
                )
            };
            assert_same(&what, &student, chunked, plain);
        }
    }
}

#[test]
fn dpo_over_chunks_equals_the_full_logits() {
    let device = Device::flex().autodiff();
    let teacher = teacher(&device);
    let v = teacher.config.vocab_size;
    // Two pairs: rows 0–1 chosen, rows 2–3 rejected.
    let (rows, t) = (4, 8);
    let ids = ids(rows, t, v, &device);
    let targets = Tensor::<2>::from_data(
        TensorData::new(
            (0..rows * t)
                .map(|i| {
                    if i % t >= 3 + (i / t) % 2 {
                        1.0f32
                    } else {
                        0.0
                    }
                })
                .collect::<Vec<_>>(),
            [rows, t],
        ),
        &device,
    );
    let reference = student(&teacher, false);
    let ref_logps = sequence_logprobs(
        reference.forward(ids.clone(), None).unwrap(),
        ids.clone(),
        targets.clone(),
    )
    .detach();
    for untie_head in [false, true] {
        let mut policy = student(&teacher, untie_head);
        // Move the policy away from the reference so that Δ ≠ 0.
        policy.model.norm.weight = Param::from_tensor(
            (policy.model.norm.weight.val() * 1.1)
                .detach()
                .require_grad(),
        );
        for (beta, smoothing, chunk) in [(0.1, 0.1, 5), (0.5, 0.0, 32), (0.1, 0.2, 1)] {
            let what = format!("untied {untie_head}, β {beta}, ε {smoothing}, chunk {chunk}");
            let head = || {
                let hidden = policy.hidden_states(ids.clone(), None).unwrap();
                HeadInput::new(hidden, policy.head_weight())
            };
            let plain_values = || {
                let hidden = policy.hidden_states(ids.clone(), None).unwrap();
                sequence_logprobs(policy.project(hidden), ids.clone(), targets.clone())
            };
            let values = sequence_logprobs_chunked(&head(), ids.clone(), targets.clone(), chunk);
            let diff = (values - plain_values().detach())
                .abs()
                .max()
                .into_scalar::<f64>();
            assert!(
                diff <= 1e-4,
                "{what}: sequence log-probabilities differ by {diff}"
            );
            let plain = || dpo_loss(plain_values(), ref_logps.clone(), beta, smoothing);
            let chunked = || {
                dpo_loss_chunked(
                    &head(),
                    ref_logps.clone(),
                    ids.clone(),
                    targets.clone(),
                    beta,
                    smoothing,
                    chunk,
                )
            };
            let (c, p) = (chunked(), plain());
            assert_eq!(c.accuracy, p.accuracy, "{what}");
            assert!((c.margin - p.margin).abs() < 1e-6, "{what}");
            assert_same(&what, &policy, || chunked().loss, || plain().loss);
        }
    }
}

#[test]
fn activation_checkpointing_keeps_the_loss_and_the_gradients() {
    let plain_device = Device::flex().autodiff();
    let checkpointed_device = Device::flex().autodiff().gradient_checkpointing();
    let loss_of = |device: &Device| {
        let teacher = teacher(device);
        let student = student(&teacher, false);
        let v = teacher.config.vocab_size;
        let ids = ids(2, 9, v, device);
        let mask = mask(9, 6, device);
        let t_logits = teacher.forward(ids.clone(), None).unwrap().detach();
        let logits = student.forward_masked(ids.clone(), &mask).unwrap();
        let loss = kl_divergence(t_logits, logits.clone(), mask.clone(), 1.0)
            + next_token_cross_entropy(logits, ids, mask) * 0.5;
        let grads = gradients(&student, &loss.backward());
        (scalar(&loss), grads)
    };
    let (plain, plain_grads) = loss_of(&plain_device);
    let (checkpointed, checkpointed_grads) = loss_of(&checkpointed_device);
    assert_eq!(plain, checkpointed, "the same loss");
    assert_eq!(plain_grads.len(), checkpointed_grads.len());
    assert!(plain_grads.len() > 10, "every trained parameter compared");
    // Two models, so two sets of parameter ids: compared in the models' order, bit for bit.
    for ((_, a), (_, b)) in plain_grads.iter().zip(&checkpointed_grads) {
        assert!(a == b, "the same gradients");
    }
}
