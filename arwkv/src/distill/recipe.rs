//! Recipes: the choices a distillation job makes where this project deliberately differs from the
//! paper-era code (`docs/DECISIONS.md`, "Paper fidelity"). `ours` is the default; `reference`
//! reproduces the paper-era training code's choices, each of which is also a switch of its own:
//!
//! | choice | `ours` | `reference` |
//! |---|---|---|
//! | student | output gate on, MLPs trained from stage 2 (Table 1's "w/ gate & active MLP") | no gate, MLPs frozen (Table 1's "ARWKV") |
//! | LM head of a tied teacher | tied | untied (`untie_head`) |
//! | gate LoRA start (gated students) | identity | `g1 = g2 = ones` |
//! | learning rate after warm-up | cosine to a tenth | `decay = "reference"`: ≈ constant; 50 warm-up steps |
//! | rows of plain text | packed documents | one document per row, padded, with the WKV padding mask |
//! | DPO completion span | the rendered turn | `completion_span = "reference"` |

use serde::{Deserialize, Serialize};

use super::dpo::CompletionSpan;
use super::run_config::{RunConfig, StageConfig};
use crate::error::{Error, Result};
use crate::student::GateInit;
use crate::train::{Decay, LrSchedule, Stage};

/// The reference's warm-up (its `warmup_steps` default), in optimiser steps.
pub const REFERENCE_WARMUP_STEPS: u64 = 50;

/// Which choices a job makes where our defaults and the paper-era code differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recipe {
    /// This project's defaults.
    #[default]
    Ours,
    /// The paper-era code's choices (the table in the module docs).
    Reference,
}

/// The names [`Recipe`] parses from.
pub const RECIPES: [&str; 2] = ["ours", "reference"];

impl std::str::FromStr for Recipe {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ours" => Ok(Self::Ours),
            "reference" => Ok(Self::Reference),
            other => Err(Error::Invalid(format!(
                "unknown recipe `{other}` (available: {})",
                RECIPES.join(", ")
            ))),
        }
    }
}

impl Recipe {
    /// The learning-rate schedule of a stage of `steps` optimiser steps peaking at `lr`: ours
    /// warms up over a tenth of the stage and decays by cosine to a tenth of `lr`; the reference
    /// warms up over 50 steps (a third of a stage shorter than 150) and then stays near `lr`.
    pub fn schedule(self, lr: f64, steps: u64) -> LrSchedule {
        let (warmup_steps, decay) = match self {
            Self::Ours => ((steps / 10).max(1), Decay::Cosine),
            Self::Reference => (
                REFERENCE_WARMUP_STEPS.min(steps / 3).max(1),
                Decay::Reference,
            ),
        };
        LrSchedule {
            lr,
            lr_final: lr / 10.0,
            warmup_steps,
            decay,
            total_steps: steps,
        }
    }

    /// Applies the recipe to the run config of one stage (its stage, steps and peak rate set):
    /// the schedule, and for `reference` the rest of the table in the module docs.
    pub fn configure(self, cfg: &mut RunConfig) {
        cfg.schedule = self.schedule(cfg.schedule.lr, cfg.steps);
        if self == Self::Ours {
            return;
        }
        cfg.data.pack = false;
        cfg.student_options.gate = false;
        cfg.student_options.untie_head = true;
        cfg.student_options.gate_init = GateInit::Ones;
        cfg.freeze_mlp = cfg.stage.kind() != Stage::Align;
        if let StageConfig::Dpo(dpo) = &mut cfg.stage {
            dpo.completion_span = CompletionSpan::Reference;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DataConfig;

    fn config(stage: Stage) -> RunConfig {
        let mut cfg = RunConfig::new(stage, "t", "out", 300, DataConfig::default());
        cfg.schedule.lr = 1e-3;
        cfg
    }

    #[test]
    fn recipes_parse_by_name_and_an_unknown_one_lists_them() {
        assert_eq!("ours".parse::<Recipe>().unwrap(), Recipe::Ours);
        assert_eq!("reference".parse::<Recipe>().unwrap(), Recipe::Reference);
        let e = "paper".parse::<Recipe>().unwrap_err().to_string();
        assert!(
            e.contains("unknown recipe `paper` (available: ours, reference)"),
            "{e}"
        );
    }

    #[test]
    fn ours_changes_only_the_schedule_and_the_reference_sets_every_paper_era_choice() {
        for stage in [Stage::Align, Stage::Kl, Stage::Sft, Stage::Dpo] {
            let mut ours = config(stage);
            Recipe::Ours.configure(&mut ours);
            let mut expected = config(stage);
            expected.schedule = LrSchedule {
                lr: 1e-3,
                lr_final: 1e-4,
                warmup_steps: 30,
                decay: Decay::Cosine,
                total_steps: 300,
            };
            assert_eq!(ours, expected, "{stage:?}");

            let mut reference = config(stage);
            Recipe::Reference.configure(&mut reference);
            assert_eq!(reference.schedule.decay, Decay::Reference);
            assert_eq!(reference.schedule.warmup_steps, REFERENCE_WARMUP_STEPS);
            assert!(!reference.data.pack);
            let o = &reference.student_options;
            assert!(!o.gate && o.untie_head && o.gate_init == GateInit::Ones);
            assert_eq!(reference.freeze_mlp, stage != Stage::Align, "{stage:?}");
            assert!(reference.validate().is_ok(), "{stage:?}");
            if let StageConfig::Dpo(dpo) = &reference.stage {
                assert_eq!(dpo.completion_span, CompletionSpan::Reference);
            }
        }
        // A stage shorter than 150 steps warms up over its first third.
        assert_eq!(Recipe::Reference.schedule(1e-3, 60).warmup_steps, 20);
    }
}
