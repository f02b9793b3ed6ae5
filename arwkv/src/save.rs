//! Writing Hugging Face safetensors checkpoints: one file, or shards with
//! `model.safetensors.index.json` when the tensors exceed the shard size. Every file is written to
//! a temporary sibling and renamed, so a crash never leaves a half-written checkpoint behind a
//! complete-looking name.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::prelude::*;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::json;

use crate::error::{Error, Result};
use crate::weights::{INDEX_FILE, SINGLE_FILE};

/// Files a model folder shares with its teacher (tokenizer, template, generation defaults).
pub const TEXT_FILES: [&str; 7] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
];

/// Default largest shard (as transformers' `save_pretrained`): 5 GB.
pub const DEFAULT_MAX_SHARD_BYTES: usize = 5_000_000_000;

/// A parameter handle of any rank, named as in the checkpoint.
#[derive(Clone, Debug)]
pub enum NamedTensor {
    /// A vector, e.g. a norm weight.
    D1(String, Tensor<1>),
    /// A matrix, e.g. a linear weight.
    D2(String, Tensor<2>),
    /// A `[1, 1, C]` channel vector of the time mixer.
    D3(String, Tensor<3>),
}

impl NamedTensor {
    /// Names a parameter of rank 1, 2 or 3 (the ranks a model stores).
    pub fn new<const D: usize>(name: String, tensor: Tensor<D>) -> Self {
        let dims = tensor.dims();
        match dims.as_slice() {
            [a] => Self::D1(name, tensor.reshape([*a])),
            [a, b] => Self::D2(name, tensor.reshape([*a, *b])),
            [a, b, c] => Self::D3(name, tensor.reshape([*a, *b, *c])),
            _ => unreachable!("`{name}`: models store parameters of rank 1 to 3, not {D}"),
        }
    }

    /// The value at rank `D` with `shape` (its own shape, checked by the caller), detached from
    /// any autodiff graph so that it can become another model's parameter.
    pub fn reshaped<const D: usize>(&self, shape: [usize; D]) -> Tensor<D> {
        match self {
            Self::D1(_, t) => t.clone().detach().reshape(shape),
            Self::D2(_, t) => t.clone().detach().reshape(shape),
            Self::D3(_, t) => t.clone().detach().reshape(shape),
        }
    }

    /// The checkpoint name.
    pub fn name(&self) -> &str {
        match self {
            Self::D1(n, _) | Self::D2(n, _) | Self::D3(n, _) => n,
        }
    }

    /// The shape as stored.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Self::D1(_, t) => t.dims().to_vec(),
            Self::D2(_, t) => t.dims().to_vec(),
            Self::D3(_, t) => t.dims().to_vec(),
        }
    }

    /// Bytes as f32, little-endian.
    fn f32_bytes(&self) -> Result<Vec<u8>> {
        let data = match self {
            Self::D1(_, t) => t.to_data(),
            Self::D2(_, t) => t.to_data(),
            Self::D3(_, t) => t.to_data(),
        };
        let values = data
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| Error::Invalid(format!("reading tensor `{}`: {e:?}", self.name())))?;
        Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    fn byte_len(&self) -> usize {
        4 * self.shape().iter().product::<usize>()
    }
}

/// Writes `tensors` as f32 into `dir` (created if needed): `model.safetensors`, or numbered shards
/// of at most `max_shard_bytes` plus the index. Stale weight files of an earlier save are removed.
pub fn save_safetensors(dir: &Path, tensors: &[NamedTensor], max_shard_bytes: usize) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = tensors.iter().find(|t| !seen.insert(t.name().to_string())) {
        return Err(Error::Invalid(format!(
            "two tensors are named `{}`",
            dup.name()
        )));
    }
    let mut shards: Vec<Vec<&NamedTensor>> = vec![vec![]];
    let mut size = 0usize;
    for t in tensors {
        let len = t.byte_len();
        if size > 0 && size + len > max_shard_bytes {
            shards.push(vec![]);
            size = 0;
        }
        shards.last_mut().expect("one shard").push(t);
        size += len;
    }
    remove_weight_files(dir)?;
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    if shards.len() == 1 {
        return write_shard(&dir.join(SINGLE_FILE), &shards[0], metadata);
    }
    let count = shards.len();
    let mut weight_map = BTreeMap::new();
    let mut total = 0usize;
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, count);
        write_shard(&dir.join(&file), shard, metadata.clone())?;
        for t in shard {
            weight_map.insert(t.name().to_string(), file.clone());
            total += t.byte_len();
        }
    }
    let index = json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
    write_atomic(
        &dir.join(INDEX_FILE),
        serde_json::to_string_pretty(&index)
            .expect("an index serialises")
            .as_bytes(),
    )
}

fn write_shard(
    path: &Path,
    tensors: &[&NamedTensor],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.f32_bytes())
        .collect::<Result<_>>()?;
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            TensorView::new(Dtype::F32, t.shape(), b)
                .map(|v| (t.name().to_string(), v))
                .map_err(|e| Error::Tensor {
                    file: path.to_path_buf(),
                    tensor: t.name().into(),
                    message: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize_to_file(views, metadata, path).map_err(|e| Error::Checkpoint {
        file: path.to_path_buf(),
        message: format!("writing failed: {e}"),
    })?;
    make_readable(path)
}

/// Temporary files are created owner-only; give the finished file the usual `rw-r--r--`.
fn make_readable(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// Removes `model.safetensors`, numbered shards and the index from `dir`.
fn remove_weight_files(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let weights = name == SINGLE_FILE
            || name == INDEX_FILE
            || (name.starts_with("model-") && name.ends_with(".safetensors"));
        if weights {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let parent = path.parent().unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(parent).map_err(|e| Error::io(parent, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    make_readable(path)
}
