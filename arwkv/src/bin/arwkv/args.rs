//! Arguments shared by several subcommands.

use anyhow::{Context, Result, bail};
use arwkv::BackendKind;
use burn::prelude::*;
use clap::Args;

/// `--device`.
#[derive(Args)]
pub struct DeviceArg {
    /// Compute backend: cpu, wgpu, cuda or rocm (default: $ARWKV_DEVICE, else cpu).
    #[arg(long)]
    pub device: Option<String>,
}

impl DeviceArg {
    pub fn device(&self) -> Result<Device> {
        Ok(BackendKind::from_flag_or_env(self.device.as_deref())?.device()?)
    }
}

/// Token ids from `1,2,3`.
pub fn parse_ids(s: &str) -> Result<Vec<u32>> {
    let ids: Vec<u32> = s
        .split(',')
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u32>()
                .with_context(|| format!("--ids: `{p}` is not a token id"))
        })
        .collect::<Result<_>>()?;
    if ids.is_empty() {
        bail!("--ids: no token ids given");
    }
    Ok(ids)
}
