//! `SHA256SUMS` files (the `sha256sum` format): a model folder that carries one has every listed
//! file verified when it is loaded, so a corrupted or edited file is one clear error, not a
//! silently different model. The embedded default's teacher carries one.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Name of the checksum file.
pub const SUMS_FILE: &str = "SHA256SUMS";

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Verifies `dir/SHA256SUMS` when present; a folder without one passes.
pub fn verify_folder(dir: &Path) -> Result<()> {
    let sums = dir.join(SUMS_FILE);
    if !sums.is_file() {
        return Ok(());
    }
    let text = crate::error::read_to_string(&sums)?;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (hash, name) = line
            .split_once(char::is_whitespace)
            .map(|(h, n)| (h, n.trim_start().trim_start_matches('*')))
            .ok_or_else(|| Error::Checkpoint {
                file: sums.clone(),
                message: format!("line {}: expected `<sha256>  <file>`", n + 1),
            })?;
        let path = crate::folder_path::inside(dir, name, &sums)?;
        let found = sha256_file(&path)?;
        if !found.eq_ignore_ascii_case(hash) {
            return Err(Error::Checkpoint {
                file: path,
                message: format!(
                    "checksum mismatch (expected {hash}, found {found}): the file is corrupt or was \
                     changed; restore it (git checkout) or rebuild it (scripts/make-embedded-default.sh)"
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.bin"), b"abc").unwrap();
        let hash = sha256_file(&dir.path().join("a.bin")).unwrap();
        assert_eq!(
            hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::write(dir.path().join(SUMS_FILE), format!("{hash}  a.bin\n")).unwrap();
        verify_folder(dir.path()).unwrap();
        std::fs::write(dir.path().join("a.bin"), b"abd").unwrap();
        let e = verify_folder(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("a.bin") && e.contains("checksum mismatch"),
            "{e}"
        );
    }

    #[test]
    fn an_entry_outside_the_folder_is_refused_not_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let hash = "0".repeat(64);
        std::fs::write(
            dir.path().join(SUMS_FILE),
            format!("{hash}  ../../../etc/passwd\n"),
        )
        .unwrap();
        let e = verify_folder(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("../../../etc/passwd") && e.contains("only files inside"),
            "{e}"
        );
    }
}
