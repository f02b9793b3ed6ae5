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
use crate::save::NamedTensor;
use crate::weights::Checkpoint;
use crate::wkv7::wkv7;

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

/// `x [B,T,C] · m [C,R]` → `[B,T,R]`.
fn low_rank(x: Tensor<3>, m: &Param<Tensor<2>>) -> Tensor<3> {
    let [b, t, c] = x.dims();
    let m = m.val();
    let [_, r] = m.dims();
    x.reshape([b * t, c]).matmul(m).reshape([b, t, r])
}

impl TimeMixer {
    /// A freshly initialised time mixer for layer `layer` (`docs/METHOD.md` §4; the gate starts as the
    /// identity, see docs/DECISIONS.md).
    pub fn init(layer: usize, cfg: &ArwkvConfig, rng: &mut InitRng, device: &Device) -> Self {
        let c = cfg.qwen.hidden_size;
        let (h, n) = (cfg.num_wkv_heads(), cfg.head_size);
        let s = LayerSchedule::new(layer, cfg.qwen.num_hidden_layers, c);
        let ranks = cfg.ranks;
        let vec3 = |v: Vec<f32>| Param::from_tensor(channel_vector(v, device));
        let fill = |x: f32| vec3(vec![x; c]);
        let zeros2 = |r: usize, cc: usize| Param::from_tensor(Tensor::zeros([r, cc], device));
        let mut orth =
            |r: usize| Param::from_tensor(matrix(rng.orthogonal(r, c, 0.1), r, c, device));
        let (w2, a2, v2) = (orth(ranks.decay), orth(ranks.iclr), orth(ranks.value));
        let bound = 1.0 / (c as f64).sqrt();
        let mut projection = || Linear {
            weight: Param::from_tensor(matrix(rng.uniform(c, c, bound), c, c, device)),
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

    /// Loads `{prefix}.*` (prefix = `model.layers.i.self_attn.time_mixer`). Layer 0's unused
    /// `v0/v1/v2` may be absent; they then take their initial values.
    pub fn load(
        ck: &Checkpoint,
        prefix: &str,
        layer: usize,
        cfg: &ArwkvConfig,
        device: &Device,
    ) -> Result<Self> {
        let c = cfg.qwen.hidden_size;
        let (h, n) = (cfg.num_wkv_heads(), cfg.head_size);
        let r = cfg.ranks;
        let name = |field: &str| format!("{prefix}.{field}");
        let vec3 = |f: &str| -> Result<Param<Tensor<3>>> {
            Ok(Param::from_tensor(ck.load(&name(f), [1, 1, c], device)?))
        };
        let mat = |f: &str, rows: usize, cols: usize| -> Result<Param<Tensor<2>>> {
            Ok(Param::from_tensor(ck.load(
                &name(f),
                [rows, cols],
                device,
            )?))
        };
        let linear = |f: &str| Linear::load(ck, &name(f), c, c, false, device);
        let (v0, v1, v2) = if layer == 0 && !ck.contains(&name("v0")) {
            (
                Param::from_tensor(Tensor::ones([1, 1, c], device)),
                Param::from_tensor(Tensor::zeros([c, r.value], device)),
                Param::from_tensor(Tensor::zeros([r.value, c], device)),
            )
        } else {
            (vec3("v0")?, mat("v1", c, r.value)?, mat("v2", r.value, c)?)
        };
        let gated = |f: &str, shape: (usize, usize)| -> Result<Option<Param<Tensor<2>>>> {
            cfg.has_gate.then(|| mat(f, shape.0, shape.1)).transpose()
        };
        Ok(Self {
            x_r: vec3("x_r")?,
            x_w: vec3("x_w")?,
            x_k: vec3("x_k")?,
            x_v: vec3("x_v")?,
            x_a: vec3("x_a")?,
            x_g: cfg.has_gate.then(|| vec3("x_g")).transpose()?,
            w0: vec3("w0")?,
            w1: mat("w1", c, r.decay)?,
            w2: mat("w2", r.decay, c)?,
            a0: vec3("a0")?,
            a1: mat("a1", c, r.iclr)?,
            a2: mat("a2", r.iclr, c)?,
            v0,
            v1,
            v2,
            g1: gated("g1", (c, r.gate))?,
            g2: gated("g2", (r.gate, c))?,
            k_k: vec3("k_k")?,
            k_a: vec3("k_a")?,
            r_k: mat("r_k", h, n)?,
            receptance: linear("receptance")?,
            key: linear("key")?,
            value: linear("value")?,
            output: linear("output")?,
            ln_x: cfg
                .has_group_norm
                .then(|| GroupNorm::load(ck, &name("ln_x"), c, cfg.group_norm_eps(), device))
                .transpose()?,
            layer_id: layer,
            num_heads: h,
            head_size: n,
        })
    }

    /// Every parameter with its checkpoint name under `prefix`.
    pub fn named_tensors(&self, prefix: &str) -> Vec<NamedTensor> {
        let n = |f: &str| format!("{prefix}.{f}");
        let mut out = vec![];
        let mut v3 = |f: &str, p: &Param<Tensor<3>>| out.push(NamedTensor::D3(n(f), p.val()));
        v3("x_r", &self.x_r);
        v3("x_w", &self.x_w);
        v3("x_k", &self.x_k);
        v3("x_v", &self.x_v);
        v3("x_a", &self.x_a);
        if let Some(p) = &self.x_g {
            v3("x_g", p);
        }
        v3("w0", &self.w0);
        v3("a0", &self.a0);
        v3("v0", &self.v0);
        v3("k_k", &self.k_k);
        v3("k_a", &self.k_a);
        let mut m = vec![
            ("w1", &self.w1),
            ("w2", &self.w2),
            ("a1", &self.a1),
            ("a2", &self.a2),
            ("v1", &self.v1),
            ("v2", &self.v2),
        ];
        if let (Some(g1), Some(g2)) = (&self.g1, &self.g2) {
            m.push(("g1", g1));
            m.push(("g2", g2));
        }
        m.push(("r_k", &self.r_k));
        for (f, p) in m {
            out.push(NamedTensor::D2(n(f), p.val()));
        }
        for (f, l) in [
            ("receptance", &self.receptance),
            ("key", &self.key),
            ("value", &self.value),
            ("output", &self.output),
        ] {
            out.push(NamedTensor::D2(n(&format!("{f}.weight")), l.weight.val()));
        }
        if let Some(ln) = &self.ln_x {
            out.push(NamedTensor::D1(n("ln_x.weight"), ln.weight.val()));
            out.push(NamedTensor::D1(n("ln_x.bias"), ln.bias.val()));
        }
        out
    }

    /// Mixes `x: [B, T, C]` (the layer's normalised input). `v_first` is layer 0's values (needed
    /// by layers ≥ 1); `state` continues a previous call (zero shift and state when `None`).
    pub fn forward(
        &self,
        x: Tensor<3>,
        v_first: Option<Tensor<3>>,
        state: Option<TimeMixState>,
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
        let (shift, wkv_state) = match state {
            Some(s) => (s.shift, Some(s.wkv)),
            None => (Tensor::zeros([b, c], &device), None),
        };
        // 1–2. token shift and lerps.
        let mut x_prev = shift.reshape([b, 1, c]);
        if t > 1 {
            x_prev = Tensor::cat(vec![x_prev, x.clone().slice([0..b, 0..t - 1, 0..c])], 1);
        }
        let delta = x_prev - x.clone();
        let lerp = |mu: &Param<Tensor<3>>| x.clone() + delta.clone() * mu.val();
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
        // 4. ω = −softplus(−z) − 0.5 = log σ(z) − 0.5.
        let z = self.w0.val() + low_rank(low_rank(xw, &self.w1).tanh(), &self.w2);
        let omega = log_sigmoid(z) - 0.5;
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
            let mix = sigmoid(self.v0.val() + low_rank(low_rank(xv, &self.v1), &self.v2));
            (v.clone() + (v_first.clone() - v) * mix, v_first)
        };
        // 6. in-context learning rate.
        let a = sigmoid(self.a0.val() + low_rank(low_rank(xa, &self.a1), &self.a2));
        // 8. removal key, normalised per head.
        let heads = |y: Tensor<3>| y.reshape([b, t, h, n]);
        let kk = heads(k.clone() * self.k_k.val());
        let norm = kk
            .clone()
            .powi_scalar(2)
            .sum_dim(3)
            .sqrt()
            .clamp_min(NORMALIZE_EPS);
        let kk = kk / norm;
        // 9. replacement key.
        let k = k * ((a.clone() - 1.0) * self.k_a.val() + 1.0);
        // 10. WKV.
        let (r, k, v, a) = (heads(r), heads(k), heads(v), heads(a));
        let wkv = wkv7(
            r.clone(),
            heads(omega),
            k.clone(),
            v.clone(),
            kk.clone().neg(),
            kk * a,
            wkv_state,
        )?;
        let mut o = wkv.y;
        // 11. optional GroupNorm.
        if let Some(ln) = &self.ln_x {
            o = ln.forward_heads(o);
        }
        // 12. bonus.
        let bonus = (r * k * self.r_k.val().reshape([1, 1, h, n])).sum_dim(3);
        let o = (o + bonus * v).reshape([b, t, c]);
        // 7 + 13. gate and output.
        let o = match (&self.x_g, &self.g1, &self.g2) {
            (Some(x_g), Some(g1), Some(g2)) => {
                let xg = lerp(x_g);
                o * low_rank(sigmoid(low_rank(xg, g1)), g2)
            }
            _ => o,
        };
        let shift = x.slice([0..b, t - 1..t, 0..c]).reshape([b, c]);
        Ok(TimeMixOutput {
            out: self.output.forward(o),
            v_first,
            state: TimeMixState {
                shift,
                wkv: wkv.state,
            },
        })
    }
}
