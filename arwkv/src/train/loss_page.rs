//! The loss page of a run: a self-contained (offline) plotly HTML file of `metrics.jsonl` —
//! the minimised loss per step, and for stage 1 every layer's alignment loss (the paper's
//! Figure 5), for DPO the preference accuracy on a second axis.

use std::path::Path;

use plotly::common::{AxisSide, DashType, Line, Mode, Title};
use plotly::layout::{Axis, AxisType, Layout};
use plotly::{Plot, Scatter};

use super::step::{Stage, StepMetrics};
use crate::error::Result;
use crate::save::write_atomic;

/// A figure of the run's curves.
pub fn loss_figure(metrics: &[StepMetrics]) -> Plot {
    let mut plot = Plot::new();
    let steps: Vec<u64> = metrics.iter().map(|m| m.step).collect();
    let stage = metrics.first().map(|m| m.stage);
    let layers = metrics.first().map_or(0, |m| m.per_layer.len());
    for l in 0..layers {
        let y: Vec<f64> = metrics
            .iter()
            .map(|m| m.per_layer.get(l).copied().unwrap_or(f64::NAN))
            .collect();
        plot.add_trace(
            Scatter::new(steps.clone(), y)
                .name(format!("layer {l}"))
                .mode(Mode::Lines)
                .line(Line::new().width(1.0).dash(DashType::Dot)),
        );
    }
    let name = match stage {
        Some(Stage::Align) => "alignment loss (mean over layers)",
        Some(Stage::Kl) => "KL(teacher ‖ student) loss",
        Some(Stage::Sft) => "SFT cross-entropy",
        Some(Stage::Dpo) => "DPO loss",
        Some(Stage::Pretrain) => "pretraining cross-entropy",
        None => "loss",
    };
    let loss: Vec<f64> = metrics.iter().map(|m| m.loss).collect();
    plot.add_trace(
        Scatter::new(steps.clone(), loss)
            .name(name)
            .mode(Mode::Lines)
            .line(Line::new().width(2.5)),
    );
    let mut layout = Layout::new()
        .title(Title::with_text(format!("{name} per optimiser step")))
        .x_axis(Axis::new().title(Title::with_text("step")))
        .y_axis(Axis::new().title(Title::with_text("loss")).type_(
            if stage == Some(Stage::Align) {
                AxisType::Log
            } else {
                AxisType::Linear
            },
        ));
    if stage == Some(Stage::Dpo) {
        let acc: Vec<f64> = metrics
            .iter()
            .map(|m| m.preference_accuracy.unwrap_or(f64::NAN))
            .collect();
        plot.add_trace(
            Scatter::new(steps, acc)
                .name("preference accuracy")
                .mode(Mode::Lines)
                .y_axis("y2"),
        );
        layout = layout.y_axis2(
            Axis::new()
                .title(Title::with_text("accuracy"))
                .overlaying("y")
                .side(AxisSide::Right)
                .range(vec![0.0, 1.0]),
        );
    }
    plot.set_layout(layout);
    plot
}

/// Writes `loss.html` into the run directory (atomically).
pub fn write_loss_page(out: &Path, metrics: &[StepMetrics]) -> Result<()> {
    write_atomic(
        &out.join("loss.html"),
        loss_figure(metrics).to_html().as_bytes(),
    )
}
