//! The `arwkv-kernel` binary from the outside: the kernelspec `install` writes and the command
//! line's refusals. Being an integration test, it also makes `cargo test --workspace` build the
//! binary itself, with the features that command resolves, so `tests/kernel/run.sh` finds it built
//! instead of compiling `arwkv` and Burn a second time under another feature set.

use std::path::Path;
use std::process::{Command, Output};

fn kernel(args: &[&str], prefix: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_arwkv-kernel"))
        .args(args)
        .arg("--prefix")
        .arg(prefix)
        .env_remove("ARWKV_KERNEL_FEATURES")
        .output()
        .expect("starting arwkv-kernel")
}

/// Runs `args` and insists it succeeded, showing its stderr when not.
fn kernel_ok(args: &[&str], prefix: &Path) {
    let out = kernel(args, prefix);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn kernel_json(prefix: &Path) -> serde_json::Value {
    let file = prefix.join("share/jupyter/kernels/arwkv/kernel.json");
    let text = std::fs::read_to_string(&file).expect("kernel.json written");
    serde_json::from_str(&text).expect("kernel.json is JSON")
}

#[test]
fn install_into_a_prefix_writes_a_kernelspec_that_starts_this_binary() {
    let prefix = tempfile::tempdir().unwrap();
    kernel_ok(
        &["install", "--no-prebuild", "--features", "wgpu,flex"],
        prefix.path(),
    );
    let spec = kernel_json(prefix.path());
    let exe = Path::new(env!("CARGO_BIN_EXE_arwkv-kernel"));
    let argv0 = spec["argv"][0].as_str().unwrap();
    assert_eq!(
        Path::new(argv0).canonicalize().unwrap(),
        exe.canonicalize().unwrap()
    );
    assert_eq!(spec["argv"][1], "--connection-file");
    assert_eq!(spec["argv"][2], "{connection_file}");
    assert_eq!(spec["interrupt_mode"], "message");
    assert_eq!(spec["language"], "rust");
    // `flex` is the CPU backend every prelude has: only the GPU feature is recorded.
    assert_eq!(spec["env"]["ARWKV_KERNEL_FEATURES"], "wgpu");
    assert!(
        prefix
            .path()
            .join("share/jupyter/kernels/arwkv/logo-svg.svg")
            .is_file()
    );
}

#[test]
fn a_cpu_kernelspec_sets_no_features() {
    let prefix = tempfile::tempdir().unwrap();
    kernel_ok(&["install", "--no-prebuild"], prefix.path());
    assert!(kernel_json(prefix.path()).get("env").is_none());
}

#[test]
fn an_unknown_prelude_feature_is_refused_by_name_and_nothing_is_written() {
    let prefix = tempfile::tempdir().unwrap();
    let out = kernel(
        &["install", "--no-prebuild", "--features", "vulkan"],
        prefix.path(),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown prelude feature `vulkan`"),
        "{stderr}"
    );
    assert!(!prefix.path().join("share").exists());
}
