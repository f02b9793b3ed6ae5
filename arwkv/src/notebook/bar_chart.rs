//! Bar charts with error bars (Table 1's measures): the Plotly figure, a self-contained SVG (any
//! front end, offline, and the static image a notebook is committed with) and the values as text.

use serde_json::Value;

use super::display::{Bundle, plotly_bundle};
use super::loss_plot::escape;
use crate::distill::table1::{Table1Measure, Table1Report};
use crate::eval::MeanSd;

const BAR_COLOUR: &str = "#1f77b4";

/// A self-contained SVG bar chart of `bars` (label, mean ± sd), error bars at ± one sd, titled `title`.
pub fn bar_chart_svg(title: &str, bars: &[(String, MeanSd)]) -> String {
    let (w, h, pad, bottom) = (520.0, 300.0, 52.0, 64.0);
    let sd = |v: &MeanSd| if v.sd.is_finite() { v.sd.max(0.0) } else { 0.0 };
    let top_value = bars
        .iter()
        .map(|(_, v)| v.mean + sd(v))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let top_value = if top_value > 0.0 {
        top_value * 1.1
    } else {
        1.0
    };
    let plot_h = h - pad - bottom;
    let y = |v: f64| h - bottom - (v.max(0.0) / top_value).min(1.0) * plot_h;
    let slot = (w - 2.0 * pad) / bars.len().max(1) as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\
         <text x=\"{pad}\" y=\"20\" font-size=\"13\">{title}</text>\
         <line x1=\"{pad}\" y1=\"{base}\" x2=\"{right}\" y2=\"{base}\" stroke=\"#888\"/>\
         <text x=\"4\" y=\"{top_y}\">{top_label}</text><text x=\"4\" y=\"{base}\">0</text>",
        title = escape(title),
        base = h - bottom,
        right = w - pad,
        top_y = pad + 4.0,
        top_label = format_value(top_value),
    );
    for (i, (label, v)) in bars.iter().enumerate() {
        let centre = pad + slot * (i as f64 + 0.5);
        let bar_w = slot * 0.6;
        let top = if v.mean.is_finite() {
            y(v.mean)
        } else {
            h - bottom
        };
        s.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{bar_w:.1}\" height=\"{:.1}\" fill=\"{BAR_COLOUR}\">\
             <title>{}: {}</title></rect>",
            centre - bar_w / 2.0,
            h - bottom - top,
            escape(label),
            v.show(4, 1.0)
        ));
        if sd(v) > 0.0 && v.mean.is_finite() {
            let (lo, hi) = (y(v.mean - sd(v)), y(v.mean + sd(v)));
            s.push_str(&format!(
                "<path d=\"M{c:.1},{lo:.1}V{hi:.1}M{l:.1},{lo:.1}H{r:.1}M{l:.1},{hi:.1}H{r:.1}\" stroke=\"#222\"/>",
                c = centre,
                l = centre - 6.0,
                r = centre + 6.0,
            ));
        }
        s.push_str(&format!(
            "<text x=\"{centre:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
             <text x=\"{centre:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#444\">{}</text>",
            h - bottom + 16.0,
            escape(label),
            h - bottom + 32.0,
            escape(&v.show(4, 1.0)),
        ));
    }
    s.push_str("</svg>");
    s
}

fn format_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// The bundle of one measure: its Plotly figure, its SVG chart and `label = mean ± sd` as text.
pub fn measure_bundle(measure: &Table1Measure) -> Bundle {
    let text = measure
        .bars
        .iter()
        .map(|(l, v)| format!("{l} = {}", v.show(4, 1.0)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut b = plotly_bundle(&measure.figure(), format!("{}: {text}", measure.title));
    b.insert(
        "text/html".into(),
        Value::String(bar_chart_svg(measure.title, &measure.bars)),
    );
    b
}

/// One bundle per measure of a Table 1 report, to `display` in a notebook.
pub fn table1_bundles(report: &Table1Report) -> Vec<Bundle> {
    report.measures().iter().map(measure_bundle).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bars() -> Vec<(String, MeanSd)> {
        vec![
            ("ARWKV".into(), MeanSd::of(&[1.0, 1.2, 1.1])),
            ("active MLP".into(), MeanSd::of(&[0.9, 0.95, 1.0])),
            ("one seed <b>".into(), MeanSd::of(&[0.5])),
        ]
    }

    #[test]
    fn the_svg_has_a_bar_per_label_and_error_bars_where_there_is_a_spread() {
        let svg = bar_chart_svg("ratio", &bars());
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 3);
        assert_eq!(svg.matches("<path").count(), 2, "no error bar for one seed");
        assert!(svg.contains("one seed &lt;b&gt;") && !svg.contains("<b>"));
        assert!(svg.contains("1.1000 ± 0.1000"));
    }

    #[test]
    fn the_tallest_bar_with_its_error_fits_inside_the_chart() {
        let svg = bar_chart_svg("ratio", &bars());
        for y in svg.split(" y=\"").skip(1) {
            let v: f64 = y[..y.find('"').unwrap()].parse().unwrap();
            assert!((0.0..=300.0).contains(&v), "{v}");
        }
    }

    #[test]
    fn a_measure_bundle_carries_plotly_svg_and_text() {
        let m = Table1Measure {
            title: "top-1 agreement",
            bars: bars(),
        };
        let b = measure_bundle(&m);
        assert!(b.contains_key(crate::notebook::PLOTLY_MIME));
        assert!(b["text/html"].as_str().unwrap().starts_with("<svg"));
        let text = b["text/plain"].as_str().unwrap();
        assert!(
            text.starts_with("top-1 agreement: ARWKV = 1.1000 ± 0.1000"),
            "{text}"
        );
    }
}
