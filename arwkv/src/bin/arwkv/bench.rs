//! `arwkv bench …`: the benchmarks of docs/BENCHMARKS.md, one JSON line per report.

use anyhow::Result;
use arwkv::BackendKind;
use clap::Subcommand;

/// What to benchmark.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Forward tokens/s of a randomly initialised Qwen2 of the given shape.
    Teacher(arwkv::bench::TeacherBenchArgs),
    /// Forward + backward tokens/s of the CPU WKV-7 recurrence.
    Wkv7(arwkv::bench::Wkv7BenchArgs),
    /// Decode tokens/s and state memory: teacher (KV cache) vs student (recurrent state).
    Decode(arwkv::bench::DecodeBenchArgs),
    /// Training-step tokens/s of stage 1 (align) or stage 2 (kl) on the embedded default.
    Distill(arwkv::bench::DistillBenchArgs),
}

/// `arwkv bench`: runs one benchmark and prints its report.
pub fn bench(what: BenchCommand) -> Result<()> {
    match what {
        BenchCommand::Teacher(args) => {
            let device = BackendKind::from_flag_or_env(args.device.as_deref())?.device()?;
            let report = arwkv::bench::bench_teacher(&args, &device)?;
            println!("{}", serde_json::to_string(&report)?);
        }
        BenchCommand::Distill(args) => {
            let kind = BackendKind::from_flag_or_env(args.device.as_deref())?;
            let name = format!("{kind:?}").to_lowercase();
            let report = arwkv::bench::bench_distill(&args, &name)?;
            println!("{}", serde_json::to_string(&report)?);
        }
        BenchCommand::Decode(args) => {
            let device = BackendKind::from_flag_or_env(args.device.as_deref())?.device()?;
            for report in arwkv::bench::bench_decode(&args, &device)? {
                println!("{}", serde_json::to_string(&report)?);
            }
        }
        BenchCommand::Wkv7(args) => {
            let report = match args.device.as_deref() {
                None => arwkv::bench::bench_wkv7_cpu(&args)?,
                Some(name) => {
                    let device = BackendKind::from_flag_or_env(Some(name))?.device()?;
                    arwkv::bench::bench_wkv7_device(&args, &device)?
                }
            };
            println!("{}", serde_json::to_string(&report)?);
        }
    }
    Ok(())
}
