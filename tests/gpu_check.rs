//! The one binary `scripts/gpu-check.sh` takes to a GPU machine: the golden tests of
//! `teacher_golden`, `time_mix_golden`, `wkv7_reference` and `student` (on the backends
//! `$ARWKV_TEST_BACKENDS` names), and, ignored unless asked for, the two measurements the check
//! records. One binary because each links CubeCL's LLVM (150 MB stripped) and only 64 MiB travel;
//! built only with the `cuda` feature, so CI runs the four files as their own tests instead.

#[path = "teacher_golden.rs"]
mod teacher_golden;

#[path = "time_mix_golden.rs"]
mod time_mix_golden;

#[path = "wkv7_reference.rs"]
mod wkv7_reference;

#[path = "student.rs"]
mod student;

/// The GPU check's measurements, printed as JSON lines (run with `--ignored --nocapture`).
mod measurements {
    use std::path::PathBuf;

    use arwkv::BackendKind;
    use arwkv::bench::{DistillBench, Wkv7Bench, bench_distill, bench_wkv7_device};
    use arwkv::distill::plan::{PlanInput, plan};
    use arwkv::teacher::{Qwen2Config, Qwen2ForCausalLM};
    use arwkv::{Precision, train::Stage};

    /// `$name` parsed, else `default`.
    fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
        match std::env::var(name) {
            Ok(v) => v
                .parse()
                .unwrap_or_else(|_| panic!("${name}: cannot read `{v}`")),
            Err(_) => default,
        }
    }

    fn backend() -> String {
        setting("GPU_CHECK_BACKEND", "cuda".to_string())
    }

    /// Forward + backward of WKV-7 at `$GPU_CHECK_WKV7` = `B,T,H,N` (default 8,4096,64,64), f32
    /// and bf16-stored.
    #[test]
    #[ignore = "a measurement: scripts/gpu-check.sh runs it"]
    fn wkv7_forward_backward() {
        let shape: Vec<usize> = setting("GPU_CHECK_WKV7", "8,4096,64,64".to_string())
            .split(',')
            .map(|x| x.trim().parse().expect("$GPU_CHECK_WKV7: B,T,H,N"))
            .collect();
        let device = backend().parse::<BackendKind>().unwrap().device().unwrap();
        for bf16 in [false, true] {
            let args = Wkv7Bench {
                batch: shape[0],
                seq: shape[1],
                heads: shape[2],
                head_size: shape[3],
                warmup: 1,
                iters: setting("GPU_CHECK_ITERS", 3),
                bf16,
            };
            let report = bench_wkv7_device(&args, &device).unwrap();
            println!("{}", serde_json::to_string(&report).unwrap());
        }
    }

    /// One stage-2 step at `$GPU_CHECK_TEACHER_CONFIG`'s shape (default Qwen2.5-0.5B's) with random
    /// weights, in `$GPU_CHECK_PRECISION` (default bf16-mixed), `$GPU_CHECK_BATCH` ×
    /// `$GPU_CHECK_SEQ` tokens (4 × 2048) with logits 1024 positions at a time; the planner's
    /// peak for the same step printed beside it.
    #[test]
    #[ignore = "a measurement: scripts/gpu-check.sh runs it"]
    fn stage2_step() {
        let repo = PathBuf::from(setting("GPU_CHECK_REPO", ".".to_string()));
        let config_file = repo.join(setting(
            "GPU_CHECK_TEACHER_CONFIG",
            "benches/qwen2.5-0.5b/config.json".to_string(),
        ));
        let (batch, seq) = (
            setting("GPU_CHECK_BATCH", 4),
            setting("GPU_CHECK_SEQ", 2048),
        );
        let loss_chunk = setting("GPU_CHECK_LOSS_CHUNK", 1024usize).min(seq);
        let precision: Precision = setting("GPU_CHECK_PRECISION", Precision::Bf16Mixed);
        let config = Qwen2Config::from_file(&config_file).unwrap();
        let teacher_dir = tempfile::tempdir().unwrap();
        let cpu = BackendKind::Cpu.device().unwrap();
        cpu.seed(0);
        arwkv::teacher::save_pretrained(
            &Qwen2ForCausalLM::random(config.clone(), &cpu),
            teacher_dir.path(),
            Some(&arwkv::embedded::tiny_assets().join("teacher")),
            arwkv::save::DEFAULT_MAX_SHARD_BYTES,
        )
        .unwrap();
        let planned = plan(&PlanInput {
            teacher: config,
            stage: Stage::Kl,
            batch,
            context: seq,
            precision,
            devices: 1,
            loss_chunk: Some(loss_chunk),
            gate: true,
            freeze_mlp: false,
            activation_checkpointing: false,
            from_checkpoint: false,
            memory_gib: 141.0,
            flops_per_s: 400e12,
        })
        .unwrap();
        println!(
            "{}",
            serde_json::json!({ "planned_peak_gib": planned.total_bytes as f64 / (1u64 << 30) as f64 })
        );
        let args = DistillBench {
            stage: "kl".into(),
            teacher: Some(teacher_dir.path().to_string_lossy().into_owned()),
            batch,
            seq,
            warmup: 1,
            iters: setting("GPU_CHECK_ITERS", 2),
            loss_chunk: Some(loss_chunk),
            activation_checkpointing: false,
            precision: Some(precision),
        };
        let report = bench_distill(&args, &backend()).unwrap();
        println!("{}", serde_json::to_string(&report).unwrap());
    }
}
