//! `arwkv::eval` on the embedded teacher: batched log-likelihoods equal one-at-a-time ones, a
//! task whose answers are forced by construction scores 100 % / 0 %, a model compared with itself
//! agrees perfectly, generative exact match agrees with the generation code path, and the flip-flop
//! probe scores batches as it scores one sequence at a time.

use std::path::PathBuf;

use arwkv::eval::choice::{Request, encode_pair, loglikelihoods};
use arwkv::eval::{EvalOptions, evaluate, load_task, task::TaskOptions};
use arwkv::pretrained::Pretrained;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

fn teacher(device: &Device) -> Pretrained {
    let dir = arwkv::embedded::tiny_assets().join("teacher");
    Pretrained::load(dir.to_str().unwrap(), device).unwrap()
}

fn heldout_lines() -> Vec<String> {
    let text =
        std::fs::read_to_string(arwkv::embedded::tiny_assets().join("corpus/heldout.txt")).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| l.len() > 30 && !l.starts_with('['))
        .map(str::to_string)
        .collect()
}

#[test]
fn batched_loglikelihoods_equal_one_sequence_at_a_time() {
    let device = Device::flex();
    let model = teacher(&device);
    let tok = model.tokenizer().unwrap();
    let lines = heldout_lines();
    let requests: Vec<Request> = (0..7)
        .map(|i| encode_pair(tok, &lines[3 * i], &format!(" {}", lines[3 * i + 1])).unwrap())
        .collect();
    let forward = |x: Tensor<2, Int>| model.forward(x);
    let (batched, tps) = loglikelihoods(&forward, &requests, 3, 512, &device, |_| {}).unwrap();
    assert!(tps > 0.0);
    for (r, got) in requests.iter().zip(&batched) {
        let ids: Vec<u32> = r.context.iter().chain(&r.continuation).copied().collect();
        let logits = model.logits(&ids, &device).unwrap();
        let [_, t, v] = logits.dims();
        let log_p = log_softmax(logits, 2)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let start = r.context.len();
        let want: f64 = (start..t)
            .map(|p| log_p[(p - 1) * v + ids[p] as usize] as f64)
            .sum();
        assert!(
            (got - want).abs() < 1e-3 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }
}

/// Options: a real line of the held-out play, and the same line with its words reversed.
fn forced_task(dir: &std::path::Path, gold_is_real: bool) -> PathBuf {
    let lines = heldout_lines();
    let mut rows = String::new();
    for i in 0..8 {
        let real = lines[2 * i + 1].clone();
        let scrambled = real.split(' ').rev().collect::<Vec<_>>().join(" ");
        let row = serde_json::json!({
            "query": lines[2 * i],
            "choices": [real, scrambled],
            "gold": if gold_is_real { 0 } else { 1 },
        });
        rows.push_str(&format!("{row}\n"));
    }
    let path = dir.join(if gold_is_real {
        "real.jsonl"
    } else {
        "scrambled.jsonl"
    });
    std::fs::write(&path, rows).unwrap();
    path
}

#[test]
fn forced_choices_score_all_or_nothing_and_a_model_agrees_with_itself() {
    let device = Device::flex();
    let model = teacher(&device);
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("tempest.txt");
    std::fs::write(&text, heldout_lines()[..120].join("\n")).unwrap();
    let opts = TaskOptions::default();
    let tasks = vec![
        load_task(&forced_task(dir.path(), true), &opts).unwrap(),
        load_task(&forced_task(dir.path(), false), &opts).unwrap(),
        load_task(&text, &opts).unwrap(),
    ];
    let options = EvalOptions {
        context: 128,
        ..Default::default()
    };
    let report = evaluate(
        &[("teacher", &model), ("copy", &model)],
        &tasks,
        &options,
        &device,
        &mut |_| {},
    )
    .unwrap();
    for m in ["teacher", "copy"] {
        // A real line beats its words in reverse order, always, with or without length norm.
        assert_eq!(report.get("real", "acc", m), Some(1.0));
        assert_eq!(report.get("real", "acc_norm", m), Some(1.0));
        assert_eq!(report.get("scrambled", "acc", m), Some(0.0));
    }
    let kl = report.get("tempest", "kl_vs_first", "copy").unwrap();
    assert!(kl.abs() < 1e-5, "{kl}");
    assert_eq!(report.get("tempest", "top1_agreement", "copy"), Some(1.0));
    assert_eq!(report.get("tempest", "top5_agreement", "copy"), Some(1.0));
    let ratio = report.get("tempest", "ppl_ratio_vs_first", "copy").unwrap();
    assert!((ratio - 1.0).abs() < 1e-6);
    let md = report.to_markdown();
    assert!(
        md.contains("| model | real (acc_norm) | scrambled (acc_norm) | tempest (perplexity) |"),
        "{md}"
    );
    assert!(md.contains("| teacher | 100.0 | 0.0 |"), "{md}");
}

#[test]
fn generative_exact_match_agrees_with_greedy_generation() {
    use arwkv::generation::GenerationConfig;
    let device = Device::flex();
    let model = teacher(&device);
    let tok = model.tokenizer().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut right, mut wrong) = (String::new(), String::new());
    for line in heldout_lines().iter().take(3) {
        // The reference answer is what greedy generation (the `generate` path) writes, cut at the
        // first blank line (the generic stop string), then its first non-empty line.
        let ids = tok.encode(line, false).unwrap();
        let config = GenerationConfig {
            max_new_tokens: 12,
            stop_ids: model.stop_ids(),
            ..Default::default()
        };
        let out = model.generate(&ids, &config, &device, |_| Ok(())).unwrap();
        let text = tok.decode(&out, true).unwrap();
        let text = text.split("\n\n").next().unwrap();
        let first = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
            .to_string();
        right.push_str(&format!(
            "{}\n",
            serde_json::json!({"prompt": line, "target": first})
        ));
        wrong.push_str(&format!(
            "{}\n",
            serde_json::json!({"prompt": line, "target": format!("{first} (not)")})
        ));
    }
    let (a, b) = (
        dir.path().join("right.jsonl"),
        dir.path().join("wrong.jsonl"),
    );
    std::fs::write(&a, right).unwrap();
    std::fs::write(&b, wrong).unwrap();
    let tasks = vec![
        load_task(&a, &TaskOptions::default()).unwrap(),
        load_task(&b, &TaskOptions::default()).unwrap(),
    ];
    let options = EvalOptions {
        max_new_tokens: 12,
        chat: false,
        ..Default::default()
    };
    let report = evaluate(
        &[("teacher", &model)],
        &tasks,
        &options,
        &device,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(report.get("right", "exact_match", "teacher"), Some(1.0));
    assert_eq!(report.get("wrong", "exact_match", "teacher"), Some(0.0));
}

#[test]
fn flip_flop_read_accuracy_counts_every_read_and_matches_one_sequence_at_a_time() {
    use arwkv::eval::flip_flop::{FlipFlop, Instruction, read_accuracy, to_text};
    let device = Device::flex();
    let model = teacher(&device);
    let task = FlipFlop::new(0.3, 0.4).unwrap();
    let (len, rows, seed) = (10, 5, 3);
    // Batched three at a time (the last batch short).
    let got = read_accuracy(&model, &task, len, rows, seed, 3, &device).unwrap();
    // The same sequences, scored one at a time from the logits.
    let (mut reads, mut correct) = (vec![0u64; len], vec![0u64; len]);
    for sequence in task.sequences(len, rows, seed) {
        let ids = model
            .tokenizer()
            .unwrap()
            .encode(&to_text(&sequence), false)
            .unwrap();
        let predicted: Vec<i64> = model
            .logits(&ids, &device)
            .unwrap()
            .argmax(2)
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .unwrap();
        for (i, instruction) in sequence.iter().enumerate() {
            if let Instruction::Read(_) = instruction {
                reads[i] += 1;
                correct[i] += u64::from(predicted[2 * i] == i64::from(ids[2 * i + 1]));
            }
        }
    }
    assert!(reads.iter().sum::<u64>() > 5, "{reads:?}");
    assert_eq!(got.reads, reads);
    assert_eq!(got.correct, correct);
}
