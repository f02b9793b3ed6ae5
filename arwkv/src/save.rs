//! Writing Hugging Face safetensors checkpoints: one file, or shards with
//! `model.safetensors.index.json` when the tensors exceed the shard size. Every file is written to
//! a temporary sibling and renamed, so a crash never leaves a half-written checkpoint behind a
//! complete-looking name.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::prelude::*;
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

/// Values read from a tensor at once while saving it (16 MB of f32).
const SAVE_BLOCK: usize = 1 << 22;

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

    /// Writes the values as f32, little-endian, reading the tensor a slice of [`SAVE_BLOCK`] values
    /// at a time (so a save holds a few megabytes of values at once, never a whole tensor's or
    /// checkpoint's: a 7B model's embeddings alone are 2 GB).
    fn write_f32_le(&self, out: &mut impl std::io::Write, path: &Path) -> Result<()> {
        let len = self.shape().iter().product::<usize>();
        let flat = self.reshaped([len]);
        let mut bytes = Vec::with_capacity(4 * SAVE_BLOCK);
        for start in (0..len).step_by(SAVE_BLOCK) {
            let end = (start + SAVE_BLOCK).min(len);
            let data = flat.clone().slice(start..end).to_data().convert::<f32>();
            let values = data
                .as_slice::<f32>()
                .map_err(|e| Error::Invalid(format!("reading tensor `{}`: {e:?}", self.name())))?;
            bytes.clear();
            bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            out.write_all(&bytes).map_err(|e| Error::io(path, e))?;
        }
        Ok(())
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

/// Writes one safetensors file: the 8-byte header length, the JSON header (names, dtype, shapes,
/// contiguous data offsets in the order given; padded with spaces to 8 bytes), then each tensor's
/// f32 values in turn, into a temporary sibling renamed when complete.
fn write_shard(
    path: &Path,
    tensors: &[&NamedTensor],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    use std::io::Write;
    let mut header = serde_json::Map::new();
    if let Some(metadata) = metadata {
        header.insert("__metadata__".into(), json!(metadata));
    }
    let mut offset = 0usize;
    for t in tensors {
        let end = offset + t.byte_len();
        header.insert(
            t.name().to_string(),
            json!({ "dtype": "F32", "shape": t.shape(), "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut header = serde_json::to_string(&header).expect("a header serialises");
    header.push_str(&" ".repeat((8 - header.len() % 8) % 8));
    let parent = path.parent().unwrap_or_else(|| Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(parent).map_err(|e| Error::io(parent, e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
    out.write_all(&(header.len() as u64).to_le_bytes())
        .and_then(|_| out.write_all(header.as_bytes()))
        .map_err(|e| Error::io(path, e))?;
    for t in tensors {
        t.write_f32_le(&mut out, path)?;
    }
    out.flush().map_err(|e| Error::io(path, e))?;
    drop(out);
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streamed_file_is_valid_safetensors_with_every_value() {
        let device = Device::flex();
        let a = Tensor::<2>::from_data(
            TensorData::new(vec![1.5f32, -2.0, 3.25, 0.0, 7.0, -0.5], [2, 3]),
            &device,
        );
        // Longer than one read block, so that it is written in several.
        let long: Vec<f32> = (0..SAVE_BLOCK + 3).map(|i| i as f32 * 0.5).collect();
        let b = Tensor::<1>::from_data(TensorData::new(long, [SAVE_BLOCK + 3]), &device);
        let c = Tensor::<3>::from_data(TensorData::new(vec![9.0f32], [1, 1, 1]), &device);
        let tensors = [
            NamedTensor::new("z.weight".into(), a),
            NamedTensor::new("a.bias".into(), b),
            NamedTensor::new("m.x".into(), c),
        ];
        let dir = tempfile::tempdir().unwrap();
        save_safetensors(dir.path(), &tensors, usize::MAX).unwrap();
        let bytes = std::fs::read(dir.path().join(SINGLE_FILE)).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!((8 + header_len) % 8, 0, "data starts 8-byte aligned");
        // The safetensors crate's own reader validates the header and the offsets.
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for t in &tensors {
            let view = file.tensor(t.name()).unwrap();
            assert_eq!(view.dtype(), safetensors::Dtype::F32);
            assert_eq!(view.shape(), t.shape().as_slice());
            let values: Vec<f32> = view
                .data()
                .chunks(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            let expected = t.reshaped([t.shape().iter().product::<usize>()]);
            assert_eq!(
                values,
                expected.into_data().try_to_vec::<f32>().unwrap(),
                "{}",
                t.name()
            );
        }
        let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(metadata.metadata().as_ref().unwrap()["format"], "pt");
        // No temporary file is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
