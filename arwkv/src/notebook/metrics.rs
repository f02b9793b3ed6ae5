//! A run's final numbers as one greppable line, so a notebook and its exported program can be
//! compared value for value (`arwkv-kernel export`'s reproducibility check reads it).

use serde_json::{Map, Value};

/// The line's prefix.
pub const METRICS_PREFIX: &str = "final metrics ";

/// Prints `final metrics <label> {json}` (shortest round-trip floats) and returns the line.
pub fn report_metrics(label: &str, values: &[(&str, f64)]) -> String {
    let mut map = Map::new();
    for (name, value) in values {
        map.insert(
            (*name).to_string(),
            serde_json::Number::from_f64(*value)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(value.to_string())),
        );
    }
    let line = format!("{METRICS_PREFIX}{label} {}", Value::Object(map));
    println!("{line}");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_exactly_and_nan_is_text() {
        let line = report_metrics("stage 1", &[("loss", 0.1 + 0.2), ("bad", f64::NAN)]);
        let json = line.strip_prefix("final metrics stage 1 ").unwrap();
        let v: Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["loss"].as_f64(), Some(0.1 + 0.2));
        assert_eq!(v["bad"], "NaN");
    }
}
