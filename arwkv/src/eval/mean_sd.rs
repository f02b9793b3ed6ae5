//! Mean ± sample standard deviation over seeds, as the experiment reports print it.

use serde::Serialize;

/// Mean and sample standard deviation over seeds (`sd` is NaN for one seed).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MeanSd {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (n − 1).
    pub sd: f64,
}

impl MeanSd {
    /// Of `values` (at least one).
    pub fn of(values: &[f64]) -> Self {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        Self {
            mean,
            sd: if values.len() > 1 {
                var.sqrt()
            } else {
                f64::NAN
            },
        }
    }

    /// `mean ± sd` scaled by `scale` with `digits` decimals (the mean alone for one seed).
    pub fn show(&self, digits: usize, scale: f64) -> String {
        if self.sd.is_nan() {
            format!("{:.digits$}", self.mean * scale)
        } else {
            format!(
                "{:.digits$} ± {:.digits$}",
                self.mean * scale,
                self.sd * scale
            )
        }
    }
}
