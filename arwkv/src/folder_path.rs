//! File names read from inside a model folder (`SHA256SUMS`, `model.safetensors.index.json`) are
//! untrusted: a name must be a plain relative path inside the folder. Symlinks inside the folder
//! are followed, since the Hugging Face cache stores every file of a snapshot as a symlink into its
//! `blobs/` directory; placing a link there takes write access to the folder, not a crafted file.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// `dir/name`, refusing a `name` that is empty, absolute or has a `..` component. `listed_in` is the
/// file that named it, for the error.
pub fn inside(dir: &Path, name: &str, listed_in: &Path) -> Result<PathBuf> {
    let relative = Path::new(name);
    if name.is_empty()
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(Error::Checkpoint {
            file: listed_in.to_path_buf(),
            message: format!(
                "entry `{name}` is not a plain relative path; only files inside {} are read",
                dir.display()
            ),
        });
    }
    Ok(dir.join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_leave_the_folder_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("SHA256SUMS");
        let a = inside(dir.path(), "a.bin", &list).unwrap();
        assert!(inside(dir.path(), "./a.bin", &list).is_ok());
        assert_eq!(a, dir.path().join("a.bin"));
        for bad in ["../../../etc/passwd", "/etc/passwd", "sub/../../x", ""] {
            let err = inside(dir.path(), bad, &list).unwrap_err().to_string();
            assert!(
                err.contains("SHA256SUMS") && err.contains("only files inside"),
                "{bad}: {err}"
            );
        }
        // The Hugging Face cache's layout: a snapshot's files are links into `blobs/`.
        assert!(inside(dir.path(), "sub/model-00001-of-00002.safetensors", &list).is_ok());
    }
}
