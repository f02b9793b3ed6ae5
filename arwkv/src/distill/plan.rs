//! `arwkv plan`: what one training step of a stage needs per device, before it runs: bytes of
//! weights, gradients, optimiser state, activations and logits, FLOPs, whether it fits, and an
//! estimated step time (DECISIONS "The memory planner" gives the model and its calibration).

use std::fmt;

use serde::Serialize;

use crate::error::{Error, Result};
pub use crate::precision::Precision;
use crate::student::ArwkvConfig;
use crate::teacher::Qwen2Config;
use crate::train::Stage;

/// Elements each position keeps per student layer for the backward pass, in units of the width
/// C and of the MLP width I (counted from the time mixer's and the MLP's saved inputs and
/// intermediates; DECISIONS "The memory planner").
const TIME_MIXER_WIDTHS: u64 = 40;
const MLP_WIDTHS: u64 = 4;
/// The same for stage 1, whose time mixers see the teacher's detached hidden states and whose
/// layers keep no MLP intermediates: measured 34.5 C per position and layer at Qwen2.5-0.5B's shape
/// (the forward's growth of anonymous memory at 1 × 256 tokens, BENCHMARKS "The rehearsal").
const ALIGN_WIDTHS: u64 = 35;
/// `[positions, V]` f32 tensors alive at the loss's peak without chunks: stage 2 (teacher and
/// student logits, two log-softmaxes, the teacher's probabilities), SFT and DPO (logits,
/// log-softmax, gradient). Measured: 4.5–4.8 for stage 2 at V = 151,936.
const KL_LOGIT_COPIES: u64 = 5;
const CE_LOGIT_COPIES: u64 = 3;
/// Share of the activations still kept with `activation_checkpointing` (Burn's balanced strategy
/// recomputes element-wise results): measured 0.55 and 0.60 of the planned activations at two
/// stage-2 shapes (BENCHMARKS "Activation checkpointing").
const CHECKPOINTED_ACTIVATIONS: f64 = 0.6;
/// `[chunk, V]` f32 tensors alive at once with chunks (measured: 2.7 for stage 2), besides the
/// head's `[V, C]` gradient summed over the chunks.
const CHUNK_LOGIT_COPIES: u64 = 3;
/// What the process holds besides tensors on a CPU (code, tokenizer, data, thread pools), bytes:
/// a stage-1 run of the embedded teacher at 1 × 2 tokens peaks at 116 MiB, ~25 of them tensors.
const CPU_RUNTIME_BYTES: u64 = 90 << 20;
/// Temporaries of AdamW's update of one tensor (new moments, squared gradient, update, new
/// weights), in copies of the largest trained tensor.
const OPTIMIZER_TEMPORARIES: u64 = 4;

/// One planned step.
#[derive(Clone, Debug)]
pub struct PlanInput {
    /// The teacher's config (the student is built from it).
    pub teacher: Qwen2Config,
    /// The stage.
    pub stage: Stage,
    /// Rows per optimiser step over all devices (DPO: pairs).
    pub batch: usize,
    /// Tokens per row.
    pub context: usize,
    /// Precision policy.
    pub precision: Precision,
    /// Data-parallel devices (each holds the whole model and `batch / devices` rows).
    pub devices: usize,
    /// `loss_chunk_tokens`.
    pub loss_chunk: Option<usize>,
    /// The student has the output gate.
    pub gate: bool,
    /// Stages 2–3 leave the MLPs frozen (`freeze_mlp`, the paper's 7B runs).
    pub freeze_mlp: bool,
    /// `activation_checkpointing`: element-wise intermediates recomputed in the backward pass.
    pub activation_checkpointing: bool,
    /// The run starts from a saved student (`student` in the run config) rather than one built
    /// from the teacher. A built student, and DPO's reference built the same way, share the
    /// teacher's tensors for all but their time mixers.
    pub from_checkpoint: bool,
    /// Device memory, GiB (for "fits").
    pub memory_gib: f64,
    /// Sustained device throughput, FLOP/s (for the step time).
    pub flops_per_s: f64,
}

/// When a row's bytes are alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Throughout the step.
    Always,
    /// During the forward and backward pass.
    Backward,
    /// During the optimiser's update.
    Update,
}

/// One line of the memory table.
#[derive(Clone, Debug, Serialize)]
pub struct PlanRow {
    /// What it holds.
    pub what: &'static str,
    /// Bytes per device.
    pub bytes: u64,
    /// When it is alive.
    pub phase: Phase,
}

/// The planned step.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Bytes per device, by kind.
    pub rows: Vec<PlanRow>,
    /// Peak bytes: the larger of the backward pass's and the update's.
    pub total_bytes: u64,
    /// Bytes alive during the forward and backward pass (gradients counted whole).
    pub backward_bytes: u64,
    /// Bytes alive during the optimiser's update.
    pub update_bytes: u64,
    /// FLOPs of one optimiser step on one device.
    pub flops_per_device: f64,
    /// The device memory compared against, GiB.
    pub memory_gib: f64,
    /// The estimated seconds per step at the stated throughput.
    pub step_s: f64,
}

impl Plan {
    /// The plan fits in the device memory.
    pub fn fits(&self) -> bool {
        self.total_bytes as f64 <= self.memory_gib * (1u64 << 30) as f64
    }
}

/// Plans one optimiser step of `input.stage`.
pub fn plan(input: &PlanInput) -> Result<Plan> {
    let bad = |m: String| Err(Error::Invalid(m));
    if input.batch == 0 || input.context == 0 || input.devices == 0 {
        return bad("batch, context and devices must be at least 1".into());
    }
    if !input.batch.is_multiple_of(input.devices) {
        return bad(format!(
            "batch {} does not split over {} devices",
            input.batch, input.devices
        ));
    }
    if input.stage == Stage::Pretrain {
        return bad("plan covers stages align, kl, sft and dpo".into());
    }
    if input.loss_chunk == Some(0) {
        return bad("the loss chunk must be at least 1 position".into());
    }
    let q = &input.teacher;
    let student = ArwkvConfig::from_teacher(q, input.gate, false)?;
    let (c, i, v, l) = (
        q.hidden_size as u64,
        q.intermediate_size as u64,
        q.vocab_size as u64,
        q.num_hidden_layers as u64,
    );
    let rows_per_device =
        (input.batch / input.devices) as u64 * if input.stage == Stage::Dpo { 2 } else { 1 };
    let positions = rows_per_device * input.context as u64;
    let low = input.precision.compute_bytes();
    let teacher_params = q.parameter_count() as u64;
    let student_params = student.parameter_count() as u64;
    let mixer_params = l * student.time_mixer_parameter_count() as u64;
    let mlp_params = l * 3 * c * i;
    let trained = match input.stage {
        Stage::Align => mixer_params,
        _ if input.freeze_mlp => student_params - mlp_params,
        _ => student_params,
    };

    let row = |what, bytes, phase| PlanRow { what, bytes, phase };
    // SFT and DPO never read the teacher: `distill::run` drops it once the student is built (in f32
    // the student's tensors are the teacher's until its first update replaces them one by one).
    let teacher_kept = matches!(input.stage, Stage::Align | Stage::Kl);
    let mut rows = vec![row(
        "teacher weights (frozen)",
        if teacher_kept {
            teacher_params * low
        } else {
            0
        },
        Phase::Always,
    )];
    if input.stage == Stage::Dpo {
        // A whole student: its own copy, or (built from an f32 teacher) its time mixers and the
        // teacher's tensors it shares, which it alone keeps alive once the teacher is dropped.
        rows.push(row(
            "reference student (frozen)",
            student_params * low,
            Phase::Always,
        ));
    }
    // Stage 1 never updates what a student built from the teacher shares with it (under a mixed
    // policy the teacher's low-precision tensors; only the time mixers are the student's own).
    let shares_teacher = input.stage == Stage::Align && !input.from_checkpoint;
    let own = if shares_teacher {
        mixer_params
    } else {
        student_params
    };
    let what = match shares_teacher {
        true => "student weights (its time mixers; the rest is the teacher's)",
        false => "student weights (f32 master)",
    };
    rows.push(row(what, own * 4, Phase::Always));
    if low != 4 {
        rows.push(row(
            "student weights (compute copy)",
            own * low,
            Phase::Backward,
        ));
    }
    rows.push(row("gradients (f32)", trained * 4, Phase::Always));
    rows.push(row("AdamW moments (f32)", 2 * trained * 4, Phase::Always));
    let per_layer = match input.stage {
        Stage::Align => ALIGN_WIDTHS * c,
        _ => TIME_MIXER_WIDTHS * c + MLP_WIDTHS * i,
    };
    let mut activations = positions * l * per_layer * low;
    if input.activation_checkpointing {
        activations = (activations as f64 * CHECKPOINTED_ACTIVATIONS) as u64;
    }
    rows.push(row(
        "activations kept for the backward pass",
        activations,
        Phase::Backward,
    ));
    if input.stage != Stage::Align {
        let copies = if input.stage == Stage::Kl {
            KL_LOGIT_COPIES
        } else {
            CE_LOGIT_COPIES
        };
        let bytes = match input.loss_chunk {
            None => copies * positions * v * 4,
            // A chunk's logits, and the head's gradient summed chunk by chunk.
            Some(chunk) => CHUNK_LOGIT_COPIES * (chunk as u64).min(positions) * v * 4 + v * c * 4,
        };
        let what = match input.loss_chunk {
            None => "logits (whole micro-batch)",
            Some(_) => "logits (one chunk) and the head's gradient",
        };
        rows.push(row(what, bytes, Phase::Backward));
    }
    // The largest tensor the optimiser updates: the embeddings (or head), or stage 1's C × C
    // projections.
    let largest = match input.stage {
        Stage::Align => c * c,
        _ => v * c,
    };
    rows.push(row(
        "AdamW update's temporaries",
        OPTIMIZER_TEMPORARIES * largest * 4,
        Phase::Update,
    ));
    rows.push(row(
        "runtime (CPU process)",
        CPU_RUNTIME_BYTES,
        Phase::Always,
    ));
    let alive = |phase| -> u64 {
        rows.iter()
            .filter(|r| r.phase == Phase::Always || r.phase == phase)
            .map(|r| r.bytes)
            .sum()
    };
    let (backward_bytes, update_bytes) = (alive(Phase::Backward), alive(Phase::Update));
    let total_bytes = backward_bytes.max(update_bytes);

    let n = positions as f64;
    let head = (v * c) as f64;
    let teacher_body = teacher_params as f64 - head;
    // Causal attention: QKᵀ and AV over half the context on average, per layer.
    let attention = 2.0 * (l * c) as f64 * input.context as f64;
    let flops_per_device = match input.stage {
        Stage::Align => n * (2.0 * teacher_body + attention + 6.0 * mixer_params as f64),
        Stage::Kl => n * (2.0 * (teacher_body + head) + attention + 6.0 * student_params as f64),
        Stage::Sft => n * 6.0 * student_params as f64,
        Stage::Dpo => n * (2.0 + 6.0) * student_params as f64,
        Stage::Pretrain => unreachable!("refused above"),
    };
    Ok(Plan {
        rows,
        total_bytes,
        backward_bytes,
        update_bytes,
        flops_per_device,
        memory_gib: input.memory_gib,
        step_s: flops_per_device / input.flops_per_s,
    })
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let when = |p: Phase| match p {
            Phase::Always => "whole step",
            Phase::Backward => "forward + backward",
            Phase::Update => "optimiser update",
        };
        writeln!(f, "| per device | alive during | GiB |")?;
        writeln!(f, "|---|---|---:|")?;
        for row in &self.rows {
            writeln!(
                f,
                "| {} | {} | {:.2} |",
                row.what,
                when(row.phase),
                gib(row.bytes)
            )?;
        }
        writeln!(
            f,
            "| forward + backward | | {:.2} |",
            gib(self.backward_bytes)
        )?;
        writeln!(f, "| optimiser update | | {:.2} |", gib(self.update_bytes))?;
        writeln!(f, "| **peak** | | **{:.2}** |", gib(self.total_bytes))?;
        writeln!(f)?;
        writeln!(
            f,
            "{} in {:.0} GiB; {:.3e} FLOPs per step per device, about {} per step at the stated throughput",
            if self.fits() { "fits" } else { "does not fit" },
            self.memory_gib,
            self.flops_per_device,
            seconds(self.step_s)
        )
    }
}

/// Seconds as text: milliseconds below one second.
fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qwen_05b() -> Qwen2Config {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../benches/qwen2.5-0.5b/config.json");
        Qwen2Config::from_file(&path).unwrap()
    }

    fn input(stage: Stage) -> PlanInput {
        PlanInput {
            teacher: qwen_05b(),
            stage,
            batch: 8,
            context: 2048,
            precision: Precision::F32,
            devices: 1,
            loss_chunk: None,
            gate: true,
            freeze_mlp: false,
            activation_checkpointing: false,
            from_checkpoint: false,
            memory_gib: 80.0,
            flops_per_s: 400e12,
        }
    }

    fn bytes(plan: &Plan, what: &str) -> u64 {
        plan.rows
            .iter()
            .find(|r| r.what.starts_with(what))
            .unwrap()
            .bytes
    }

    #[test]
    fn the_parts_scale_as_they_should() {
        let whole = plan(&input(Stage::Kl)).unwrap();
        // 5 f32 copies of [8 × 2048, 151,936]: the 10 GB-per-tensor case of the issue.
        assert_eq!(bytes(&whole, "logits"), 5 * 8 * 2048 * 151_936 * 4);
        let chunked = plan(&PlanInput {
            loss_chunk: Some(1024),
            ..input(Stage::Kl)
        })
        .unwrap();
        assert!(bytes(&chunked, "logits") * 20 < bytes(&whole, "logits"));
        // Moments are twice the gradients; stage 1 trains only the time mixers.
        assert_eq!(bytes(&whole, "AdamW"), 2 * bytes(&whole, "gradients"));
        let align = plan(&input(Stage::Align)).unwrap();
        assert!(bytes(&align, "gradients") * 4 < bytes(&whole, "gradients"));
        // Mixed precision halves the frozen teacher and adds a compute copy of the student.
        let mixed = plan(&PlanInput {
            precision: Precision::Bf16Mixed,
            ..input(Stage::Kl)
        })
        .unwrap();
        assert_eq!(bytes(&mixed, "teacher") * 2, bytes(&whole, "teacher"));
        assert!(mixed.rows.iter().any(|r| r.what.contains("compute copy")));
        // SFT never reads the teacher: it is not kept.
        assert_eq!(bytes(&plan(&input(Stage::Sft)).unwrap(), "teacher"), 0);
        assert!(bytes(&plan(&input(Stage::Kl)).unwrap(), "teacher") > 0);
        // Two devices: each holds the model and half the rows.
        let two = plan(&PlanInput {
            devices: 2,
            ..input(Stage::Kl)
        })
        .unwrap();
        assert_eq!(bytes(&two, "teacher"), bytes(&whole, "teacher"));
        assert_eq!(bytes(&two, "activations") * 2, bytes(&whole, "activations"));
        assert!((two.flops_per_device * 2.0 - whole.flops_per_device).abs() < 1.0);
        // DPO scores two rows per pair and keeps a frozen reference.
        // Checkpointing keeps a share of the activations and nothing else changes.
        let checkpointed = plan(&PlanInput {
            activation_checkpointing: true,
            ..input(Stage::Kl)
        })
        .unwrap();
        let kept = bytes(&checkpointed, "activations") as f64 / bytes(&whole, "activations") as f64;
        assert!((kept - CHECKPOINTED_ACTIVATIONS).abs() < 1e-6);
        assert_eq!(bytes(&checkpointed, "logits"), bytes(&whole, "logits"));
        // Frozen MLPs: neither gradients nor moments for them.
        let frozen = plan(&PlanInput {
            freeze_mlp: true,
            ..input(Stage::Kl)
        })
        .unwrap();
        let mlp = 24 * 3 * 896 * 4864 * 4;
        assert_eq!(
            bytes(&frozen, "gradients") + mlp,
            bytes(&whole, "gradients")
        );
        // DPO keeps a whole frozen reference (built from the teacher, the teacher's tensors are
        // kept by it alone) and no teacher.
        let built = plan(&input(Stage::Dpo)).unwrap();
        assert_eq!(bytes(&built, "reference"), bytes(&whole, "student weights"));
        assert_eq!(bytes(&built, "teacher"), 0);
        assert!(
            !whole.fits(),
            "stage 2 of 0.5B at 8 × 2048 in f32 needs more than 80 GiB"
        );
    }

    #[test]
    fn bad_shapes_are_refused() {
        for bad in [
            PlanInput {
                batch: 0,
                ..input(Stage::Kl)
            },
            PlanInput {
                batch: 3,
                devices: 2,
                ..input(Stage::Kl)
            },
            PlanInput {
                stage: Stage::Pretrain,
                ..input(Stage::Kl)
            },
            PlanInput {
                loss_chunk: Some(0),
                ..input(Stage::Kl)
            },
        ] {
            assert!(plan(&bad).is_err());
        }
    }
}
