//! Any model folder the tools accept: a Qwen2 teacher or an ARWKV student, told apart by
//! `config.json`'s `model_type`.

use burn::prelude::*;
use serde::Deserialize;

use crate::chat::ChatTemplate;
use crate::error::{Error, Result};
use crate::generation::{GenerationConfig, generate};
use crate::student::PretrainedArwkv;
use crate::teacher::PretrainedQwen2;
use crate::tokenizer::TextTokenizer;

/// A loaded teacher or student.
pub enum Pretrained {
    /// A Qwen2 / Qwen2.5 transformer.
    Teacher(PretrainedQwen2),
    /// An ARWKV student (`rwkv_hybrid`).
    Student(PretrainedArwkv),
}

#[derive(Deserialize)]
struct ModelType {
    model_type: Option<String>,
}

impl Pretrained {
    /// Resolves `model` (folder or `org/name`) and loads it with tokenizer and template.
    pub fn load(model: &str, device: &Device) -> Result<Self> {
        Self::load_parts(model, device, true)
    }

    /// Loads config and weights only.
    pub fn load_weights_only(model: &str, device: &Device) -> Result<Self> {
        Self::load_parts(model, device, false)
    }

    fn load_parts(model: &str, device: &Device, with_text: bool) -> Result<Self> {
        let dir = crate::hub::resolve_model(model)?;
        let kind: ModelType = crate::error::read_json(&dir.join("config.json"))?;
        let dir_str = dir.to_string_lossy().into_owned();
        Ok(match kind.model_type.as_deref() {
            Some("rwkv_hybrid") => Self::Student(if with_text {
                PretrainedArwkv::load(&dir_str, device)?
            } else {
                PretrainedArwkv::load_weights_only(&dir_str, device)?
            }),
            _ => Self::Teacher(if with_text {
                PretrainedQwen2::load(&dir_str, device)?
            } else {
                PretrainedQwen2::load_weights_only(&dir_str, device)?
            }),
        })
    }

    /// Logits `[1, T, V]` of one sequence of ids, in one parallel forward.
    pub fn logits(&self, ids: &[u32], device: &Device) -> Result<Tensor<3>> {
        let context = match self {
            Self::Teacher(t) => t.model.config.max_position_embeddings,
            Self::Student(s) => s.model.config.qwen.max_position_embeddings,
        };
        if ids.len() > context {
            return Err(Error::ContextOverflow {
                tokens: ids.len(),
                context,
            });
        }
        let ids = crate::nn::token_row(ids, device);
        match self {
            Self::Teacher(t) => t.model.forward(ids, None),
            Self::Student(s) => s.model.forward(ids, None),
        }
    }

    /// Logits `[B, T, V]` of ids `[B, T]`, one parallel forward.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Result<Tensor<3>> {
        match self {
            Self::Teacher(t) => t.model.forward(ids, None),
            Self::Student(s) => s.model.forward(ids, None),
        }
    }

    /// Greedy continuation of `prompt` until a stop id or stop string (evaluation).
    pub fn greedy_until(
        &self,
        tokenizer: &TextTokenizer,
        prompt: &[u32],
        max_new_tokens: usize,
        stop_ids: &[u32],
        stops: &[&str],
        device: &Device,
    ) -> Result<String> {
        use crate::generation::greedy_until;
        match self {
            Self::Teacher(t) => greedy_until(
                &t.model,
                tokenizer,
                prompt,
                max_new_tokens,
                stop_ids,
                stops,
                device,
            ),
            Self::Student(s) => greedy_until(
                &s.model,
                tokenizer,
                prompt,
                max_new_tokens,
                stop_ids,
                stops,
                device,
            ),
        }
    }

    /// Generates after `prompt` (KV cache for a teacher, recurrent state for a student).
    pub fn generate(
        &self,
        prompt: &[u32],
        config: &GenerationConfig,
        device: &Device,
        on_token: impl FnMut(u32) -> Result<()>,
    ) -> Result<Vec<u32>> {
        match self {
            Self::Teacher(t) => generate(&t.model, prompt, config, device, on_token),
            Self::Student(s) => generate(&s.model, prompt, config, device, on_token),
        }
    }

    /// The tokenizer, or an error saying the folder has none.
    /// Greedy continuation of `text` (at most `max_new_tokens`, up to a stop token), decoded.
    pub fn complete(&self, text: &str, max_new_tokens: usize, device: &Device) -> Result<String> {
        let tokenizer = self.tokenizer()?;
        let prompt = tokenizer.encode(text, false)?;
        let config = GenerationConfig {
            max_new_tokens,
            stop_ids: self.stop_ids(),
            ..Default::default()
        };
        let ids = self.generate(&prompt, &config, device, |_| Ok(()))?;
        tokenizer.decode(&ids, true)
    }

    /// One chat turn: `user` (after an optional `system` message) through the chat template, then
    /// a greedy answer.
    pub fn chat(
        &self,
        system: Option<&str>,
        user: &str,
        max_new_tokens: usize,
        device: &Device,
    ) -> Result<String> {
        let template = self.chat_template().ok_or_else(|| {
            crate::Error::Invalid(format!("{} has no chat template", self.dir().display()))
        })?;
        let mut messages = vec![];
        if let Some(s) = system {
            messages.push(crate::chat::ChatMessage::new("system", s));
        }
        messages.push(crate::chat::ChatMessage::new("user", user));
        let text = template.render(&messages, true)?;
        self.complete(&text, max_new_tokens, device)
    }

    pub fn tokenizer(&self) -> Result<&TextTokenizer> {
        match self {
            Self::Teacher(t) => t.tokenizer(),
            Self::Student(s) => s.tokenizer(),
        }
    }

    /// The chat template, if the folder has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        match self {
            Self::Teacher(t) => t.chat_template.as_ref(),
            Self::Student(s) => s.chat_template.as_ref(),
        }
    }

    /// Ids that end a generation.
    pub fn stop_ids(&self) -> Vec<u32> {
        match self {
            Self::Teacher(t) => t.stop_ids(),
            Self::Student(s) => s.stop_ids(),
        }
    }

    /// The resolved folder.
    pub fn dir(&self) -> &std::path::Path {
        match self {
            Self::Teacher(t) => &t.dir,
            Self::Student(s) => &s.dir,
        }
    }

    /// A human-readable summary (for `arwkv inspect`).
    pub fn describe(&self) -> String {
        match self {
            Self::Teacher(t) => crate::teacher::describe(t),
            Self::Student(s) => crate::student::describe(s),
        }
    }
}
