//! Multiple-choice scoring by log-likelihood: every option's continuation is scored after its
//! context; `acc` takes the option with the highest summed log-probability, `acc_norm` the highest
//! per byte of continuation (lm-evaluation-harness's definitions).

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use super::heldout::Forward;
use super::task::ChoiceItem;
use crate::error::{Error, Result};
use crate::tokenizer::TextTokenizer;

/// A context and a continuation, tokenised as the harness does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Context tokens (at least one).
    pub context: Vec<u32>,
    /// Continuation tokens, the ones scored.
    pub continuation: Vec<u32>,
}

/// Tokenises a pair: trailing spaces of the context move to the continuation, the whole string is
/// encoded and the continuation is what follows the context's own encoding.
pub fn encode_pair(
    tokenizer: &TextTokenizer,
    context: &str,
    continuation: &str,
) -> Result<Request> {
    let trimmed = context.trim_end_matches(' ');
    let moved = &context[trimmed.len()..];
    let continuation = format!("{moved}{continuation}");
    let whole = tokenizer.encode(&format!("{trimmed}{continuation}"), false)?;
    let ctx = tokenizer.encode(trimmed, false)?;
    let split = if whole.starts_with(&ctx) {
        ctx.len()
    } else {
        // The boundary merged into one token: score from the first token that differs.
        whole.iter().zip(&ctx).take_while(|(a, b)| a == b).count()
    };
    if split == 0 {
        return Err(Error::Invalid(format!(
            "an empty context cannot be scored (continuation {continuation:?})"
        )));
    }
    if split == whole.len() {
        return Err(Error::Invalid(format!(
            "the continuation {continuation:?} has no tokens"
        )));
    }
    Ok(Request {
        context: whole[..split].to_vec(),
        continuation: whole[split..].to_vec(),
    })
}

/// Summed log-probability of every request's continuation, `batch` requests per forward, inputs
/// left-truncated to `max_len` tokens. Returns the scores in request order and tokens per second.
pub fn loglikelihoods(
    forward: Forward,
    requests: &[Request],
    batch: usize,
    max_len: usize,
    device: &Device,
    mut progress: impl FnMut(usize),
) -> Result<(Vec<f64>, f64)> {
    let mut order: Vec<usize> = (0..requests.len()).collect();
    let input_len = |r: &Request| (r.context.len() + r.continuation.len() - 1).min(max_len);
    order.sort_by_key(|&i| std::cmp::Reverse(input_len(&requests[i])));
    let mut scores = vec![0.0; requests.len()];
    let (mut tokens, mut clock) = (0usize, 0.0);
    for group in order.chunks(batch.max(1)) {
        let width = input_len(&requests[group[0]]);
        let mut data = Vec::with_capacity(group.len() * width);
        let mut spans = vec![];
        for &i in group {
            let r = &requests[i];
            if r.continuation.len() > max_len {
                return Err(Error::Invalid(format!(
                    "a continuation of {} tokens does not fit the {max_len}-token window",
                    r.continuation.len()
                )));
            }
            let whole: Vec<u32> = r.context.iter().chain(&r.continuation).copied().collect();
            let input = &whole[whole.len() - 1 - input_len(r)..whole.len() - 1];
            let first = input.len() - r.continuation.len();
            spans.push((first, r.continuation.clone()));
            data.extend(input.iter().map(|&x| x as i64));
            // Right padding: a causal model's earlier positions never see it.
            data.extend(std::iter::repeat_n(0i64, width - input.len()));
            tokens += input.len();
        }
        let x = Tensor::<2, Int>::from_data(TensorData::new(data, [group.len(), width]), device);
        let t0 = Instant::now();
        let logits = forward(x)?;
        let v = logits.dims()[2];
        for (row, (&i, (first, cont))) in group.iter().zip(&spans).enumerate() {
            let n = cont.len();
            let rows = logits
                .clone()
                .slice([row..row + 1, *first..first + n, 0..v]);
            let targets = Tensor::<3, Int>::from_data(
                TensorData::new(cont.iter().map(|&c| c as i64).collect(), [1, n, 1]),
                device,
            );
            scores[i] = log_softmax(crate::precision::f32(rows), 2)
                .gather(2, targets)
                .sum()
                .into_scalar::<f64>();
        }
        clock += t0.elapsed().as_secs_f64();
        progress(group.len());
    }
    Ok((scores, tokens as f64 / clock.max(1e-9)))
}

/// `acc` and `acc_norm` from per-option log-likelihoods (`logliks[item][option]`); ties go to
/// the first option.
pub fn choice_accuracy(items: &[ChoiceItem], logliks: &[Vec<f64>]) -> (f64, f64) {
    let best = |xs: &[f64]| {
        xs.iter()
            .enumerate()
            .fold((0, f64::NEG_INFINITY), |(bi, bx), (i, &x)| {
                if x > bx { (i, x) } else { (bi, bx) }
            })
            .0
    };
    let (mut acc, mut acc_norm) = (0.0, 0.0);
    for (item, ll) in items.iter().zip(logliks) {
        let per_byte: Vec<f64> = item
            .options
            .iter()
            .zip(ll)
            .map(|((_, cont), l)| l / cont.len().max(1) as f64)
            .collect();
        acc += f64::from(best(ll) == item.gold);
        acc_norm += f64::from(best(&per_byte) == item.gold);
    }
    let n = items.len().max(1) as f64;
    (acc / n, acc_norm / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(conts: &[&str], gold: usize) -> ChoiceItem {
        ChoiceItem {
            options: conts
                .iter()
                .map(|c| ("Q:".to_string(), c.to_string()))
                .collect(),
            gold,
        }
    }

    #[test]
    fn acc_and_acc_norm_follow_the_harness_definitions() {
        // Item 1: " no" (-2.0, 3 bytes → -0.667/byte) beats " certainly" (-4.0, 10 bytes → -0.4)
        // on acc but loses on acc_norm. Item 2: gold wins both. Item 3: gold loses both.
        let items = [
            item(&[" no", " certainly"], 1),
            item(&[" a", " b"], 0),
            item(&[" a", " b"], 0),
        ];
        let ll = [vec![-2.0, -4.0], vec![-1.0, -3.0], vec![-3.0, -1.0]];
        let (acc, acc_norm) = choice_accuracy(&items, &ll);
        assert!((acc - 1.0 / 3.0).abs() < 1e-12, "{acc}");
        assert!((acc_norm - 2.0 / 3.0).abs() < 1e-12, "{acc_norm}");
    }
}
