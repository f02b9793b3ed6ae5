//! A progress bar as an updatable display: `<progress>` HTML plus a text line, throttled like
//! `LossPlot`, with a final update from `finish`.

use std::time::{Duration, Instant};

use super::display::{Bundle, DisplayHandle, display, html_bundle};

/// A progress bar that updates in place.
pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    message: String,
    handle: Option<DisplayHandle>,
    last_sent: Option<Instant>,
    min_interval: Duration,
}

impl Progress {
    /// A bar for `total` units.
    pub fn new(label: impl Into<String>, total: u64) -> Self {
        Self {
            label: label.into(),
            total: total.max(1),
            done: 0,
            message: String::new(),
            handle: None,
            last_sent: None,
            min_interval: Duration::from_millis(200),
        }
    }

    /// Sets the units done and a message; refreshes if the throttle allows (or when complete).
    pub fn set(&mut self, done: u64, message: impl Into<String>) {
        self.done = done.min(self.total);
        self.message = message.into();
        let due = self
            .last_sent
            .is_none_or(|t| t.elapsed() >= self.min_interval);
        if due || self.done == self.total {
            self.refresh();
        }
    }

    /// Sends the current state now.
    pub fn refresh(&mut self) {
        let bundle = self.bundle();
        match &self.handle {
            Some(h) => h.update(bundle),
            None => self.handle = Some(display(bundle)),
        }
        self.last_sent = Some(Instant::now());
    }

    /// Sends the final state.
    pub fn finish(&mut self) {
        self.refresh();
    }

    /// The bundle of the current state.
    pub fn bundle(&self) -> Bundle {
        let pct = 100.0 * self.done as f64 / self.total as f64;
        let text = format!(
            "{} {}/{} ({pct:.0}%) {}",
            self.label, self.done, self.total, self.message
        );
        let html = format!(
            "<div style=\"font-family:monospace\"><progress value=\"{}\" max=\"{}\" style=\"width:40ch\"></progress> {}</div>",
            self.done,
            self.total,
            text.trim_end().replace('&', "&amp;").replace('<', "&lt;")
        );
        html_bundle(html, text.trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_shows_counts_and_percent() {
        let mut p = Progress::new("Kl", 200);
        p.done = 50;
        p.message = "loss 0.12".into();
        let b = p.bundle();
        assert_eq!(b["text/plain"], "Kl 50/200 (25%) loss 0.12");
        assert!(
            b["text/html"]
                .as_str()
                .unwrap()
                .contains("<progress value=\"50\" max=\"200\"")
        );
    }
}
