//! Hugging Face safetensors checkpoints: one file or shards with `model.safetensors.index.json`.
//!
//! Files are memory-mapped; each tensor is converted to f32 on its own and handed to the device,
//! so a large checkpoint is never held twice in host memory.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Name of the single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Name of the shard index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

struct Shard {
    path: PathBuf,
    mmap: Mmap,
    data_start: usize,
    tensors: HashMap<String, safetensors::tensor::TensorInfo>,
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

/// An opened checkpoint: tensor names resolved to memory-mapped shards.
pub struct Checkpoint {
    shards: Vec<Shard>,
    location: HashMap<String, usize>,
    used: RefCell<BTreeSet<String>>,
    /// The file or index the checkpoint was opened from, for messages.
    origin: PathBuf,
}

impl Checkpoint {
    /// Opens the checkpoint in a model folder (index file first, then `model.safetensors`).
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index = dir.join(INDEX_FILE);
        if index.is_file() {
            return Self::open_index(&index);
        }
        let single = dir.join(SINGLE_FILE);
        if single.is_file() {
            return Self::open_files(std::slice::from_ref(&single), single.clone());
        }
        Err(Error::Checkpoint {
            file: dir.to_path_buf(),
            message: format!("no weights found: expected `{SINGLE_FILE}` or `{INDEX_FILE}`"),
        })
    }

    /// Opens a sharded checkpoint from its index file.
    pub fn open_index(index: &Path) -> Result<Self> {
        let parsed: ShardIndex = crate::error::read_json(index)?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut files: Vec<String> = parsed.weight_map.values().cloned().collect();
        files.sort();
        files.dedup();
        let paths: Vec<PathBuf> = files
            .iter()
            .map(|f| crate::folder_path::inside(dir, f, index))
            .collect::<Result<_>>()?;
        let ck = Self::open_files(&paths, index.to_path_buf())?;
        // The index must agree with the shards it names.
        for (name, file) in &parsed.weight_map {
            let listed = dir.join(file);
            match ck.location.get(name) {
                Some(&i) if ck.shards[i].path == listed => {}
                Some(&i) => {
                    return Err(Error::Tensor {
                        file: index.to_path_buf(),
                        tensor: name.clone(),
                        message: format!(
                            "index says `{file}` but it is stored in {}",
                            ck.shards[i].path.display()
                        ),
                    });
                }
                None => {
                    return Err(Error::Tensor {
                        file: listed,
                        tensor: name.clone(),
                        message: format!("listed in {INDEX_FILE} but not present in the shard"),
                    });
                }
            }
        }
        Ok(ck)
    }

    /// Opens the given safetensors files as one checkpoint.
    pub fn open_files(paths: &[PathBuf], origin: PathBuf) -> Result<Self> {
        let mut shards = Vec::with_capacity(paths.len());
        let mut location = HashMap::new();
        for path in paths {
            let shard = Shard::open(path)?;
            for name in shard.tensors.keys() {
                if let Some(&prev) = location.get(name) {
                    let prev: &Shard = &shards[prev];
                    return Err(Error::Tensor {
                        file: path.clone(),
                        tensor: name.clone(),
                        message: format!("also stored in {}", prev.path.display()),
                    });
                }
                location.insert(name.clone(), shards.len());
            }
            shards.push(shard);
        }
        Ok(Self {
            shards,
            location,
            used: RefCell::new(BTreeSet::new()),
            origin,
        })
    }

    /// Whether the checkpoint holds a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    /// Checks that the checkpoint holds exactly `expected` decoder layers (`model.layers.0.` …
    /// `model.layers.{expected-1}.`), before a model allocates anything per layer: a `config.json`
    /// that disagrees with its weights is named at once.
    pub fn check_layer_count(&self, expected: usize) -> Result<()> {
        const PREFIX: &str = "model.layers.";
        let stored: BTreeSet<usize> = self
            .location
            .keys()
            .filter_map(|n| n.strip_prefix(PREFIX)?.split('.').next()?.parse().ok())
            .collect();
        let contiguous = stored.iter().copied().eq(0..stored.len());
        if stored.len() == expected && contiguous {
            return Ok(());
        }
        Err(Error::Checkpoint {
            file: self.origin.clone(),
            message: if contiguous {
                format!(
                    "holds {} decoder layer(s) but config.json says num_hidden_layers = {expected}",
                    stored.len()
                )
            } else {
                format!(
                    "decoder layer numbers are not 0..{}: {stored:?}",
                    stored.len()
                )
            },
        })
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.location.keys().cloned().collect();
        v.sort();
        v
    }

    /// The stored dtype of the first tensor (the checkpoint's dtype, as a rule).
    pub fn stored_dtypes(&self) -> BTreeSet<String> {
        self.shards
            .iter()
            .flat_map(|s| s.tensors.values().map(|t| format!("{:?}", t.dtype)))
            .collect()
    }

    /// Number of shard files.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The stored shape of a tensor.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.location
            .get(name)
            .map(|&i| self.shards[i].tensors[name].shape.clone())
    }

    /// Reads a tensor as f32 values after checking its shape.
    pub fn read_f32(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let &i = self.location.get(name).ok_or_else(|| Error::Tensor {
            file: self.origin.clone(),
            tensor: name.into(),
            message: "missing from the checkpoint".into(),
        })?;
        let shard = &self.shards[i];
        let info = &shard.tensors[name];
        let fail = |message: String| Error::Tensor {
            file: shard.path.clone(),
            tensor: name.into(),
            message,
        };
        if info.shape != expected {
            return Err(fail(format!(
                "shape {:?} does not match the expected {:?}",
                info.shape, expected
            )));
        }
        let (start, end) = info.data_offsets;
        let bytes = &shard.mmap[shard.data_start + start..shard.data_start + end];
        let values = match info.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(fail(format!(
                    "dtype {other:?} is not supported (f32, f16 or bf16)"
                )));
            }
        };
        let values: Vec<f32> = values;
        let non_finite = values.iter().filter(|v| !v.is_finite()).count();
        if non_finite > 0 {
            return Err(fail(format!(
                "holds {non_finite} NaN or infinite value(s) of {}: the weights are corrupt or \
                 come from a diverged run",
                values.len()
            )));
        }
        self.used.borrow_mut().insert(name.to_string());
        Ok(values)
    }

    /// Loads a tensor of the given shape onto `device` as f32.
    pub fn load<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>> {
        let values = self.read_f32(name, &shape)?;
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// Fails on the first stored tensor that was never loaded and that `ignore` does not excuse.
    pub fn ensure_all_used(&self, ignore: impl Fn(&str) -> bool) -> Result<()> {
        let used = self.used.borrow();
        let mut names = self.names();
        names.retain(|n| !used.contains(n) && !ignore(n));
        match names.first() {
            None => Ok(()),
            Some(name) => Err(Error::Tensor {
                file: self.shards[self.location[name]].path.clone(),
                tensor: name.clone(),
                message: format!(
                    "unexpected tensor: the model has no such parameter{}",
                    if names.len() > 1 {
                        format!(" ({} more unexpected)", names.len() - 1)
                    } else {
                        String::new()
                    }
                ),
            }),
        }
    }
}

impl Shard {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; a checkpoint modified while it is mapped is the user's
        // problem, as with every mmap-based loader (PyTorch, candle, safetensors itself).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (header_len, metadata) =
            SafeTensors::read_metadata(&mmap).map_err(|e| Error::Checkpoint {
                file: path.to_path_buf(),
                message: format!("not a valid safetensors file (corrupt or truncated): {e}"),
            })?;
        let tensors = metadata
            .tensors()
            .into_iter()
            .map(|(k, v)| (k, v.clone()))
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            data_start: 8 + header_len,
            tensors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::{Dtype, TensorView};

    fn checkpoint_with(names: &[&str]) -> (tempfile::TempDir, Checkpoint) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SINGLE_FILE);
        let bytes = 1f32.to_le_bytes().to_vec();
        let views: Vec<(String, TensorView)> = names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    TensorView::new(Dtype::F32, vec![1], &bytes).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &path).unwrap();
        let ck = Checkpoint::open_dir(dir.path()).unwrap();
        (dir, ck)
    }

    #[test]
    fn a_layer_count_that_disagrees_with_the_weights_is_named_before_loading() {
        let (_d, ck) = checkpoint_with(&[
            "model.embed_tokens.weight",
            "model.layers.0.input_layernorm.weight",
            "model.layers.1.input_layernorm.weight",
        ]);
        ck.check_layer_count(2).unwrap();
        let err = ck.check_layer_count(1 << 60).unwrap_err().to_string();
        assert!(
            err.contains("holds 2 decoder layer(s)") && err.contains("num_hidden_layers"),
            "{err}"
        );
        let (_d, gap) = checkpoint_with(&["model.layers.0.a", "model.layers.2.a"]);
        let err = gap.check_layer_count(2).unwrap_err().to_string();
        assert!(err.contains("not 0..2"), "{err}");
    }

    #[test]
    fn an_index_naming_a_shard_outside_the_folder_is_refused() {
        let (dir, _ck) = checkpoint_with(&["model.layers.0.a"]);
        let index = dir.path().join(INDEX_FILE);
        std::fs::write(
            &index,
            r#"{"weight_map": {"model.layers.0.a": "../../../etc/passwd"}}"#,
        )
        .unwrap();
        let e = Checkpoint::open_dir(dir.path()).err().unwrap().to_string();
        assert!(
            e.contains("index") && e.contains("only files inside"),
            "{e}"
        );
    }

    #[test]
    fn non_finite_weights_are_refused_naming_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SINGLE_FILE);
        let bytes: Vec<u8> = [1.0f32, f32::NAN, f32::INFINITY]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let view = TensorView::new(Dtype::F32, vec![3], &bytes).unwrap();
        safetensors::serialize_to_file(vec![("w".to_string(), view)], None, &path).unwrap();
        let ck = Checkpoint::open_dir(dir.path()).unwrap();
        let e = ck.read_f32("w", &[3]).unwrap_err().to_string();
        assert!(
            e.contains("`w`") && e.contains("2 NaN or infinite value(s) of 3"),
            "{e}"
        );
    }
}
