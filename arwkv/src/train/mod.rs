//! Training machinery shared by every stage: the one training loop ([`trainer`]), what a stage
//! plugs into it ([`objective`]), the ranks it runs on ([`data_parallel`]), what each step
//! reports and who watches ([`step`]), the run's loss page, the optimiser and the learning-rate
//! schedule.

pub mod data_parallel;
pub mod loss_page;
pub mod objective;
pub mod optim;
pub mod schedule;
pub mod step;
pub mod trainer;

pub use data_parallel::{BurnAllReduce, Collective, Rank, Ranks, SharedMemoryRanks};
pub use objective::{MicroBatch, Objective};
pub use optim::{AdamW, AdamWConfig, StepStats};
pub use schedule::{Decay, LrSchedule};
pub use step::{Observer, Stage, StepMetrics, TerminalProgress, read_metrics};
pub use trainer::{Checkpointer, LoopEnd, LoopStart, TrainLoop, train};
