//! ARWKV Lab: distil a Qwen2.5 transformer into an attention-free RWKV-7 model (ARWKV), and
//! watch it happen in Jupyter.
//!
//! This crate holds the teacher (Hugging Face Qwen2/Qwen2.5 loading, forward, generation), the
//! WKV-7 op and the ARWKV student (time mixer, model, `rwkv_hybrid` checkpoints, recurrent
//! inference), tokenisation and chat templates, and the run-time backend choice.

pub mod bench;
pub mod chat;
pub mod checksums;
pub mod data;
pub mod device;
pub mod distill;
pub mod embedded;
pub mod error;
pub mod eval;
pub mod folder_path;
pub mod generation;
pub mod hub;
pub mod jsonl;
pub mod model_folder;
pub mod nn;
pub mod notebook;
pub mod param_tree;
pub mod precision;
pub mod pretrain;
pub mod pretrained;
pub mod sampling;
pub mod save;
pub mod student;
pub mod teacher;
pub mod tokenizer;
pub mod train;
pub mod weights;
pub mod wkv7;

pub use device::BackendKind;
pub use error::{Error, Result};
pub use precision::Precision;
