//! AdamW with decoupled weight decay on matrices only and global gradient-norm clipping
//! (`docs/METHOD.md` §8), written by hand: Burn's clipping is per tensor, and our state is keyed
//! by parameter *path* (e.g. `model.layers.3.self_attn.time_mixer.w1`), so a run saved in one
//! process resumes exactly in another.
//!
//! Per parameter p with gradient g (after clipping), step t, learning rate η (as `torch.optim.AdamW`):
//!
//! ```text
//! p ← p · (1 − η·λ)                      (λ = weight decay; only tensors with ≥ 2 dims > 1)
//! m ← β₁ m + (1 − β₁) g;   v ← β₂ v + (1 − β₂) g²
//! p ← p − η · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)
//! ```
//!
//! Clipping: with ‖g‖ the L2 norm over **all** gradients, every gradient is scaled by
//! `min(1, max_norm / (‖g‖ + 1e-6))` (as `torch.nn.utils.clip_grad_norm_`).

use std::collections::BTreeMap;

use burn::module::{ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::param_tree::PathTracker;
use crate::save::{NamedTensor, save_safetensors};
use crate::weights::Checkpoint;

/// Hyper-parameters of AdamW.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay λ on tensors with at least two dimensions larger than 1.
    pub weight_decay: f64,
    /// Global gradient-norm clipping threshold (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            max_grad_norm: Some(1.0),
        }
    }
}

/// First and second moments of one parameter, flattened.
#[derive(Clone, Debug)]
pub struct Moments {
    /// m.
    pub exp_avg: Tensor<1>,
    /// v.
    pub exp_avg_sq: Tensor<1>,
}

/// The optimiser: config, step count and per-parameter moments keyed by path.
#[derive(Clone, Debug)]
pub struct AdamW {
    /// Hyper-parameters.
    pub config: AdamWConfig,
    /// Completed steps.
    pub step: u64,
    /// Moments by parameter path.
    pub moments: BTreeMap<String, Moments>,
}

/// What one step measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Global L2 norm of the gradients before clipping.
    pub grad_norm: f64,
    /// Factor the gradients were multiplied by (1 when not clipped).
    pub clip_scale: f64,
}

/// Whether weight decay applies: at least two dimensions larger than one.
pub fn decays(shape: &[usize]) -> bool {
    shape.iter().filter(|&&d| d > 1).count() >= 2
}

struct GradNorm<'a> {
    grads: &'a GradientsParams,
    sum_sq: Vec<Tensor<1>>,
    missing_paths: PathTracker,
}

impl ModuleVisitor for GradNorm<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.missing_paths.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.missing_paths.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.sum_sq.push(g.powi_scalar(2).sum());
        }
    }
}

struct Update<'a> {
    opt: &'a mut AdamW,
    grads: &'a mut GradientsParams,
    lr: f64,
    scale: f64,
    path: PathTracker,
}

impl ModuleMapper for Update<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let id: ParamId = param.id;
        let Some(grad) = self.grads.remove::<D>(id) else {
            return param;
        };
        let path = self.path.path();
        param.map(|tensor| {
            let require_grad = tensor.is_require_grad();
            // The device's gradient checkpointing, which a tensor leaving autodiff forgets.
            let strategy = tensor.gradient_checkpointing_strategy();
            let shape = tensor.dims();
            let numel: usize = shape.iter().product();
            let cfg = &self.opt.config;
            let mut p = tensor.inner();
            let g = (grad * self.scale).reshape([numel]);
            let (m, v) = match self.opt.moments.remove(&path) {
                Some(s) => (s.exp_avg, s.exp_avg_sq),
                None => (
                    Tensor::zeros([numel], &g.device()),
                    Tensor::zeros([numel], &g.device()),
                ),
            };
            let m = m * cfg.beta1 + g.clone() * (1.0 - cfg.beta1);
            let v = v * cfg.beta2 + g.powi_scalar(2) * (1.0 - cfg.beta2);
            let t = self.opt.step as i32 + 1;
            let bc1 = 1.0 - cfg.beta1.powi(t);
            let bc2 = 1.0 - cfg.beta2.powi(t);
            if cfg.weight_decay > 0.0 && decays(&shape) {
                p = p * (1.0 - self.lr * cfg.weight_decay);
            }
            let denom = (v.clone() / bc2).sqrt() + cfg.eps;
            let update = (m.clone() / denom * (self.lr / bc1)).reshape(shape);
            p = p - update;
            self.opt.moments.insert(
                path.clone(),
                Moments {
                    exp_avg: m,
                    exp_avg_sq: v,
                },
            );
            let mut p = Tensor::from_inner(p);
            if let Some(strategy) = strategy {
                p = p.with_gradient_checkpointing_strategy(strategy);
            }
            if require_grad { p.require_grad() } else { p }
        })
    }
}

impl AdamW {
    /// Saves the moments as `<dir>/optimizer/` safetensors (`<path>.exp_avg`, `<path>.exp_avg_sq`).
    pub fn save(&self, dir: &std::path::Path) -> crate::error::Result<()> {
        let mut tensors = vec![];
        for (path, m) in &self.moments {
            tensors.push(NamedTensor::D1(
                format!("{path}.exp_avg"),
                m.exp_avg.clone(),
            ));
            tensors.push(NamedTensor::D1(
                format!("{path}.exp_avg_sq"),
                m.exp_avg_sq.clone(),
            ));
        }
        save_safetensors(&dir.join("optimizer"), &tensors, usize::MAX)
    }

    /// The optimiser [`AdamW::save`] wrote into `dir`, at optimiser step `step`.
    pub fn load(
        config: AdamWConfig,
        step: u64,
        dir: &std::path::Path,
        device: &Device,
    ) -> crate::error::Result<Self> {
        let mut opt = AdamW::new(config);
        opt.step = step;
        let ck = Checkpoint::open_dir(&dir.join("optimizer"))?;
        for name in ck.names() {
            if let Some(path) = name.strip_suffix(".exp_avg") {
                let len = ck.shape(&name).unwrap_or_default().iter().product();
                let sq = format!("{path}.exp_avg_sq");
                opt.moments.insert(
                    path.to_string(),
                    Moments {
                        exp_avg: ck.load(&name, [len], device)?,
                        exp_avg_sq: ck.load(&sq, [len], device)?,
                    },
                );
            }
        }
        Ok(opt)
    }

    /// A fresh optimiser.
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            step: 0,
            moments: BTreeMap::new(),
        }
    }

    /// Clips the gradients of `module` globally and applies one AdamW step at learning rate `lr`.
    /// Parameters without a gradient (frozen) are left alone.
    pub fn step<M: Module>(
        &mut self,
        module: M,
        mut grads: GradientsParams,
        lr: f64,
    ) -> (M, StepStats) {
        let mut norm = GradNorm {
            grads: &grads,
            sum_sq: vec![],
            missing_paths: PathTracker::default(),
        };
        module.visit(&mut norm);
        let grad_norm = if norm.sum_sq.is_empty() {
            0.0
        } else {
            let total = Tensor::cat(norm.sum_sq, 0).sum();
            total.into_scalar::<f64>().sqrt()
        };
        let clip_scale = match self.config.max_grad_norm {
            Some(max) => (max / (grad_norm + 1e-6)).min(1.0),
            None => 1.0,
        };
        let mut update = Update {
            opt: self,
            grads: &mut grads,
            lr,
            scale: clip_scale,
            path: PathTracker::default(),
        };
        let module = module.map(&mut update);
        self.step += 1;
        (
            module,
            StepStats {
                grad_norm,
                clip_scale,
            },
        )
    }
}
