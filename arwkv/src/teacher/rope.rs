//! Rotary position embedding in the rotate-half convention of Hugging Face Qwen2/Llama.
//!
//! inv_freq[i] = 1 / θ^(2i/d); angle(p, i) = p · inv_freq[i]; cos/sin over [freqs, freqs];
//! rope(x) = x · cos + rotate_half(x) · sin with rotate_half([x1, x2]) = [-x2, x1].
//! Angles are computed in f32 exactly as transformers does, so logits agree to the last bits.

use burn::prelude::*;

use crate::precision::cast_like;

/// Precomputed inverse frequencies of one head width.
#[derive(Clone, Debug)]
pub struct RotaryEmbedding {
    inv_freq: Vec<f32>,
}

impl RotaryEmbedding {
    /// Frequencies for heads of width `head_dim` and base `theta`.
    pub fn new(head_dim: usize, theta: f64) -> Self {
        let base = theta as f32;
        let inv_freq = (0..head_dim / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        Self { inv_freq }
    }

    /// cos and sin tables `[1, 1, len, head_dim]` for positions `start..start + len`.
    pub fn tables(&self, start: usize, len: usize, device: &Device) -> (Tensor<4>, Tensor<4>) {
        let half = self.inv_freq.len();
        let dim = 2 * half;
        let mut cos = Vec::with_capacity(len * dim);
        let mut sin = Vec::with_capacity(len * dim);
        for p in start..start + len {
            let angles: Vec<f32> = self.inv_freq.iter().map(|f| p as f32 * f).collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos()));
                sin.extend(angles.iter().map(|a| a.sin()));
            }
        }
        let table =
            |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [1, 1, len, dim]), device);
        (table(cos), table(sin))
    }
}

/// Applies the rotation to `x` of shape `[B, H, T, D]`, in `x`'s dtype (the f32 tables are cast
/// to it, as transformers does).
pub fn apply_rotary(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let (cos, sin) = (cast_like(cos.clone(), &x), cast_like(sin.clone(), &x));
    let [b, h, t, d] = x.dims();
    let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..d / 2]);
    let x2 = x.clone().slice([0..b, 0..h, 0..t, d / 2..d]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos + rotated * sin
}
