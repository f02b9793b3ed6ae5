//! A teacher as found on disk: a [`ModelFolder`] holding a Qwen2 network.

use std::path::Path;

use burn::prelude::Device;

use super::{Qwen2Config, Qwen2ForCausalLM};
use crate::error::Result;
use crate::model_folder::{FolderModel, ModelFolder};
use crate::save::NamedTensor;
use crate::weights::Checkpoint;

/// Everything loaded from a Qwen2 model folder.
pub type PretrainedQwen2 = ModelFolder<Qwen2ForCausalLM>;

impl FolderModel for Qwen2ForCausalLM {
    fn load_from_folder(config_json: &Path, ck: &Checkpoint, device: &Device) -> Result<Self> {
        Qwen2ForCausalLM::load(Qwen2Config::from_file(config_json)?, ck, device)
    }

    fn named_tensors(&self) -> Vec<NamedTensor> {
        Qwen2ForCausalLM::named_tensors(self)
    }

    fn config_json(&self) -> serde_json::Value {
        self.config.to_json()
    }

    fn eos_token_ids(&self) -> &[u32] {
        &self.config.eos_token_ids
    }
}
