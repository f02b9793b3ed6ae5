// ARWKV patch (rustc replay), see PATCH.md.
//
// Compiling a cell runs `cargo build`, which checks the freshness of every unit of the crate graph
// (hundreds with a large dependency such as Burn: ~0.35 s on 2 cores) before it runs rustc on the
// one crate that changed, the cell's. While the cell crate's manifest, its cargo config, the cargo
// command and its dependencies' artifacts are unchanged, that rustc invocation is the same every
// time but for the source file's contents. Cargo prints it when run with `-v` (`Running `…``: the
// variables cargo sets, the program, the arguments); later cells run it directly. Anything else —
// another manifest (a new `:dep`), another command line, a dependency artifact rebuilt, a failure
// that is not a compilation error of the cell — goes through cargo again, which is read anew.

use crate::code_block::CodeBlock;
use crate::errors::CompilationError;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::time::SystemTime;

/// One rustc invocation of the cell crate, as cargo ran it.
#[derive(Debug)]
pub(crate) struct Replay {
    program: String,
    args: Vec<String>,
    /// Variables cargo set for rustc (on top of the cargo command's own).
    env: Vec<(String, String)>,
    /// The cargo command's variables (RUSTFLAGS aside, rustc sees them too).
    command_env: Vec<(String, Option<String>)>,
    cwd: PathBuf,
    /// Manifest, cargo config and cargo command line when it was read.
    fingerprint: String,
    /// The `--extern` artifacts and their modification times then.
    externs: Vec<(PathBuf, Option<SystemTime>)>,
}

/// What a replayed compile gave.
pub(crate) enum Replayed {
    /// The cell crate's shared object.
    Built(PathBuf),
    /// The cell's compilation errors.
    Errors(Vec<CompilationError>),
}

/// The state a replay is valid for: the cell crate's manifest and cargo config, and the cargo
/// command (its arguments and environment).
pub(crate) fn fingerprint(crate_dir: &Path, cargo: &Command) -> String {
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_else(|e| format!("<{e}>"));
    let mut envs: Vec<String> = cargo
        .get_envs()
        .map(|(k, v)| format!("{k:?}={v:?}"))
        .collect();
    envs.sort();
    format!(
        "{}\n{}\n{:?}\n{:?}\n{}",
        read(crate_dir.join("Cargo.toml")),
        read(crate_dir.join(".cargo").join("config.toml")),
        cargo.get_program(),
        cargo.get_args().collect::<Vec<_>>(),
        envs.join("\n")
    )
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Splits a command line as a POSIX shell would (quotes and backslashes; no expansions).
fn shell_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => word.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => word.push(chars.next()?),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next()?);
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

/// Reads the cell crate's rustc invocation from the stderr of `cargo build -v` (`Running `…``).
pub(crate) fn from_cargo_output(
    stderr: &[u8],
    crate_name: &str,
    crate_dir: &Path,
    cargo: &Command,
    fingerprint: String,
) -> Option<Replay> {
    let stderr = String::from_utf8_lossy(stderr);
    let crate_arg = format!("--crate-name {crate_name} ");
    let line = stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("Running `") && l.contains(&crate_arg))
        .last()?;
    let inner = line.split_once('`')?.1.rsplit_once('`')?.0;
    let mut words = shell_words(inner)?.into_iter().peekable();
    let mut env = Vec::new();
    while let Some(w) = words.peek() {
        match w.split_once('=') {
            Some((k, v)) if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                env.push((k.to_owned(), v.to_owned()));
                words.next();
            }
            _ => break,
        }
    }
    let program = words.next()?;
    let args: Vec<String> = words.collect();
    let externs = args
        .windows(2)
        .filter(|w| w[0] == "--extern")
        .filter_map(|w| w[1].split_once('=').map(|(_, p)| PathBuf::from(p)))
        .map(|p| {
            let t = modified(&p);
            (p, t)
        })
        .collect();
    let command_env = cargo
        .get_envs()
        .filter(|(k, _)| *k != "RUSTFLAGS")
        .filter_map(|(k, v)| {
            let v = match v {
                Some(v) => Some(v.to_str()?.to_owned()),
                None => None,
            };
            Some((k.to_str()?.to_owned(), v))
        })
        .collect();
    Some(Replay {
        program,
        args,
        env,
        command_env,
        cwd: crate_dir.to_path_buf(),
        fingerprint,
        externs,
    })
}

impl Replay {
    /// Whether the invocation still applies: same fingerprint, dependency artifacts untouched.
    pub(crate) fn applies(&self, fingerprint: &str) -> bool {
        self.fingerprint == fingerprint && self.externs.iter().all(|(p, t)| modified(p) == *t)
    }

    /// Runs the recorded rustc on the cell crate's current source. `None` when the run failed
    /// without a compilation error of the cell's (the caller then goes through cargo).
    pub(crate) fn run(&self, code_block: &CodeBlock) -> Option<Replayed> {
        let mut command = Command::new(&self.program);
        command.args(&self.args).current_dir(&self.cwd);
        for (k, v) in &self.command_env {
            match v {
                Some(v) => command.env(k, v),
                None => command.env_remove(k),
            };
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let output = command.output().ok()?;
        if output.status.success() {
            return super::execution_so_source(&command).map(Replayed::Built);
        }
        let (errors, _) = super::errors_from_cargo_output(&output, code_block);
        (!errors.is_empty()).then_some(Replayed::Errors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_words;

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(
            shell_words(r#"A=1 B='x y' rustc --cfg 'feature="std"' a\ b "c\"d""#).unwrap(),
            ["A=1", "B=x y", "rustc", "--cfg", "feature=\"std\"", "a b", "c\"d"]
        );
        assert!(shell_words("'open").is_none());
    }
}
