//! The RWKV-7 time mixer that replaces self-attention in every ARWKV layer (`docs/METHOD.md`
//! §2). Field names are the checkpoint's (`model.layers.i.self_attn.time_mixer.<field>`).
//!
//! Per token, with `x` the layer's normalised input and `x_prev` the previous token's:
//!
//! ```text
//! δ = x_prev − x;  x_* = x + δ ⊙ μ_*                            (token shift and lerps)
//! r = R x_r,  k = K x_k,  v = V x_v
//! ω = −softplus(−(w0 + tanh(x_w W1) W2)) − 0.5                  (decay d = exp(−exp ω))
//! v ← v + (v_first − v) ⊙ σ(v0 + x_v V1 V2)    (layers ≥ 1; layer 0 defines v_first = v)
//! a = σ(a0 + x_a A1 A2);   g = σ(x_g G1) G2                      (gate: gated variant only)
//! κ̂ = normalize_head(k ⊙ k_k);   k̃ = k ⊙ (1 + (a − 1) ⊙ k_a)
//! o = WKV7(r, ω, k̃, v, −κ̂, κ̂ ⊙ a)      [→ GroupNorm per head, when present]
//! o_h += (Σ_j r_j k̃_j r_k[h,j]) v_h                               (bonus)
//! out = O (o ⊙ g)
//! ```

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, sigmoid};

use super::config::ArwkvConfig;
use super::init::{InitRng, LayerSchedule, channel_vector, matrix};
use crate::error::{Error, Result};
use crate::nn::{GroupNorm, Linear};
use crate::param_tree::{deferred, fill};
use crate::precision::{cast_like, f32, param_like};
use crate::weights::Checkpoint;
use crate::wkv7::{wkv7, wkv7_padded};

/// The largest log-log decay: `ω ≤ −0.5`, so the decay `d = exp(−exp ω)` never falls below
/// [`smallest_decay`].
pub const MAX_LOG_LOG_DECAY: f64 = -0.5;

/// The smallest per-channel decay the time mixer can produce, `exp(−exp(−0.5)) ≈ 0.545`. With the
/// in-context learning rate `a ∈ (0, 1)` the state transition `diag(d) − κ̂ (a ⊙ κ̂)ᵀ` has real
/// eigenvalues no lower than `smallest_decay() − 1 ≈ −0.455` (notebook 06).
pub fn smallest_decay() -> f64 {
    (-MAX_LOG_LOG_DECAY.exp()).exp()
}

/// ε of `F.normalize` for the removal key.
const NORMALIZE_EPS: f64 = 1e-12;

/// Recurrent state of one time mixer between calls.
#[derive(Clone, Debug)]
pub struct TimeMixState {
    /// `[B, C]` last normalised input token (the token shift).
    pub shift: Tensor<2>,
    /// `[B, H, N, N]` WKV state (value × key), f32.
    pub wkv: Tensor<4>,
}

/// What one time-mixer call returns.
#[derive(Clone, Debug)]
pub struct TimeMixOutput {
    /// `[B, T, C]` output (before the residual add).
    pub out: Tensor<3>,
    /// `[B, T, C]` layer 0's values, passed on to the later layers.
    pub v_first: Tensor<3>,
    /// State after the last token.
    pub state: TimeMixState,
}

/// RWKV-7 time mixing (`RWKV_Tmix_x070`).
#[derive(Module, Debug)]
pub struct TimeMixer {
    /// `[1,1,C]` receptance lerp.
    pub x_r: Param<Tensor<3>>,
    /// `[1,1,C]` decay lerp.
    pub x_w: Param<Tensor<3>>,
    /// `[1,1,C]` key lerp.
    pub x_k: Param<Tensor<3>>,
    /// `[1,1,C]` value lerp.
    pub x_v: Param<Tensor<3>>,
    /// `[1,1,C]` in-context-learning-rate lerp.
    pub x_a: Param<Tensor<3>>,
    /// `[1,1,C]` gate lerp (gated variant).
    pub x_g: Option<Param<Tensor<3>>>,
    /// `[1,1,C]` decay bias.
    pub w0: Param<Tensor<3>>,
    /// `[C, r_w]` decay LoRA down (tanh after).
    pub w1: Param<Tensor<2>>,
    /// `[r_w, C]` decay LoRA up.
    pub w2: Param<Tensor<2>>,
    /// `[1,1,C]` ICLR bias.
    pub a0: Param<Tensor<3>>,
    /// `[C, r_a]` ICLR LoRA down.
    pub a1: Param<Tensor<2>>,
    /// `[r_a, C]` ICLR LoRA up.
    pub a2: Param<Tensor<2>>,
    /// `[1,1,C]` value-residual bias (unused in layer 0).
    pub v0: Param<Tensor<3>>,
    /// `[C, r_v]` value-residual LoRA down.
    pub v1: Param<Tensor<2>>,
    /// `[r_v, C]` value-residual LoRA up.
    pub v2: Param<Tensor<2>>,
    /// `[C, r_g]` gate LoRA down (sigmoid after; gated variant).
    pub g1: Option<Param<Tensor<2>>>,
    /// `[r_g, C]` gate LoRA up.
    pub g2: Option<Param<Tensor<2>>>,
    /// `[1,1,C]` removal-key scale.
    pub k_k: Param<Tensor<3>>,
    /// `[1,1,C]` how much the ICLR rescales the key.
    pub k_a: Param<Tensor<3>>,
    /// `[H, N]` bonus weights.
    pub r_k: Param<Tensor<2>>,
    /// `[C, C]` R.
    pub receptance: Linear,
    /// `[C, C]` K.
    pub key: Linear,
    /// `[C, C]` V.
    pub value: Linear,
    /// `[C, C]` O.
    pub output: Linear,
    /// GroupNorm over each head's WKV output (variant with `wkv_has_group_norm`).
    pub ln_x: Option<GroupNorm>,
    /// Index of the layer (layer 0 defines `v_first`).
    #[module(skip)]
    pub layer_id: usize,
    /// RWKV heads H.
    #[module(skip)]
    pub num_heads: usize,
    /// Head size N.
    #[module(skip)]
    pub head_size: usize,
}

/// Whether `name` is one of the value-residual parameters (`v0`, `v1`, `v2`) that layer 0 never
/// uses: checkpoints may omit them there, and they then keep their initial values.
pub fn unused_in_layer_zero(name: &str) -> bool {
    matches!(name.rsplit('.').next(), Some("v0" | "v1" | "v2"))
}

/// `x [B,T,C] · m [C,R]` → `[B,T,R]`, in `x`'s dtype.
fn low_rank(x: Tensor<3>, m: &Param<Tensor<2>>) -> Tensor<3> {
    let [b, t, c] = x.dims();
    let m = param_like(m, &x);
    let [_, r] = m.dims();
    x.reshape([b * t, c]).matmul(m).reshape([b, t, r])
}

impl TimeMixer {
    /// A freshly initialised time mixer for layer `layer` (`docs/METHOD.md` §4; the gate starts as the
    /// identity, see docs/DECISIONS.md).
    pub fn init(layer: usize, cfg: &ArwkvConfig, rng: &mut InitRng, device: &Device) -> Self {
        Self::build(layer, cfg, Some(rng), device)
    }

    /// Loads `{prefix}.*` (prefix = `model.layers.i.self_attn.time_mixer`). Layer 0's unused
    /// `v0/v1/v2` may be absent; they then take their initial values.
    pub fn load(
        ck: &Checkpoint,
        prefix: &str,
        layer: usize,
        cfg: &ArwkvConfig,
        device: &Device,
    ) -> Result<Self> {
        fill(
            Self::skeleton(layer, cfg, device),
            ck,
            &format!("{prefix}."),
            device,
            |name| layer == 0 && unused_in_layer_zero(name),
        )
    }

    /// The mixer of layer `layer` with its random matrices deferred (a checkpoint fills them).
    pub fn skeleton(layer: usize, cfg: &ArwkvConfig, device: &Device) -> Self {
        Self::build(layer, cfg, None, device)
    }

    /// The mixer of layer `layer`. Constants and the layer schedule are set here; the random
    /// matrices are drawn from `rng`, or left deferred for a checkpoint to fill when it is `None`.
    fn build(
        layer: usize,
        cfg: &ArwkvConfig,
        mut rng: Option<&mut InitRng>,
        device: &Device,
    ) -> Self {
        let c = cfg.qwen.hidden_size;
        let (h, n) = (cfg.num_wkv_heads(), cfg.head_size);
        let s = LayerSchedule::new(layer, cfg.qwen.num_hidden_layers, c);
        let ranks = cfg.ranks;
        let vec3 = |v: Vec<f32>| Param::from_tensor(channel_vector(v, device));
        let fill = |x: f32| vec3(vec![x; c]);
        let zeros2 = |r: usize, cc: usize| Param::from_tensor(Tensor::zeros([r, cc], device));
        let mut draw =
            |rows: usize, cols: usize, values: &dyn Fn(&mut InitRng) -> Vec<f32>| match rng
                .as_deref_mut()
            {
                Some(rng) => Param::from_tensor(matrix(values(rng), rows, cols, device)),
                None => deferred([rows, cols], device),
            };
        let mut orth = |r: usize| draw(r, c, &|rng| rng.orthogonal(r, c, 0.1));
        let (w2, a2, v2) = (orth(ranks.decay), orth(ranks.iclr), orth(ranks.value));
        let bound = 1.0 / (c as f64).sqrt();
        let mut projection = || Linear {
            weight: draw(c, c, &|rng| rng.uniform(c, c, bound)),
            bias: None,
        };
        let (receptance, key, value, output) =
            (projection(), projection(), projection(), projection());
        Self {
            x_r: vec3(s.x_r()),
            x_w: vec3(s.x_w()),
            x_k: vec3(s.x_k()),
            x_v: vec3(s.x_v()),
            x_a: vec3(s.x_w()),
            x_g: cfg.has_gate.then(|| fill(1.0)),
            w0: vec3(s.w0()),
            w1: zeros2(c, ranks.decay),
            w2,
            a0: fill(0.0),
            a1: zeros2(c, ranks.iclr),
            a2,
            v0: fill(1.0),
            v1: zeros2(c, ranks.value),
            v2,
            // σ(0) · 2/r summed over r ranks = 1: an identity gate that still learns.
            g1: cfg.has_gate.then(|| zeros2(c, ranks.gate)),
            g2: cfg.has_gate.then(|| {
                Param::from_tensor(Tensor::full(
                    [ranks.gate, c],
                    2.0 / ranks.gate as f64,
                    device,
                ))
            }),
            k_k: fill(0.85),
            k_a: fill(1.0),
            r_k: zeros2(h, n),
            receptance,
            key,
            value,
            output,
            ln_x: cfg
                .has_group_norm
                .then(|| GroupNorm::identity(c, cfg.group_norm_eps(), device)),
            layer_id: layer,
            num_heads: h,
            head_size: n,
        }
    }

    /// Mixes `x: [B, T, C]` (the layer's normalised input). `v_first` is layer 0's values (needed
    /// by layers ≥ 1); `state` continues a previous call (zero shift and state when `None`).
    /// With a padding `mask` `[B, T]` (1 = real token), padded positions read as zero inputs, leave
    /// the WKV state unchanged and output 0, so a left- or right-padded row gives its unpadded
    /// outputs at its real positions; the shift state is the last real token's.
    /// Computes in `x`'s dtype, except the decay, the removal key, the WKV-7 recurrence with its
    /// state, the GroupNorm and the bonus, which run in f32 (the precision policy).
    pub fn forward(
        &self,
        x: Tensor<3>,
        v_first: Option<Tensor<3>>,
        state: Option<TimeMixState>,
        mask: Option<&Tensor<2>>,
    ) -> Result<TimeMixOutput> {
        let [b, t, c] = x.dims();
        let (h, n) = (self.num_heads, self.head_size);
        if c != h * n {
            return Err(Error::Invalid(format!(
                "time mixer of layer {}: input width {c}, expected {}",
                self.layer_id,
                h * n
            )));
        }
        let device = x.device();
        let real = match mask {
            Some(m) if m.dims() != [b, t] => {
                return Err(Error::Invalid(format!(
                    "time mixer of layer {}: padding mask has shape {:?}, expected [B, T] = {:?}",
                    self.layer_id,
                    m.dims(),
                    [b, t]
                )));
            }
            Some(m) => Some(cast_like(
                m.clone().greater_elem(0.5).float().reshape([b, t, 1]),
                &x,
            )),
            None => None,
        };
        let x = match &real {
            Some(real) => x * real.clone(),
            None => x,
        };
        let (shift, wkv_state) = match state {
            Some(s) => (cast_like(s.shift, &x), Some(s.wkv)),
            None => (Tensor::zeros([b, c], (&device, x.dtype())), None),
        };
        // 1–2. token shift and lerps.
        let mut x_prev = shift.reshape([b, 1, c]);
        if t > 1 {
            x_prev = Tensor::cat(vec![x_prev, x.clone().slice([0..b, 0..t - 1, 0..c])], 1);
        }
        let delta = x_prev - x.clone();
        let lerp = |mu: &Param<Tensor<3>>| x.clone() + delta.clone() * param_like(mu, &x);
        let (xr, xw, xk, xv, xa) = (
            lerp(&self.x_r),
            lerp(&self.x_w),
            lerp(&self.x_k),
            lerp(&self.x_v),
            lerp(&self.x_a),
        );
        // 3. projections.
        let r = self.receptance.forward(xr);
        let k = self.key.forward(xk);
        let v = self.value.forward(xv.clone());
        // 4. ω = −softplus(−z) − 0.5 = log σ(z) − 0.5, in f32.
        let z = param_like(&self.w0, &x) + low_rank(low_rank(xw, &self.w1).tanh(), &self.w2);
        let omega = log_sigmoid(f32(z)) + MAX_LOG_LOG_DECAY as f32;
        // 5. value residual.
        let (v, v_first) = if self.layer_id == 0 {
            (v.clone(), v)
        } else {
            let v_first = v_first.ok_or_else(|| {
                Error::Invalid(format!(
                    "time mixer of layer {}: v_first from layer 0 is required",
                    self.layer_id
                ))
            })?;
            let mix =
                sigmoid(param_like(&self.v0, &x) + low_rank(low_rank(xv, &self.v1), &self.v2));
            (v.clone() + (v_first.clone() - v) * mix, v_first)
        };
        // 6. in-context learning rate.
        let a = sigmoid(param_like(&self.a0, &x) + low_rank(low_rank(xa, &self.a1), &self.a2));
        // 8. removal key, normalised per head.
        let heads = |y: Tensor<3>| y.reshape([b, t, h, n]);
        // max(‖kk‖, ε) as √max(‖kk‖², ε²): the same value, and a zero key (a padded position)
        // gets a zero gradient instead of 0·∞ from the square root's slope at 0.
        let kk = f32(heads(k.clone() * param_like(&self.k_k, &x)));
        let norm = kk
            .clone()
            .powi_scalar(2)
            .sum_dim(3)
            .clamp_min(NORMALIZE_EPS * NORMALIZE_EPS)
            .sqrt();
        let kk = kk / norm;
        // 9. replacement key.
        let k = k * ((a.clone() - 1.0) * param_like(&self.k_a, &x) + 1.0);
        // 10. WKV, in f32 from here to the bonus.
        let (r, k, v, a) = (f32(heads(r)), f32(heads(k)), f32(heads(v)), f32(heads(a)));
        let (wkv_r, wkv_w, wkv_k, wkv_v, wkv_a, wkv_b) = (
            r.clone(),
            heads(omega),
            k.clone(),
            v.clone(),
            kk.clone().neg(),
            kk * a,
        );
        let wkv = match mask {
            Some(m) => wkv7_padded(wkv_r, wkv_w, wkv_k, wkv_v, wkv_a, wkv_b, wkv_state, m)?,
            None => wkv7(wkv_r, wkv_w, wkv_k, wkv_v, wkv_a, wkv_b, wkv_state)?,
        };
        let mut o = wkv.y;
        // 11. optional GroupNorm.
        if let Some(ln) = &self.ln_x {
            o = ln.forward_heads(o);
        }
        // 12. bonus.
        let bonus = (r * k * f32(self.r_k.val()).reshape([1, 1, h, n])).sum_dim(3);
        let o = cast_like((o + bonus * v).reshape([b, t, c]), &x);
        // 7 + 13. gate and output.
        let o = match (&self.x_g, &self.g1, &self.g2) {
            (Some(x_g), Some(g1), Some(g2)) => {
                let xg = lerp(x_g);
                o * low_rank(sigmoid(low_rank(xg, g1)), g2)
            }
            _ => o,
        };
        let (out, shift) = match &real {
            Some(real) => (
                self.output.forward(o) * real.clone(),
                last_real_row(x, real.clone().reshape([b, t])),
            ),
            None => (
                self.output.forward(o),
                x.slice([0..b, t - 1..t, 0..c]).reshape([b, c]),
            ),
        };
        Ok(TimeMixOutput {
            out,
            v_first,
            state: TimeMixState {
                shift,
                wkv: wkv.state,
            },
        })
    }
}

/// Each row's `x` `[B, T, C]` at its last real position (`real` `[B, T]`, 1 = real; position 0
/// for a row without one, whose `x` is zero there).
fn last_real_row(x: Tensor<3>, real: Tensor<2>) -> Tensor<2> {
    let [b, t, c] = x.dims();
    let positions = Tensor::<1, Int>::arange(1..t as i64 + 1, &x.device())
        .float()
        .reshape([1, t]);
    let real = f32(real);
    let last = (real * positions).argmax(1); // [B, 1]
    x.gather(1, last.reshape([b, 1, 1]).expand([b, 1, c]))
        .reshape([b, c])
}
