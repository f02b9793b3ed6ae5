//! Notebook integration: updatable displays (live loss plots, progress bars) and the kernel's
//! cooperative interrupt. The same calls work outside `arwkv-kernel` (HTML files + text).

pub mod bar_chart;
pub mod cell_value;
pub mod display;
pub mod heatmap;
pub mod interrupt;
pub mod loss_plot;
pub mod metrics;
pub mod observer;
pub mod progress;

pub use bar_chart::{bar_chart_svg, measure_bundle, table1_bundles};
pub use cell_value::CellValue;
pub use display::{
    Bundle, DisplayHandle, PLOTLY_MIME, clear_output, display, html_bundle, in_kernel,
    markdown_bundle, plotly_bundle,
};
pub use heatmap::heatmap;
pub use interrupt::interrupt_requested;
pub use loss_plot::LossPlot;
pub use metrics::{METRICS_PREFIX, report_metrics};
pub use observer::NotebookObserver;
pub use progress::Progress;
