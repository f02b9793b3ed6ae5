//! Training a byte-level BPE tokenizer on a corpus (the embedded default's tokenizer), with Qwen's
//! special tokens and a ChatML chat template, saved as `tokenizer.json` + `tokenizer_config.json`.

use std::path::Path;

use serde_json::json;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    TokenizerBuilder,
};

use crate::error::{Error, Result};
use crate::save::write_atomic;

/// Special tokens, in id order right after the byte alphabet's merges start: Qwen's names.
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// ChatML, as Qwen2.5 renders conversations (without its default system prompt or tools).
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Trains a byte-level BPE of `vocab_size` tokens (specials included) on `files` and writes
/// `tokenizer.json` and `tokenizer_config.json` into `out`.
pub fn train_byte_level_bpe(files: &[&Path], vocab_size: usize, out: &Path) -> Result<()> {
    let fail = |m: String| Error::Tokenizer {
        path: out.join("tokenizer.json"),
        message: m,
    };
    if vocab_size < 256 + SPECIAL_TOKENS.len() + 1 {
        return Err(Error::Invalid(format!(
            "vocab size {vocab_size} is smaller than the byte alphabet plus the special tokens"
        )));
    }
    let specials: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(t.to_string(), true))
        .collect();
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials.clone())
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let byte_level = ByteLevel::new(false, true, true);
    let mut tokenizer = TokenizerBuilder::<
        BPE,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >::new()
    .with_model(BPE::default())
    .with_normalizer(None)
    .with_pre_tokenizer(Some(byte_level.into()))
    .with_post_processor(Some(byte_level.into()))
    .with_decoder(Some(byte_level.into()))
    .build()
    .map_err(|e| fail(e.to_string()))?;
    let names: Vec<String> = files
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    for f in files {
        if !f.is_file() {
            return Err(Error::io(
                f,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
    }
    tokenizer
        .train_from_files(&mut trainer, names)
        .map_err(|e| fail(e.to_string()))?;
    tokenizer
        .add_special_tokens(specials)
        .map_err(|e| fail(e.to_string()))?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let json = tokenizer.to_string(true).map_err(|e| fail(e.to_string()))?;
    write_atomic(&out.join("tokenizer.json"), json.as_bytes())?;
    let config = json!({
        "tokenizer_class": "Qwen2Tokenizer",
        "bos_token": null,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": null,
        "model_max_length": 32768,
        "add_prefix_space": false,
        "errors": "replace",
        "split_special_tokens": false,
        "chat_template": CHATML_TEMPLATE,
    });
    write_atomic(
        &out.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&config)
            .expect("config serialises")
            .as_bytes(),
    )
}
