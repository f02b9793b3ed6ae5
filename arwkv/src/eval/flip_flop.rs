//! The flip-flop language, a state-tracking probe (notebook 06). A sequence is a list of
//! instructions, each a letter and a bit: `w1` writes 1, `i0` is a distractor to ignore, `r1` reads
//! — and its bit is always the last one written. Reading right at any length means carrying one bit
//! across any number of distractors and replacing it at every write: RWKV-7's delta rule does this
//! in its state, a transformer has to find the latest write by attention over the whole prefix.
//!
//! Accuracy is teacher-forced: the model reads the true sequence, and at each `r` its most likely
//! next token must be the bit last written.

use std::ops::{Range, RangeInclusive};

use burn::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::MeanSd;
use crate::error::{Error, Result};
use crate::pretrained::Pretrained;

/// One instruction with its bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instruction {
    /// Store the bit.
    Write(bool),
    /// A distractor: the bit is noise.
    Ignore(bool),
    /// The bit is the one last written.
    Read(bool),
}

impl Instruction {
    /// `w1`, `i0`, `r1`, ….
    pub fn text(self) -> String {
        let (op, bit) = match self {
            Self::Write(b) => ('w', b),
            Self::Ignore(b) => ('i', b),
            Self::Read(b) => ('r', b),
        };
        format!("{op}{}", u8::from(bit))
    }
}

/// The text of a sequence: instructions separated by spaces (`w1 i0 r1`).
pub fn to_text(sequence: &[Instruction]) -> String {
    sequence
        .iter()
        .map(|i| i.text())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The instruction mix: probabilities of a write and of a read; the rest are distractors.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct FlipFlop {
    /// Probability of `w`.
    pub write: f64,
    /// Probability of `r`.
    pub read: f64,
}

impl FlipFlop {
    /// A mix with both probabilities in (0, 1] and their sum at most 1.
    pub fn new(write: f64, read: f64) -> Result<Self> {
        let ok = |p: f64| p > 0.0 && p <= 1.0;
        if !(ok(write) && ok(read) && write + read <= 1.0) {
            return Err(Error::Invalid(format!(
                "flip-flop: write ({write}) and read ({read}) probabilities must be in (0, 1] \
                 and sum to at most 1"
            )));
        }
        Ok(Self { write, read })
    }

    /// `len` instructions (at least one) from `rng`; the first is a write, so every read has an answer.
    pub fn sample(&self, len: usize, rng: &mut StdRng) -> Vec<Instruction> {
        let mut last = false;
        (0..len.max(1))
            .map(|i| {
                let (u, bit) = (rng.random::<f64>(), rng.random::<bool>());
                if i == 0 || u < self.write {
                    last = bit;
                    Instruction::Write(bit)
                } else if u < self.write + self.read {
                    Instruction::Read(last)
                } else {
                    Instruction::Ignore(bit)
                }
            })
            .collect()
    }

    /// `rows` sequences of `len` instructions from `seed` (the test set of [`read_accuracy`]).
    pub fn sequences(&self, len: usize, rows: usize, seed: u64) -> Vec<Vec<Instruction>> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..rows).map(|_| self.sample(len, &mut rng)).collect()
    }

    /// `rows` sequences with lengths drawn uniformly from `lens`, one paragraph each (the training
    /// data format: documents separated by blank lines).
    pub fn corpus(&self, rows: usize, lens: RangeInclusive<usize>, seed: u64) -> String {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut text = String::new();
        for _ in 0..rows {
            let len = rng.random_range(lens.clone());
            text.push_str(&to_text(&self.sample(len, &mut rng)));
            text.push_str("\n\n");
        }
        text
    }
}

/// Reads answered right and reads seen, at each instruction position.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReadAccuracy {
    /// Right answers at position `i`.
    pub correct: Vec<u64>,
    /// Reads at position `i`.
    pub reads: Vec<u64>,
}

impl ReadAccuracy {
    /// Share of reads answered right at positions `range` (`None` when there is no read there).
    pub fn over(&self, range: Range<usize>) -> Option<f64> {
        let end = range.end.min(self.reads.len());
        let start = range.start.min(end);
        let reads: u64 = self.reads[start..end].iter().sum();
        let correct: u64 = self.correct[start..end].iter().sum();
        (reads > 0).then(|| correct as f64 / reads as f64)
    }
}

/// Teacher-forced read accuracy of `model` on [`FlipFlop::sequences`]`(len, rows, seed)`, run
/// `batch` sequences per forward. Fails, naming the tokenizer, when it does not split every
/// instruction into exactly two tokens (letter, digit).
pub fn read_accuracy(
    model: &Pretrained,
    task: &FlipFlop,
    len: usize,
    rows: usize,
    seed: u64,
    batch: usize,
    device: &Device,
) -> Result<ReadAccuracy> {
    let tokenizer = model.tokenizer()?;
    let sequences = task.sequences(len, rows, seed);
    let mut score = ReadAccuracy {
        correct: vec![0; len],
        reads: vec![0; len],
    };
    for chunk in sequences.chunks(batch.max(1)) {
        let mut ids = Vec::with_capacity(chunk.len() * 2 * len);
        for sequence in chunk {
            let row = tokenizer.encode(&to_text(sequence), false)?;
            if row.len() != 2 * sequence.len() {
                return Err(Error::Invalid(format!(
                    "flip-flop: the tokenizer at {} splits `{}` into {} tokens, not one per \
                     letter and one per digit",
                    tokenizer.path().display(),
                    to_text(&sequence[..sequence.len().min(4)]),
                    row.len()
                )));
            }
            ids.extend(row.iter().map(|&id| i64::from(id)));
        }
        let input = Tensor::<2, Int>::from_data(
            TensorData::new(ids.clone(), [chunk.len(), 2 * len]),
            device,
        );
        // The token after instruction i's letter (position 2i) is its bit (position 2i + 1).
        let predicted: Vec<i64> = model
            .forward(input)?
            .argmax(2)
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .map_err(|e| Error::Invalid(format!("flip-flop: reading predictions: {e:?}")))?;
        for (r, sequence) in chunk.iter().enumerate() {
            for (i, instruction) in sequence.iter().enumerate() {
                if matches!(instruction, Instruction::Read(_)) {
                    let at = r * 2 * len + 2 * i;
                    score.reads[i] += 1;
                    score.correct[i] += u64::from(predicted[at] == ids[at + 1]);
                }
            }
        }
    }
    Ok(score)
}

/// Mean ± sd over seeds of the read accuracy in consecutive position bins of `width` instructions:
/// `(first position, one past the last, accuracy)`; bins without a read in some seed are skipped.
pub fn accuracy_by_length(runs: &[ReadAccuracy], width: usize) -> Vec<(usize, usize, MeanSd)> {
    let len = runs.iter().map(|r| r.reads.len()).max().unwrap_or(0);
    let width = width.max(1);
    (0..len)
        .step_by(width)
        .filter_map(|start| {
            let range = start..(start + width).min(len);
            let values: Option<Vec<f64>> = runs.iter().map(|r| r.over(range.clone())).collect();
            let values = values.filter(|v| !v.is_empty())?;
            Some((range.start, range.end, MeanSd::of(&values)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_read_carries_the_last_written_bit() {
        let task = FlipFlop::new(0.3, 0.3).unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen = [0usize; 3];
        for _ in 0..50 {
            let sequence = task.sample(40, &mut rng);
            assert!(matches!(sequence[0], Instruction::Write(_)));
            let mut last = None;
            for instruction in sequence {
                match instruction {
                    Instruction::Write(b) => (last, seen[0]) = (Some(b), seen[0] + 1),
                    Instruction::Read(b) => {
                        assert_eq!(Some(b), last);
                        seen[1] += 1;
                    }
                    Instruction::Ignore(_) => seen[2] += 1,
                }
            }
        }
        // 2000 instructions at 0.3 / 0.3 / 0.4: each kind is frequent.
        assert!(seen.iter().all(|&n| n > 400), "{seen:?}");
    }

    #[test]
    fn the_corpus_is_one_paragraph_per_sequence_within_the_lengths() {
        let text = FlipFlop::new(0.2, 0.5).unwrap().corpus(30, 2..=5, 1);
        let rows: Vec<&str> = text.split("\n\n").filter(|r| !r.is_empty()).collect();
        assert_eq!(rows.len(), 30);
        for row in rows {
            let n = row.split(' ').count();
            assert!((2..=5).contains(&n), "{row}");
            assert!(row.starts_with('w'), "{row}");
        }
        assert_eq!(text, FlipFlop::new(0.2, 0.5).unwrap().corpus(30, 2..=5, 1));
    }

    #[test]
    fn accuracy_is_binned_and_averaged_over_seeds() {
        let a = ReadAccuracy {
            correct: vec![1, 0, 2, 1],
            reads: vec![1, 1, 2, 2],
        };
        let b = ReadAccuracy {
            correct: vec![0, 1, 0, 0],
            reads: vec![1, 1, 0, 2],
        };
        assert_eq!(a.over(0..2), Some(0.5));
        assert_eq!(b.over(2..3), None);
        let bins = accuracy_by_length(&[a, b], 2);
        assert_eq!(bins.len(), 2);
        assert_eq!((bins[0].0, bins[0].1), (0, 2));
        assert!((bins[0].2.mean - 0.5).abs() < 1e-12);
        // second bin: a = 3/4, b = 0/2.
        assert!((bins[1].2.mean - 0.375).abs() < 1e-12);
    }

    #[test]
    fn bad_probabilities_are_refused() {
        assert!(FlipFlop::new(0.6, 0.5).is_err());
        assert!(FlipFlop::new(0.0, 0.5).is_err());
    }
}
