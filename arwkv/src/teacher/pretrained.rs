//! A teacher as found on disk: model, tokenizer and chat template of one folder.

use std::path::PathBuf;

use burn::prelude::Device;

use super::{Qwen2Config, Qwen2ForCausalLM};
use crate::chat::ChatTemplate;
use crate::error::Result;
use crate::tokenizer::TextTokenizer;
use crate::weights::Checkpoint;

/// Everything loaded from a Qwen2 model folder.
pub struct PretrainedQwen2 {
    /// The network.
    pub model: Qwen2ForCausalLM,
    /// `tokenizer.json`, when the folder has one.
    pub tokenizer: Option<TextTokenizer>,
    /// The chat template, when the folder has one.
    pub chat_template: Option<ChatTemplate>,
    /// The resolved folder.
    pub dir: PathBuf,
    /// Stored dtypes of the weights (e.g. {"BF16"}).
    pub stored_dtypes: Vec<String>,
    /// Number of safetensors files.
    pub shard_count: usize,
}

impl PretrainedQwen2 {
    /// Resolves `model` (folder or `org/name`) and loads config, weights, tokenizer and template.
    pub fn load(model: &str, device: &Device) -> Result<Self> {
        Self::load_parts(model, device, true)
    }

    /// Loads config and weights only (no tokenizer or template), e.g. to compute logits of ids.
    pub fn load_weights_only(model: &str, device: &Device) -> Result<Self> {
        Self::load_parts(model, device, false)
    }

    fn load_parts(model: &str, device: &Device, with_text: bool) -> Result<Self> {
        let dir = crate::hub::resolve_model(model)?;
        crate::checksums::verify_folder(&dir)?;
        let config = Qwen2Config::from_file(&dir.join("config.json"))?;
        let ck = Checkpoint::open_dir(&dir)?;
        let net = Qwen2ForCausalLM::load(config, &ck, device)?;
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = if with_text && tokenizer_path.is_file() {
            Some(TextTokenizer::from_file(&tokenizer_path)?)
        } else {
            None
        };
        let chat_template = if with_text {
            ChatTemplate::from_model_dir(&dir)?
        } else {
            None
        };
        Ok(Self {
            model: net,
            tokenizer,
            chat_template,
            stored_dtypes: ck.stored_dtypes().into_iter().collect(),
            shard_count: ck.shard_count(),
            dir,
        })
    }

    /// The tokenizer, or an error saying the folder has none.
    pub fn tokenizer(&self) -> Result<&TextTokenizer> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| crate::error::Error::Tokenizer {
                path: self.dir.join("tokenizer.json"),
                message: "file not found: this model folder has no tokenizer".into(),
            })
    }

    /// Token ids that end a generation: the config's eos ids plus `<|im_end|>`/`<|endoftext|>`.
    pub fn stop_ids(&self) -> Vec<u32> {
        crate::tokenizer::stop_ids(&self.model.config.eos_token_ids, self.tokenizer.as_ref())
    }
}

/// Writes a Qwen2 model into `dir` in Hugging Face layout: `config.json` (classic keys) and
/// `model.safetensors` (f32), plus the text files of `assets_from`.
pub fn save_pretrained(
    model: &Qwen2ForCausalLM,
    dir: &std::path::Path,
    assets_from: Option<&std::path::Path>,
) -> Result<()> {
    use crate::save::{DEFAULT_MAX_SHARD_BYTES, save_safetensors, write_atomic};
    save_safetensors(dir, &model.named_tensors(), DEFAULT_MAX_SHARD_BYTES)?;
    if let Some(src) = assets_from {
        for name in crate::save::TEXT_FILES {
            let from = src.join(name);
            if from.is_file() && src != dir {
                let bytes = std::fs::read(&from).map_err(|e| crate::error::Error::io(&from, e))?;
                write_atomic(&dir.join(name), &bytes)?;
            }
        }
    }
    let config = serde_json::to_string_pretty(&model.config.to_json()).expect("config serialises");
    write_atomic(&dir.join("config.json"), config.as_bytes())
}
