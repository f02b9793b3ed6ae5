//! Cargo build progress into the cell. evcxr echoes cargo's `Compiling <crate>` lines for `:dep`
//! builds on the kernel's own stderr, which only the server log sees. We put a pipe under file
//! descriptor 2: every line still reaches the original stderr, and `Compiling …` lines are also
//! streamed to the running cell.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};

use crossbeam_channel::Sender;

use crate::session::router::RouterCommand;

/// Whether a stderr line is cargo build progress worth showing in the cell.
pub fn is_build_progress(line: &str) -> bool {
    let line = line.trim_start();
    ["Compiling ", "Downloaded ", "Updating ", "Locking "]
        .iter()
        .any(|p| line.starts_with(p))
}

/// Routes the process's stderr through a tee thread (see the module doc).
pub fn tee_stderr(router: Sender<RouterCommand>) -> std::io::Result<()> {
    let mut fds = [0; 2];
    // SAFETY: plain POSIX calls on descriptors we own; on failure nothing is changed.
    let (read_end, original) = unsafe {
        if libc::pipe(fds.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let original = libc::dup(2);
        if original < 0 || libc::dup2(fds[1], 2) < 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fds[0]);
            libc::close(fds[1]);
            return Err(e);
        }
        libc::close(fds[1]);
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(original))
    };
    std::thread::Builder::new()
        .name("stderr-tee".into())
        .spawn(move || {
            let mut original = std::fs::File::from(original);
            for line in BufReader::new(std::fs::File::from(read_end)).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(original, "{line}");
                if is_build_progress(&line) {
                    let _ = router.send(RouterCommand::Stderr(format!("{}\n", line.trim_start())));
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_build_progress;

    #[test]
    fn only_cargo_progress_lines_reach_the_cell() {
        assert!(is_build_progress("   Compiling burn-tensor v0.22.1"));
        assert!(is_build_progress(
            "Compiling arwkv v0.1.0 (/work/main/arwkv)"
        ));
        assert!(!is_build_progress(
            "arwkv-kernel: dropped a shell message: bad"
        ));
    }
}
