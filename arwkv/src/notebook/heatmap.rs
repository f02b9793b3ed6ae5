//! A matrix as a heat map (the WKV state, a score matrix): the Plotly figure, a self-contained SVG
//! (any front end, offline) and the matrix as text.

use serde_json::{Value, json};

use super::display::Bundle;
use super::loss_plot::escape;

/// Blue (negative) – white (0) – red (positive), symmetric around zero.
fn colour(v: f64, scale: f64) -> String {
    let t = if scale > 0.0 {
        (v / scale).clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let (r, g, b) = if t >= 0.0 {
        (255.0, 255.0 * (1.0 - t), 255.0 * (1.0 - t))
    } else {
        (255.0 * (1.0 + t), 255.0 * (1.0 + t), 255.0)
    };
    format!("rgb({:.0},{:.0},{:.0})", r, g, b)
}

/// The bundle of a heat map of `z` (rows top to bottom), titled `title`, axes named `x` and `y`.
pub fn heatmap(title: &str, z: &[Vec<f64>], x: &str, y: &str) -> Bundle {
    let scale = z
        .iter()
        .flatten()
        .filter(|v| v.is_finite())
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let figure = json!({
        "data": [{"type": "heatmap", "z": z, "colorscale": "RdBu", "reversescale": true,
                  "zmid": 0.0}],
        "layout": {"title": {"text": title}, "xaxis": {"title": {"text": x}},
                   "yaxis": {"title": {"text": y}, "autorange": "reversed"}},
    });
    let rows = z.len();
    let cols = z.iter().map(Vec::len).max().unwrap_or(0);
    let cell = (360.0 / cols.max(rows).max(1) as f64).clamp(4.0, 28.0);
    let (pad, top) = (40.0, 28.0);
    let (w, h) = (
        pad + cell * cols as f64 + 8.0,
        top + cell * rows as f64 + pad,
    );
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" font-family=\"sans-serif\" \
         font-size=\"11\"><text x=\"{pad}\" y=\"16\" font-size=\"13\">{}</text>\
         <text x=\"{pad}\" y=\"{:.0}\">{} →</text><text x=\"4\" y=\"{:.0}\">{} ↓</text>",
        escape(title),
        h - 10.0,
        escape(x),
        top + 12.0,
        escape(y)
    );
    for (i, row) in z.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            svg.push_str(&format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{cell:.1}\" height=\"{cell:.1}\" fill=\"{}\"><title>[{i},{j}] = {v:.4}</title></rect>",
                pad + cell * j as f64,
                top + cell * i as f64,
                colour(*v, scale)
            ));
        }
    }
    svg.push_str("</svg>");
    let text = z
        .iter()
        .map(|r| {
            r.iter()
                .map(|v| format!("{v:8.4}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut b = Bundle::new();
    b.insert("application/vnd.plotly.v1+json".into(), figure);
    b.insert("text/html".into(), Value::String(svg));
    b.insert(
        "text/plain".into(),
        Value::String(format!("{title}\n{text}")),
    );
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cell_is_drawn_and_signs_get_their_colours() {
        let b = heatmap("state", &[vec![1.0, -1.0], vec![0.0, 0.5]], "key", "value");
        let html = b["text/html"].as_str().unwrap();
        assert_eq!(html.matches("<rect").count(), 4);
        assert!(html.contains("rgb(255,0,0)") && html.contains("rgb(0,0,255)"));
        assert_eq!(
            b["application/vnd.plotly.v1+json"]["data"][0]["z"][1][1],
            0.5
        );
        assert!(b["text/plain"].as_str().unwrap().starts_with("state\n"));
    }
}
