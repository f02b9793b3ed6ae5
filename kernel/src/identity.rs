//! Who this kernel is: the kernelspec's names and the `kernel_info` reply, shared by the Jupyter
//! server and the notebooks the runner and exporter write.

use jupyter_protocol::messaging::{CodeMirrorMode, KernelInfoReply, LanguageInfo, ReplyStatus};

/// Kernelspec directory name (`jupyter kernelspec list`).
pub const KERNEL_NAME: &str = "arwkv";
/// Name shown in the launcher.
pub const DISPLAY_NAME: &str = "Rust (ARWKV Lab)";

/// The `kernel_info_reply` content.
pub fn kernel_info() -> KernelInfoReply {
    KernelInfoReply {
        status: ReplyStatus::Ok,
        protocol_version: "5.3".into(),
        implementation: "arwkv-kernel".into(),
        implementation_version: env!("CARGO_PKG_VERSION").into(),
        language_info: LanguageInfo {
            name: "rust".into(),
            version: rustc_version(),
            mimetype: Some("text/rust".into()),
            file_extension: Some(".rs".into()),
            pygments_lexer: Some("rust".into()),
            codemirror_mode: Some(CodeMirrorMode::Simple("rust".into())),
            nbconvert_exporter: None,
        },
        banner: format!(
            "ARWKV Lab kernel {} — Rust via evcxr 0.22, `arwkv` preloaded",
            env!("CARGO_PKG_VERSION")
        ),
        help_links: vec![],
        debugger: false,
        error: None,
    }
}

/// `language_info` as a notebook's metadata holds it.
pub fn language_info_json() -> serde_json::Value {
    serde_json::to_value(kernel_info().language_info).unwrap_or_default()
}

fn rustc_version() -> String {
    std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_default()
}
