//! The time mixer against the PyPI `rwkv` package's RWKV-7 layer (`RWKV_x070_TMix_seq`), on the
//! fixed weights and inputs of `fixtures/make_time_mix_fixtures.py`: layer 0 (defines v_first) and
//! layer 1 (value residual), continuing from a non-zero token shift and WKV state, T = 21.

use std::path::Path;

use arwkv::student::{ArwkvConfig, TimeMixState, TimeMixer};
use arwkv::weights::Checkpoint;
use arwkv_tests::{fixtures_dir, test_devices};
use burn::prelude::*;
use serde_json::json;

/// Relative RMS error tolerated against the f32 PyTorch reference.
const TOLERANCE: f64 = 1e-5;

fn rms_ratio(ours: Tensor<3>, golden: Tensor<3>) -> f64 {
    let diff = (ours - golden.clone()).powi_scalar(2).mean().sqrt();
    let scale = golden.powi_scalar(2).mean().sqrt();
    (diff / scale).into_scalar::<f32>() as f64
}

fn config(gated: bool, group_norm: bool) -> ArwkvConfig {
    let value = json!({
        "model_type": "rwkv_hybrid", "vocab_size": 16, "hidden_size": 128,
        "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "head_size": 64, "wkv_has_gate": gated, "wkv_has_group_norm": group_norm,
    });
    ArwkvConfig::from_value(value, Path::new("config.json")).unwrap()
}

fn check_variant(file: &str, gated: bool, group_norm: bool) {
    let path = fixtures_dir().join("time_mix").join(file);
    let ck = Checkpoint::open_files(std::slice::from_ref(&path), path.clone()).unwrap();
    let cfg = config(gated, group_norm);
    for (kind, device) in test_devices() {
        let load3 = |name: &str| -> Tensor<3> {
            let s = ck.shape(name).unwrap();
            ck.load(name, [s[0], s[1], s[2]], &device).unwrap()
        };
        let load2 = |name: &str| -> Tensor<2> {
            let s = ck.shape(name).unwrap();
            ck.load(name, [s[0], s[1]], &device).unwrap()
        };
        let load4 = |name: &str| -> Tensor<4> {
            let s = ck.shape(name).unwrap();
            ck.load(name, [s[0], s[1], s[2], s[3]], &device).unwrap()
        };
        let mut v_first = None;
        for layer in 0..2 {
            let prefix = format!("model.layers.{layer}.self_attn.time_mixer");
            let mixer = TimeMixer::load(&ck, &prefix, layer, &cfg, &device).unwrap();
            let state = TimeMixState {
                shift: load2(&format!("input.layer{layer}.shift")),
                wkv: load4(&format!("input.layer{layer}.state")),
            };
            let out = mixer
                .forward(
                    load3(&format!("input.layer{layer}.x")),
                    v_first.take(),
                    Some(state),
                    None,
                )
                .unwrap();
            let err_out = rms_ratio(out.out, load3(&format!("golden.layer{layer}.out")));
            let [b, h, n, _] = out.state.wkv.dims();
            let err_state = rms_ratio(
                out.state.wkv.reshape([b, h, n * n]),
                load4(&format!("golden.layer{layer}.state")).reshape([b, h, n * n]),
            );
            let shift = out.state.shift.clone().unsqueeze_dim::<3>(1);
            let err_shift = rms_ratio(
                shift,
                load2(&format!("golden.layer{layer}.shift")).unsqueeze_dim(1),
            );
            eprintln!("{file} {kind} layer {layer}: out {err_out:.2e}, state {err_state:.2e}");
            assert!(
                err_out < TOLERANCE,
                "{file} {kind} layer {layer}: output error {err_out:e}"
            );
            assert!(
                err_state < TOLERANCE,
                "{file} {kind} layer {layer}: state error {err_state:e}"
            );
            assert!(
                err_shift == 0.0,
                "{file} {kind} layer {layer}: shift differs"
            );
            if layer == 0 {
                let err_v = rms_ratio(out.v_first.clone(), load3("golden.v_first"));
                assert!(err_v < TOLERANCE, "{file} {kind}: v_first error {err_v:e}");
            }
            v_first = Some(out.v_first);
        }
    }
}

#[test]
fn gated_groupnorm_layer_matches_the_rwkv_package() {
    check_variant("gated_groupnorm.safetensors", true, true);
}

#[test]
fn gate_free_layer_without_groupnorm_matches_the_rwkv_package() {
    check_variant("gatefree_nonorm.safetensors", false, false);
}
