//! WKV-7 in plain Burn tensor ops, one token at a time: slow, differentiable by Burn's autodiff,
//! and the oracle the CPU and CubeCL kernels are tested against.

use burn::prelude::*;

use super::{Wkv7Output, check_shapes};
use crate::error::Result;

/// Runs the recurrence of the module docs; `state0` defaults to zeros.
pub fn wkv7(
    r: Tensor<4>,
    w: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    a: Tensor<4>,
    b: Tensor<4>,
    state0: Option<Tensor<4>>,
) -> Result<Wkv7Output> {
    let [batch, t_len, heads, n] = check_shapes([&r, &w, &k, &v, &a, &b], state0.as_ref())?;
    let device = r.device();
    let mut state = state0.unwrap_or_else(|| Tensor::zeros([batch, heads, n, n], &device));
    // decay d = exp(−exp(ω)) for every token at once.
    let decay = w.exp().neg().exp();
    let step = |x: &Tensor<4>, t: usize| {
        x.clone()
            .slice([0..batch, t..t + 1, 0..heads, 0..n])
            .reshape([batch, heads, n])
    };
    let mut ys = Vec::with_capacity(t_len);
    for t in 0..t_len {
        let row = |x: &Tensor<4>| step(x, t).unsqueeze_dim::<4>(2); // [B, H, 1, N] (over key j)
        let col = |x: &Tensor<4>| step(x, t).unsqueeze_dim::<4>(3); // [B, H, N, 1] (over value i)
        let sa = state.clone().matmul(col(&a)); // [B, H, N, 1]
        state = state * row(&decay) + sa * row(&b) + col(&v) * row(&k);
        let y = state.clone().matmul(col(&r)); // [B, H, N, 1]
        ys.push(y.reshape([batch, 1, heads, n]));
    }
    Ok(Wkv7Output {
        y: Tensor::cat(ys, 1),
        state,
    })
}
