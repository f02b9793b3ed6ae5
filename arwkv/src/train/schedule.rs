//! Learning-rate schedules: linear warm-up from 0.01× (`docs/METHOD.md` §8), then constant, cosine
//! or exponential decay to a final rate over the remaining steps. Unlike the reference (whose
//! `epoch_count` default keeps its exponential decay at ~1/150 of the way), the decay here reaches
//! the final rate at the last step.

use serde::{Deserialize, Serialize};

/// How the rate evolves after warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    /// Stay at the peak rate.
    Constant,
    /// Half-cosine from the peak to the final rate.
    Cosine,
    /// Geometric from the peak to the final rate: `peak · (final/peak)^progress`.
    Exponential,
    /// The paper-era code's schedule, exactly: geometric towards the final rate over
    /// [`REFERENCE_EPOCH_COUNT`] times the run, so that the rate stays within ~1.5 % of the peak
    /// (`progress = (step − warmup + 1) / (150 · total_steps − warmup)`).
    Reference,
}

/// The reference's `epoch_count` default, which its runs never changed while training one epoch.
pub const REFERENCE_EPOCH_COUNT: u64 = 150;

/// A warm-up + decay schedule over `total_steps` optimiser steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate (cosine / exponential).
    pub lr_final: f64,
    /// Warm-up steps: the rate goes from 0.01·lr to lr.
    pub warmup_steps: u64,
    /// Decay after warm-up.
    pub decay: Decay,
    /// Steps of the whole run (the decay ends here).
    pub total_steps: u64,
}

impl Default for LrSchedule {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            lr_final: 1e-5,
            warmup_steps: 50,
            decay: Decay::Cosine,
            total_steps: 1000,
        }
    }
}

impl LrSchedule {
    /// The rate of optimiser step `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (0.01 + 0.99 * step as f64 / self.warmup_steps as f64);
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / span as f64).clamp(0.0, 1.0);
        match self.decay {
            Decay::Constant => self.lr,
            Decay::Cosine => {
                self.lr_final
                    + (self.lr - self.lr_final)
                        * 0.5
                        * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            Decay::Exponential => self.lr * (self.lr_final / self.lr).powf(progress),
            Decay::Reference => {
                let horizon = (REFERENCE_EPOCH_COUNT * self.total_steps)
                    .saturating_sub(self.warmup_steps)
                    .max(1);
                let progress = ((step - self.warmup_steps + 1) as f64 / horizon as f64).min(1.0);
                self.lr * (self.lr_final / self.lr).powf(progress)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay_reaches_the_final_rate() {
        for decay in [Decay::Cosine, Decay::Exponential] {
            let s = LrSchedule {
                lr: 1e-3,
                lr_final: 1e-5,
                warmup_steps: 10,
                decay,
                total_steps: 110,
            };
            assert!((s.lr_at(0) - 1e-5).abs() < 1e-12);
            assert!((s.lr_at(5) - 1e-3 * (0.01 + 0.99 * 0.5)).abs() < 1e-12);
            assert!((s.lr_at(10) - 1e-3).abs() < 1e-12);
            assert!((s.lr_at(110) - 1e-5).abs() < 1e-12, "{decay:?}");
            assert!(s.lr_at(60) < 1e-3 && s.lr_at(60) > 1e-5);
        }
        let geometric = LrSchedule {
            lr: 1e-3,
            lr_final: 1e-5,
            warmup_steps: 0,
            decay: Decay::Exponential,
            total_steps: 100,
        };
        assert!((geometric.lr_at(50) - 1e-4).abs() < 1e-12);
    }

    #[test]
    fn the_reference_schedule_stays_near_its_peak_for_the_whole_run() {
        let s = LrSchedule {
            lr: 1e-4,
            lr_final: 1e-5,
            warmup_steps: 50,
            decay: Decay::Reference,
            total_steps: 1000,
        };
        assert!((s.lr_at(0) - 1e-6).abs() < 1e-15);
        // First step after warm-up: progress 1 / (150·1000 − 50).
        let first = 1e-4 * 0.1f64.powf(1.0 / 149_950.0);
        assert!((s.lr_at(50) - first).abs() < 1e-15);
        // Last step: progress 950 / 149 950, the rate ≈ 0.9855e-4 (the reference's 0.985e-4).
        let last = s.lr_at(999);
        assert!((last - 1e-4 * 0.1f64.powf(950.0 / 149_950.0)).abs() < 1e-15);
        assert!((last - 0.9855e-4).abs() < 1e-8, "{last}");
    }
}
