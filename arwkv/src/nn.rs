//! Small building blocks shared by the teacher and the student, in Hugging Face weight layout.

use burn::module::Param;
use burn::prelude::*;

use crate::param_tree::deferred;
use crate::precision::{cast_like, f32, param_like};

/// What a freshly built layer holds before any training.
#[derive(Clone, Copy, Debug)]
pub enum Fill {
    /// Weights and biases drawn from N(0, std²), norms at unit scale (training from scratch).
    Normal(f64),
    /// Nothing computed: a skeleton whose parameters a checkpoint or another model fills
    /// (`param_tree::fill`).
    Deferred,
}

impl Fill {
    /// A weight or bias of `shape`.
    pub fn tensor<const D: usize>(self, shape: [usize; D], device: &Device) -> Param<Tensor<D>> {
        match self {
            Self::Normal(std) => Param::from_tensor(Tensor::random(
                shape,
                burn::tensor::Distribution::Normal(0.0, std),
                device,
            )),
            Self::Deferred => deferred(shape, device),
        }
    }
}

/// A batch of one row of token ids, `[1, T]`, as the models take them.
pub fn token_row(ids: &[u32], device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = ids.iter().map(|&x| x as i64).collect();
    Tensor::from_data(TensorData::new(data, [1, ids.len()]), device)
}

/// A linear layer stored as Hugging Face stores it: `weight` is `[out, in]`, `bias` is `[out]`.
#[derive(Module, Debug)]
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Param<Tensor<2>>,
    /// `[out_features]`, when the layer has a bias.
    pub bias: Option<Param<Tensor<1>>>,
}

impl Linear {
    /// y = x Wᵀ + b over the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        linear_hf(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()))
    }

    /// A `[d_out, d_in]` layer (plus a `[d_out]` bias when `bias`) with values as `fill` says.
    pub fn new(d_in: usize, d_out: usize, bias: bool, fill: Fill, device: &Device) -> Self {
        Self {
            weight: fill.tensor([d_out, d_in], device),
            bias: bias.then(|| fill.tensor([d_out], device)),
        }
    }
}

/// y = x Wᵀ + b with `weight` in Hugging Face layout `[out, in]`, computed in `x`'s dtype (an f32
/// master weight meets bf16 activations as a bf16 copy; the gradient flows back to it in f32).
///
/// The leading dimensions are folded into rows and the product runs as one 2-D matmul against the
/// transposed *view* of the weight: reshaping a transposed weight (what a batched matmul needs)
/// would copy it on every call.
pub fn linear_hf<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    let dims = x.dims();
    let d_in = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let [d_out, _] = weight.dims();
    let weight = cast_like(weight, &x);
    let bias = bias.map(|b| cast_like(b, &x));
    let mut y = x.reshape([rows, d_in]).matmul(weight.transpose());
    if let Some(b) = bias {
        y = y + b.unsqueeze::<2>();
    }
    let mut out = dims;
    out[D - 1] = d_out;
    y.reshape(out)
}

/// Root-mean-square layer norm, computed in f32 as transformers' `Qwen2RMSNorm` (the normalised
/// values return to the input's dtype before the scale, as there).
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// `[hidden]` scale.
    pub weight: Param<Tensor<1>>,
    /// Epsilon added to the mean square.
    #[module(skip)]
    pub eps: f64,
}

impl RmsNorm {
    /// x / sqrt(mean(x²) + eps) · weight.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let input = x.clone();
        let x = f32(x);
        let variance = x.clone().powi_scalar(2).mean_dim(D - 1);
        let normed = cast_like(x * (variance + self.eps).sqrt().recip(), &input);
        normed * param_like(&self.weight, &input).unsqueeze()
    }

    /// A norm of width `hidden`: unit scale, or deferred when `fill` is.
    pub fn new(hidden: usize, eps: f64, fill: Fill, device: &Device) -> Self {
        let weight = match fill {
            Fill::Normal(_) => Param::from_tensor(Tensor::ones([hidden], device)),
            Fill::Deferred => deferred([hidden], device),
        };
        Self { weight, eps }
    }
}

/// GroupNorm over the channels of each head (`ln_x` of the RWKV-7 time mixer).
#[derive(Module, Debug)]
pub struct GroupNorm {
    /// `[C]` scale.
    pub weight: Param<Tensor<1>>,
    /// `[C]` shift.
    pub bias: Param<Tensor<1>>,
    /// Epsilon added to the variance.
    #[module(skip)]
    pub eps: f64,
}

impl GroupNorm {
    /// Normalises `y: [B, T, H, N]` over N (one group per head), then scales and shifts per channel;
    /// in f32 (the time mixer's WKV output already is).
    pub fn forward_heads(&self, y: Tensor<4>) -> Tensor<4> {
        let [_, _, h, n] = y.dims();
        let y = f32(y);
        let centered = y.clone() - y.mean_dim(3);
        let variance = centered.clone().powi_scalar(2).mean_dim(3);
        let normed = centered * (variance + self.eps).sqrt().recip();
        let per_channel = |p: &Param<Tensor<1>>| f32(p.val()).reshape([1, 1, h, n]);
        normed * per_channel(&self.weight) + per_channel(&self.bias)
    }

    /// Unit scale, zero shift (PyTorch's default).
    pub fn identity(channels: usize, eps: f64, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
            eps,
        }
    }
}
