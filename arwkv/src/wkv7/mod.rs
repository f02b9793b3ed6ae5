//! The WKV-7 state recurrence of RWKV-7 (`docs/METHOD.md` §3).
//!
//! Per batch b and head h the state `S` is `N×N`, **row = value index i, column = key index j**.
//! For t = 0..T−1, with the raw log-log decay parameter ω (the op applies `d = exp(−exp(ω))`):
//!
//! ```text
//! d_j   = exp(−exp(ω_j))
//! sa_i  = Σ_j S[i,j] · a_j                 (state before the update)
//! S[i,j] ← S[i,j]·d_j + sa_i·b_j + v_i·k_j
//! y_i   = Σ_j S[i,j] · r_j                 (state after the update; no 1/√N scale)
//! ```
//!
//! `a` and `b` are the kernel's transition vectors (`a = −κ̂`, `b = κ̂ ⊙ iclr` in the time mixer).
//! Tensors are `[B, T, H, N]`, the state `[B, H, N, N]`, always f32.
//!
//! **Padding** ([`wkv7_padded`]): a padded position leaves the state unchanged and outputs 0, and
//! its inputs get no gradient (the reference's training kernel). It is done on the inputs, so every
//! path gets it, forward and backward alike: with `r = k = a = b = 0` and `ω = −40` (so `d = 1`
//! exactly in f32 and f64) the update above is the identity and `y = S·0 = 0`.
//! Implementations: [`reference`] (Burn tensor ops; autodiff for free; the oracle of the faster
//! paths), [`cpu`] (hand-written Rust forward and backward, for Flex devices) and `cube` (CubeCL
//! kernels for WGPU, CUDA and ROCm), both registered as a backend extension with a hand-written
//! backward by [`extension`]. [`wkv7`] picks the fastest one the device has.

pub mod cpu;
#[cfg(feature = "cube")]
pub mod cube;
pub mod extension;
pub mod reference;

use burn::prelude::*;

use crate::error::{Error, Result};

/// Output of one WKV-7 call.
#[derive(Debug, Clone)]
pub struct Wkv7Output {
    /// `[B, T, H, N]` outputs.
    pub y: Tensor<4>,
    /// `[B, H, N, N]` state after the last token.
    pub state: Tensor<4>,
}

/// Checks that r, w, k, v, a, b share one `[B, T, H, N]` shape and the state is `[B, H, N, N]`.
pub fn check_shapes(inputs: [&Tensor<4>; 6], state0: Option<&Tensor<4>>) -> Result<[usize; 4]> {
    const NAMES: [&str; 6] = ["r", "w", "k", "v", "a", "b"];
    let dims = inputs[0].dims();
    for (name, t) in NAMES.iter().zip(inputs) {
        if t.dims() != dims {
            return Err(Error::Invalid(format!(
                "wkv7: `{name}` has shape {:?}, expected {:?} like `r` ([B, T, H, N])",
                t.dims(),
                dims
            )));
        }
    }
    let [b, t, h, n] = dims;
    if t == 0 || n == 0 {
        return Err(Error::Invalid(format!(
            "wkv7: empty input of shape {dims:?}"
        )));
    }
    if let Some(s) = state0
        && s.dims() != [b, h, n, n]
    {
        return Err(Error::Invalid(format!(
            "wkv7: initial state has shape {:?}, expected {:?}",
            s.dims(),
            [b, h, n, n]
        )));
    }
    Ok(dims)
}

/// Log-log decay of a padded position: `exp(−exp(−40)) = 1` exactly in f32 and f64.
pub const PADDED_LOG_LOG_DECAY: f32 = -40.0;

/// Turns the padded positions of r, w, k, v, a, b into identity steps (see the module docs).
/// `mask` is `[B, T]`, 1 for a real token and 0 for padding (values above 0.5 count as real).
pub fn mask_padding(inputs: [Tensor<4>; 6], mask: &Tensor<2>) -> Result<[Tensor<4>; 6]> {
    let [r, w, k, v, a, b] = inputs;
    let [batch, seq, heads, n] = check_shapes([&r, &w, &k, &v, &a, &b], None)?;
    if mask.dims() != [batch, seq] {
        return Err(Error::Invalid(format!(
            "wkv7: padding mask has shape {:?}, expected [B, T] = {:?}",
            mask.dims(),
            [batch, seq]
        )));
    }
    let real = mask.clone().greater_elem(0.5);
    let keep = real.clone().float().reshape([batch, seq, 1, 1]);
    let padded = real
        .bool_not()
        .reshape([batch, seq, 1, 1])
        .expand([batch, seq, heads, n]);
    Ok([
        r * keep.clone(),
        w.mask_fill(padded, PADDED_LOG_LOG_DECAY),
        k * keep.clone(),
        v,
        a * keep.clone(),
        b * keep,
    ])
}

/// [`wkv7`] on right-, left- or otherwise padded rows: `mask` `[B, T]` (1 = real token) as in
/// [`mask_padding`]; padded positions output 0 and leave the state as it was.
#[allow(clippy::too_many_arguments)]
pub fn wkv7_padded(
    r: Tensor<4>,
    w: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    a: Tensor<4>,
    b: Tensor<4>,
    state0: Option<Tensor<4>>,
    mask: &Tensor<2>,
) -> Result<Wkv7Output> {
    let [r, w, k, v, a, b] = mask_padding([r, w, k, v, a, b], mask)?;
    wkv7(r, w, k, v, a, b, state0)
}

/// Whether `device` is a Flex (CPU) device, with or without autodiff.
pub fn is_flex(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    {
        matches!(
            device.clone().inner().as_dispatch(),
            burn::backend::DispatchDevice::Flex(_)
        )
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

/// Whether `device` is a CubeCL device (WGPU, CUDA, ROCm), with or without autodiff.
pub fn is_cube(device: &Device) -> bool {
    #[cfg(feature = "cube")]
    {
        matches!(
            device.clone().inner().as_dispatch(),
            burn::backend::DispatchDevice::Cube(_)
        )
    }
    #[cfg(not(feature = "cube"))]
    {
        let _ = device;
        false
    }
}

/// Runs WKV-7 on the fastest path of the inputs' device: the hand-written CPU kernels on Flex, the
/// CubeCL kernels on WGPU/CUDA/ROCm, the tensor-op reference elsewhere. Differentiable on autodiff
/// devices (each kernel has its hand-written backward). `state0` defaults to zeros.
pub fn wkv7(
    r: Tensor<4>,
    w: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    a: Tensor<4>,
    b: Tensor<4>,
    state0: Option<Tensor<4>>,
) -> Result<Wkv7Output> {
    let device = r.device();
    if !is_flex(&device) && !is_cube(&device) {
        return reference::wkv7(r, w, k, v, a, b, state0);
    }
    {
        use burn::backend::Dispatch;
        use extension::Wkv7Backend;
        let [batch, seq, heads, n] = check_shapes([&r, &w, &k, &v, &a, &b], state0.as_ref())?;
        let state0 = state0.unwrap_or_else(|| Tensor::zeros([batch, heads, n, n], &device));
        let f32s = |t: Tensor<4>| t.cast(burn::tensor::FloatDType::F32).into_dispatch();
        let (packed, _snapshots) = <Dispatch as Wkv7Backend>::wkv7_forward(
            f32s(r),
            f32s(w),
            f32s(k),
            f32s(v),
            f32s(a),
            f32s(b),
            f32s(state0),
        );
        let packed = Tensor::<1>::from_dispatch(packed);
        let y_len = batch * seq * heads * n;
        let y = packed
            .clone()
            .slice(0..y_len)
            .reshape([batch, seq, heads, n]);
        let state = packed
            .slice(y_len..y_len + batch * heads * n * n)
            .reshape([batch, heads, n, n]);
        Ok(Wkv7Output { y, state })
    }
}
