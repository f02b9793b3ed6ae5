//! Causal grouped-query attention on the CPU for inference: `softmax(q kᵀ · scale + causal mask) v`
//! per head, computed in blocks of query rows so that only the visible part of the score matrix
//! is formed (half the work of a full `[T, T]` product) and no key/value head is repeated.
//!
//! Queries are the last `Tq` of `Tk` positions (a prefill after a KV cache has `Tk > Tq`): query
//! row i sees keys `0 ..= Tk − Tq + i`. Query head h reads key/value head `h / (H / KV)`.
//! Per block of [`QUERY_BLOCK`] rows: `S = Q_blk Kᵀ` (gemm), a row softmax in f32 with the
//! invisible keys zeroed, then `O_blk = P V` (gemm) divided by each row's sum. One task per
//! (batch, head) on rayon; gemm runs single-threaded inside each task.
//!
//! [`causal_attention`] runs it on Flex devices for tensors that need no gradient (the frozen
//! teacher, evaluation, generation); anything else keeps Burn's own attention, which is also this
//! kernel's test oracle.

use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

/// Query rows per block.
pub const QUERY_BLOCK: usize = 64;

/// Sizes of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionDims {
    /// B.
    pub batch: usize,
    /// Query heads H.
    pub heads: usize,
    /// Key/value heads KV (H is a multiple of KV).
    pub kv_heads: usize,
    /// Query positions Tq.
    pub queries: usize,
    /// Key positions Tk ≥ Tq (the queries are the last Tq of them).
    pub keys: usize,
    /// Head size D.
    pub head_dim: usize,
}

/// `[B, H, Tq, D]` outputs of causal attention of `q` (`[B, H, Tq, D]`) over `k`, `v`
/// (`[B, KV, Tk, D]`), all contiguous f32; `scale > 0`.
pub fn causal_attention_f32(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: AttentionDims,
    scale: f32,
) -> Vec<f32> {
    let AttentionDims {
        batch,
        heads,
        kv_heads,
        queries,
        keys,
        head_dim: d,
    } = dims;
    assert!(kv_heads > 0 && heads.is_multiple_of(kv_heads) && keys >= queries && scale > 0.0);
    assert_eq!(q.len(), batch * heads * queries * d);
    assert_eq!(k.len(), batch * kv_heads * keys * d);
    assert_eq!(v.len(), k.len());
    let groups = heads / kv_heads;
    let offset = keys - queries;
    let mut out = vec![0.0f32; q.len()];
    out.par_chunks_mut((queries * d).max(1))
        .enumerate()
        .for_each_init(
            || vec![0.0f32; QUERY_BLOCK * keys],
            |scores, (task, out)| {
                let (b, h) = (task / heads, task % heads);
                let kv = (b * kv_heads + h / groups) * keys * d;
                let head = HeadInputs {
                    q: &q[task * queries * d..][..queries * d],
                    k: &k[kv..kv + keys * d],
                    v: &v[kv..kv + keys * d],
                };
                attend_one_head(head, out, scores, (offset, d, scale));
            },
        );
    out
}

/// One head's queries `[Tq, D]` and its key/value head's keys and values `[Tk, D]`.
struct HeadInputs<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
}

/// Causal attention of one head into `out` (`[Tq, D]`); `scores` holds `QUERY_BLOCK × Tk`.
fn attend_one_head(
    head: HeadInputs,
    out: &mut [f32],
    scores: &mut [f32],
    (offset, d, scale): (usize, usize, f32),
) {
    let queries = head.q.len() / d;
    for start in (0..queries).step_by(QUERY_BLOCK) {
        let rows = QUERY_BLOCK.min(queries - start);
        // Keys visible to the block's last row.
        let visible = offset + start + rows;
        let s = &mut scores[..rows * visible];
        // S = Q_blk Kᵀ: [rows, D] × [D, visible].
        matmul(
            s,
            (rows, visible, d),
            (&head.q[start * d..(start + rows) * d], d as isize, 1),
            (head.k, 1, d as isize),
        );
        let mut sums = [0.0f32; QUERY_BLOCK];
        for (r, row) in s.chunks_exact_mut(visible).enumerate() {
            let seen = offset + start + r + 1;
            let (live, hidden) = row.split_at_mut(seen);
            let max = max_f32(live) * scale;
            live.iter_mut()
                .for_each(|x| *x = exp_nonpositive(*x * scale - max));
            hidden.fill(0.0);
            sums[r] = sum_f32(live);
        }
        // O_blk = P V: [rows, visible] × [visible, D].
        let o = &mut out[start * d..(start + rows) * d];
        matmul(
            o,
            (rows, d, visible),
            (s, visible as isize, 1),
            (head.v, d as isize, 1),
        );
        for (row, sum) in o.chunks_exact_mut(d).zip(sums) {
            let inv = 1.0 / sum;
            row.iter_mut().for_each(|x| *x *= inv);
        }
    }
}

/// `eˣ` for `x ≤ 0` (a softmax's shifted scores) within 3 ulp, in plain arithmetic that
/// vectorises: `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`, `eʳ` by its degree-7 Taylor polynomial
/// (remainder below 1e-8 relative; the rest is f32 rounding), `2ⁿ` written into the exponent bits.
/// Inputs below −87 give `e⁻⁸⁷` (a weight of 1e-38 next to the row maximum's 1).
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³: adding and subtracting it rounds to an integer
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = if x < -87.0 { -87.0 } else { x };
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // `shifted`'s low mantissa bits hold n (two's complement): 2ⁿ without a float → int cast.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    p * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// Largest element, with eight independent lanes (a serial `max` chain does not vectorise).
fn max_f32(xs: &[f32]) -> f32 {
    let pick = |m: f32, x: f32| if x > m { x } else { m };
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| pick(m, x));
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = pick(*a, x);
        }
    }
    acc.into_iter().fold(rest, pick)
}

/// Sum with eight independent accumulators (a plain `sum()` is one serial chain).
fn sum_f32(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = xs.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// `dst[m, n] = lhs[m, k] · rhs[k, n]`, `dst` row-major; each operand given with its row and
/// column strides. Single-threaded gemm (the caller parallelises over heads).
fn matmul(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    (lhs, lhs_rs, lhs_cs): (&[f32], isize, isize),
    (rhs, rhs_rs, rhs_cs): (&[f32], isize, isize),
) {
    let last = |rows: usize, cols: usize, rs: isize, cs: isize| {
        (rows.saturating_sub(1) as isize * rs + cols.saturating_sub(1) as isize * cs) as usize
    };
    assert!(dst.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    assert!(k == 0 || last(m, k, lhs_rs, lhs_cs) < lhs.len());
    assert!(k == 0 || last(k, n, rhs_rs, rhs_cs) < rhs.len());
    // SAFETY: every index gemm reads or writes lies in the slices, checked just above (strides
    // are non-negative), and `dst` does not alias the inputs (it is borrowed mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.as_ptr(),
            rhs_cs,
            rhs_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Causal attention of `q` (`[B, H, Tq, D]`) over `k`, `v` (`[B, KV, Tk, D]`, the queries being the
/// last Tq positions) with this module's CPU kernel, when it applies: a Flex device, f32 tensors
/// and no gradient needed. Otherwise `None` (the caller uses Burn's attention).
pub fn causal_attention(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    scale: f64,
) -> Option<Tensor<4>> {
    let device = q.device();
    let applies = crate::wkv7::is_flex(&device)
        && [q, k, v]
            .iter()
            .all(|t| t.dtype() == DType::F32 && !t.is_require_grad());
    if !applies {
        return None;
    }
    let [batch, heads, queries, head_dim] = q.dims();
    let [_, kv_heads, keys, _] = k.dims();
    let dims = AttentionDims {
        batch,
        heads,
        kv_heads,
        queries,
        keys,
        head_dim,
    };
    let read = |t: &Tensor<4>| t.clone().into_data().try_into_vec::<f32>().ok();
    let out = causal_attention_f32(&read(q)?, &read(k)?, &read(v)?, dims, scale as f32);
    Some(Tensor::from_data(
        TensorData::new(out, [batch, heads, queries, head_dim]),
        &device,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f64 oracle: the definition, one query row at a time.
    fn oracle(q: &[f32], k: &[f32], v: &[f32], dims: AttentionDims, scale: f64) -> Vec<f64> {
        let (heads, kv_heads, d) = (dims.heads, dims.kv_heads, dims.head_dim);
        let (queries, keys) = (dims.queries, dims.keys);
        let mut out = vec![0.0; q.len()];
        for b in 0..dims.batch {
            for h in 0..heads {
                let kv = (b * kv_heads + h / (heads / kv_heads)) * keys * d;
                for i in 0..queries {
                    let qi = &q[((b * heads + h) * queries + i) * d..][..d];
                    let seen = keys - queries + i + 1;
                    let s: Vec<f64> = (0..seen)
                        .map(|j| {
                            let kj = &k[kv + j * d..][..d];
                            qi.iter()
                                .zip(kj)
                                .map(|(&a, &b)| a as f64 * b as f64)
                                .sum::<f64>()
                                * scale
                        })
                        .collect();
                    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    let o = &mut out[((b * heads + h) * queries + i) * d..][..d];
                    for (j, p) in e.iter().enumerate() {
                        for (x, &vv) in o.iter_mut().zip(&v[kv + j * d..][..d]) {
                            *x += p / sum * vv as f64;
                        }
                    }
                }
            }
        }
        out
    }

    fn random(n: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
    }

    #[test]
    fn matches_the_f64_definition_with_groups_blocks_and_a_cache_offset() {
        // Tq spans several blocks and a partial one; Tk > Tq is a prefill after cached keys.
        for (queries, keys) in [(1, 1), (150, 150), (70, 200), (1, 37)] {
            let dims = AttentionDims {
                batch: 2,
                heads: 4,
                kv_heads: 2,
                queries,
                keys,
                head_dim: 16,
            };
            let q = random(2 * 4 * queries * 16, 1);
            let k = random(2 * 2 * keys * 16, 2);
            let v = random(2 * 2 * keys * 16, 3);
            let got = causal_attention_f32(&q, &k, &v, dims, 0.25);
            let want = oracle(&q, &k, &v, dims, 0.25);
            let err = got
                .iter()
                .zip(&want)
                .map(|(&g, &w)| (g as f64 - w).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-5, "Tq {queries} Tk {keys}: max error {err}");
        }
    }

    #[test]
    fn the_softmax_exponential_is_within_three_ulp() {
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let (got, want) = (exp_nonpositive(x) as f64, (x as f64).exp());
            assert!(
                (got - want).abs() <= 2.4e-7 * want,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1e30) < 1e-37);
    }

    #[test]
    fn matches_burn_attention_on_flex_and_stands_aside_for_gradients() {
        use burn::tensor::module::attention;
        use burn::tensor::ops::AttentionModuleOptions;
        let device = crate::device::BackendKind::Cpu.device().unwrap();
        let t = |data: Vec<f32>, shape: [usize; 4]| {
            Tensor::<4>::from_data(TensorData::new(data, shape), &device)
        };
        let q = t(random(2 * 4 * 33 * 8, 4), [2, 4, 33, 8]);
        let k = t(random(2 * 2 * 33 * 8, 5), [2, 2, 33, 8]);
        let v = t(random(2 * 2 * 33 * 8, 6), [2, 2, 33, 8]);
        let got = causal_attention(&q, &k, &v, 0.3).expect("a Flex f32 tensor takes the kernel");
        let repeat = |x: Tensor<4>| super::super::model::repeat_kv(x, 2);
        let options = AttentionModuleOptions {
            scale: Some(0.3),
            softcap: None,
            is_causal: true,
        };
        let want = attention(
            q.clone(),
            repeat(k.clone()),
            repeat(v.clone()),
            None,
            None,
            options,
        );
        let diff: f32 = (got - want).abs().max().into_scalar();
        assert!(diff < 1e-5, "{diff}");
        // On an autodiff device: untracked tensors take the kernel, tracked ones do not.
        let autodiff = device.clone().autodiff();
        let on = |x: &Tensor<4>| Tensor::<4>::from_data(x.to_data(), &autodiff);
        assert!(causal_attention(&on(&q), &on(&k), &on(&v), 0.3).is_some());
        let tracked = on(&q).require_grad();
        assert!(causal_attention(&tracked, &on(&k), &on(&v), 0.3).is_none());
    }
}
