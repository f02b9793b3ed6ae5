//! Crash safety of `arwkv distill`: a run killed with SIGKILL at arbitrary moments (mid-step,
//! mid-checkpoint, mid-metrics write) and resumed each time ends with exactly the losses of a run
//! that was never interrupted, and no `.partial` checkpoint is left behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn write_config(dir: &Path, name: &str, steps: u64) -> PathBuf {
    let teacher =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen2/tied-gqa2-f32");
    let corpus = dir.join("corpus.txt");
    if !corpus.exists() {
        let text: Vec<String> = (0..60)
            .map(|i| {
                format!(
                    "Line {i}: the quick brown fox jumps over the lazy dog {}.",
                    i * 3
                )
            })
            .collect();
        std::fs::write(&corpus, text.join("\n\n")).unwrap();
    }
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "stage = \"kl\"\nteacher = \"{}\"\nout = \"{}\"\nsteps = {steps}\nsave_every = 1\n\
             [data]\nfiles = [\"{}\"]\ncontext = 32\nbatch_size = 2\n\
             [schedule]\nlr = 0.003\nwarmup_steps = 2\n",
            teacher.display(),
            dir.join(name).display(),
            corpus.display()
        ),
    )
    .unwrap();
    config
}

fn distill(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_arwkv"));
    cmd.args(["distill", "--config"])
        .arg(config)
        .arg("--resume")
        .env("ARWKV_DEVICE", "cpu")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn losses(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{} {}", v["step"], v["loss"])
        })
        .collect()
}

#[test]
fn a_run_killed_again_and_again_resumes_to_the_same_losses() {
    let dir = tempfile::tempdir().unwrap();
    let steps = 30;
    let straight = write_config(dir.path(), "straight", steps);
    let run = distill(&straight).output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let killed = write_config(dir.path(), "killed", steps);
    // Kill delays from a fixed sequence, so that a failure can be replayed.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut kills = 0;
    for _ in 0..40 {
        let mut child = distill(&killed).spawn().unwrap();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis(30 + (seed >> 33) % 250);
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    // Whatever the kills left, one more resume finishes the run.
    let out = distill(&killed).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(kills > 0, "the run was never killed; raise the steps");

    eprintln!("killed {kills} times");
    let (a, b) = (dir.path().join("straight"), dir.path().join("killed"));
    assert_eq!(losses(&a), losses(&b), "resumed after {kills} kills");
    assert_eq!(losses(&b).len(), steps as usize);
    let partial = std::fs::read_dir(b.join("checkpoints"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "partial")
        })
        .count();
    assert_eq!(partial, 0, "no .partial checkpoint left behind");
}
