//! The ARWKV student built from the fixture teachers: checkpoints in the `rwkv_hybrid` layout
//! (bit-exact round trip, sharding, a 7B-Preview-shaped folder, bad files), recurrent inference
//! equal to the parallel forward, the `init_from_attention` extension, frozen MLPs and gradients.

use std::path::{Path, PathBuf};

use arwkv::save::NamedTensor;
use arwkv::student::{
    ArwkvForCausalLM, PretrainedArwkv, RecurrentState, StudentOptions, save_pretrained,
};
use arwkv::teacher::PretrainedQwen2;
use arwkv_tests::{fixtures_dir, test_devices};
use burn::prelude::*;

fn teacher_dir(name: &str) -> PathBuf {
    fixtures_dir().join("qwen2").join(name)
}

fn student_of(name: &str, options: &StudentOptions, device: &Device) -> ArwkvForCausalLM {
    let teacher =
        PretrainedQwen2::load_weights_only(teacher_dir(name).to_str().unwrap(), device).unwrap();
    ArwkvForCausalLM::from_teacher(&teacher.model, options).unwrap()
}

fn ids(values: &[u32], device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = values.iter().map(|&x| x as i64).collect();
    Tensor::from_data(TensorData::new(data, [1, values.len()]), device)
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Largest absolute difference between two equally long slices.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn tensor_bits(t: &NamedTensor) -> Vec<u32> {
    let data = match t {
        NamedTensor::D1(_, x) => x.to_data(),
        NamedTensor::D2(_, x) => x.to_data(),
        NamedTensor::D3(_, x) => x.to_data(),
    };
    data.convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

fn prompt(len: usize) -> Vec<u32> {
    (0..len).map(|i| ((i * 37 + 11) % 300) as u32).collect()
}

#[test]
fn saves_and_reloads_bit_exact_in_the_rwkv_hybrid_layout() {
    let device = Device::flex();
    for (teacher, gate, group_norm, shard) in [
        ("tied-gqa2-f32", true, false, usize::MAX),
        ("untied-gqa4-bf16-sharded", false, true, 60_000),
    ] {
        let options = StudentOptions {
            gate,
            group_norm,
            seed: 3,
            ..Default::default()
        };
        let student = student_of(teacher, &options, &device);
        let dir = tempfile::tempdir().unwrap();
        save_pretrained(&student, dir.path(), Some(&teacher_dir(teacher)), shard).unwrap();
        let sharded = dir.path().join("model.safetensors.index.json").is_file();
        assert_eq!(sharded, shard != usize::MAX, "{teacher}: sharding");
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["model_type"], "rwkv_hybrid");
        assert_eq!(config["wkv_version"], 7);
        assert_eq!(config["wkv_has_gate"], gate);
        assert_eq!(config["wkv_has_group_norm"], group_norm);
        assert_eq!(config["head_size"], 64);

        let loaded = PretrainedArwkv::load(dir.path().to_str().unwrap(), &device).unwrap();
        assert!(
            loaded.tokenizer.is_some(),
            "tokenizer files travel with the student"
        );
        let (a, b) = (student.named_tensors(), loaded.model.named_tensors());
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.name(), y.name());
            assert_eq!(x.shape(), y.shape(), "{}", x.name());
            assert!(
                tensor_bits(x) == tensor_bits(y),
                "{teacher}: {} differs",
                x.name()
            );
        }
        let names: Vec<&str> = a.iter().map(|t| t.name()).collect();
        assert!(names.contains(&"model.layers.1.self_attn.time_mixer.w1"));
        assert_eq!(
            names.contains(&"model.layers.0.self_attn.time_mixer.g1"),
            gate
        );
        assert_eq!(
            names.contains(&"model.layers.0.self_attn.time_mixer.ln_x.weight"),
            group_norm
        );
        let x = prompt(9);
        let before = host(student.forward(ids(&x, &device), None).unwrap());
        let after = host(loaded.model.forward(ids(&x, &device), None).unwrap());
        assert!(
            before == after,
            "{teacher}: logits changed across save/load"
        );
    }
}

#[test]
fn chunked_prefill_and_decoding_match_the_parallel_forward() {
    for (kind, device) in test_devices() {
        for teacher in ["tied-gqa2-f32", "untied-gqa4-bf16-sharded"] {
            let student = student_of(teacher, &StudentOptions::default(), &device);
            let tokens = prompt(37);
            let full = host(student.forward(ids(&tokens, &device), None).unwrap());
            let vocab = full.len() / tokens.len();
            let mut state = RecurrentState::new();
            let mut pieces = vec![];
            let mut start = 0;
            let mut sizes = vec![];
            for len in [16, 5, 1, 1, 14] {
                let chunk = &tokens[start..start + len];
                pieces.extend(host(
                    student
                        .forward(ids(chunk, &device), Some(&mut state))
                        .unwrap(),
                ));
                start += len;
                sizes.push(state.size_bytes());
            }
            assert_eq!(state.len(), tokens.len());
            assert!(
                sizes.iter().all(|&s| s == sizes[0]),
                "state grew: {sizes:?}"
            );
            let scale = full.iter().fold(1f32, |m, v| m.max(v.abs()));
            let err = max_abs_diff(&full, &pieces);
            eprintln!("{kind} {teacher}: max |Δlogit| {err:.2e} (scale {scale:.2}, V = {vocab})");
            assert!(
                err <= 1e-5 * scale,
                "{kind} {teacher}: recurrent vs parallel {err:e}"
            );
        }
    }
}

/// Writes a student folder shaped like `RWKV-Red-Team/ARWKV-7B-Preview-0.1`: its config.json keys
/// (auto_map, float16 torch_dtype, no LoRA-rank keys), gated, no GroupNorm, fp32 shards + index.
fn write_7b_shaped(dir: &Path) -> ArwkvForCausalLM {
    let device = Device::flex();
    let student = student_of(
        "untied-gqa4-bf16-sharded",
        &StudentOptions::default(),
        &device,
    );
    save_pretrained(
        &student,
        dir,
        Some(&teacher_dir("untied-gqa4-bf16-sharded")),
        70_000,
    )
    .unwrap();
    let q = &student.config.qwen;
    let config = serde_json::json!({
        "architectures": ["RwkvHybridForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_rwkv_hybrid.RwkvHybridConfig",
                     "AutoModelForCausalLM": "modeling_rwkv_hybrid.RwkvHybridForCausalLM"},
        "model_type": "rwkv_hybrid", "hidden_size": q.hidden_size,
        "intermediate_size": q.intermediate_size, "num_hidden_layers": q.num_hidden_layers,
        "num_attention_heads": q.num_attention_heads, "num_key_value_heads": q.num_key_value_heads,
        "head_size": 64, "head_size_divisor": 8, "hidden_act": "silu", "rms_norm_eps": 1e-6,
        "vocab_size": q.vocab_size, "tie_word_embeddings": false, "rope_theta": 1000000.0,
        "max_position_embeddings": 32768, "bos_token_id": 0, "eos_token_id": 1,
        "wkv_version": 7, "wkv_has_gate": true, "wkv_has_group_norm": false, "use_cache": true,
        "torch_dtype": "float16", "transformers_version": "4.49.0.dev0"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    student
}

#[test]
fn a_checkpoint_shaped_like_arwkv_7b_preview_loads() {
    let dir = tempfile::tempdir().unwrap();
    let student = write_7b_shaped(dir.path());
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let map = index["weight_map"].as_object().unwrap();
    let layers = student.config.qwen.num_hidden_layers;
    // 29 keys per layer + embed, norm, lm_head, as in the index of ARWKV-7B-Preview-0.1 (gated, no
    // GroupNorm): 24 time-mixer tensors (6 lerps, w/a/v bias + 2 LoRA each, g1, g2, k_k, k_a, r_k,
    // 4 projections), 2 layer norms, 3 MLP matrices.
    assert_eq!(map.len(), layers * 29 + 3);
    let shards: std::collections::BTreeSet<&str> =
        map.values().map(|v| v.as_str().unwrap()).collect();
    assert!(shards.len() > 1, "fp32 shards expected, got {shards:?}");
    let params = student.config.parameter_count();
    assert_eq!(
        index["metadata"]["total_size"].as_u64().unwrap() as usize,
        4 * params
    );
    let loaded = PretrainedArwkv::load(dir.path().to_str().unwrap(), &Device::flex()).unwrap();
    assert!(loaded.model.config.has_gate && !loaded.model.config.has_group_norm);
    assert_eq!(loaded.stored_dtypes, vec!["F32".to_string()]);
}

fn rewrite_single_file(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<u8>)>)) {
    use safetensors::{Dtype, SafeTensors, tensor::TensorView};
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

#[test]
fn bad_student_checkpoints_name_the_culprit() {
    let device = Device::flex();
    let student = student_of("tied-gqa2-f32", &StudentOptions::default(), &device);
    let fresh = || {
        let dir = tempfile::tempdir().unwrap();
        save_pretrained(&student, dir.path(), None, usize::MAX).unwrap();
        dir
    };
    let load_err = |dir: &Path| {
        PretrainedArwkv::load_weights_only(dir.to_str().unwrap(), &device)
            .err()
            .expect("loading must fail")
            .to_string()
    };
    let missing = "model.layers.1.self_attn.time_mixer.k_k";
    let dir = fresh();
    rewrite_single_file(dir.path(), |t| t.retain(|(n, _, _)| n != missing));
    let e = load_err(dir.path());
    assert!(e.contains(missing) && e.contains("missing"), "{e}");

    let dir = fresh();
    rewrite_single_file(dir.path(), |t| {
        let r = t
            .iter_mut()
            .find(|(n, _, _)| n.ends_with("1.self_attn.time_mixer.r_k"))
            .unwrap();
        r.1 = vec![64, 1];
    });
    let e = load_err(dir.path());
    assert!(e.contains("time_mixer.r_k") && e.contains("shape"), "{e}");

    let dir = fresh();
    rewrite_single_file(dir.path(), |t| {
        t.push((
            "model.layers.0.self_attn.q_proj.weight".into(),
            vec![1],
            vec![0; 4],
        ))
    });
    let e = load_err(dir.path());
    assert!(e.contains("q_proj") && e.contains("unexpected"), "{e}");

    let dir = fresh();
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"wkv_version\": 7", "\"wkv_version\": 6");
    std::fs::write(&cfg, text).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("wkv_version"), "{e}");
}

#[test]
fn init_from_attention_copies_projections_with_gqa_expansion() {
    let device = Device::flex();
    let name = "untied-gqa4-bf16-sharded"; // 8 query heads, 2 kv heads, head_dim 8
    let teacher =
        PretrainedQwen2::load_weights_only(teacher_dir(name).to_str().unwrap(), &device).unwrap();
    let options = StudentOptions {
        init_from_attention: true,
        ..Default::default()
    };
    let student = ArwkvForCausalLM::from_teacher(&teacher.model, &options).unwrap();
    let attn = &teacher.model.model.layers[1].self_attn;
    let mixer = &student.model.layers[1].self_attn.time_mixer;
    assert!(host(mixer.receptance.weight.val()) == host(attn.q_proj.weight.val()));
    assert!(host(mixer.output.weight.val()) == host(attn.o_proj.weight.val()));
    let (d, c) = (attn.head_dim, teacher.model.config.hidden_size);
    let k = host(attn.k_proj.weight.val());
    let key = host(mixer.key.weight.val());
    for head in 0..attn.num_heads {
        let kv = head / (attn.num_heads / attn.num_kv_heads);
        assert!(
            key[head * d * c..(head + 1) * d * c] == k[kv * d * c..(kv + 1) * d * c],
            "query head {head} must read kv head {kv}"
        );
    }
}

#[test]
fn gradients_reach_time_mixers_and_skip_frozen_mlps() {
    let device = Device::flex().autodiff();
    let student = student_of("tied-gqa2-f32", &StudentOptions::default(), &device).freeze_mlp();
    let logits = student.forward(ids(&prompt(20), &device), None).unwrap();
    let grads = logits.powi_scalar(2).mean().backward();
    let layer = &student.model.layers[1];
    let mixer = &layer.self_attn.time_mixer;
    for (name, grad) in [
        ("receptance", mixer.receptance.weight.grad(&grads).map(host)),
        ("w1", mixer.w1.grad(&grads).map(host)),
        ("output", mixer.output.weight.grad(&grads).map(host)),
    ] {
        let g = grad.unwrap_or_else(|| panic!("{name} has no gradient"));
        assert!(g.iter().any(|v| *v != 0.0), "{name}: zero gradient");
        assert!(
            g.iter().all(|v| v.is_finite()),
            "{name}: non-finite gradient"
        );
    }
    let x_r = mixer.x_r.grad(&grads).expect("x_r gradient");
    assert!(host(x_r).iter().any(|v| *v != 0.0));
    assert!(
        layer.mlp.gate_proj.weight.grad(&grads).is_none(),
        "frozen MLP got a gradient"
    );
    assert!(
        student.model.layers[0]
            .input_layernorm
            .weight
            .grad(&grads)
            .is_some(),
        "norms stay trainable"
    );
}

#[test]
fn stage1_alignment_training_lowers_every_layer_loss_and_touches_only_time_mixers() {
    use arwkv::distill::{AlignmentLoss, stage1::alignment_losses};
    use arwkv::train::{AdamW, AdamWConfig};
    use burn::optim::GradientsParams;
    let device = Device::flex().autodiff();
    let teacher = PretrainedQwen2::load_weights_only(
        teacher_dir("untied-gqa4-bf16-sharded").to_str().unwrap(),
        &device,
    )
    .unwrap()
    .model
    .no_grad();
    let mut student = ArwkvForCausalLM::from_teacher(&teacher, &StudentOptions::default())
        .unwrap()
        .only_time_mixers_trainable();
    let mlp_before = host(student.model.layers[1].mlp.up_proj.weight.val());
    let batch: Vec<u32> = (0..2 * 24).map(|i| ((i * 53 + 7) % 320) as u32).collect();
    let data: Vec<i64> = batch.iter().map(|&x| x as i64).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(data, [2, 24]), &device);
    let mut opt = AdamW::new(AdamWConfig::default());
    let per_layer = |s: &ArwkvForCausalLM| -> Vec<f32> {
        alignment_losses(&teacher, s, ids.clone(), None, AlignmentLoss::L2Rms)
            .unwrap()
            .per_layer
            .into_iter()
            .map(|l| host(l)[0])
            .collect()
    };
    let first = per_layer(&student);
    for _ in 0..40 {
        let losses =
            alignment_losses(&teacher, &student, ids.clone(), None, AlignmentLoss::L2Rms).unwrap();
        let grads = GradientsParams::from_grads(losses.loss.backward(), &student);
        student = opt.step(student, grads, 3e-3).0;
    }
    let last = per_layer(&student);
    eprintln!("stage-1 per-layer loss: {first:?} -> {last:?}");
    for (l, (a, b)) in first.iter().zip(&last).enumerate() {
        assert!(b < &(a * 0.7), "layer {l}: {a} -> {b}");
    }
    assert!(
        host(student.model.layers[1].mlp.up_proj.weight.val()) == mlp_before,
        "MLP moved"
    );
    assert!(
        opt.moments.keys().all(|k| k.contains("time_mixer")),
        "{:?}",
        opt.moments.keys()
    );
    assert!(
        opt.moments
            .contains_key("model.layers.0.self_attn.time_mixer.receptance.weight")
    );
}

#[test]
fn an_untied_head_starts_as_the_embeddings_and_then_trains_on_its_own() {
    let device = Device::flex().autodiff();
    let tied = student_of("tied-gqa2-f32", &StudentOptions::default(), &device);
    let options = StudentOptions {
        untie_head: true,
        ..Default::default()
    };
    let untied = student_of("tied-gqa2-f32", &options, &device);
    assert!(tied.lm_head.is_none() && !untied.config.qwen.tie_word_embeddings);
    let head = untied.lm_head.as_ref().expect("an own head");
    assert!(host(head.weight.val()) == host(untied.model.embed_tokens.weight.val()));
    let ids = ids(&prompt(12), &device);
    let (a, b) = (
        tied.forward(ids.clone(), None).unwrap(),
        untied.forward(ids, None).unwrap(),
    );
    assert!(host(a) == host(b.clone()), "same logits at the start");
    let grads = b.powi_scalar(2).mean().backward();
    let (g_head, g_embed) = (
        head.weight.grad(&grads).map(host).expect("head gradient"),
        untied
            .model
            .embed_tokens
            .weight
            .grad(&grads)
            .map(host)
            .expect("embedding gradient"),
    );
    assert!(
        g_head != g_embed,
        "the head and the embeddings get their own gradients"
    );

    // Saved and reloaded, it is an untied model with its head.
    let dir = tempfile::tempdir().unwrap();
    save_pretrained(
        &untied,
        dir.path(),
        Some(&teacher_dir("tied-gqa2-f32")),
        usize::MAX,
    )
    .unwrap();
    let loaded =
        PretrainedArwkv::load_weights_only(dir.path().to_str().unwrap(), &Device::flex()).unwrap();
    assert!(loaded.model.lm_head.is_some() && !loaded.model.config.qwen.tie_word_embeddings);
}

#[test]
fn the_reference_gate_init_sets_both_gate_matrices_to_ones() {
    use arwkv::student::GateInit;
    let device = Device::flex();
    let options = StudentOptions {
        gate_init: GateInit::Ones,
        ..Default::default()
    };
    let ones = student_of("tied-gqa2-f32", &options, &device);
    let identity = student_of("tied-gqa2-f32", &StudentOptions::default(), &device);
    for (a, b) in ones.model.layers.iter().zip(&identity.model.layers) {
        let (a, b) = (&a.self_attn.time_mixer, &b.self_attn.time_mixer);
        for g in [&a.g1, &a.g2] {
            let g = host(g.as_ref().expect("a gated student").val());
            assert!(g.iter().all(|&x| x == 1.0));
        }
        assert!(host(b.g1.as_ref().unwrap().val()).iter().all(|&x| x == 0.0));
        // Only the gate differs.
        assert!(host(a.w2.val()) == host(b.w2.val()));
    }
}

#[test]
fn init_from_attention_on_an_autodiff_device_gives_the_student_its_own_leaves() {
    let device = Device::flex().autodiff();
    let name = "untied-gqa4-bf16-sharded";
    let teacher =
        PretrainedQwen2::load_weights_only(teacher_dir(name).to_str().unwrap(), &device).unwrap();
    let options = StudentOptions {
        init_from_attention: true,
        ..Default::default()
    };
    let student = ArwkvForCausalLM::from_teacher(&teacher.model, &options).unwrap();
    let logits = student.forward(ids(&prompt(10), &device), None).unwrap();
    let grads = logits.powi_scalar(2).mean().backward();
    let mixer = &student.model.layers[1].self_attn.time_mixer;
    assert!(
        mixer.key.weight.grad(&grads).is_some(),
        "the expanded key is a trainable leaf"
    );
    let attn = &teacher.model.model.layers[1].self_attn;
    assert!(
        attn.q_proj.weight.grad(&grads).is_none(),
        "the teacher's q_proj is not part of the student's graph"
    );
}

#[test]
fn padded_rows_give_their_unpadded_logits_and_continue_from_their_last_real_token() {
    // Row 0 right-padded, row 1 left-padded, row 2 full; pad id 0. Each row's logits at its real
    // positions, and its next token after the batch (from the batch's recurrent state), must equal
    // the row run alone.
    let t = 20;
    let rows: [(Vec<u32>, usize); 3] = [
        (prompt(14), 0),
        (prompt(31)[20..].to_vec(), 9),
        (prompt(20), 0),
    ];
    let next: [u32; 3] = [5, 77, 123];
    for (kind, device) in test_devices() {
        let options = StudentOptions {
            gate: true,
            group_norm: true,
            ..StudentOptions::default()
        };
        let student = student_of("tied-gqa2-f32", &options, &device);
        let mut ids_flat = vec![];
        let mut real = vec![];
        for (tokens, left) in &rows {
            let right = t - left - tokens.len();
            ids_flat.extend(std::iter::repeat_n(0i64, *left));
            ids_flat.extend(tokens.iter().map(|&x| x as i64));
            ids_flat.extend(std::iter::repeat_n(0i64, right));
            real.extend(std::iter::repeat_n(0.0f32, *left));
            real.extend(std::iter::repeat_n(1.0f32, tokens.len()));
            real.extend(std::iter::repeat_n(0.0f32, right));
        }
        let batch = Tensor::<2, Int>::from_data(TensorData::new(ids_flat, [3, t]), &device);
        let mask = Tensor::<2>::from_data(TensorData::new(real, [3, t]), &device);
        let mut state = RecurrentState::new();
        let hidden = student
            .hidden_states_masked(batch, Some(&mut state), Some(&mask))
            .unwrap();
        let logits = host(student.project(hidden));
        let next_ids = Tensor::<2, Int>::from_data(
            TensorData::new(next.iter().map(|&x| x as i64).collect::<Vec<_>>(), [3, 1]),
            &device,
        );
        let after = host(student.forward(next_ids, Some(&mut state)).unwrap());
        let vocab = after.len() / 3;
        for (row, (tokens, left)) in rows.iter().enumerate() {
            let mut alone_state = RecurrentState::new();
            let alone = host(
                student
                    .forward(ids(tokens, &device), Some(&mut alone_state))
                    .unwrap(),
            );
            let start = (row * t + left) * vocab;
            let got = &logits[start..start + tokens.len() * vocab];
            let diff = max_abs_diff(got, &alone);
            assert!(diff < 1e-4, "{kind:?} row {row}: logits differ by {diff}");
            let alone_next = host(
                student
                    .forward(ids(&[next[row]], &device), Some(&mut alone_state))
                    .unwrap(),
            );
            let got_next = &after[row * vocab..(row + 1) * vocab];
            let diff = max_abs_diff(got_next, &alone_next);
            assert!(
                diff < 1e-4,
                "{kind:?} row {row}: next token differs by {diff}"
            );
        }
    }
}
