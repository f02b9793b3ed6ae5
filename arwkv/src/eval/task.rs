//! Benchmark-style task files, read offline. Rows are JSONL in the shapes lm-evaluation-harness
//! reads from the hub datasets, and each row is turned into the prompt that harness builds:
//!
//! | format | row | scored as |
//! |---|---|---|
//! | MMLU | `question`, `choices: [4 strings]`, `answer: 0-3 or "A"-"D"`, opt. `subject` | " A" … " D" after `Q\nA. …\nAnswer:` |
//! | ARC | `question`, `choices: {text, label}`, `answerKey` | " {text}" after `Question: Q\nAnswer:` |
//! | WinoGrande | `sentence` with `_`, `option1`, `option2`, `answer: "1"/"2"` | partial: the rest of the sentence after each filled-in option |
//! | multiple choice | `query`/`prompt`/`context`, `choices`/`endings`, `gold`/`label`/`answer: index` | " {choice}" after the prompt |
//! | GSM8K | `question`, `answer` with `#### N` | generated, number extracted, exact match |
//! | generative | `prompt`, `target`/`answer` string | generated, first line, exact match |
//!
//! A `.txt` file is a perplexity task.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::jsonl::BadRows;

/// The row shape a task file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowFormat {
    /// `cais/mmlu`.
    Mmlu,
    /// `allenai/ai2_arc`.
    Arc,
    /// `winogrande` (partial scoring).
    Winogrande,
    /// Generic multiple choice (HellaSwag-like).
    Choice,
    /// `gsm8k` (answer after `####`).
    Gsm8k,
    /// Generic prompt → target.
    Generate,
}

/// One multiple-choice question: per option a (context, continuation) pair.
#[derive(Clone, Debug, PartialEq)]
pub struct ChoiceItem {
    /// (context, continuation) per option; only the continuation is scored.
    pub options: Vec<(String, String)>,
    /// Index of the right option.
    pub gold: usize,
}

/// One generative question.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateItem {
    /// The prompt (few-shot examples included).
    pub prompt: String,
    /// The reference answer (already extracted for GSM8K).
    pub target: String,
}

/// What a task asks of a model.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskItems {
    /// Log-likelihood ranking of options.
    Choice(Vec<ChoiceItem>),
    /// Greedy generation + exact match.
    Generate(Vec<GenerateItem>),
    /// Perplexity of a text.
    Perplexity(String),
}

/// A loaded task.
#[derive(Clone, Debug)]
pub struct Task {
    /// Name (file stem).
    pub name: String,
    /// Where it came from.
    pub path: PathBuf,
    /// Row format (None for a text file).
    pub format: Option<RowFormat>,
    /// The items.
    pub items: TaskItems,
    /// Malformed rows, with line numbers.
    pub bad: BadRows,
}

/// How task files are read.
#[derive(Clone, Debug, Default)]
pub struct TaskOptions {
    /// Demonstrations put before every question.
    pub num_fewshot: usize,
    /// Where demonstrations come from (default: the first valid rows of the task file itself,
    /// which are then not scored).
    pub fewshot_file: Option<PathBuf>,
    /// Score at most this many items.
    pub limit: Option<usize>,
}

/// A row understood: its format, what to score, and how it reads as a solved demonstration.
struct Row {
    format: RowFormat,
    kind: RowKind,
    /// The question with its right answer (for few-shot prompts).
    demo: String,
    /// Text put once before the few-shot block (MMLU's subject line).
    description: String,
}

enum RowKind {
    Choice {
        options: Vec<(String, String)>,
        gold: usize,
    },
    Generate {
        prompt: String,
        target: String,
    },
}

fn str_field<'a>(row: &'a Value, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| row.get(*k).and_then(Value::as_str))
}

/// An answer given as an index, a digit string or a letter.
fn answer_index(v: &Value, labels: &[String], n: usize) -> std::result::Result<usize, String> {
    let idx = match v {
        Value::Number(x) => x.as_u64().map(|x| x as usize),
        Value::String(s) => {
            let s = s.trim();
            labels.iter().position(|l| l == s).or_else(|| {
                let mut c = s.chars();
                match (c.next(), c.next()) {
                    (Some(l @ 'A'..='Z'), None) => Some(l as usize - 'A' as usize),
                    _ => s.parse::<usize>().ok(),
                }
            })
        }
        _ => None,
    };
    match idx {
        Some(i) if i < n => Ok(i),
        _ => Err(format!("answer {v} is not one of the {n} options")),
    }
}

const LETTERS: [&str; 10] = ["A", "B", "C", "D", "E", "F", "G", "H", "I", "J"];

fn string_list(v: &Value, what: &str) -> std::result::Result<Vec<String>, String> {
    let list = v
        .as_array()
        .ok_or(format!("`{what}` is not a list"))?
        .iter()
        .map(|x| x.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .ok_or(format!("`{what}` must hold strings"))?;
    if list.len() < 2 {
        return Err(format!("`{what}` needs at least two options"));
    }
    Ok(list)
}

/// The number after `####` (GSM8K's answer line), commas removed.
pub fn gsm8k_target(answer: &str) -> Option<String> {
    let tail = answer.rsplit_once("####")?.1;
    let n = normalise_number(tail.trim());
    (!n.is_empty()).then_some(n)
}

/// Drops `$`, commas and a trailing period: "1,000." → "1000".
pub fn normalise_number(s: &str) -> String {
    s.trim()
        .trim_start_matches('$')
        .replace(',', "")
        .trim_end_matches('.')
        .to_string()
}

fn parse_row(row: &Value) -> std::result::Result<Row, String> {
    if !row.is_object() {
        return Err("a row must be a JSON object".into());
    }
    let question = str_field(row, &["question"]);
    if let (Some(sentence), Some(o1), Some(o2)) = (
        str_field(row, &["sentence"]),
        str_field(row, &["option1"]),
        str_field(row, &["option2"]),
    ) {
        return winogrande_row(row, sentence, [o1, o2]);
    }
    if let Some(choices) = row.get("choices").or_else(|| row.get("endings")) {
        if let (Some(q), Some(obj)) = (question, choices.as_object()) {
            return arc_row(row, q, obj);
        }
        let list = string_list(choices, "choices")?;
        return match question {
            Some(q) => mmlu_row(row, q, &list),
            None => generic_choice_row(row, &list),
        };
    }
    if let (Some(q), Some(answer)) = (question, str_field(row, &["answer"])) {
        return gsm8k_row(q, answer);
    }
    if let (Some(prompt), Some(target)) = (
        str_field(row, &["prompt", "input"]),
        str_field(row, &["target", "answer", "output"]),
    ) {
        return Ok(Row {
            format: RowFormat::Generate,
            demo: format!("{prompt} {target}"),
            kind: RowKind::Generate {
                prompt: prompt.to_string(),
                target: target.trim().to_string(),
            },
            description: String::new(),
        });
    }
    Err("unknown row shape (see `arwkv eval --help` for the formats)".into())
}

/// WinoGrande: fill the blank with each option, score the rest of the sentence.
fn winogrande_row(
    row: &Value,
    sentence: &str,
    [o1, o2]: [&str; 2],
) -> std::result::Result<Row, String> {
    let blank = sentence.find('_').ok_or("`sentence` has no `_` blank")?;
    let rest = format!(" {}", sentence[blank + 1..].trim());
    let options: Vec<(String, String)> = [o1, o2]
        .iter()
        .map(|o| (format!("{}{o}", &sentence[..blank]), rest.clone()))
        .collect();
    let gold = answer_index(row.get("answer").unwrap_or(&Value::Null), &[], 2).and_then(|i| {
        // WinoGrande numbers its options from 1.
        i.checked_sub(1)
            .ok_or("answer must be \"1\" or \"2\"".to_string())
    })?;
    let demo = format!("{}{}", options[gold].0, options[gold].1);
    Ok(Row {
        format: RowFormat::Winogrande,
        kind: RowKind::Choice { options, gold },
        demo,
        description: String::new(),
    })
}

/// ARC: choices `{text, label}`, `answerKey`.
fn arc_row(
    row: &Value,
    q: &str,
    obj: &serde_json::Map<String, Value>,
) -> std::result::Result<Row, String> {
    let text = string_list(obj.get("text").unwrap_or(&Value::Null), "choices.text")?;
    let labels = string_list(obj.get("label").unwrap_or(&Value::Null), "choices.label")?;
    let gold = answer_index(
        row.get("answerKey").ok_or("missing `answerKey`")?,
        &labels,
        text.len(),
    )?;
    let context = format!("Question: {q}\nAnswer:");
    let options = text
        .iter()
        .map(|t| (context.clone(), format!(" {t}")))
        .collect();
    Ok(Row {
        format: RowFormat::Arc,
        demo: format!("{context} {}", text[gold]),
        kind: RowKind::Choice { options, gold },
        description: String::new(),
    })
}

/// MMLU: lettered options after the question, the subject as a description.
fn mmlu_row(row: &Value, q: &str, list: &[String]) -> std::result::Result<Row, String> {
    if list.len() > LETTERS.len() {
        return Err(format!("at most {} options", LETTERS.len()));
    }
    let labels: Vec<String> = LETTERS[..list.len()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let gold = answer_index(
        row.get("answer").ok_or("missing `answer`")?,
        &labels,
        list.len(),
    )?;
    let mut context = q.trim().to_string();
    for (l, c) in labels.iter().zip(list) {
        context.push_str(&format!("\n{l}. {c}"));
    }
    context.push_str("\nAnswer:");
    let options = labels
        .iter()
        .map(|l| (context.clone(), format!(" {l}")))
        .collect();
    let description = str_field(row, &["subject"])
        .map(|s| {
            format!(
                "The following are multiple choice questions (with answers) about {}.\n\n",
                s.replace('_', " ")
            )
        })
        .unwrap_or_default();
    Ok(Row {
        format: RowFormat::Mmlu,
        demo: format!("{context} {}", labels[gold]),
        kind: RowKind::Choice { options, gold },
        description,
    })
}

/// Generic multiple choice: a context, options, and the gold option's index.
fn generic_choice_row(row: &Value, list: &[String]) -> std::result::Result<Row, String> {
    let context = str_field(row, &["query", "prompt", "context", "ctx"])
        .ok_or("multiple choice needs `query`, `prompt` or `context`")?
        .to_string();
    let answer = ["gold", "label", "answer"]
        .iter()
        .find_map(|k| row.get(*k))
        .ok_or("missing `gold` / `label` / `answer`")?;
    let gold = answer_index(answer, &[], list.len())?;
    let spaced = |c: &String| {
        if c.starts_with(char::is_whitespace) {
            c.clone()
        } else {
            format!(" {c}")
        }
    };
    let options = list.iter().map(|c| (context.clone(), spaced(c))).collect();
    Ok(Row {
        format: RowFormat::Choice,
        demo: format!("{context}{}", spaced(&list[gold])),
        kind: RowKind::Choice { options, gold },
        description: String::new(),
    })
}

/// GSM8K: question + worked answer ending in "#### N".
fn gsm8k_row(q: &str, answer: &str) -> std::result::Result<Row, String> {
    let target = gsm8k_target(answer).ok_or("`answer` has no `#### N` line")?;
    let prompt = format!("Question: {q}\nAnswer:");
    Ok(Row {
        format: RowFormat::Gsm8k,
        demo: format!("{prompt} {answer}"),
        kind: RowKind::Generate { prompt, target },
        description: String::new(),
    })
}

/// Reads the valid rows of a JSONL file, counting the bad ones with their line numbers.
fn read_rows(path: &Path) -> Result<(Vec<Row>, BadRows)> {
    let mut bad = BadRows::default();
    let mut format = None;
    let rows = crate::jsonl::read_rows(path, &mut bad, |_, value| {
        let row = parse_row(&value)?;
        match format {
            Some(f) if f != row.format => Err(format!(
                "a {:?} row in a {f:?} file (one format per file)",
                row.format
            )),
            _ => {
                format = Some(row.format);
                Ok(row)
            }
        }
    })?;
    if rows.is_empty() {
        return Err(Error::Data {
            source_name: path.display().to_string(),
            message: format!("no usable task rows ({} bad{})", bad.count, bad.example()),
        });
    }
    Ok((rows, bad))
}

/// Loads a task file (`.jsonl` rows or `.txt` perplexity text).
pub fn load_task(path: &Path, options: &TaskOptions) -> Result<Task> {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    if path.extension().is_some_and(|e| e == "txt") {
        let text = crate::error::read_to_string(path)?;
        if text.trim().is_empty() {
            return Err(Error::Data {
                source_name: path.display().to_string(),
                message: "the text is empty".into(),
            });
        }
        return Ok(Task {
            name,
            path: path.to_path_buf(),
            format: None,
            items: TaskItems::Perplexity(text),
            bad: BadRows::default(),
        });
    }
    if options.limit == Some(0) {
        return Err(Error::Data {
            source_name: path.display().to_string(),
            message: "limit 0 would score no rows (leave it out to score them all)".into(),
        });
    }
    let (mut rows, bad) = read_rows(path)?;
    let format = rows[0].format;
    let demos: Vec<String> = match &options.fewshot_file {
        _ if options.num_fewshot == 0 => vec![],
        Some(file) => {
            let (shots, _) = read_rows(file)?;
            if let Some(other) = shots.iter().find(|r| r.format != format) {
                return Err(Error::Data {
                    source_name: file.display().to_string(),
                    message: format!(
                        "few-shot rows are {:?} but {} is {format:?}",
                        other.format,
                        path.display()
                    ),
                });
            }
            if shots.len() < options.num_fewshot {
                return Err(Error::Data {
                    source_name: file.display().to_string(),
                    message: format!(
                        "{} few-shot example(s) asked for, the file has {}",
                        options.num_fewshot,
                        shots.len()
                    ),
                });
            }
            shots
                .into_iter()
                .take(options.num_fewshot)
                .map(|r| r.demo)
                .collect()
        }
        None => {
            // The examples come from the task's own first rows; at least one row must be left.
            if options.num_fewshot >= rows.len() {
                return Err(Error::Data {
                    source_name: path.display().to_string(),
                    message: format!(
                        "{} few-shot example(s) taken from a task of {} row(s) leave none to score",
                        options.num_fewshot,
                        rows.len()
                    ),
                });
            }
            rows.drain(..options.num_fewshot).map(|r| r.demo).collect()
        }
    };
    let fewshot: String = demos.iter().map(|d| format!("{d}\n\n")).collect();
    rows.truncate(options.limit.unwrap_or(usize::MAX));
    let prefix = |r: &Row| format!("{}{fewshot}", r.description);
    let items = match format {
        RowFormat::Gsm8k | RowFormat::Generate => TaskItems::Generate(
            rows.iter()
                .map(|r| match &r.kind {
                    RowKind::Generate { prompt, target } => GenerateItem {
                        prompt: format!("{}{prompt}", prefix(r)),
                        target: target.clone(),
                    },
                    RowKind::Choice { .. } => unreachable!("one format per file"),
                })
                .collect(),
        ),
        _ => TaskItems::Choice(
            rows.iter()
                .map(|r| match &r.kind {
                    RowKind::Choice { options, gold, .. } => ChoiceItem {
                        options: options
                            .iter()
                            .map(|(c, x)| (format!("{}{c}", prefix(r)), x.clone()))
                            .collect(),
                        gold: *gold,
                    },
                    RowKind::Generate { .. } => unreachable!("one format per file"),
                })
                .collect(),
        ),
    };
    Ok(Task {
        name,
        path: path.to_path_buf(),
        format: Some(format),
        items,
        bad,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn choice(v: Value) -> (Vec<(String, String)>, usize) {
        match parse_row(&v).unwrap().kind {
            RowKind::Choice { options, gold, .. } => (options, gold),
            RowKind::Generate { .. } => panic!("not a choice row"),
        }
    }

    #[test]
    fn mmlu_rows_read_as_lettered_options() {
        let (o, gold) = choice(json!({"question": "2+2?", "choices": ["3", "4"], "answer": 1}));
        assert_eq!(gold, 1);
        assert_eq!(o[0].0, "2+2?\nA. 3\nB. 4\nAnswer:");
        assert_eq!((o[0].1.as_str(), o[1].1.as_str()), (" A", " B"));
        let (_, gold) = choice(json!({"question": "q", "choices": ["x", "y", "z"], "answer": "C"}));
        assert_eq!(gold, 2);
    }

    #[test]
    fn arc_rows_use_labels_and_the_answer_text() {
        let (o, gold) = choice(json!({"question": "Sky?", "answerKey": "2",
            "choices": {"text": ["green", "blue"], "label": ["1", "2"]}}));
        assert_eq!(gold, 1);
        assert_eq!(o[1], ("Question: Sky?\nAnswer:".into(), " blue".into()));
    }

    #[test]
    fn winogrande_rows_score_the_rest_of_the_sentence() {
        let (o, gold) = choice(
            json!({"sentence": "The cup fell off the table because _ was round.",
            "option1": "the cup", "option2": "the table", "answer": "1"}),
        );
        assert_eq!(gold, 0);
        assert_eq!(
            o[0],
            (
                "The cup fell off the table because the cup".into(),
                " was round.".into()
            )
        );
        assert_eq!(o[1].0, "The cup fell off the table because the table");
    }

    #[test]
    fn gsm8k_answers_are_extracted() {
        assert_eq!(
            gsm8k_target("5 + 7 = 12\n#### 1,200").as_deref(),
            Some("1200")
        );
        assert_eq!(gsm8k_target("no marker"), None);
        assert_eq!(normalise_number("$42."), "42");
    }

    #[test]
    fn bad_rows_are_counted_with_line_numbers_and_fewshot_rows_are_not_scored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        std::fs::write(
            &path,
            "{\"question\": \"a\", \"choices\": [\"x\", \"y\"], \"answer\": 0}\n\
             not json\n\
             {\"question\": \"b\", \"choices\": [\"x\", \"y\"], \"answer\": 7}\n\
             {\"question\": \"c\", \"choices\": [\"x\", \"y\"], \"answer\": 1}\n",
        )
        .unwrap();
        let task = load_task(
            &path,
            &TaskOptions {
                num_fewshot: 1,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(task.bad.count, 2);
        assert!(
            task.bad.first[0]
                .ends_with("t.jsonl:2: invalid JSON: expected ident at line 1 column 2")
        );
        assert!(task.bad.first[1].contains("t.jsonl:3: answer 7 is not one of the 2 options"));
        let TaskItems::Choice(items) = task.items else {
            panic!()
        };
        assert_eq!(items.len(), 1);
        assert_eq!(
            items[0].options[0].0,
            "a\nA. x\nB. y\nAnswer: A\n\nc\nA. x\nB. y\nAnswer:"
        );
    }

    #[test]
    fn a_limit_of_zero_and_more_examples_than_rows_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        std::fs::write(
            &path,
            "{\"question\": \"a\", \"choices\": [\"x\", \"y\"], \"answer\": 0}\n\
             {\"question\": \"b\", \"choices\": [\"x\", \"y\"], \"answer\": 1}\n",
        )
        .unwrap();
        let load = |options: TaskOptions| load_task(&path, &options).err().map(|e| e.to_string());
        let e = load(TaskOptions {
            limit: Some(0),
            ..Default::default()
        })
        .unwrap();
        assert!(e.contains("limit 0"), "{e}");
        let e = load(TaskOptions {
            num_fewshot: 2,
            ..Default::default()
        })
        .unwrap();
        assert!(e.contains("leave none to score"), "{e}");
        let shots = dir.path().join("shots.jsonl");
        std::fs::write(
            &shots,
            "{\"question\": \"s\", \"choices\": [\"x\", \"y\"], \"answer\": 0}\n",
        )
        .unwrap();
        let e = load(TaskOptions {
            num_fewshot: 3,
            fewshot_file: Some(shots),
            ..Default::default()
        })
        .unwrap();
        assert!(
            e.contains("3 few-shot example(s) asked for, the file has 1"),
            "{e}"
        );
        assert!(
            load(TaskOptions {
                num_fewshot: 1,
                ..Default::default()
            })
            .is_none()
        );
    }
}
