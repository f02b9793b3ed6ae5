//! The training math against PyTorch (`fixtures/make_training_fixtures.py`): AdamW with global
//! gradient clipping step by step, and the stage-1 / stage-2 / SFT losses with their gradients.

use arwkv::distill::{AlignmentLoss, alignment_loss, kl_divergence, next_token_cross_entropy};
use arwkv::train::{AdamW, AdamWConfig};
use arwkv_tests::fixtures_dir;
use burn::module::Param;
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde_json::Value;

fn golden() -> Value {
    let path = fixtures_dir().join("training").join("golden.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Flattens nested JSON arrays of numbers.
fn flat(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        other => panic!("not a number: {other}"),
    }
}

fn shape(v: &Value) -> Vec<usize> {
    match v {
        Value::Array(items) => {
            let mut s = vec![items.len()];
            s.extend(shape(&items[0]));
            s
        }
        _ => vec![],
    }
}

fn tensor<const D: usize>(v: &Value, device: &Device) -> Tensor<D> {
    let s: [usize; D] = shape(v).try_into().unwrap();
    Tensor::from_data(TensorData::new(flat(v), s), device)
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn assert_close(name: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        err <= tol * scale,
        "{name}: max error {err:e} (scale {scale:e})"
    );
}

#[derive(Module, Debug)]
struct Toy {
    matrix: Param<Tensor<2>>,
    vector: Param<Tensor<3>>,
    bias: Param<Tensor<1>>,
}

#[test]
fn adamw_with_global_clipping_matches_torch_step_by_step() {
    let g = golden();
    let case = &g["adamw"];
    let device = Device::flex().autodiff();
    let mut toy = Toy {
        matrix: Param::from_tensor(tensor::<2>(&case["init"]["matrix"], &device)),
        vector: Param::from_tensor(tensor::<3>(&case["init"]["vector"], &device)),
        bias: Param::from_tensor(tensor::<1>(&case["init"]["bias"], &device)),
    };
    let mut opt = AdamW::new(AdamWConfig::default());
    for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
        let grads = &step["grads"];
        // L = Σ p ⊙ g has gradient g.
        let loss = (toy.matrix.val() * tensor::<2>(&grads["matrix"], &device)).sum()
            + (toy.vector.val() * tensor::<3>(&grads["vector"], &device)).sum()
            + (toy.bias.val() * tensor::<1>(&grads["bias"], &device)).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &toy);
        let (next, stats) = opt.step(toy, grads, step["lr"].as_f64().unwrap());
        toy = next;
        let want_norm = step["grad_norm"].as_f64().unwrap();
        assert!(
            (stats.grad_norm - want_norm).abs() < 1e-5 * want_norm,
            "step {i}: grad norm {} vs {want_norm}",
            stats.grad_norm
        );
        let p = &step["params"];
        assert_close(
            &format!("step {i} matrix"),
            &host(toy.matrix.val()),
            &flat(&p["matrix"]),
            1e-5,
        );
        assert_close(
            &format!("step {i} vector"),
            &host(toy.vector.val()),
            &flat(&p["vector"]),
            1e-5,
        );
        assert_close(
            &format!("step {i} bias"),
            &host(toy.bias.val()),
            &flat(&p["bias"]),
            1e-5,
        );
    }
    assert_eq!(opt.step, 4);
    assert_eq!(opt.moments.len(), 3, "moments are keyed by parameter path");
    assert!(
        opt.moments.contains_key("matrix"),
        "{:?}",
        opt.moments.keys()
    );
}

#[test]
fn alignment_losses_and_gradients_match_torch() {
    let g = golden();
    let case = &g["alignment"];
    let device = Device::flex().autodiff();
    for (kind, key) in [
        (AlignmentLoss::L2Rms, "l2_rms"),
        (AlignmentLoss::Mse, "mse"),
    ] {
        let teacher = tensor::<3>(&case["teacher"], &device);
        let student = tensor::<3>(&case["student"], &device).require_grad();
        let loss = alignment_loss(teacher, student.clone(), None, kind);
        let value = host(loss.clone())[0];
        let want = case[key].as_f64().unwrap() as f32;
        assert!(
            (value - want).abs() < 1e-5 * want.abs(),
            "{key}: {value} vs {want}"
        );
        let grad = student.grad(&loss.backward()).unwrap();
        assert_close(
            &format!("{key} grad"),
            &host(grad),
            &flat(&case[&format!("{key}_grad")]),
            1e-4,
        );
    }
}

#[test]
fn kl_divergence_and_gradient_match_torch() {
    let g = golden();
    let case = &g["kl"];
    let device = Device::flex().autodiff();
    for tau in [1.0, 2.0] {
        let key = format!("tau{}", tau as u32);
        let teacher = tensor::<3>(&case["teacher"], &device);
        let student = tensor::<3>(&case["student"], &device).require_grad();
        let mask = tensor::<2>(&case["mask"], &device);
        let loss = kl_divergence(teacher, student.clone(), mask, tau);
        let value = host(loss.clone())[0];
        let want = case[&key]["loss"].as_f64().unwrap() as f32;
        assert!(
            (value - want).abs() < 1e-5 * want.abs(),
            "{key}: {value} vs {want}"
        );
        let grad = student.grad(&loss.backward()).unwrap();
        assert_close(
            &format!("{key} grad"),
            &host(grad),
            &flat(&case[&key]["grad"]),
            1e-4,
        );
    }
}

#[test]
fn next_token_cross_entropy_and_gradient_match_torch() {
    let g = golden();
    let case = &g["ce"];
    let device = Device::flex().autodiff();
    let logits = tensor::<3>(&case["logits"], &device).require_grad();
    let ids: Vec<i64> = flat(&case["ids"]).iter().map(|&x| x as i64).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [2, 6]), &device);
    let mask = tensor::<2>(&case["mask"], &device);
    let loss = next_token_cross_entropy(logits.clone(), ids, mask);
    let value = host(loss.clone())[0];
    let want = case["loss"].as_f64().unwrap() as f32;
    assert!(
        (value - want).abs() < 1e-5 * want.abs(),
        "ce: {value} vs {want}"
    );
    let grad = logits.grad(&loss.backward()).unwrap();
    assert_close("ce grad", &host(grad), &flat(&case["grad"]), 1e-4);
}

#[test]
fn dpo_loss_and_sequence_logprobs_match_torch() {
    use arwkv::distill::dpo::{dpo_loss, sequence_logprobs};
    let g = golden();
    let case = &g["dpo"];
    let device = Device::flex().autodiff();
    let policy = tensor::<3>(&case["policy"], &device).require_grad();
    let reference = tensor::<3>(&case["reference"], &device);
    let ids: Vec<i64> = flat(&case["ids"]).iter().map(|&x| x as i64).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [4, 6]), &device);
    let mask = tensor::<2>(&case["mask"], &device);
    let pl = sequence_logprobs(policy.clone(), ids.clone(), mask.clone());
    assert_close(
        "policy logps",
        &host(pl.clone()),
        &flat(&case["policy_logps"]),
        1e-5,
    );
    let rl = sequence_logprobs(reference, ids, mask);
    let d = dpo_loss(pl, rl, 0.1, 0.1);
    let value = host(d.loss.clone())[0];
    let want = case["loss"].as_f64().unwrap() as f32;
    assert!(
        (value - want).abs() < 1e-5 * want.abs(),
        "dpo: {value} vs {want}"
    );
    assert_eq!(d.accuracy, case["accuracy"].as_f64().unwrap());
    let grad = policy.grad(&d.loss.backward()).unwrap();
    assert_close("dpo grad", &host(grad), &flat(&case["grad"]), 1e-4);
}

#[test]
fn top_k_kl_matches_torch() {
    use arwkv::distill::kl_divergence_top_k;
    let g = golden();
    let case = &g["kl"];
    let device = Device::flex().autodiff();
    let teacher = tensor::<3>(&case["teacher"], &device);
    let student = tensor::<3>(&case["student"], &device).require_grad();
    let mask = tensor::<2>(&case["mask"], &device);
    let loss = kl_divergence_top_k(teacher, student.clone(), mask, 1.0, 4);
    let value = host(loss.clone())[0];
    let want = case["top4"]["loss"].as_f64().unwrap() as f32;
    assert!(
        (value - want).abs() < 1e-5 * want.abs(),
        "top-4 KL: {value} vs {want}"
    );
    let grad = student.grad(&loss.backward()).unwrap();
    assert_close(
        "top-4 grad",
        &host(grad),
        &flat(&case["top4"]["grad"]),
        1e-4,
    );
}
