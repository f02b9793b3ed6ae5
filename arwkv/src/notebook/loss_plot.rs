//! A live multi-series loss curve.
//!
//! While a cell trains, each refresh sends a self-contained SVG chart as `text/html` plus the last
//! values as `text/plain`: every front end redraws HTML when a display is updated in place. The
//! final state (`finish`) adds the interactive Plotly figure (`application/vnd.plotly.v1+json`).
//! Plotly's JupyterLab renderer ignores updates once it has drawn a graph, but front ends pick a new
//! renderer when the preferred MIME type of an update changes, so the switch from HTML to Plotly at
//! the end builds a fresh interactive figure with every point (docs/NOTEBOOKS.md, "Live plots").
//! Refreshes are throttled (at most `max_hz` per second) and every series is down-sampled to at most
//! `max_points`.

use std::time::{Duration, Instant};

use plotly::common::{Mode, Title};
use plotly::layout::{Axis, AxisType, Layout};
use plotly::{Plot, Scatter};
use serde_json::Value;

#[cfg(not(test))]
use super::display::display;
use super::display::{Bundle, DisplayHandle, plotly_bundle};

pub use super::display::PLOTLY_MIME;

const COLOURS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// One named curve.
#[derive(Clone, Debug, Default)]
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// A loss curve that updates in place while a cell trains.
pub struct LossPlot {
    title: String,
    x_title: String,
    y_title: String,
    log_y: bool,
    max_points: usize,
    min_interval: Duration,
    series: Vec<Series>,
    #[cfg_attr(test, allow(dead_code))]
    handle: Option<DisplayHandle>,
    last_sent: Option<Instant>,
    dirty: bool,
    /// Whether the last bundle sent was the final one (with the Plotly figure).
    finished: bool,
    /// What was sent, in order (tests read it instead of a display channel).
    #[cfg(test)]
    sent: Vec<Bundle>,
}

impl LossPlot {
    /// An empty plot (shown at the first point).
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            x_title: "step".into(),
            y_title: "loss".into(),
            log_y: false,
            max_points: 2000,
            min_interval: Duration::from_millis(200),
            series: vec![],
            handle: None,
            last_sent: None,
            dirty: false,
            finished: false,
            #[cfg(test)]
            sent: vec![],
        }
    }

    /// Log-scale y axis.
    pub fn log_y(mut self, on: bool) -> Self {
        self.log_y = on;
        self
    }

    /// Axis titles (default "step" and "loss").
    pub fn axes(mut self, x: impl Into<String>, y: impl Into<String>) -> Self {
        self.x_title = x.into();
        self.y_title = y.into();
        self
    }

    /// Most points kept per series when drawing (default 2000).
    pub fn max_points(mut self, n: usize) -> Self {
        self.max_points = n.max(2);
        self
    }

    /// Most refreshes per second (default 5).
    pub fn max_hz(mut self, hz: f64) -> Self {
        self.min_interval = Duration::from_secs_f64(1.0 / hz.max(1e-3));
        self
    }

    /// Adds a point to series `name` and refreshes if the throttle allows.
    pub fn push(&mut self, name: &str, x: f64, y: f64) {
        let i = match self.series.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                self.series.push(Series {
                    name: name.to_string(),
                    points: vec![],
                });
                self.series.len() - 1
            }
        };
        self.series[i].points.push((x, y));
        self.dirty = true;
        self.finished = false;
        if self
            .last_sent
            .is_none_or(|t| t.elapsed() >= self.min_interval)
        {
            self.refresh();
        }
    }

    /// Sends the current live state now (if anything changed).
    pub fn refresh(&mut self) {
        if !self.dirty {
            return;
        }
        self.send(self.live_bundle(), false);
    }

    /// Sends the final state, the interactive Plotly figure included (call when training ends, also
    /// after an interrupt; calling it again is harmless).
    pub fn finish(&mut self) {
        if self.series.iter().all(|s| s.points.is_empty()) {
            return;
        }
        self.send(self.bundle(), true);
    }

    /// Whether the display shows the final, interactive figure with every point (set by `finish`,
    /// cleared by a new point).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn send(&mut self, bundle: Bundle, finished: bool) {
        #[cfg(test)]
        self.sent.push(bundle.clone());
        #[cfg(not(test))]
        match &self.handle {
            Some(h) => h.update(bundle),
            None => self.handle = Some(display(bundle)),
        }
        self.last_sent = Some(Instant::now());
        self.dirty = false;
        self.finished = finished;
    }

    /// Points per series, down-sampled as drawn.
    pub fn drawn(&self) -> Vec<(String, Vec<(f64, f64)>)> {
        self.series
            .iter()
            .map(|s| (s.name.clone(), downsample(&s.points, self.max_points)))
            .collect()
    }

    /// The bundle sent while training: the SVG chart as HTML and the last values as text.
    pub fn live_bundle(&self) -> Bundle {
        let drawn = self.drawn();
        let mut b = Bundle::new();
        b.insert("text/html".into(), Value::String(self.svg(&drawn)));
        b.insert("text/plain".into(), Value::String(self.text(&drawn)));
        b
    }

    /// The final bundle: the Plotly figure, the SVG chart as HTML and the last values as text.
    pub fn bundle(&self) -> Bundle {
        let drawn = self.drawn();
        let mut plot = Plot::new();
        for (name, points) in &drawn {
            let (x, y): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
            plot.add_trace(Scatter::new(x, y).name(name).mode(Mode::Lines));
        }
        let mut y_axis = Axis::new().title(Title::with_text(&self.y_title));
        if self.log_y {
            y_axis = y_axis.type_(AxisType::Log);
        }
        plot.set_layout(
            Layout::new()
                .title(Title::with_text(&self.title))
                .x_axis(Axis::new().title(Title::with_text(&self.x_title)))
                .y_axis(y_axis),
        );
        let mut b = plotly_bundle(&plot, self.text(&drawn));
        b.insert("text/html".into(), Value::String(self.svg(&drawn)));
        b
    }

    /// `title: name = last y @ last x, …`.
    fn text(&self, drawn: &[(String, Vec<(f64, f64)>)]) -> String {
        let last = drawn
            .iter()
            .filter_map(|(n, p)| p.last().map(|(x, y)| format!("{n} = {y:.4} @ {x}")))
            .collect::<Vec<_>>()
            .join(", ");
        format!("{}: {last}", self.title)
    }

    /// A self-contained SVG line chart of `drawn`.
    fn svg(&self, drawn: &[(String, Vec<(f64, f64)>)]) -> String {
        let (w, h, pad) = (640.0, 300.0, 44.0);
        let ty = |y: f64| if self.log_y { y.max(1e-12).log10() } else { y };
        let finite = drawn
            .iter()
            .flat_map(|(_, p)| p.iter())
            .filter(|(x, y)| x.is_finite() && ty(*y).is_finite());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in finite {
            let y = ty(y);
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        let (sx, sy) = ((x1 - x0).max(1e-12), (y1 - y0).max(1e-12));
        let px = |x: f64| pad + (x - x0) / sx * (w - 2.0 * pad);
        let py = |y: f64| h - pad - (ty(y) - y0) / sy * (h - 2.0 * pad);
        let label = |y: f64| {
            if self.log_y {
                format!("{:.3}", 10f64.powf(y))
            } else {
                format!("{y:.3}")
            }
        };
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\
             <text x=\"{pad}\" y=\"16\" font-size=\"13\">{}</text>\
             <rect x=\"{pad}\" y=\"{pad}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#bbb\"/>\
             <text x=\"4\" y=\"{}\">{}</text><text x=\"4\" y=\"{}\">{}</text>\
             <text x=\"{pad}\" y=\"{}\">{x0}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{x1}</text>",
            escape(&self.title),
            w - 2.0 * pad,
            h - 2.0 * pad,
            pad + 4.0,
            label(y1),
            h - pad,
            label(y0),
            h - pad + 16.0,
            w - pad,
            h - pad + 16.0,
        );
        for (i, (name, points)) in drawn.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let path: Vec<String> = points
                .iter()
                .filter(|(x, y)| x.is_finite() && ty(*y).is_finite())
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            s.push_str(&format!(
                "<polyline data-series=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>\
                 <text x=\"{}\" y=\"{}\" fill=\"{colour}\">{}</text>",
                escape(name).replace('"', "&quot;"),
                path.join(" "),
                w - pad - 150.0,
                pad + 14.0 * (i as f64 + 1.0),
                escape(name)
            ));
        }
        s.push_str("</svg>");
        s
    }
}

/// `s` with `&`, `<` and `>` escaped for HTML.
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` points: evenly strided, always keeping the first and the last.
pub fn downsample(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max {
        return points.to_vec();
    }
    let last = points.len() - 1;
    (0..max).map(|i| points[i * last / (max - 1)]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsampling_keeps_ends_and_the_budget() {
        let pts: Vec<(f64, f64)> = (0..10_001).map(|i| (i as f64, (i * 2) as f64)).collect();
        let d = downsample(&pts, 2000);
        assert_eq!(d.len(), 2000);
        assert_eq!(d[0], (0.0, 0.0));
        assert_eq!(*d.last().unwrap(), (10_000.0, 20_000.0));
        assert!(d.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(downsample(&pts[..5], 2000).len(), 5);
    }

    #[test]
    fn bundles_carry_plotly_svg_and_text() {
        let mut p = LossPlot::new("stage 1").log_y(true).max_points(3);
        for i in 0..10 {
            p.series.resize(2, Series::default());
            p.series[0].name = "loss".into();
            p.series[1].name = "layer 0".into();
            p.series[0].points.push((i as f64, 1.0 / (i + 1) as f64));
            p.series[1].points.push((i as f64, 2.0 / (i + 1) as f64));
        }
        let b = p.bundle();
        let fig = &b["application/vnd.plotly.v1+json"];
        assert_eq!(fig["data"].as_array().unwrap().len(), 2);
        assert_eq!(fig["data"][0]["x"].as_array().unwrap().len(), 3);
        assert_eq!(fig["layout"]["yaxis"]["type"], "log");
        let html = b["text/html"].as_str().unwrap();
        assert!(html.starts_with("<svg") && html.matches("<polyline").count() == 2);
        assert_eq!(
            b["text/plain"],
            "stage 1: loss = 0.1000 @ 9, layer 0 = 0.2000 @ 9"
        );
        // While training: the same chart and text, no Plotly (front ends would not redraw it).
        let live = p.live_bundle();
        assert!(!live.contains_key(PLOTLY_MIME));
        assert_eq!(live["text/html"], b["text/html"]);
        assert_eq!(live["text/plain"], b["text/plain"]);
    }

    #[test]
    fn live_updates_are_html_and_finish_sends_the_plotly_figure() {
        let mut p = LossPlot::new("curve");
        p.finish();
        assert!(p.sent.is_empty(), "an empty plot shows nothing");
        p.push("loss", 1.0, 2.0);
        p.push("loss", 2.0, 1.5); // throttled: within 200 ms of the first refresh
        assert_eq!(p.sent.len(), 1);
        assert!(!p.sent[0].contains_key(PLOTLY_MIME) && p.sent[0].contains_key("text/html"));
        assert!(!p.is_finished());
        p.finish();
        assert!(p.is_finished());
        let last = p.sent.last().unwrap();
        assert_eq!(
            last[PLOTLY_MIME]["data"][0]["x"].as_array().unwrap().len(),
            2
        );
        assert!(last.contains_key("text/html") && last.contains_key("text/plain"));
        p.push("loss", 3.0, 1.0);
        assert!(!p.is_finished(), "a new point goes back to the live chart");
    }
}
