//! Shared helpers of the integration tests: fixture paths, golden files, devices, comparisons.

use std::path::{Path, PathBuf};

use arwkv::BackendKind;
use arwkv::teacher::{PretrainedQwen2, Qwen2ForCausalLM};
use burn::prelude::{Device, Int, Tensor, TensorData};
use serde_json::Value;

/// `tests/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The tiny Qwen2 checkpoints made by `fixtures/make_qwen2_fixtures.py`.
pub fn qwen2_fixtures() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures_dir().join("qwen2"))
        .expect("tests/fixtures/qwen2 exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("golden.json").is_file())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 3,
        "expected the committed Qwen2 fixtures, found {dirs:?}"
    );
    dirs
}

/// A fixture's `golden.json`.
pub fn golden(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap()
}

/// The devices the golden tests run on: the CPU always, WGPU / CUDA when compiled in.
pub fn test_devices() -> Vec<(BackendKind, Device)> {
    [BackendKind::Cpu, BackendKind::Wgpu, BackendKind::Cuda]
        .into_iter()
        .filter(|k| k.is_compiled())
        .map(|k| (k, k.device().expect("compiled backend")))
        .collect()
}

/// A JSON array of numbers as u32 ids.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Largest absolute difference between a golden `[[f32]]` and a flat row-major slice.
pub fn max_abs_diff(golden: &Value, flat: &[f32]) -> f32 {
    let rows = golden.as_array().unwrap();
    let width = rows[0].as_array().unwrap().len();
    assert_eq!(
        rows.len() * width,
        flat.len(),
        "shape mismatch against the golden values"
    );
    rows.iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .zip(flat)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

/// The small tied GQA fixture teacher (`qwen2/tied-gqa2-f32`), its network only.
pub fn fixture_teacher(device: &Device) -> Qwen2ForCausalLM {
    let dir = fixtures_dir().join("qwen2").join("tied-gqa2-f32");
    PretrainedQwen2::load_weights_only(dir.to_str().unwrap(), device)
        .unwrap()
        .model
}

/// `[rows, len]` token ids spread over a vocabulary of `vocab`.
pub fn spread_ids(rows: usize, len: usize, vocab: usize, device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = (0..rows * len)
        .map(|i| ((i * 7919 + 13) % vocab) as i64)
        .collect();
    Tensor::from_data(TensorData::new(data, [rows, len]), device)
}
