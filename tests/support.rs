//! Shared helpers of the integration tests: fixture paths, golden files, devices, comparisons.

use std::path::{Path, PathBuf};

use arwkv::BackendKind;
use arwkv::distill::run::{Observer, StepMetrics};
use arwkv::teacher::{PretrainedQwen2, Qwen2ForCausalLM};
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::{Device, Int, Tensor, TensorData};
use burn::tensor::{DType, Gradients};
use serde_json::Value;

/// `tests/fixtures`, or `$ARWKV_TEST_FIXTURES` where the test binaries run away from the checkout
/// they were built in (`scripts/gpu-check.sh` on a GPU machine).
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("ARWKV_TEST_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"),
    }
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

/// The devices the golden tests run on: the CPU always, WGPU / CUDA when compiled in, unless
/// `$ARWKV_TEST_BACKENDS` (comma-separated: `cpu,cuda`) narrows them (`scripts/gpu-check.sh` runs
/// CUDA and a real GPU's Vulkan apart, so that one missing driver does not hide the other's result).
pub fn test_devices() -> Vec<(BackendKind, Device)> {
    let wanted = std::env::var("ARWKV_TEST_BACKENDS").ok();
    let wanted = |k: &BackendKind| {
        wanted
            .as_deref()
            .is_none_or(|list| list.split(',').any(|name| name.trim() == k.name()))
    };
    [BackendKind::Cpu, BackendKind::Wgpu, BackendKind::Cuda]
        .into_iter()
        .filter(|k| k.is_compiled() && wanted(k))
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

/// An observer that lets every step run and shows nothing.
pub struct Quiet;

impl Observer for Quiet {
    fn on_step(&mut self, _: &StepMetrics, _: u64) -> bool {
        true
    }
}

/// The loss of every step a run wrote to `out/metrics.jsonl`.
pub fn run_losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<StepMetrics>(l).unwrap().loss)
        .collect()
}

/// Every parameter's gradient in `model`'s order: its id, its dtype and its values as f32.
pub fn parameter_gradients<M: Module>(
    model: &M,
    grads: &Gradients,
) -> Vec<(String, DType, Vec<f32>)> {
    struct Collect<'a> {
        grads: &'a Gradients,
        out: Vec<(String, DType, Vec<f32>)>,
    }
    impl ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = param.grad(self.grads) {
                let dtype = g.dtype();
                let values = g.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
                self.out.push((param.id.to_string(), dtype, values));
            }
        }
    }
    let mut c = Collect {
        grads,
        out: Vec::new(),
    };
    model.visit(&mut c);
    c.out
}
