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

/// Reads and parses a JSON file, naming it in the error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let text = read_to_string(path)?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}
