//! A training observer for notebooks: a live loss plot (Figure-5 per-layer curves in stage 1), a
//! progress bar, and the kernel's interrupt — the run finishes its step, saves and returns.

use super::{LossPlot, Progress, interrupt_requested};
use crate::train::{Observer, Stage, StepMetrics};

/// Live plot + progress + interrupt for `distill::run`.
pub struct NotebookObserver {
    plot: LossPlot,
    series: String,
    progress: Option<Progress>,
    /// Set when the run stopped because of an interrupt.
    pub interrupted: bool,
    /// Steps seen.
    pub steps: u64,
}

impl NotebookObserver {
    /// An observer whose plot is titled `title`.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            plot: LossPlot::new(title),
            series: "loss".into(),
            progress: None,
            interrupted: false,
            steps: 0,
        }
    }

    /// Plots the next run's loss as a new curve named `name` in the same figure, with a new
    /// progress bar (several runs compared in one plot).
    pub fn next_run(&mut self, name: impl Into<String>) -> &mut Self {
        self.series = name.into();
        self.progress = None;
        self
    }

    /// Sends the final plot and progress state.
    pub fn finish(&mut self) {
        self.plot.finish();
        if let Some(p) = &mut self.progress {
            p.finish();
        }
    }
}

impl Observer for NotebookObserver {
    fn on_step(&mut self, m: &StepMetrics, total: u64) -> bool {
        self.steps += 1;
        let x = m.step as f64;
        if m.stage == Stage::Align {
            for (l, v) in m.per_layer.iter().enumerate() {
                self.plot.push(&format!("layer {l}"), x, *v);
            }
        }
        self.plot.push(&self.series, x, m.loss);
        if let Some(acc) = m.preference_accuracy {
            self.plot.push("preference accuracy", x, acc);
        }
        let progress = self
            .progress
            .get_or_insert_with(|| Progress::new(format!("{:?}", m.stage), total));
        progress.set(
            m.step,
            format!("loss {:.4} · {:.0} tok/s", m.loss, m.tokens_per_s),
        );
        let stop = interrupt_requested();
        if stop || m.step >= total {
            self.interrupted |= stop;
            self.finish();
        }
        !stop
    }
}
