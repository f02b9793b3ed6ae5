//! Distillation runs end to end on a fixture teacher: stage 1 then stage 2 from its student,
//! metrics and checkpoints on disk, exact resume, and clear errors for bad configs and data.

use std::path::{Path, PathBuf};

use arwkv::data::DataConfig;
use arwkv::distill::run::{Observer, RunConfig, Stage, Start, StepMetrics, run};
use arwkv::train::{Decay, LrSchedule};
use arwkv_tests::{Quiet, fixtures_dir, run_losses as losses};

fn corpus(dir: &Path) -> PathBuf {
    let text = (0..40)
        .map(|i| {
            format!(
                "Paragraph {i}: the quick brown fox jumps over the lazy dog, number {} of many.",
                i * 7
            )
        })
        .collect::<Vec<_>>()
        .join("\n\n");
    let path = dir.join("corpus.txt");
    std::fs::write(&path, text).unwrap();
    path
}

fn config(stage: Stage, out: PathBuf, data: PathBuf, steps: u64) -> RunConfig {
    let teacher = fixtures_dir().join("qwen2").join("tied-gqa2-f32");
    let text = format!(
        r#"
        stage = "{}"
        teacher = "{}"
        out = "{}"
        steps = {steps}
        save_every = 3
        [data]
        files = ["{}"]
        context = 32
        batch_size = 2
        [schedule]
        lr = 0.003
        warmup_steps = 2
        decay = "cosine"
        lr_final = 0.0003
        "#,
        if stage == Stage::Align { "align" } else { "kl" },
        teacher.display(),
        out.display(),
        data.display()
    );
    let path = out.with_extension("toml");
    std::fs::write(&path, text).unwrap();
    RunConfig::from_file(&path).unwrap()
}

#[test]
fn stage1_then_stage2_learn_and_write_their_run_directories() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let cfg = config(Stage::Align, dir.path().join("s1"), data.clone(), 12);
    assert_eq!(cfg.schedule.decay, Decay::Cosine);
    let s1 = run(&cfg, Start::Fresh, &mut Quiet).unwrap();
    assert_eq!(s1.steps, 12);
    let l = losses(&cfg.out);
    assert_eq!(l.len(), 12);
    assert!(l[11] < 0.6 * l[0], "stage 1 should learn: {l:?}");
    assert!(cfg.out.join("student/config.json").is_file());
    assert!(
        cfg.out
            .join("checkpoints/step-000012/optimizer/model.safetensors")
            .is_file()
    );

    let mut cfg2 = config(Stage::Kl, dir.path().join("s2"), data, 8);
    cfg2.student = Some(cfg.out.join("student").to_string_lossy().into_owned());
    let s2 = run(&cfg2, Start::Fresh, &mut Quiet).unwrap();
    let l2 = losses(&cfg2.out);
    assert!(s2.last.unwrap().kl.is_some());
    assert!(l2[7] < l2[0], "stage 2 should lower the KL: {l2:?}");
}

#[test]
fn a_resumed_run_repeats_the_same_losses_step_for_step() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let straight = config(Stage::Align, dir.path().join("straight"), data.clone(), 6);
    run(&straight, Start::Fresh, &mut Quiet).unwrap();

    // Stop after step 3 (the observer says so), then resume to 6.
    struct StopAt(u64);
    impl Observer for StopAt {
        fn on_step(&mut self, m: &StepMetrics, _: u64) -> bool {
            m.step < self.0
        }
    }
    let parts = config(Stage::Align, dir.path().join("parts"), data, 6);
    let first = run(&parts, Start::Fresh, &mut StopAt(3)).unwrap();
    assert!(first.interrupted && first.steps == 3);
    let second = run(&parts, Start::Resume, &mut Quiet).unwrap();
    assert_eq!(second.steps, 6);
    assert_eq!(
        losses(&straight.out),
        losses(&parts.out),
        "resume must be exact"
    );
}

#[test]
fn resume_refuses_another_config_a_later_checkpoint_and_partial_folders() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let cfg = config(Stage::Align, dir.path().join("r"), data, 3);
    run(&cfg, Start::Fresh, &mut Quiet).unwrap();
    // A save killed half-way leaves a `.partial` folder that looks newer than every checkpoint.
    let partial = cfg.out.join("checkpoints/step-000099.partial");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::copy(
        cfg.out.join("checkpoints/step-000003/trainer_state.json"),
        partial.join("trainer_state.json"),
    )
    .unwrap();

    let mut other = cfg.clone();
    other.schedule.lr *= 2.0;
    let e = run(&other, Start::Resume, &mut Quiet)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("different config") && e.contains("schedule"),
        "{e}"
    );

    let mut shorter = cfg.clone();
    shorter.steps = 2;
    let e = run(&shorter, Start::Resume, &mut Quiet)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("step 3, beyond") && e.contains("steps = 2"),
        "{e}"
    );

    let resumed = run(&cfg, Start::Resume, &mut Quiet).unwrap();
    assert_eq!(
        resumed.steps, 3,
        "resumed from step-000003, not from the partial folder"
    );
    assert!(
        !partial.exists(),
        "partial checkpoint folders are cleaned up"
    );
}

#[test]
fn a_rerun_into_a_finished_run_is_refused_or_replaces_it_whole_never_mixed() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let first = config(Stage::Align, dir.path().join("same"), data, 3);
    run(&first, Start::Fresh, &mut Quiet).unwrap();
    let mut second = first.clone();
    second.schedule.lr *= 2.0;
    second.steps = 4;

    // A fresh run into a directory holding a run is refused, and touches nothing.
    let before = std::fs::read_to_string(first.out.join("run.json")).unwrap();
    let e = run(&second, Start::Fresh, &mut Quiet)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("already holds a run") && e.contains("--overwrite") && e.contains("checkpoints"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(first.out.join("run.json")).unwrap(),
        before
    );

    // What an older build did (replace run.json, keep checkpoints/) cannot be resumed: each
    // checkpoint records the fingerprint of the config that made it.
    std::fs::write(
        first.out.join("run.json"),
        serde_json::to_string_pretty(&second).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(first.out.join("metrics.jsonl")).unwrap();
    let e = run(&second, Start::Resume, &mut Quiet)
        .unwrap_err()
        .to_string();
    assert!(e.contains("different config"), "{e}");

    // --overwrite deletes the old run whole: no checkpoint of the first run is left to resume.
    let marker = first
        .out
        .join("checkpoints/step-000003/made-by-the-first-run");
    std::fs::write(&marker, "").unwrap();
    let replaced = run(&second, Start::Overwrite, &mut Quiet).unwrap();
    assert_eq!(replaced.steps, 4);
    assert!(!marker.exists(), "the first run's checkpoint was replaced");
    assert_eq!(losses(&first.out).len(), 4);
    let resumed = run(&second, Start::Resume, &mut Quiet).unwrap();
    assert_eq!(resumed.steps, 4, "the new run resumes as itself");

    // A preset run refuses up front when any of its stage directories holds a run.
    let preset_out = dir.path().join("preset");
    std::fs::create_dir_all(preset_out.join("stage2-kl")).unwrap();
    std::fs::write(preset_out.join("stage2-kl/run.json"), "{}").unwrap();
    let e = arwkv::distill::preset::run_preset("tiny", &preset_out, 0.02, Start::Fresh, &mut Quiet)
        .unwrap_err()
        .to_string();
    assert!(e.contains("already holds a preset run (stage2-kl)"), "{e}");
    assert!(!preset_out.join("stage1-align").exists(), "nothing ran");
}

#[test]
fn bad_configs_and_data_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "stage = \"align\"\nteacher = \"x\"\nout = \"o\"\nsteps = 1\nbogus = 3\n[data]\n",
    )
    .unwrap();
    let e = RunConfig::from_file(&path).unwrap_err().to_string();
    assert!(e.contains("bad.toml") && e.contains("bogus"), "{e}");
    assert!(
        e.contains("line 5, column 1"),
        "TOML errors point at line and column: {e}"
    );

    // Numeric knobs are checked at load, not at step 2.
    let base = "stage = \"kl\"\nteacher = \"x\"\nout = \"o\"\nsteps = 1\n";
    for (extra, culprit) in [
        ("kl_top_k = 0\n[data]\n", "kl_top_k"),
        ("[data]\n[schedule]\nlr = inf\n", "schedule.lr"),
        ("[data]\n[schedule]\nlr = nan\n", "schedule.lr"),
        ("ce_weight = -1.0\n[data]\n", "ce_weight"),
        ("label_smoothing = 0.7\n[data]\n", "label_smoothing"),
        ("devices = 0\n[data]\n", "devices"),
        (
            "[data]\n[student_options]\ngate = false\nbogus = 1\n",
            "bogus",
        ),
    ] {
        std::fs::write(&path, format!("{base}{extra}")).unwrap();
        let e = RunConfig::from_file(&path).unwrap_err().to_string();
        assert!(e.contains(culprit), "{extra:?}: {e}");
    }
    // A partial [student_options] takes the documented defaults for the rest.
    std::fs::write(
        &path,
        format!("{base}[data]\n[student_options]\ngroup_norm = true\n"),
    )
    .unwrap();
    let cfg = RunConfig::from_file(&path).unwrap();
    assert!(cfg.student_options.group_norm && cfg.student_options.gate);

    let jsonl = dir.path().join("rows.jsonl");
    std::fs::write(
        &jsonl,
        "{\"text\": 3}\nnot json\n{\"messages\": [{\"role\": \"user\"}]}\n",
    )
    .unwrap();
    let mut cfg = config(Stage::Align, dir.path().join("o"), jsonl, 1);
    cfg.data = DataConfig {
        files: cfg.data.files.clone(),
        ..cfg.data
    };
    let e = run(&cfg, Start::Fresh, &mut Quiet).unwrap_err().to_string();
    assert!(e.contains("0 row(s)") && e.contains("3 bad row(s)"), "{e}");
    let _ = LrSchedule::default();

    // Several devices need Burn's NCCL all-reduce: refused on the CPU before anything is written.
    let out = dir.path().join("two-devices");
    let mut cfg = config(Stage::Kl, out.clone(), corpus(dir.path()), 1);
    cfg.devices = 2;
    let e = run(&cfg, Start::Fresh, &mut Quiet).unwrap_err();
    assert!(
        matches!(&e, arwkv::Error::Setting { key, .. } if key == "devices"),
        "{e:?}"
    );
    let e = e.to_string();
    assert!(
        e.contains("= 2 needs backend `cuda`") && e.contains("`cpu`"),
        "{e}"
    );
    assert!(!out.join("run.json").exists() && !out.join("checkpoints").exists());
}

#[test]
fn sft_targets_are_exactly_the_assistant_turns() {
    use arwkv::chat::{ChatMessage, ChatTemplate};
    use arwkv::data::{render_conversation, tokenise};
    use arwkv::tokenizer::TextTokenizer;
    let dir = fixtures_dir().join("qwen2").join("tied-gqa2-f32");
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let template = ChatTemplate::from_model_dir(&dir).unwrap().unwrap();
    let messages = [
        ChatMessage::new("user", "Name a colour."),
        ChatMessage::new("assistant", "Blue."),
        ChatMessage::new("user", "Another?"),
        ChatMessage::new("assistant", "Green, of course."),
    ];
    let doc = render_conversation(&messages, Some(&template)).unwrap();
    let (ids, targets) = tokenise(&tok, &doc).unwrap();
    let picked: Vec<u32> = ids
        .iter()
        .zip(&targets)
        .filter(|(_, t)| **t)
        .map(|(i, _)| *i)
        .collect();
    let text = tok.decode(&picked, false).unwrap();
    assert_eq!(text, "Blue.<|im_end|>\nGreen, of course.<|im_end|>\n");
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

#[test]
fn sft_and_dpo_stages_train_from_a_student() {
    let dir = tempfile::tempdir().unwrap();
    let chats: String = (0..12)
        .map(|i| {
            format!(
                "{{\"messages\": [{{\"role\": \"user\", \"content\": \"Count to {i}.\"}}, \
                 {{\"role\": \"assistant\", \"content\": \"{}\"}}]}}\n",
                (1..=i % 5 + 1)
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        })
        .collect();
    let sft_data = write(&dir.path().join("chats.jsonl"), &chats);
    let mut sft = config(Stage::Align, dir.path().join("sft"), sft_data, 10);
    sft.stage = arwkv::distill::run::StageConfig::defaults(Stage::Sft);
    sft.data.pack = false;
    sft.data.context = 256;
    // A context too short for the template's system prompt leaves no assistant token: refused.
    let mut short = sft.clone();
    short.data.context = 8;
    let e = run(&short, Start::Fresh, &mut Quiet)
        .unwrap_err()
        .to_string();
    assert!(e.contains("without an assistant token"), "{e}");
    let s = run(&sft, Start::Fresh, &mut Quiet).unwrap();
    assert_eq!(s.steps, 10);
    let l = losses(&sft.out);
    assert!(l[9] < l[0], "SFT should lower the CE: {l:?}");

    let pairs: String = (0..8)
        .map(|i| {
            format!(
                "{{\"prompt\": \"Say yes {i}.\", \"chosen\": \"yes yes\", \"rejected\": \"no {i} no\"}}\n"
            )
        })
        .collect::<String>()
        + "{\"prompt\": \"missing answers\"}\n";
    let dpo_data = write(&dir.path().join("pairs.jsonl"), &pairs);
    let mut dpo = config(Stage::Align, dir.path().join("dpo"), dpo_data, 8);
    dpo.stage = arwkv::distill::run::StageConfig::defaults(Stage::Dpo);
    dpo.student = Some(sft.out.join("student").to_string_lossy().into_owned());
    dpo.data.context = 256;
    let d = run(&dpo, Start::Fresh, &mut Quiet).unwrap();
    let last = d.last.unwrap();
    let first: StepMetrics = serde_json::from_str(
        std::fs::read_to_string(dpo.out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    // Step 1 starts at the reference: Δ = 0, loss = log 2.
    assert!(
        (first.loss - std::f64::consts::LN_2).abs() < 1e-4,
        "{}",
        first.loss
    );
    assert!(
        last.loss < first.loss,
        "DPO should lower its loss: {} -> {}",
        first.loss,
        last.loss
    );
    assert!(last.preference_accuracy.unwrap() > 0.5, "{last:?}");

    // The memory-lean head losses train the same way, step for step.
    for base in [&sft, &dpo] {
        let mut chunked = base.clone();
        chunked.out = base.out.with_extension("chunked");
        chunked.loss_chunk_tokens = Some(37);
        run(&chunked, Start::Fresh, &mut Quiet).unwrap();
        assert_same_losses(&losses(&base.out), &losses(&chunked.out));
    }
}

/// Two runs' losses agree step for step (rounding apart: f32 sums in another order).
fn assert_same_losses(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (step, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-4 * x.abs().max(1.0),
            "step {}: {x} vs {y}",
            step + 1
        );
    }
}

#[test]
fn stage2_with_a_chunked_loss_or_checkpointing_trains_as_with_the_whole_logits() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let mut whole = config(Stage::Kl, dir.path().join("whole"), data, 4);
    whole.stage = arwkv::distill::run::StageConfig::Kl(arwkv::distill::run_config::KlConfig {
        temperature: 2.0,
        kl_top_k: None,
        ce_weight: 0.5,
    });
    run(&whole, Start::Fresh, &mut Quiet).unwrap();
    let mut chunked = whole.clone();
    chunked.out = dir.path().join("chunked");
    chunked.loss_chunk_tokens = Some(13);
    run(&chunked, Start::Fresh, &mut Quiet).unwrap();
    assert_same_losses(&losses(&whole.out), &losses(&chunked.out));
    // Activation checkpointing recomputes what it does not keep: the same losses, also after the
    // optimiser has replaced every parameter.
    let mut checkpointed = whole.clone();
    checkpointed.out = dir.path().join("checkpointed");
    checkpointed.activation_checkpointing = true;
    run(&checkpointed, Start::Fresh, &mut Quiet).unwrap();
    assert_eq!(losses(&whole.out), losses(&checkpointed.out));
    // A chunk of 0 positions is refused, naming the key.
    chunked.loss_chunk_tokens = Some(0);
    let e = run(&chunked, Start::Fresh, &mut Quiet)
        .unwrap_err()
        .to_string();
    assert!(e.contains("loss_chunk_tokens"), "{e}");
}

#[test]
fn the_tiny_preset_runs_end_to_end_when_shortened() {
    use arwkv::distill::preset::run_preset;
    let dir = tempfile::tempdir().unwrap();
    let summary = run_preset("tiny", dir.path(), 0.02, Start::Fresh, &mut Quiet).unwrap();
    assert_eq!(
        summary.heldout.len(),
        2,
        "students after stage 2 and after stage 3"
    );
    for (label, h) in &summary.heldout {
        assert!(h.tokens >= 500, "{label}: {h:?}");
        for v in [
            h.teacher_perplexity,
            h.student_perplexity,
            h.mean_kl,
            h.top1_agreement,
        ] {
            assert!(v.is_finite() && v >= 0.0, "{label}: {h:?}");
        }
        assert!(
            h.teacher_perplexity < 4096.0,
            "the committed teacher has learned something: {h:?}"
        );
    }
    let stages: Vec<&str> = summary.stages.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(stages.len(), 5, "{stages:?}");
    assert!(summary.stages[4].preference_accuracy.is_some());
    let page = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    for needle in [
        "attention alignment",
        "KL distillation",
        "context extension",
        "SFT",
        "DPO",
        "perplexity ratio",
    ] {
        assert!(page.contains(needle), "index.html lacks {needle}");
    }
    for student in ["stage2-kl", "stage3-extend", "stage3-sft", "stage3-dpo"] {
        assert!(
            dir.path()
                .join(student)
                .join("student/config.json")
                .is_file(),
            "{student}"
        );
    }
    // Stage-3 data: SFT conversations and DPO pairs whose rejected side the student wrote.
    let sft = std::fs::read_to_string(dir.path().join("data/sft.jsonl")).unwrap();
    assert_eq!(sft.lines().count(), 12);
    let pairs = std::fs::read_to_string(dir.path().join("data/dpo.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(pairs.lines().next().unwrap()).unwrap();
    assert!(first["prompt"].as_str().unwrap().contains("Reply as"));
    assert!(first["chosen"].is_string() && first["rejected"].is_string());
    let e = run_preset("huge", dir.path(), 1.0, Start::Fresh, &mut Quiet)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown preset `huge`"), "{e}");
}

#[test]
fn the_gpu_preset_names_a_hub_teacher_and_scales_like_the_tiny_one() {
    use arwkv::distill::preset::preset_plan;
    let big = preset_plan("qwen2.5-0.5b").unwrap();
    assert_eq!(big.teacher, "Qwen/Qwen2.5-0.5B-Instruct");
    let tiny = preset_plan("tiny").unwrap();
    assert_eq!(tiny.device, "cpu");
    let short = tiny.clone().scaled(0.1);
    assert_eq!((short.align.steps, short.kl.steps), (15, 30));
    assert!(short.sft_rows >= 8 && short.heldout_tokens >= 512);
}

#[test]
fn the_embedded_teacher_is_checksummed_and_a_corrupted_copy_is_refused() {
    use arwkv::embedded::tiny_assets;
    use arwkv::teacher::PretrainedQwen2;
    let teacher = tiny_assets().join("teacher");
    assert!(teacher.join("SHA256SUMS").is_file());
    let device = burn::prelude::Device::flex();
    PretrainedQwen2::load(teacher.to_str().unwrap(), &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&teacher).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let model = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&model, bytes).unwrap();
    let e = PretrainedQwen2::load(dir.path().to_str().unwrap(), &device)
        .err()
        .expect("a corrupted teacher must not load")
        .to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("checksum mismatch"),
        "{e}"
    );
}

#[test]
fn a_preset_hands_notebooks_the_config_of_its_first_two_stages() {
    use arwkv::distill::preset::preset_plan;
    let plan = preset_plan("tiny").unwrap();
    let align = plan.stage_config(Stage::Align, "runs/nb").unwrap();
    assert_eq!(align.data.files, vec![plan.corpus.clone()]);
    assert_eq!(
        (align.steps, align.out.clone()),
        (plan.align.steps, PathBuf::from("runs/nb"))
    );
    align.validate().unwrap();
    assert_eq!(
        plan.stage_config(Stage::Kl, "x").unwrap().steps,
        plan.kl.steps
    );
    let err = plan.stage_config(Stage::Sft, "x").unwrap_err().to_string();
    assert!(err.contains("Sft") && err.contains("run_plan"), "{err}");
}

#[test]
fn pretraining_through_the_one_loop_is_the_plain_next_token_loop_bit_for_bit() {
    use arwkv::data::Dataset;
    use arwkv::distill::next_token_cross_entropy;
    use arwkv::pretrain::{ModelShape, PretrainConfig, pretrain};
    use arwkv::teacher::{PretrainedQwen2, Qwen2ForCausalLM};
    use arwkv::train::{AdamW, AdamWConfig};
    use burn::optim::GradientsParams;
    use burn::prelude::*;

    let dir = tempfile::tempdir().unwrap();
    let steps = 4;
    let cfg = PretrainConfig {
        tokenizer: arwkv::embedded::tiny_assets().join("teacher"),
        out: dir.path().join("teacher"),
        device: "cpu".into(),
        seed: 3,
        steps,
        model: ModelShape {
            hidden_size: 64,
            intermediate_size: 96,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            rope_theta: 10000.0,
            max_position_embeddings: 256,
        },
        data: DataConfig {
            files: vec![corpus(dir.path())],
            context: 32,
            batch_size: 2,
            pack: true,
        },
        optim: AdamWConfig::default(),
        schedule: LrSchedule {
            lr: 3e-3,
            lr_final: 3e-4,
            warmup_steps: 1,
            decay: Decay::Cosine,
            total_steps: steps,
        },
    };
    let last = pretrain(&cfg, &mut Quiet).unwrap().unwrap();
    assert_eq!(last.step, steps);
    let run_dir = dir.path().join("teacher-run");
    let looped = losses(&run_dir);
    assert_eq!(looped.len(), steps as usize);
    assert!(run_dir.join("loss.html").is_file());

    // The same run written out by hand: forward, cross-entropy, backward, AdamW, nothing else.
    let device = arwkv::BackendKind::from_flag_or_env(Some("cpu"))
        .unwrap()
        .device()
        .unwrap()
        .autodiff();
    let saved = PretrainedQwen2::load(&cfg.out.to_string_lossy(), &device).unwrap();
    let tokenizer = saved.tokenizer.as_ref().unwrap();
    let data = Dataset::load(&cfg.data, tokenizer, None, cfg.seed).unwrap();
    device.seed(cfg.seed);
    let mut model = Qwen2ForCausalLM::random(saved.model.config.clone(), &device);
    let mut opt = AdamW::new(cfg.optim.clone());
    let mut pos = Default::default();
    let mut by_hand = vec![];
    for step in 0..steps {
        let (batch, next) = data.batch(pos, &device);
        pos = next;
        let logits = model.forward(batch.ids.clone(), None).unwrap();
        let loss = next_token_cross_entropy(logits, batch.ids, batch.target_mask);
        by_hand.push(loss.clone().into_scalar::<f64>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = opt.step(model, grads, cfg.schedule.lr_at(step)).0;
    }
    assert_eq!(
        looped, by_hand,
        "the loop's losses are the plain loop's, bit for bit"
    );
    let probe = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 5, 9, 2], [1, 4]), &device);
    let a = saved.model.forward(probe.clone(), None).unwrap();
    let b = model.forward(probe, None).unwrap();
    let diff = (a - b).abs().max().into_scalar::<f64>();
    assert_eq!(diff, 0.0, "the saved teacher is the plain loop's model");
}

#[test]
fn a_stage_reads_only_its_own_keys_and_a_key_of_another_stage_is_named() {
    use arwkv::distill::run::StageConfig;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stage.toml");
    let base = "teacher = \"x\"\nout = \"o\"\nsteps = 1\n";
    for (text, culprits) in [
        (
            format!("stage = \"kl\"\n{base}dpo_beta = 0.2\n[data]\n"),
            vec!["dpo_beta", "stage dpo, not of stage kl", "line 5, column 1"],
        ),
        (
            format!("stage = \"sft\"\n{base}temperature = 2.0\n[data]\n"),
            vec!["temperature", "stage kl", "line 5, column 1"],
        ),
        (
            format!("stage = \"dpo\"\n{base}kl_top_k = 8\n[data]\n"),
            vec!["kl_top_k", "stage kl", "dpo_beta, label_smoothing"],
        ),
        (
            format!("stage = \"align\"\n{base}freeze_mlp = true\n[data]\n"),
            vec!["freeze_mlp", "stage align trains only the time mixers"],
        ),
        (
            format!("stage = \"pretrain\"\n{base}[data]\n"),
            vec!["arwkv pretrain"],
        ),
    ] {
        std::fs::write(&path, &text).unwrap();
        let e = RunConfig::from_file(&path).unwrap_err().to_string();
        for culprit in culprits {
            assert!(e.contains(culprit), "{text:?}: {e}");
        }
    }
    let json = dir.path().join("stage.json");
    std::fs::write(
        &json,
        r#"{"stage": "align", "teacher": "x", "out": "o", "steps": 1, "data": {}, "ce_weight": 0.5}"#,
    )
    .unwrap();
    let e = RunConfig::from_file(&json).unwrap_err().to_string();
    assert!(e.contains("ce_weight") && e.contains("stage kl"), "{e}");

    // A stage's own keys land in its variant; run.json round-trips the tagged config.
    std::fs::write(
        &path,
        format!("stage = \"kl\"\n{base}temperature = 2.0\nkl_top_k = 8\n[data]\n"),
    )
    .unwrap();
    let cfg = RunConfig::from_file(&path).unwrap();
    match &cfg.stage {
        StageConfig::Kl(kl) => {
            assert_eq!(
                (kl.temperature, kl.kl_top_k, kl.ce_weight),
                (2.0, Some(8), 0.0)
            );
        }
        other => panic!("stage kl read as {other:?}"),
    }
    let written = serde_json::to_string(&cfg).unwrap();
    assert!(!written.contains("dpo_beta"), "{written}");
    assert_eq!(serde_json::from_str::<RunConfig>(&written).unwrap(), cfg);

    // The reference DPO span is a DPO key.
    std::fs::write(
        &path,
        format!("stage = \"dpo\"\n{base}completion_span = \"reference\"\n[data]\n"),
    )
    .unwrap();
    match RunConfig::from_file(&path).unwrap().stage {
        StageConfig::Dpo(dpo) => assert_eq!(
            dpo.completion_span,
            arwkv::distill::dpo::CompletionSpan::Reference
        ),
        other => panic!("stage dpo read as {other:?}"),
    }
}

#[test]
fn the_loop_stops_a_diverged_run_with_a_typed_error_naming_its_last_checkpoint() {
    use arwkv::Error;
    use arwkv::data::DataPosition;
    use arwkv::train::{
        AdamW, AdamWConfig, LoopStart, MicroBatch, Objective, Ranks, TrainLoop, train,
    };
    use burn::nn::{Linear, LinearConfig};
    use burn::prelude::*;

    /// A least-squares toy whose second micro-batch has a NaN loss.
    struct NanAtSecondBatch;
    impl Objective<Linear> for NanAtSecondBatch {
        fn next_position(&self, pos: DataPosition) -> DataPosition {
            pos.after(u64::MAX) // an endless stream: one pass never ends
        }

        fn micro_batch(
            &self,
            model: &Linear,
            pos: DataPosition,
            device: &Device,
        ) -> arwkv::Result<(MicroBatch, DataPosition)> {
            let x = Tensor::<2>::ones([4, 3], device);
            let y = model.forward(x).powi_scalar(2).mean();
            let loss = if pos.batch == 1 { y * f64::NAN } else { y };
            Ok((MicroBatch::loss_only(loss, 4), self.next_position(pos)))
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let device = arwkv::BackendKind::from_flag_or_env(Some("cpu"))
        .unwrap()
        .device()
        .unwrap()
        .autodiff();
    let model = LinearConfig::new(3, 2).init(&device);
    let cfg = TrainLoop {
        stage: Stage::Sft,
        steps: 5,
        grad_accum: 1,
        save_every: 1,
        schedule: LrSchedule::default(),
        out: dir.path().to_path_buf(),
    };
    let mut saved = vec![];
    let mut checkpoint = |_: &Linear, _: &AdamW, step: u64, _| {
        let path = dir.path().join(format!("ck-{step}"));
        saved.push(path.clone());
        Ok(path)
    };
    let start = LoopStart::fresh(model, AdamW::new(AdamWConfig::default()));
    let e = match train(
        &cfg,
        start,
        &Ranks::single(&NanAtSecondBatch, &device),
        &mut checkpoint,
        &mut Quiet,
    ) {
        Ok(_) => panic!("a NaN loss must stop the run"),
        Err(e) => e,
    };
    match &e {
        Error::Diverged {
            step,
            quantity,
            value,
            last_checkpoint,
            ..
        } => {
            assert_eq!((*step, *quantity), (2, "loss"));
            assert!(value.is_nan());
            assert_eq!(
                last_checkpoint.as_deref(),
                Some(dir.path().join("ck-1").as_path())
            );
        }
        other => panic!("expected Error::Diverged, got {other:?}"),
    }
    assert!(
        e.to_string()
            .contains("at step 2; stopped. Last checkpoint:"),
        "{e}"
    );
    assert_eq!(
        losses(dir.path()).len(),
        1,
        "the diverged step writes no metrics line"
    );
    // A loop that would divide by zero or never save is refused before it starts.
    let zero = TrainLoop {
        save_every: 0,
        ..cfg.clone()
    };
    let model = LinearConfig::new(3, 2).init(&device);
    let start = LoopStart::fresh(model, AdamW::new(AdamWConfig::default()));
    let e = train(
        &zero,
        start,
        &Ranks::single(&NanAtSecondBatch, &device),
        &mut |_: &Linear, _: &AdamW, _, _| Ok(dir.path().to_path_buf()),
        &mut Quiet,
    )
    .err()
    .expect("save_every = 0 is refused");
    assert!(matches!(e, Error::Setting { .. }), "{e}");
}

#[test]
fn the_reference_recipe_runs_end_to_end_with_the_paper_era_choices() {
    use arwkv::distill::preset::{Recipe, preset_plan, run_plan};
    use arwkv::student::PretrainedArwkv;
    let dir = tempfile::tempdir().unwrap();
    let plan = preset_plan("tiny")
        .unwrap()
        .with_recipe(Recipe::Reference)
        .scaled(0.02);
    let summary = run_plan(&plan, dir.path(), Start::Fresh, &mut Quiet).unwrap();
    assert_eq!(summary.recipe, Recipe::Reference);
    assert!(summary.to_markdown().contains("recipe `reference`"));
    for (label, h) in &summary.heldout {
        assert!(h.student_perplexity.is_finite(), "{label}: {h:?}");
    }
    let run_json = |stage: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(dir.path().join(stage).join("run.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    // Stage 1: a gate-free student with its own head; one padded document per row.
    let s1 = run_json("stage1-align");
    assert_eq!(s1["data"]["pack"], false, "{s1}");
    assert_eq!(s1["student_options"]["gate"], false, "{s1}");
    assert_eq!(s1["student_options"]["untie_head"], true, "{s1}");
    let device = burn::prelude::Device::flex();
    let student = |stage: &str| {
        PretrainedArwkv::load_weights_only(
            dir.path().join(stage).join("student").to_str().unwrap(),
            &device,
        )
        .unwrap()
    };
    let (after1, after2) = (student("stage1-align"), student("stage2-kl"));
    assert!(!after1.model.config.has_gate);
    assert!(
        after1.model.lm_head.is_some(),
        "the head is untied after stage 1"
    );
    // Stage 2 onwards: frozen MLPs (bit for bit the stage-1 student's), a trained head.
    let tensors = |s: &PretrainedArwkv| -> Vec<(String, Vec<f32>)> {
        s.model
            .named_tensors()
            .into_iter()
            .map(|t| {
                let (name, data) = match &t {
                    arwkv::save::NamedTensor::D1(n, x) => (n.clone(), x.to_data()),
                    arwkv::save::NamedTensor::D2(n, x) => (n.clone(), x.to_data()),
                    arwkv::save::NamedTensor::D3(n, x) => (n.clone(), x.to_data()),
                };
                (name, data.convert::<f32>().try_to_vec::<f32>().unwrap())
            })
            .collect()
    };
    let (t1, t2) = (tensors(&after1), tensors(&after2));
    let mut mlps = 0;
    for ((n1, v1), (n2, v2)) in t1.iter().zip(&t2) {
        assert_eq!(n1, n2);
        if n1.contains(".mlp.") {
            mlps += 1;
            assert_eq!(
                v1, v2,
                "{n1} changed in stage 2 although the MLPs are frozen"
            );
        }
        if n1 == "lm_head.weight" {
            assert_ne!(v1, v2, "the untied head trains in stage 2");
        }
    }
    assert!(mlps > 0);
    for stage in ["stage2-kl", "stage3-extend", "stage3-sft", "stage3-dpo"] {
        assert_eq!(run_json(stage)["freeze_mlp"], true, "{stage}");
    }
    // The reference's schedule, step by step: warm-up from 0.01×, then ≈ constant.
    for (stage, budget) in [("stage1-align", plan.align), ("stage2-kl", plan.kl)] {
        let schedule = Recipe::Reference.schedule(budget.lr, budget.steps);
        assert_eq!(schedule.decay, Decay::Reference);
        let metrics = arwkv::train::read_metrics(&dir.path().join(stage));
        assert_eq!(metrics.len() as u64, budget.steps, "{stage}");
        for m in &metrics {
            let want = schedule.lr_at(m.step - 1);
            assert!(
                (m.lr - want).abs() <= 1e-12 * want,
                "{stage} step {}: lr {} vs {want}",
                m.step,
                m.lr
            );
        }
    }
    // DPO scores the reference's completion span.
    assert_eq!(run_json("stage3-dpo")["completion_span"], "reference");
}

#[test]
fn table1_trains_its_three_students_per_seed_and_reports_mean_and_sd() {
    use arwkv::distill::preset::preset_plan;
    use arwkv::distill::table1::{MeanSd, Table1Student, run_table1};
    use arwkv::student::PretrainedArwkv;
    let dir = tempfile::tempdir().unwrap();
    let plan = preset_plan("tiny").unwrap().scaled(0.02);
    let report = run_table1(&plan, &[0, 1], dir.path(), Start::Fresh, &mut Quiet).unwrap();
    let students: Vec<Table1Student> = report.rows.iter().map(|r| r.student).collect();
    assert_eq!(students, Table1Student::ALL);
    for row in &report.rows {
        assert_eq!(row.per_seed.len(), 2);
        let ratios: Vec<f64> = row.per_seed.iter().map(|r| r.perplexity_ratio).collect();
        let mean = (ratios[0] + ratios[1]) / 2.0;
        let sd = ((ratios[0] - mean).powi(2) + (ratios[1] - mean).powi(2)).sqrt();
        assert!((row.perplexity_ratio.mean - mean).abs() < 1e-12);
        assert!((row.perplexity_ratio.sd - sd).abs() < 1e-12);
        assert!(row.mean_kl.mean.is_finite() && row.top1_agreement.sd.is_finite());
    }
    assert!(MeanSd::of(&[2.0]).sd.is_nan(), "one seed has no sd");
    let markdown = std::fs::read_to_string(dir.path().join("table1.md")).unwrap();
    assert!(
        markdown.contains("| ARWKV |") && markdown.contains(" ± "),
        "{markdown}"
    );
    let page = std::fs::read_to_string(dir.path().join("table1.html")).unwrap();
    assert!(page.contains("top-1 agreement") && page.contains("w/ gate & active MLP"));

    // The students are what their names say: only the gated one has a gate; the ARWKV student's
    // MLPs are its stage-1 student's, the active one's moved.
    let device = burn::prelude::Device::flex();
    let load = |name: &str| {
        PretrainedArwkv::load_weights_only(
            dir.path()
                .join("seed1")
                .join(name)
                .join("student")
                .to_str()
                .unwrap(),
            &device,
        )
        .unwrap()
    };
    let mlp = |s: &PretrainedArwkv| -> Vec<f32> {
        s.model.model.layers[0]
            .mlp
            .gate_proj
            .weight
            .val()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap()
    };
    let stage1 = load("gate-free-stage1");
    let (frozen, active, gated) = (
        load("arwkv-stage2"),
        load("active-mlp-stage2"),
        load("gate-active-mlp-stage2"),
    );
    assert!(!frozen.model.config.has_gate && !active.model.config.has_gate);
    assert!(gated.model.config.has_gate);
    assert_eq!(mlp(&frozen), mlp(&stage1), "ARWKV: frozen MLP");
    assert_ne!(mlp(&active), mlp(&stage1), "active MLP trains");
}

/// Data parallelism's logic without GPUs: N ranks (threads on one CPU device, summing through
/// `SharedMemoryRanks`) train the fixture teacher on next-token prediction exactly as one device
/// does with N × grad_accum accumulated micro-batches, and a run resumes on another N.
mod data_parallel {
    use std::path::Path;

    use arwkv::data::DataPosition;
    use arwkv::distill::loss::next_token_cross_entropy;
    use arwkv::teacher::Qwen2ForCausalLM;
    use arwkv::train::{
        AdamW, AdamWConfig, Decay, LoopStart, LrSchedule, MicroBatch, Objective, Rank, Ranks,
        SharedMemoryRanks, Stage, TrainLoop, train,
    };
    use arwkv_tests::{Quiet, fixture_teacher, run_losses, spread_ids};
    use burn::prelude::*;

    /// Next-token cross-entropy on two rows that differ with every data position.
    struct RowsByPosition {
        vocab: usize,
    }

    impl Objective<Qwen2ForCausalLM> for RowsByPosition {
        fn next_position(&self, pos: DataPosition) -> DataPosition {
            pos.after(u64::MAX) // an endless stream: one pass never ends
        }

        fn micro_batch(
            &self,
            model: &Qwen2ForCausalLM,
            pos: DataPosition,
            device: &Device,
        ) -> arwkv::Result<(MicroBatch, DataPosition)> {
            let all = spread_ids(2 * (pos.batch as usize + 1), 12, self.vocab, device);
            let ids = all.narrow(0, 2 * pos.batch as usize, 2);
            let logits = model.forward(ids.clone(), None)?;
            let mask = Tensor::<2>::ones([2, 12], device);
            let loss = next_token_cross_entropy(logits, ids, mask);
            Ok((MicroBatch::loss_only(loss, 24), self.next_position(pos)))
        }
    }

    fn device() -> Device {
        arwkv::BackendKind::Cpu.device().unwrap().autodiff()
    }

    fn vocab() -> usize {
        fixture_teacher(&device()).config.vocab_size
    }

    /// What a run ends with: its trained model, its optimiser and the data position of its last
    /// checkpoint.
    struct Trained {
        model: Qwen2ForCausalLM,
        opt: AdamW,
        pos: DataPosition,
    }

    /// Trains from `from` (a fresh fixture teacher when `None`) up to `steps` on `ranks` ranks
    /// with `grad_accum` micro-batches each, writing metrics to `out`.
    fn trained(
        ranks: usize,
        grad_accum: u64,
        steps: u64,
        from: Option<(Trained, u64)>,
        out: &Path,
    ) -> Trained {
        let device = device();
        let objective = RowsByPosition { vocab: vocab() };
        let collective = SharedMemoryRanks::new(ranks);
        let all = Ranks::data_parallel(
            (0..ranks)
                .map(|_| Rank {
                    objective: &objective,
                    device: device.clone(),
                })
                .collect(),
            &collective,
        )
        .unwrap();
        let cfg = TrainLoop {
            stage: Stage::Pretrain,
            steps,
            grad_accum,
            save_every: 1,
            // Constant, so that a run cut short and resumed sees the same rates.
            schedule: LrSchedule {
                lr: 1e-3,
                warmup_steps: 0,
                decay: Decay::Constant,
                ..LrSchedule::default()
            },
            out: out.to_path_buf(),
        };
        let start = match from {
            None => LoopStart::fresh(fixture_teacher(&device), AdamW::new(AdamWConfig::default())),
            Some((t, step)) => LoopStart {
                model: t.model,
                opt: t.opt,
                step,
                pos: t.pos,
                checkpoint: Some(out.join("resumed-from")),
            },
        };
        let mut last = None;
        let mut checkpoint = |m: &Qwen2ForCausalLM, o: &AdamW, _, pos| {
            last = Some((m.clone(), o.clone(), pos));
            Ok(out.join("checkpoint"))
        };
        train(&cfg, start, &all, &mut checkpoint, &mut Quiet).unwrap();
        let (model, opt, pos) = last.unwrap();
        Trained { model, opt, pos }
    }

    /// The largest difference between the two models' logits on fixed rows, relative to the
    /// largest logit.
    fn logits_gap(a: &Qwen2ForCausalLM, b: &Qwen2ForCausalLM) -> f32 {
        let ids = spread_ids(2, 12, vocab(), &device());
        let la = a.forward(ids.clone(), None).unwrap();
        let lb = b.forward(ids, None).unwrap();
        let scale = la.clone().abs().max().into_scalar::<f32>();
        (la - lb).abs().max().into_scalar::<f32>() / scale
    }

    #[test]
    fn n_ranks_take_the_step_of_one_device_accumulating_n_micro_batches() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let one = trained(1, 4, 3, None, dirs[0].path());
        let two = trained(2, 2, 3, None, dirs[1].path());
        let four = trained(4, 1, 3, None, dirs[2].path());
        let reference = run_losses(dirs[0].path());
        assert_eq!(reference.len(), 3);
        for (n, run, dir) in [(2, &two, &dirs[1]), (4, &four, &dirs[2])] {
            // Same data stream: 12 micro-batches read, whatever N.
            assert_eq!(run.pos, one.pos, "{n} ranks");
            assert_eq!(run.pos.batch, 12);
            // Same update up to the order of a float sum (stated tolerance: 1e-5 relative).
            let gap = logits_gap(&run.model, &one.model);
            assert!(gap < 1e-5, "{n} ranks: logits differ by {gap:e} (relative)");
            for (a, b) in run_losses(dir.path()).iter().zip(&reference) {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs(),
                    "{n} ranks: loss {a} vs {b}"
                );
            }
        }
        // And the steps did train: the weights moved.
        assert!(logits_gap(&one.model, &fixture_teacher(&device())) > 1e-4);
    }

    #[test]
    fn a_run_resumes_on_another_number_of_ranks_and_continues_the_same_stream() {
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let reference = trained(1, 4, 3, None, dirs[0].path());
        // One step on two ranks, then two on four ranks from its checkpoint.
        let first = trained(2, 2, 1, None, dirs[1].path());
        assert_eq!(first.pos.batch, 4);
        let resumed = trained(4, 1, 3, Some((first, 1)), dirs[1].path());
        assert_eq!(resumed.pos, reference.pos);
        let gap = logits_gap(&resumed.model, &reference.model);
        assert!(gap < 1e-5, "resumed on 4 ranks: logits differ by {gap:e}");
        let losses = run_losses(dirs[1].path());
        let expected = run_losses(dirs[0].path());
        assert_eq!(losses.len(), 3);
        for (a, b) in losses.iter().zip(&expected) {
            assert!((a - b).abs() <= 1e-6 * b.abs(), "loss {a} vs {b}");
        }
    }
}
