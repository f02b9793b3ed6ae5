//! Run-time choice of the compute backend (`--device cpu|wgpu|cuda|rocm`, env `ARWKV_DEVICE`).

use std::fmt;
use std::str::FromStr;

use burn::prelude::Device;

use crate::error::{Error, Result};

/// Environment variable that picks the backend when no `--device` is given.
pub const DEVICE_ENV: &str = "ARWKV_DEVICE";

/// The backends ARWKV Lab can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// Pure-Rust CPU backend (Burn's Flex); cargo feature `flex`.
    Cpu,
    /// Vulkan / Metal / DX12 / GL through wgpu; cargo feature `wgpu`.
    Wgpu,
    /// NVIDIA CUDA; cargo feature `cuda`.
    Cuda,
    /// AMD ROCm/HIP; cargo feature `rocm`.
    Rocm,
}

impl BackendKind {
    /// All backends, in the order they are listed to users.
    pub const ALL: [BackendKind; 4] = [Self::Cpu, Self::Wgpu, Self::Cuda, Self::Rocm];

    /// The user-facing name (`cpu`, `wgpu`, `cuda`, `rocm`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
            Self::Rocm => "rocm",
        }
    }

    /// The cargo feature that compiles this backend in.
    pub fn feature(self) -> &'static str {
        match self {
            Self::Cpu => "flex",
            other => other.name(),
        }
    }

    /// Whether this binary was compiled with the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            Self::Cpu => cfg!(feature = "flex"),
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Cuda => cfg!(feature = "cuda"),
            Self::Rocm => cfg!(feature = "rocm"),
        }
    }

    /// The backend named by `flag`, else by `$ARWKV_DEVICE`, else the CPU.
    pub fn from_flag_or_env(flag: Option<&str>) -> Result<Self> {
        match flag {
            Some(name) => name.parse(),
            None => match std::env::var(DEVICE_ENV) {
                Ok(name) if !name.trim().is_empty() => name.parse().map_err(|e: Error| {
                    Error::Device(format!(
                        "${DEVICE_ENV}: {}",
                        e.to_string().trim_start_matches("device: ")
                    ))
                }),
                _ => Ok(Self::Cpu),
            },
        }
    }

    /// Creates the Burn device, or says why it cannot be had.
    pub fn device(self) -> Result<Device> {
        if !self.is_compiled() {
            return Err(Error::BackendNotCompiled {
                backend: self.name().into(),
                feature: self.feature().into(),
            });
        }
        make_device(self)
    }
}

impl BackendKind {
    /// `n` devices of this backend for a data-parallel run (rank 0 first). More than one is
    /// refused, naming the backend, except on CUDA: Burn 0.22.1's collective all-reduce exists
    /// only there (NCCL).
    pub fn devices(self, n: usize) -> Result<Vec<Device>> {
        if n <= 1 {
            return Ok(vec![self.device()?]);
        }
        if self != Self::Cuda {
            return Err(Error::Setting {
                scope: "run config".into(),
                key: "devices".into(),
                message: format!(
                    "= {n} needs backend `cuda`: Burn 0.22.1's all-reduce is NCCL-only, so backend `{self}` trains on one device"
                ),
            });
        }
        self.device()?;
        #[cfg(feature = "cuda")]
        return Ok((0..n).map(Device::cuda).collect());
        #[allow(unreachable_code)]
        Err(Error::BackendNotCompiled {
            backend: self.name().into(),
            feature: self.feature().into(),
        })
    }
}

/// The device of `$ARWKV_DEVICE` (what the kernel's `:device` magic sets), else the CPU.
pub fn current_device() -> Result<Device> {
    BackendKind::from_flag_or_env(None)?.device()
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" | "flex" => Ok(Self::Cpu),
            "wgpu" | "vulkan" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            "rocm" | "hip" => Ok(Self::Rocm),
            other => Err(Error::Device(format!(
                "unknown backend `{other}`; expected one of cpu, wgpu, cuda, rocm"
            ))),
        }
    }
}

/// Looks for a shared library on the loader path, so a missing driver is reported before Burn
/// panics on its device thread (where the panic cannot be caught).
#[allow(dead_code)]
fn shared_library_present(names: &[&str], extra_dirs: &[&str]) -> bool {
    let mut dirs: Vec<String> = std::env::var("LD_LIBRARY_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(String::from)
        .collect();
    dirs.extend(extra_dirs.iter().map(|d| d.to_string()));
    dirs.extend(
        [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib64",
            "/usr/lib",
            "/lib/x86_64-linux-gnu",
            "/usr/local/nvidia/lib64",
        ]
        .iter()
        .map(|d| d.to_string()),
    );
    dirs.iter().any(|d| {
        names
            .iter()
            .any(|n| std::path::Path::new(d).join(n).exists())
    })
}

#[allow(unreachable_code, unused_variables)]
fn make_device(kind: BackendKind) -> Result<Device> {
    match kind {
        BackendKind::Cpu => {
            #[cfg(feature = "flex")]
            return Ok(Device::flex());
        }
        BackendKind::Wgpu => {
            #[cfg(feature = "wgpu")]
            return Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice));
        }
        BackendKind::Cuda => {
            #[cfg(feature = "cuda")]
            {
                if !shared_library_present(
                    &["libcuda.so.1", "libcuda.so"],
                    &["/usr/local/cuda/lib64"],
                ) {
                    return Err(Error::Device(
                        "backend `cuda`: the NVIDIA driver library libcuda.so was not found on the loader path"
                            .into(),
                    ));
                }
                return Ok(Device::cuda(0));
            }
        }
        BackendKind::Rocm => {
            #[cfg(feature = "rocm")]
            {
                let rocm = std::env::var("ROCM_PATH").unwrap_or_else(|_| "/opt/rocm".into());
                if !shared_library_present(&["libamdhip64.so"], &[&format!("{rocm}/lib")]) {
                    return Err(Error::Device(
                        "backend `rocm`: libamdhip64.so was not found (install ROCm or set ROCM_PATH)".into(),
                    ));
                }
                return Ok(Device::rocm(0));
            }
        }
    }
    Err(Error::BackendNotCompiled {
        backend: kind.name().into(),
        feature: kind.feature().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_rejects_unknown() {
        assert_eq!("CPU".parse::<BackendKind>().unwrap(), BackendKind::Cpu);
        assert_eq!("wgpu".parse::<BackendKind>().unwrap(), BackendKind::Wgpu);
        let err = "tpu".parse::<BackendKind>().unwrap_err().to_string();
        assert!(err.contains("unknown backend `tpu`"), "{err}");
    }

    #[test]
    fn missing_backend_names_the_feature() {
        for kind in BackendKind::ALL {
            if !kind.is_compiled() {
                let err = kind.device().unwrap_err().to_string();
                assert!(
                    err.contains(&format!("--features {}", kind.feature())),
                    "{err}"
                );
            }
        }
    }
}
