//! Building DPO pairs (`docs/METHOD.md` §7): the *chosen* answer is the dataset's, the *rejected*
//! one is sampled from the student itself, as the reference's `convert_jsonl_to_dpo.py` does.
//!
//! Input rows: conversations (`messages`/`conversations`) whose last turn is the assistant's answer,
//! or `{prompt, answer}` / `{prompt, chosen}`. Output rows: `{prompt, chosen, rejected}`.

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use crate::chat::ChatMessage;
use crate::error::{Error, Result};
use crate::generation::{GenerationConfig, generate};
use crate::jsonl::BadRows;
use crate::student::PretrainedArwkv;

/// Extracts `(prompt, answer)` from one input row.
fn prompt_and_answer(row: &Value) -> std::result::Result<(String, String), String> {
    let text = |k: &str| row.get(k).and_then(Value::as_str).map(str::to_string);
    if let Some(turns) = row.get("messages").or_else(|| row.get("conversations")) {
        let turns = turns.as_array().ok_or("`messages` is not a list")?;
        let get = |t: &Value, a: &str, b: &str| {
            t.get(a)
                .or_else(|| t.get(b))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let n = turns.len();
        if n < 2 {
            return Err("a conversation needs a user turn and an answer".into());
        }
        let role = |t: &Value| get(t, "role", "from").unwrap_or_default();
        let (user, answer) = (&turns[n - 2], &turns[n - 1]);
        if !matches!(role(answer).as_str(), "assistant" | "gpt")
            || !matches!(role(user).as_str(), "user" | "human")
        {
            return Err("the last two turns must be a user turn and the assistant's answer".into());
        }
        return match (
            get(user, "content", "value"),
            get(answer, "content", "value"),
        ) {
            (Some(p), Some(a)) => Ok((p, a)),
            _ => Err("turns need content strings".into()),
        };
    }
    match (text("prompt"), text("answer").or_else(|| text("chosen"))) {
        (Some(p), Some(a)) => Ok((p, a)),
        _ => Err("needs `messages`, or `prompt` with `answer`/`chosen`".into()),
    }
}

/// Reads `input`, samples one rejected answer per row from `student`, writes `output` (JSONL).
/// Returns the number of pairs written and the rows skipped.
pub fn build_dpo_pairs(
    student: &PretrainedArwkv,
    input: &Path,
    output: &Path,
    generation: &GenerationConfig,
    device: &burn::prelude::Device,
    mut on_pair: impl FnMut(usize),
) -> Result<(usize, BadRows)> {
    let tokenizer = student.tokenizer()?;
    let template = student.chat_template.as_ref();
    let mut bad = BadRows::default();
    let rows = crate::jsonl::read_rows(input, &mut bad, |n, row| {
        prompt_and_answer(&row).map(|(prompt, chosen)| (n, prompt, chosen))
    })?;
    let mut lines = vec![];
    for (n, prompt, chosen) in rows {
        let messages = [ChatMessage::new("user", prompt.clone())];
        let rendered = match template {
            Some(t) => t.render(&messages, true)?,
            None => format!("<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"),
        };
        let ids = tokenizer.encode(&rendered, false)?;
        let mut config = generation.clone();
        config.sampling.seed = generation.sampling.seed.wrapping_add(n as u64);
        let sampled = generate(&student.model, &ids, &config, device, |_| Ok(()))?;
        let rejected = tokenizer.decode(&sampled, true)?;
        lines.push(json!({"prompt": prompt, "chosen": chosen, "rejected": rejected}).to_string());
        on_pair(lines.len());
    }
    if lines.is_empty() {
        return Err(Error::Data {
            source_name: input.display().to_string(),
            message: format!("no usable rows ({} bad{})", bad.count, bad.example()),
        });
    }
    let mut bytes = vec![];
    for l in &lines {
        writeln!(bytes, "{l}").map_err(|e| Error::io(output, e))?;
    }
    crate::save::write_atomic(output, &bytes)?;
    Ok((lines.len(), bad))
}
