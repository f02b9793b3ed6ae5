//! The precision policy (`precision = "f32" | "bf16-mixed" | "f16-mixed"`): a mixed run stores and
//! runs the frozen teacher in the low-precision dtype and computes the student's forward and
//! backward in it, with f32 master weights, norms, WKV-7 state and losses. Here each mixed mode
//! against f32 on the same data: the teacher's logits, one stage-2 gradient (whole logits and
//! chunked), and a few steps of every stage through `distill::run`, within stated tolerances; and
//! a backend without the dtype is refused by name.

use std::path::{Path, PathBuf};

use arwkv::distill::chunked_loss::{
    CrossEntropyTerm, HeadInput, next_token_targets, stage2_loss_chunked,
};
use arwkv::distill::loss::{kl_divergence, next_token_cross_entropy};
use arwkv::distill::run::{RunConfig, Stage, StageConfig, Start, run};
use arwkv::student::{ArwkvForCausalLM, StudentOptions};
use arwkv::teacher::Qwen2ForCausalLM;
use arwkv::{BackendKind, Precision};
use arwkv_tests::{
    Quiet, fixture_teacher as teacher, fixtures_dir, parameter_gradients, run_losses as losses,
    spread_ids as ids,
};
use burn::prelude::*;
use burn::tensor::{DType, Gradients};

/// Largest relative difference of a mixed mode from f32: per mode, for the teacher's logits
/// (‖Δ‖/‖f32‖ over all logits), the whole student gradient (‖Δ‖/‖f32‖ over all parameters
/// together) and the loss of each training step. The differences are rounding: bf16 keeps 8
/// significant bits and f16 11, and the measured differences keep that ratio of 2³ (logits 1.0e-2
/// vs 1.2e-3, gradients 8.2e-2 vs 8.3e-3, on the fixture teacher at 2 × 12 tokens). The gradient
/// is the most sensitive: at the start of stage 2 it is the small difference of two close
/// distributions. Each bound is about 1.5× the worst measured figure (per-step losses: 0.2 % for
/// both modes, DPO's third step the largest).
struct Tolerance {
    logits: f64,
    gradient: f64,
    loss: f64,
}

fn tolerance(precision: Precision) -> Tolerance {
    match precision {
        Precision::F32 => Tolerance {
            logits: 0.0,
            gradient: 0.0,
            loss: 0.0,
        },
        Precision::Bf16Mixed => Tolerance {
            logits: 1.5e-2,
            gradient: 1.2e-1,
            loss: 3e-3,
        },
        Precision::F16Mixed => Tolerance {
            logits: 2e-3,
            gradient: 1.5e-2,
            loss: 3e-3,
        },
    }
}

const MIXED: [Precision; 2] = [Precision::Bf16Mixed, Precision::F16Mixed];

fn teacher_dir() -> PathBuf {
    fixtures_dir().join("qwen2").join("tied-gqa2-f32")
}

fn flat<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// ‖a − b‖ / ‖b‖.
fn relative(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (diff / norm.max(1e-30)).sqrt()
}

/// Every parameter's gradient in the model's order, with its dtype.
fn gradients(model: &ArwkvForCausalLM, grads: &Gradients) -> Vec<(DType, Vec<f32>)> {
    parameter_gradients(model, grads)
        .into_iter()
        .map(|(_, dtype, values)| (dtype, values))
        .collect()
}

#[test]
fn a_mixed_teacher_and_student_stay_within_tolerance_of_f32_with_f32_master_gradients() {
    let device = Device::flex().autodiff();
    let teacher_f32 = teacher(&device);
    let v = teacher_f32.config.vocab_size;
    let (b, t) = (2, 12);
    let ids = ids(b, t, v, &device);
    let mask = Tensor::<2>::ones([b, t], &device);
    let student_f32 =
        ArwkvForCausalLM::from_teacher(&teacher_f32, &StudentOptions::default()).unwrap();
    let reference_logits = flat(teacher_f32.forward(ids.clone(), None).unwrap());
    // Stage 2's loss (KL + CE) and the student's gradient, with whole logits or by chunks.
    let step = |teacher: &Qwen2ForCausalLM, student: &ArwkvForCausalLM, chunked: bool| {
        let loss = if chunked {
            let (targets, weights) = next_token_targets(ids.clone(), mask.clone());
            let t_hidden = teacher.hidden_states(ids.clone(), None).unwrap().detach();
            let hidden = student.hidden_states(ids.clone(), None).unwrap();
            stage2_loss_chunked(
                &HeadInput::new(t_hidden, teacher.head_weight().detach()),
                &HeadInput::new(hidden, student.head_weight()),
                mask.clone().reshape([b * t]),
                1.0,
                None,
                Some(CrossEntropyTerm {
                    targets,
                    weights,
                    scale: 0.5,
                }),
                5,
            )
            .0
        } else {
            let t_logits = teacher.forward(ids.clone(), None).unwrap().detach();
            let logits = student.forward(ids.clone(), None).unwrap();
            kl_divergence(t_logits, logits.clone(), mask.clone(), 1.0)
                + next_token_cross_entropy(logits, ids.clone(), mask.clone()) * 0.5
        };
        assert_eq!(loss.dtype(), DType::F32, "losses are f32");
        let value = loss.clone().into_scalar::<f64>();
        (value, gradients(student, &loss.backward()))
    };
    for chunked in [false, true] {
        let (loss_f32, grads_f32) = step(&teacher_f32, &student_f32, chunked);
        let all_f32: Vec<f32> = grads_f32.iter().flat_map(|(_, g)| g.clone()).collect();
        for precision in MIXED {
            let what = format!("{precision}, chunked {chunked}");
            let tol = tolerance(precision);
            let teacher = teacher(&device).with_weights_in(precision.compute_dtype());
            assert_eq!(
                teacher.model.layers[0].mlp.up_proj.weight.val().dtype(),
                DType::from(precision.compute_dtype()),
                "{what}: the teacher is stored in the low precision"
            );
            let logits = teacher.forward(ids.clone(), None).unwrap();
            assert_eq!(logits.dtype(), DType::from(precision.compute_dtype()));
            let logits_error = relative(&flat(logits), &reference_logits);
            assert!(
                logits_error > 0.0 && logits_error <= tol.logits,
                "{what}: teacher logits differ by {logits_error:e}"
            );
            let student = ArwkvForCausalLM::from_teacher(&teacher_f32, &StudentOptions::default())
                .unwrap()
                .computing_in(precision);
            let (loss, grads) = step(&teacher, &student, chunked);
            let loss_error = (loss - loss_f32).abs() / loss_f32.abs();
            assert!(
                loss_error <= tol.loss,
                "{what}: loss {loss} vs f32 {loss_f32}"
            );
            assert_eq!(grads.len(), grads_f32.len(), "{what}: the same parameters");
            assert!(
                grads.iter().all(|(dtype, _)| *dtype == DType::F32),
                "{what}: master gradients are f32"
            );
            let all: Vec<f32> = grads.iter().flat_map(|(_, g)| g.clone()).collect();
            let gradient_error = relative(&all, &all_f32);
            assert!(
                gradient_error > 0.0 && gradient_error <= tol.gradient,
                "{what}: gradients differ by {gradient_error:e}"
            );
            println!(
                "{what}: logits {logits_error:.2e}, loss {loss_error:.2e}, gradient {gradient_error:.2e}"
            );
        }
    }
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// A short run of `stage` on the fixture teacher, its data written under `dir`.
fn stage_config(stage: Stage, dir: &Path, steps: u64) -> RunConfig {
    let file = match stage {
        Stage::Sft => write(
            &dir.join("chats.jsonl"),
            &(0..8)
                .map(|i| {
                    format!(
                        "{{\"messages\": [{{\"role\": \"user\", \"content\": \"Count to {i}.\"}}, \
                         {{\"role\": \"assistant\", \"content\": \"1 2 {i}\"}}]}}\n"
                    )
                })
                .collect::<String>(),
        ),
        Stage::Dpo => write(
            &dir.join("pairs.jsonl"),
            &(0..8)
                .map(|i| {
                    format!(
                        "{{\"prompt\": \"Say yes {i}.\", \"chosen\": \"yes yes\", \"rejected\": \"no {i} no\"}}\n"
                    )
                })
                .collect::<String>(),
        ),
        _ => write(
            &dir.join("corpus.txt"),
            &(0..30)
                .map(|i| format!("Paragraph {i}: the quick brown fox jumps over the lazy dog {i}."))
                .collect::<Vec<_>>()
                .join("\n\n"),
        ),
    };
    let data = arwkv::data::DataConfig {
        files: vec![file],
        batch_size: 2,
        context: if matches!(stage, Stage::Sft | Stage::Dpo) {
            128
        } else {
            32
        },
        pack: !matches!(stage, Stage::Sft),
    };
    let mut cfg = RunConfig::new(
        stage,
        teacher_dir().to_string_lossy(),
        dir.join("run"),
        steps,
        data,
    );
    cfg.stage = StageConfig::defaults(stage);
    cfg.schedule.lr = 0.003;
    cfg.save_every = 100;
    cfg
}

#[test]
fn every_stage_trains_in_each_mixed_precision_as_in_f32() {
    let dir = tempfile::tempdir().unwrap();
    for stage in [Stage::Align, Stage::Kl, Stage::Sft, Stage::Dpo] {
        let stage_dir = dir.path().join(format!("{stage:?}"));
        std::fs::create_dir_all(&stage_dir).unwrap();
        let base = stage_config(stage, &stage_dir, 3);
        let run_in = |precision: Option<Precision>| {
            let mut cfg = base.clone();
            cfg.precision = precision;
            cfg.out = stage_dir.join(precision.map_or("default", |p| p.name()));
            run(&cfg, Start::Fresh, &mut Quiet).unwrap();
            losses(&cfg.out)
        };
        // The CPU's default is f32: the embedded default's results do not move.
        let f32_losses = run_in(Some(Precision::F32));
        assert_eq!(
            run_in(None),
            f32_losses,
            "{stage:?}: the CPU default is f32"
        );
        for precision in MIXED {
            let mixed = run_in(Some(precision));
            let tol = tolerance(precision).loss;
            for (step, (m, f)) in mixed.iter().zip(&f32_losses).enumerate() {
                assert!(
                    (m - f).abs() <= tol * f.abs().max(0.1),
                    "{stage:?} {precision} step {}: {m} vs f32 {f}",
                    step + 1
                );
            }
            println!("{stage:?} {precision}: {mixed:?} vs f32 {f32_losses:?}");
        }
    }
}

#[test]
fn a_backend_without_the_dtype_is_refused_naming_both() {
    if !BackendKind::Wgpu.is_compiled() {
        return;
    }
    let device = BackendKind::Wgpu.device().unwrap();
    let default = Precision::default_for(BackendKind::Wgpu, &device);
    if !device.supports_dtype(Precision::Bf16Mixed.compute_dtype()) {
        assert_eq!(
            default,
            Precision::F32,
            "f16-mixed is never chosen for the user"
        );
    }
    for precision in MIXED {
        let supported = device.supports_dtype(precision.compute_dtype());
        let check = precision.check_supported(BackendKind::Wgpu, &device);
        assert_eq!(check.is_ok(), supported, "{precision}");
        if let Err(e) = check {
            let e = e.to_string();
            let dtype = if precision == Precision::Bf16Mixed {
                "bf16"
            } else {
                "f16"
            };
            assert!(
                e.contains(precision.name()) && e.contains("`wgpu`") && e.contains(dtype),
                "{e}"
            );
            assert_ne!(
                default, precision,
                "the default is one the adapter supports"
            );
        }
    }
    // Through a run: refused before anything is written.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = stage_config(Stage::Kl, dir.path(), 2);
    cfg.device = "wgpu".into();
    for precision in MIXED {
        cfg.precision = Some(precision);
        cfg.out = dir.path().join(precision.name());
        let result = run(&cfg, Start::Fresh, &mut Quiet);
        if device.supports_dtype(precision.compute_dtype()) {
            let tol = tolerance(precision).loss;
            result.unwrap();
            let mut cpu = cfg.clone();
            cpu.device = "cpu".into();
            cpu.precision = Some(Precision::F32);
            cpu.out = dir.path().join("cpu");
            run(&cpu, Start::Fresh, &mut Quiet).unwrap();
            let (on_wgpu, on_cpu) = (losses(&cfg.out), losses(&cpu.out));
            for (m, f) in on_wgpu.iter().zip(&on_cpu) {
                assert!(
                    (m - f).abs() <= tol * f.abs(),
                    "wgpu {precision}: {m} vs {f}"
                );
            }
            println!("wgpu {precision}: {on_wgpu:?} vs CPU f32 {on_cpu:?}");
        } else {
            let e = result.unwrap_err().to_string();
            assert!(e.contains(precision.name()), "{e}");
            assert!(!cfg.out.join("run.json").exists(), "nothing written");
            println!("wgpu {precision}: refused: {e}");
        }
    }
}
