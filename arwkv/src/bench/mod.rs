//! Benchmarks run by `arwkv bench …`, one module per benchmark; the PyTorch twins live in
//! `benches/` (see docs/BENCHMARKS.md). The command-line flags are the binary's; here each benchmark
//! takes a plain configuration.

mod decode;
mod distill;
mod teacher;
mod wkv7;

pub use decode::{DecodeBench, DecodeReport, bench_decode};
pub use distill::{DistillBench, bench_distill};
pub use teacher::{TeacherBench, bench_teacher};
pub use wkv7::{Wkv7Bench, bench_wkv7_cpu, bench_wkv7_device};

use serde::Serialize;

use crate::error::{Error, Result};

/// One benchmark result line.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// What was measured.
    pub bench: String,
    /// Implementation.
    pub implementation: String,
    /// The backend.
    pub device: String,
    /// Shape as text.
    pub shape: String,
    /// Median seconds per forward.
    pub median_s: f64,
    /// Tokens per second at the median.
    pub tokens_per_s: f64,
    /// The process's peak resident memory when the benchmark ended (Linux), bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<usize>,
}

/// The process's peak resident memory so far (Linux `VmHWM`), bytes.
pub fn peak_resident_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The most elements one benchmark tensor may hold (4 GiB of f32): larger shapes are refused before
/// anything is allocated, instead of aborting the process on a failed allocation.
pub const MAX_BENCH_ELEMENTS: usize = 1 << 30;

/// Checks that every dimension is at least 1 and that their product stays within
/// [`MAX_BENCH_ELEMENTS`]; errors name the flags.
pub fn check_bench_shape(dims: &[(&str, usize)]) -> Result<()> {
    if let Some((flag, _)) = dims.iter().find(|(_, v)| *v == 0) {
        return Err(Error::Invalid(format!("{flag} must be at least 1")));
    }
    let elements = dims
        .iter()
        .try_fold(1usize, |acc, (_, v)| acc.checked_mul(*v))
        .filter(|&n| n <= MAX_BENCH_ELEMENTS);
    if elements.is_none() {
        let flags: Vec<String> = dims.iter().map(|(f, v)| format!("{f} {v}")).collect();
        return Err(Error::Invalid(format!(
            "{} make a tensor of more than {MAX_BENCH_ELEMENTS} elements; choose smaller sizes",
            flags.join(" × ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod shape_tests {
    use super::*;

    #[test]
    fn zero_and_oversized_shapes_are_refused_naming_the_flags() {
        let err = check_bench_shape(&[("--batch", 1), ("--heads", 0)]).unwrap_err();
        assert!(
            err.to_string().contains("--heads must be at least 1"),
            "{err}"
        );
        let err = check_bench_shape(&[("--batch", 100_000), ("--seq", 100_000)]).unwrap_err();
        assert!(
            err.to_string().contains("--batch 100000 × --seq 100000"),
            "{err}"
        );
        let err = check_bench_shape(&[("--batch", usize::MAX), ("--seq", 2)]).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
        check_bench_shape(&[
            ("--batch", 4),
            ("--seq", 256),
            ("--heads", 8),
            ("--head-size", 64),
        ])
        .unwrap();
    }
}
