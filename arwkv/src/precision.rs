//! The precision policy of a run (`precision = "f32" | "bf16-mixed" | "f16-mixed"`).
//!
//! Mixed means: the frozen models (the teacher, DPO's reference) are stored and run in the
//! low-precision dtype; the student keeps f32 master weights (so AdamW's moments are f32 too) and
//! runs its forward and backward in the low-precision dtype, each weight cast where it is used;
//! norms, the WKV-7 recurrence and its state, and every loss are computed in f32. The models follow
//! their input's dtype, so an f32 run casts nothing.

use std::fmt;
use std::str::FromStr;

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};
use serde::{Deserialize, Serialize};

use crate::device::BackendKind;
use crate::error::{Error, Result};

/// Numeric precision of a run: every tensor in f32, or the low-precision dtype for the frozen
/// models and the student's compute with f32 master weights, moments, losses and WKV state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// bf16 compute and frozen weights, f32 master weights and optimiser state.
    Bf16Mixed,
    /// f16 compute and frozen weights, f32 master weights and optimiser state.
    F16Mixed,
}

impl Precision {
    /// Every policy, in the order they are listed to users.
    pub const ALL: [Precision; 3] = [Self::F32, Self::Bf16Mixed, Self::F16Mixed];

    /// The user-facing name (`f32`, `bf16-mixed`, `f16-mixed`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16Mixed => "bf16-mixed",
            Self::F16Mixed => "f16-mixed",
        }
    }

    /// The dtype the frozen models are stored in and the student computes in.
    pub fn compute_dtype(self) -> FloatDType {
        match self {
            Self::F32 => FloatDType::F32,
            Self::Bf16Mixed => FloatDType::BF16,
            Self::F16Mixed => FloatDType::F16,
        }
    }

    /// Bytes of one element of the low-precision tensors (frozen weights, activations).
    pub fn compute_bytes(self) -> u64 {
        match self {
            Self::F32 => 4,
            Self::Bf16Mixed | Self::F16Mixed => 2,
        }
    }

    /// What a run on `backend` uses when its config names no precision: bf16-mixed on CUDA and
    /// ROCm, f32 on the CPU (the embedded default's results stay as they are), and on WGPU
    /// bf16-mixed where the adapter computes in bf16, else f32. f16-mixed is never chosen for the
    /// user: without loss scaling, gradients below f16's smallest normal value (6·10⁻⁵) lose
    /// precision or vanish, so it is a choice to make knowingly (DECISIONS "Precision policy").
    pub fn default_for(backend: BackendKind, device: &Device) -> Self {
        match backend {
            BackendKind::Cpu => Self::F32,
            BackendKind::Cuda | BackendKind::Rocm => Self::Bf16Mixed,
            BackendKind::Wgpu if device.supports_dtype(FloatDType::BF16) => Self::Bf16Mixed,
            BackendKind::Wgpu => Self::F32,
        }
    }

    /// Fails, naming the backend and the dtype, when `device` cannot compute in this precision.
    pub fn check_supported(self, backend: BackendKind, device: &Device) -> Result<()> {
        let dtype = self.compute_dtype();
        if device.supports_dtype(dtype) {
            return Ok(());
        }
        Err(Error::UnsupportedPrecision {
            precision: self.name().into(),
            backend: backend.name().into(),
            dtype: format!("{dtype:?}").to_ascii_lowercase(),
        })
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "precision `{s}`: expected one of f32, bf16-mixed, f16-mixed"
                ))
            })
    }
}

/// `t` in f32, the dtype of norms, the WKV-7 state and losses (a no-op when it already is).
pub fn f32<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    t.cast(FloatDType::F32)
}

/// `t` in the float dtype of `like` (a no-op when they already agree).
pub fn cast_like<const D: usize, const E: usize>(t: Tensor<D>, like: &Tensor<E>) -> Tensor<D> {
    match like.dtype() {
        DType::F64 => t.cast(FloatDType::F64),
        DType::F16 => t.cast(FloatDType::F16),
        DType::BF16 => t.cast(FloatDType::BF16),
        _ => t.cast(FloatDType::F32),
    }
}

/// A parameter's value in the dtype of the activations `like` it meets.
pub fn param_like<const D: usize, const E: usize>(
    p: &Param<Tensor<D>>,
    like: &Tensor<E>,
) -> Tensor<D> {
    cast_like(p.val(), like)
}

/// Casts every float parameter of `module` to `dtype` (a frozen model stored in low precision).
pub fn cast_parameters<M: Module>(module: M, dtype: FloatDType) -> M {
    struct Cast(FloatDType);
    impl ModuleMapper for Cast {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let dtype = self.0;
            param.map(|t| t.cast(dtype))
        }
    }
    module.map(&mut Cast(dtype))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_refused() {
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.name()));
        }
        let err = "fp8".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("precision `fp8`"), "{err}");
    }

    #[test]
    fn cpu_defaults_to_f32_and_casts_parameters() {
        let device = BackendKind::Cpu.device().unwrap();
        assert_eq!(
            Precision::default_for(BackendKind::Cpu, &device),
            Precision::F32
        );
        let linear = crate::nn::Linear::new(3, 2, true, crate::nn::Fill::Normal(0.1), &device);
        let cast = cast_parameters(linear, FloatDType::BF16);
        assert_eq!(cast.weight.val().dtype(), DType::BF16);
        assert_eq!(cast.bias.unwrap().val().dtype(), DType::BF16);
    }
}
