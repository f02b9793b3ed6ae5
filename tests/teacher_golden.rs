//! The Qwen2 teacher against transformers: logits of every position within 1e-4, identical
//! greedy ids, and KV-cache decoding equal to the full forward; on every compiled backend.

use arwkv::generation::{GenerationConfig, generate};
use arwkv::teacher::{KvCache, PretrainedQwen2};
use arwkv_tests::{golden, ids, max_abs_diff, qwen2_fixtures, test_devices};
use burn::prelude::*;

/// Tolerance of the issue: max |Δlogit| ≤ 1e-4 against transformers' float32 forward.
const LOGIT_TOLERANCE: f32 = 1e-4;

fn ids_tensor(ids: &[u32], device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = ids.iter().map(|&x| x as i64).collect();
    Tensor::from_data(TensorData::new(data, [1, ids.len()]), device)
}

fn to_vec(t: Tensor<3>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

#[test]
fn logits_match_transformers() {
    for (kind, device) in test_devices() {
        for dir in qwen2_fixtures() {
            let g = golden(&dir);
            let teacher = PretrainedQwen2::load(dir.to_str().unwrap(), &device).unwrap();
            let logits = to_vec(
                teacher
                    .model
                    .forward(ids_tensor(&ids(&g["ids"]), &device), None)
                    .unwrap(),
            );
            let diff = max_abs_diff(&g["logits"], &logits);
            eprintln!("{kind} {}: max |Δlogit| = {diff:.3e}", dir.display());
            assert!(
                diff <= LOGIT_TOLERANCE,
                "{kind} {}: max |Δlogit| = {diff}",
                dir.display()
            );
        }
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    for (kind, device) in test_devices() {
        for dir in qwen2_fixtures() {
            let g = golden(&dir);
            let teacher = PretrainedQwen2::load(dir.to_str().unwrap(), &device).unwrap();
            let prompt = ids(&g["greedy"]["prompt_ids"]);
            let expected = ids(&g["greedy"]["generated_ids"]);
            let config = GenerationConfig {
                max_new_tokens: expected.len(),
                ..Default::default()
            };
            let got = generate(&teacher.model, &prompt, &config, &device, |_| Ok(())).unwrap();
            assert_eq!(got, expected, "{kind} {}", dir.display());
        }
    }
}

#[test]
fn kv_cache_decoding_equals_full_forward() {
    for (kind, device) in test_devices() {
        let dir = &qwen2_fixtures()[0];
        let g = golden(dir);
        let teacher = PretrainedQwen2::load(dir.to_str().unwrap(), &device).unwrap();
        let all = ids(&g["ids"]);
        let full = to_vec(
            teacher
                .model
                .forward(ids_tensor(&all, &device), None)
                .unwrap(),
        );
        let vocab = teacher.model.config.vocab_size;
        let mut cache = KvCache::new();
        // Prefill 4 tokens, then one at a time.
        let mut pieces = vec![to_vec(
            teacher
                .model
                .forward(ids_tensor(&all[..4], &device), Some(&mut cache))
                .unwrap(),
        )];
        for &id in &all[4..] {
            pieces.push(to_vec(
                teacher
                    .model
                    .forward(ids_tensor(&[id], &device), Some(&mut cache))
                    .unwrap(),
            ));
        }
        let stepped: Vec<f32> = pieces.concat();
        assert_eq!(stepped.len(), all.len() * vocab);
        let diff = full
            .iter()
            .zip(&stepped)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff <= 1e-5, "{kind}: cached decoding differs by {diff}");
        assert_eq!(cache.len(), all.len());
    }
}

#[test]
fn out_of_vocabulary_id_is_an_error() {
    let (_, device) = test_devices().remove(0);
    let dir = &qwen2_fixtures()[0];
    let teacher = PretrainedQwen2::load(dir.to_str().unwrap(), &device).unwrap();
    let err = teacher
        .model
        .forward(ids_tensor(&[1, 100_000], &device), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("token id 100000 is outside the vocabulary"),
        "{err}"
    );
}

#[test]
fn more_ids_than_the_context_are_refused_before_the_forward() {
    let (_, device) = test_devices().remove(0);
    let dir = &qwen2_fixtures()[0];
    let model = arwkv::pretrained::Pretrained::load(dir.to_str().unwrap(), &device).unwrap();
    let err = model
        .logits(&vec![1; 257], &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("257 token ids are more than the model's context of 256"),
        "{err}"
    );
    assert!(model.logits(&[1, 2, 3], &device).is_ok());
}
