//! A student as found on disk (`rwkv_hybrid` layout, `docs/METHOD.md` §10): a [`ModelFolder`]
//! holding an ARWKV network.

use std::path::Path;

use burn::prelude::Device;

use super::config::ArwkvConfig;
use super::model::ArwkvForCausalLM;
use crate::error::Result;
use crate::model_folder::{FolderModel, ModelFolder};
use crate::save::NamedTensor;
use crate::weights::Checkpoint;

/// Everything loaded from an ARWKV student folder.
pub type PretrainedArwkv = ModelFolder<ArwkvForCausalLM>;

impl FolderModel for ArwkvForCausalLM {
    fn load_from_folder(config_json: &Path, ck: &Checkpoint, device: &Device) -> Result<Self> {
        ArwkvForCausalLM::load(ArwkvConfig::from_file(config_json)?, ck, device)
    }

    fn named_tensors(&self) -> Vec<NamedTensor> {
        ArwkvForCausalLM::named_tensors(self)
    }

    fn config_json(&self) -> serde_json::Value {
        self.config.to_json()
    }

    fn eos_token_ids(&self) -> &[u32] {
        &self.config.qwen.eos_token_ids
    }
}
