//! One model folder type for teachers and students: a network with its tokenizer, chat template,
//! checksums and the text files it shares with its teacher (`tokenizer.json`, `tokenizer_config.json`,
//! `generation_config.json`, …). Loading resolves the name (folder or hub id), verifies
//! `SHA256SUMS` when the folder has one, and opens the safetensors; saving writes `config.json`, the
//! f32 weights (sharded when large) and copies the text files. Each network says how it reads and
//! writes itself through [`FolderModel`].

use std::path::{Path, PathBuf};

use burn::prelude::Device;

use crate::chat::ChatTemplate;
use crate::error::{Error, Result};
use crate::save::{NamedTensor, TEXT_FILES, save_safetensors, write_atomic};
use crate::tokenizer::TextTokenizer;
use crate::weights::Checkpoint;

/// A network that lives in a Hugging Face style model folder.
pub trait FolderModel: Sized {
    /// Reads the folder's `config.json` and builds the network from the checkpoint's tensors.
    fn load_from_folder(config_json: &Path, ck: &Checkpoint, device: &Device) -> Result<Self>;
    /// Every parameter under its checkpoint name (what is saved).
    fn named_tensors(&self) -> Vec<NamedTensor>;
    /// The `config.json` written beside the weights.
    fn config_json(&self) -> serde_json::Value;
    /// The config's end-of-sequence ids.
    fn eos_token_ids(&self) -> &[u32];
}

/// Everything loaded from one model folder.
pub struct ModelFolder<M> {
    /// The network.
    pub model: M,
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

impl<M: FolderModel> ModelFolder<M> {
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
        let ck = Checkpoint::open_dir(&dir)?;
        let net = M::load_from_folder(&dir.join("config.json"), &ck, device)?;
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
        self.tokenizer.as_ref().ok_or_else(|| Error::Tokenizer {
            path: self.dir.join("tokenizer.json"),
            message: "file not found: this model folder has no tokenizer".into(),
        })
    }

    /// Token ids that end a generation: the config's eos ids plus `<|im_end|>`/`<|endoftext|>`.
    pub fn stop_ids(&self) -> Vec<u32> {
        crate::tokenizer::stop_ids(self.model.eos_token_ids(), self.tokenizer.as_ref())
    }
}

/// Writes `model` into `dir`: `config.json`, f32 safetensors (sharded above `max_shard_bytes`), and
/// the text files of `assets_from` (usually the teacher's folder).
pub fn save_pretrained<M: FolderModel>(
    model: &M,
    dir: &Path,
    assets_from: Option<&Path>,
    max_shard_bytes: usize,
) -> Result<()> {
    save_safetensors(dir, &model.named_tensors(), max_shard_bytes)?;
    if let Some(src) = assets_from {
        for name in TEXT_FILES {
            let from = src.join(name);
            if from.is_file() && src != dir {
                let bytes = std::fs::read(&from).map_err(|e| Error::io(&from, e))?;
                write_atomic(&dir.join(name), &bytes)?;
            }
        }
    }
    let config = serde_json::to_string_pretty(&model.config_json()).expect("config serialises");
    write_atomic(&dir.join("config.json"), config.as_bytes())
}
