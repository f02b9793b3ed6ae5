//! Training machinery shared by every stage: the optimiser and the learning-rate schedule.

pub mod optim;
pub mod schedule;

pub use optim::{AdamW, AdamWConfig, StepStats};
pub use schedule::{Decay, LrSchedule};
