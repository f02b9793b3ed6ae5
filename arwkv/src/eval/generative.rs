//! Generative tasks: greedy decoding until a stop string, then answer extraction and exact match.
//! GSM8K: the number after `####`, else after "The answer is", else the last number written;
//! generic tasks: the first non-empty line.

use super::task::{RowFormat, normalise_number};

/// Where a generation ends besides the model's stop ids.
pub fn stop_strings(format: RowFormat) -> &'static [&'static str] {
    match format {
        RowFormat::Gsm8k => &["\n\nQuestion:", "Question:", "<|im_end|>"],
        _ => &["\n\n", "<|im_end|>"],
    }
}

/// The last number in `text` (digits with optional sign, commas and a decimal point).
fn last_number(text: &str) -> Option<String> {
    let mut best = None;
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i].is_ascii_digit()
            || (chars[i] == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit));
        if !starts {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < chars.len()
            && (chars[j].is_ascii_digit()
                || (matches!(chars[j], ',' | '.')
                    && chars.get(j + 1).is_some_and(char::is_ascii_digit)))
        {
            j += 1;
        }
        best = Some(chars[i..j].iter().collect::<String>());
        i = j;
    }
    best.map(|n| normalise_number(&n))
}

/// The answer a model's output gives, for exact match against the task's target.
pub fn extract_answer(format: RowFormat, output: &str) -> String {
    match format {
        RowFormat::Gsm8k => {
            for marker in ["####", "The answer is", "the answer is"] {
                if let Some((_, tail)) = output.rsplit_once(marker)
                    && let Some(n) = last_number(tail.lines().next().unwrap_or(""))
                {
                    return n;
                }
            }
            last_number(output).unwrap_or_default()
        }
        _ => output
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
            .to_string(),
    }
}

/// Exact match of an extracted answer; numbers compare by value ("12.0" = "12").
pub fn is_exact_match(format: RowFormat, prediction: &str, target: &str) -> bool {
    if prediction == target {
        return true;
    }
    match (
        format,
        prediction.parse::<f64>(),
        normalise_number(target).parse::<f64>(),
    ) {
        (RowFormat::Gsm8k, Ok(a), Ok(b)) => (a - b).abs() < 1e-9,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm8k_answers_come_from_the_marker_then_the_last_number() {
        let f = RowFormat::Gsm8k;
        assert_eq!(extract_answer(f, "3 + 4 = 7 apples.\n#### 7"), "7");
        assert_eq!(
            extract_answer(f, "So 1,000 + 200 = 1,200. The answer is $1,200."),
            "1200"
        );
        assert_eq!(extract_answer(f, "first 12, then -3.5 left"), "-3.5");
        assert_eq!(extract_answer(f, "no digits"), "");
        assert!(is_exact_match(f, "12.0", "12"));
        assert!(!is_exact_match(f, "13", "12"));
    }

    #[test]
    fn generic_answers_are_the_first_line() {
        let f = RowFormat::Generate;
        assert_eq!(extract_answer(f, "\n  Paris \nand more"), "Paris");
        assert!(is_exact_match(f, "Paris", "Paris"));
        assert!(!is_exact_match(f, "paris", "Paris"));
    }
}
