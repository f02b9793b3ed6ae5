//! The embedded default, and how it is made from public sources: the corpus of plays (`corpus`),
//! its byte-level BPE tokenizer (`bpe`), the dialogue tasks cut from the plays for stage 3 and for
//! evaluation (`dialogue_tasks`), and the folder that holds the result with the pretrained teacher
//! (`tiny_assets`; `scripts/make-embedded-default.sh` rebuilds it with `arwkv pretrain`).

pub mod bpe;
pub mod corpus;
pub mod dialogue_tasks;

use std::path::{Path, PathBuf};

/// Folder of the embedded default (corpus, tokenizer and teacher, evaluation tasks): `arwkv/assets/tiny`
/// of the checkout built from, or `$ARWKV_TINY_ASSETS` where a binary runs away from it.
pub fn tiny_assets() -> PathBuf {
    match std::env::var_os("ARWKV_TINY_ASSETS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets")
            .join("tiny"),
    }
}
