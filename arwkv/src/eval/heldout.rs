//! Perplexity on held-out text, and teacher–student agreement on it: forward KL(teacher ‖ student),
//! top-1 agreement (both argmaxes equal) and top-k agreement (the teacher's argmax is among the
//! student's k most likely tokens), over non-overlapping windows of the context length.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::Serialize;

use crate::error::{Error, Result};

/// Logits `[B, T, V]` of ids `[B, T]`, one parallel forward (any teacher or student).
pub type Forward<'a> = &'a dyn Fn(Tensor<2, Int>) -> Result<Tensor<3>>;

/// Held-out numbers of one teacher/student pair.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HeldoutReport {
    /// Tokens scored (next-token predictions).
    pub tokens: usize,
    /// exp(mean next-token CE) of the teacher.
    pub teacher_perplexity: f64,
    /// exp(mean next-token CE) of the student.
    pub student_perplexity: f64,
    /// student / teacher perplexity.
    pub perplexity_ratio: f64,
    /// Mean KL(p_teacher ‖ p_student) per position (nats).
    pub mean_kl: f64,
    /// Fraction of positions where both models' most likely token agree.
    pub top1_agreement: f64,
    /// k of the top-k agreement.
    pub top_k: usize,
    /// Fraction of positions where the teacher's most likely token is in the student's top k.
    pub topk_agreement: f64,
    /// Teacher tokens per second (forward).
    pub teacher_tokens_per_s: f64,
    /// Student tokens per second (forward).
    pub student_tokens_per_s: f64,
}

/// Perplexity of one model.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PerplexityReport {
    /// Tokens scored.
    pub tokens: usize,
    /// exp(mean next-token CE).
    pub perplexity: f64,
    /// Forward tokens per second.
    pub tokens_per_s: f64,
}

fn host(t: Tensor<1>) -> f64 {
    t.into_scalar::<f64>()
}

/// `ids` cut into windows of `context`, grouped `batch` windows at a time, as `[b, context]` tensors.
fn window_batches(
    ids: &[u32],
    context: usize,
    batch: usize,
    device: &Device,
) -> Result<Vec<Tensor<2, Int>>> {
    if context < 2 || batch == 0 {
        return Err(Error::Setting {
            scope: "evaluation".into(),
            key: "context".into(),
            message: "≥ 2 and batch ≥ 1 needed".into(),
        });
    }
    let windows: Vec<&[u32]> = ids.chunks_exact(context).collect();
    if windows.is_empty() {
        return Err(Error::Data {
            source_name: "evaluation".into(),
            message: format!(
                "{} held-out tokens are fewer than one window of {context}",
                ids.len()
            ),
        });
    }
    Ok(windows
        .chunks(batch)
        .map(|group| {
            let data: Vec<i64> = group
                .iter()
                .flat_map(|w| w.iter().map(|&x| x as i64))
                .collect();
            Tensor::<2, Int>::from_data(TensorData::new(data, [group.len(), context]), device)
        })
        .collect())
}

/// Runs `forward` and waits for the result (so the time is the compute time).
fn timed(forward: Forward, x: Tensor<2, Int>, clock: &mut f64) -> Result<Tensor<3>> {
    let t0 = Instant::now();
    let logits = forward(x)?;
    let _ = logits.clone().slice([0..1, 0..1, 0..1]).into_data();
    *clock += t0.elapsed().as_secs_f64();
    Ok(logits)
}

/// Next-token log-probabilities `[b, T-1, v]` (in f32, whatever the model computes in) and targets
/// `[b, T-1, 1]` of one window batch.
fn shifted(logits: Tensor<3>, x: &Tensor<2, Int>, v: usize) -> (Tensor<3>, Tensor<3, Int>) {
    let [b, t] = x.dims();
    let logits = crate::precision::f32(logits);
    let log_p = log_softmax(logits.slice([0..b, 0..t - 1, 0..v]), 2);
    let targets = x.clone().slice([0..b, 1..t]).reshape([b, t - 1, 1]);
    (log_p, targets)
}

/// Perplexity of `forward` on `ids` in windows of `context`, `batch` windows at a time.
pub fn perplexity(
    forward: Forward,
    ids: &[u32],
    context: usize,
    batch: usize,
    device: &Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<PerplexityReport> {
    let batches = window_batches(ids, context, batch, device)?;
    let (mut ce, mut n, mut clock) = (0.0, 0usize, 0.0);
    for (i, x) in batches.iter().enumerate() {
        let logits = timed(forward, x.clone(), &mut clock)?;
        let v = logits.dims()[2];
        let (log_p, targets) = shifted(logits, x, v);
        ce -= host(log_p.gather(2, targets).sum());
        n += x.dims()[0] * (context - 1);
        progress(i + 1, batches.len());
    }
    Ok(PerplexityReport {
        tokens: n,
        perplexity: (ce / n as f64).exp(),
        tokens_per_s: (n as f64) / clock.max(1e-9),
    })
}

/// Scores `ids` with teacher and student in windows of `context` tokens, `batch` windows at a
/// time; vocabularies are compared on their common prefix (`docs/METHOD.md` §6: the teacher's is cut).
pub fn compare_on_heldout(
    teacher: Forward,
    student: Forward,
    ids: &[u32],
    context: usize,
    batch: usize,
    top_k: usize,
    device: &Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<HeldoutReport> {
    let batches = window_batches(ids, context, batch, device)?;
    let top_k = top_k.max(1);
    let (mut ce_t, mut ce_s, mut kl, mut agree, mut agree_k, mut n) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0usize);
    let (mut time_t, mut time_s) = (0.0, 0.0);
    for (i, x) in batches.iter().enumerate() {
        let lt = timed(teacher, x.clone(), &mut time_t)?;
        let ls = timed(student, x.clone(), &mut time_s)?;
        let v = ls.dims()[2].min(lt.dims()[2]);
        let (log_pt, targets) = shifted(lt, x, v);
        let (log_ps, _) = shifted(ls, x, v);
        ce_t -= host(log_pt.clone().gather(2, targets.clone()).sum());
        ce_s -= host(log_ps.clone().gather(2, targets).sum());
        kl += host((log_pt.clone().exp() * (log_pt.clone() - log_ps.clone())).sum());
        let teacher_best = log_pt.argmax(2);
        let student_best = log_ps.clone().argmax(2);
        agree += teacher_best
            .clone()
            .equal(student_best)
            .int()
            .sum()
            .into_scalar::<i64>() as f64;
        // Rank of the teacher's choice under the student: how many tokens the student prefers.
        let at_teacher_best = log_ps.clone().gather(2, teacher_best);
        let preferred = log_ps.greater(at_teacher_best).int().sum_dim(2);
        agree_k += preferred
            .lower_elem(top_k as i64)
            .int()
            .sum()
            .into_scalar::<i64>() as f64;
        n += x.dims()[0] * (context - 1);
        progress(i + 1, batches.len());
    }
    let nf = n as f64;
    let (pt, ps) = ((ce_t / nf).exp(), (ce_s / nf).exp());
    Ok(HeldoutReport {
        tokens: n,
        teacher_perplexity: pt,
        student_perplexity: ps,
        perplexity_ratio: ps / pt,
        mean_kl: kl / nf,
        top1_agreement: agree / nf,
        top_k,
        topk_agreement: agree_k / nf,
        teacher_tokens_per_s: nf / time_t.max(1e-9),
        student_tokens_per_s: nf / time_s.max(1e-9),
    })
}
