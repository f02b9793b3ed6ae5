//! The library's error type: every variant names the culprit (file, key, tensor, model).

use std::path::PathBuf;

/// Everything that can go wrong while loading, running or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A JSON file did not parse.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file concerned.
        path: PathBuf,
        /// The parser's message.
        source: serde_json::Error,
    },
    /// A `config.json` key is missing, malformed or unsupported.
    #[error("{path}: config key `{key}`: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// The offending key (dotted for nested keys).
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A checkpoint file is corrupt or does not fit the model as a whole.
    #[error("{file}: {message}")]
    Checkpoint {
        /// The weights file (or index) concerned.
        file: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// One tensor of a checkpoint is missing, unexpected, of the wrong shape or dtype.
    #[error("{file}: tensor `{tensor}`: {message}")]
    Tensor {
        /// The weights file concerned.
        file: PathBuf,
        /// The tensor's name as stored.
        tensor: String,
        /// What is wrong with it.
        message: String,
    },
    /// A model name could not be resolved to a local folder.
    #[error("model `{model}`: {message}")]
    Resolve {
        /// The model as the user named it.
        model: String,
        /// What is missing and how to get it.
        message: String,
    },
    /// The tokenizer could not be loaded or used.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// The tokenizer library's message.
        message: String,
    },
    /// The chat template could not be compiled or rendered.
    #[error("chat template: {0}")]
    Template(String),
    /// The requested compute device is unavailable.
    #[error("device: {0}")]
    Device(String),
    /// The backend cannot compute in the run's precision.
    #[error(
        "precision: `{precision}` needs {dtype} arithmetic, which backend `{backend}` does not support on this device; use `precision = \"f32\"` (or another policy the device supports)"
    )]
    UnsupportedPrecision {
        /// The policy asked for (`bf16-mixed`, `f16-mixed`).
        precision: String,
        /// The backend (`wgpu`, …).
        backend: String,
        /// The missing dtype (`bf16`, `f16`).
        dtype: String,
    },
    /// The requested backend was left out of this build (a cargo feature turns it on).
    #[error(
        "device: backend `{backend}` is not compiled into this binary; rebuild with `--features {feature}`"
    )]
    BackendNotCompiled {
        /// The backend asked for (`wgpu`, `cuda`, `rocm`).
        backend: String,
        /// The cargo feature that compiles it in.
        feature: String,
    },
    /// A setting (a key of a run, data or sampling configuration, or an option) is out of range
    /// or inconsistent with another.
    #[error("{scope}: {key} {message}")]
    Setting {
        /// Which configuration it belongs to (`run config`, `data`, `sampling`, …).
        scope: String,
        /// The key, dotted for nested ones (`schedule.lr`).
        key: String,
        /// What it must be.
        message: String,
    },
    /// A data or task file gives nothing usable (bad rows are counted and named inside `message`).
    #[error("{source_name}: {message}")]
    Data {
        /// The file, or the files, concerned.
        source_name: String,
        /// What is wrong and what was found.
        message: String,
    },
    /// `--preset` (or `preset_plan`) named a preset that does not exist.
    #[error("unknown preset `{name}` (available: {available})")]
    UnknownPreset {
        /// The name given.
        name: String,
        /// The presets there are, comma-separated.
        available: String,
    },
    /// A model was given no token ids (a prompt or batch row of length 0).
    #[error("empty input: at least one token id is needed")]
    EmptyInput,
    /// A token id lies outside the model's vocabulary.
    #[error("token id {id} is outside the vocabulary (0..{vocab})")]
    TokenOutOfVocabulary {
        /// The offending id.
        id: i64,
        /// The vocabulary size.
        vocab: usize,
    },
    /// More token ids than the model's context holds (truncate, or use a recurrent student).
    #[error(
        "{tokens} token ids are more than the model's context of {context} (max_position_embeddings)"
    )]
    ContextOverflow {
        /// How many ids were given.
        tokens: usize,
        /// The model's context.
        context: usize,
    },
    /// Training stopped because the loss or the gradient norm stopped being a finite number.
    #[error(
        "{stage}: the {quantity} became {value} at step {step}; stopped. Last checkpoint: {}",
        .last_checkpoint.as_ref().map_or("none".to_string(), |p| p.display().to_string())
    )]
    Diverged {
        /// The stage that was training.
        stage: String,
        /// The step that failed (1-based).
        step: u64,
        /// `loss` or `gradient norm`.
        quantity: &'static str,
        /// The value it took (NaN or ±inf).
        value: f64,
        /// The newest checkpoint to resume from, if any.
        last_checkpoint: Option<PathBuf>,
    },
    /// A run directory holds state this run must not mix with (another run, a checkpoint made
    /// under a different config or beyond the configured steps).
    #[error("run directory {dir}: {message}")]
    RunDirectory {
        /// The run directory (or checkpoint) concerned.
        dir: PathBuf,
        /// What was found and what to do about it.
        message: String,
    },
    /// An argument is out of range or inconsistent.
    #[error("{0}")]
    Invalid(String),
}

/// Result type of the library.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Reads a whole file, naming it in the error.
pub fn read_to_string(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Parses TOML read from `path`; an error names the file and the line and column.
pub fn parse_toml<T: serde::de::DeserializeOwned>(path: &std::path::Path, text: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| Error::Config {
        path: path.into(),
        key: e
            .span()
            .map(|s| line_and_column(text, s.start))
            .unwrap_or_default(),
        message: e.message().to_string(),
    })
}

/// `line L, column C` (1-based, columns in characters) of a byte offset into `text`.
pub fn line_and_column(text: &str, offset: usize) -> String {
    let before = &text[..text.floor_char_boundary(offset.min(text.len()))];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("line {line}, column {column}")
}

/// Reads and parses a JSON file, naming it in the error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let text = read_to_string(path)?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}
