//! Training data (`docs/METHOD.md` §9): documents from plain `.txt` (paragraphs separated by blank
//! lines), JSONL with a `text` field, or conversation JSONL (`messages` or `conversations`, keys
//! `role|from` and `content|value`, roles `human→user`, `gpt→assistant`); tokenised with the
//! teacher's tokenizer; packed into blocks of the context length (documents joined by the end-of-text
//! token) or one document per row, truncated and padded. Blocks are visited in a seeded random order
//! per epoch; the position `(epoch, index)` is all a resumed run needs.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chat::{ChatMessage, ChatTemplate};
use crate::error::{Error, Result};
use crate::jsonl::BadRows;
use crate::tokenizer::TextTokenizer;

/// Where the data comes from and how it is cut.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Files: `.txt`, `.jsonl` (text or conversations).
    pub files: Vec<PathBuf>,
    /// Tokens per row.
    pub context: usize,
    /// Rows per micro-batch.
    pub batch_size: usize,
    /// Pack documents into full rows (else one document per row, padded).
    pub pack: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            files: vec![],
            context: 256,
            batch_size: 4,
            pack: true,
        }
    }
}

/// One micro-batch.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[B, T]` token ids.
    pub ids: Tensor<2, Int>,
    /// `[B, T]` 1 for real tokens, 0 for padding.
    pub mask: Tensor<2>,
    /// `[B, T]` 1 for SFT target tokens.
    pub target_mask: Tensor<2>,
    /// Real (unpadded) tokens in the batch.
    pub tokens: usize,
}

impl Batch {
    /// The padding mask when some row is padded (`None` for full rows: nothing to mask).
    pub fn padding(&self) -> Option<&Tensor<2>> {
        let [b, t] = self.ids.dims();
        (self.tokens < b * t).then_some(&self.mask)
    }
}

/// A row of a finished dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Token ids, exactly `context` long.
    pub ids: Vec<u32>,
    /// Real tokens at the start of the row (the rest is padding).
    pub len: usize,
    /// Whether each token is a training target of SFT (assistant turns of conversations, every
    /// token of plain text; never padding).
    pub targets: Vec<bool>,
}

/// A document: its text and, for conversations, the byte ranges of the assistant turns.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// The text as the model reads it.
    pub text: String,
    /// SFT target ranges; `None` = the whole text.
    pub targets: Option<Vec<std::ops::Range<usize>>>,
}

/// A tokenised, cut dataset and the order it is read in.
#[derive(Clone, Debug)]
pub struct Dataset {
    rows: Vec<Row>,
    config: DataConfig,
    pad_id: u32,
    seed: u64,
    /// Rows skipped while reading.
    pub bad_rows: BadRows,
}

/// Where a run is in its data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPosition {
    /// Completed passes.
    pub epoch: u64,
    /// Next batch within the pass.
    pub batch: u64,
}

impl DataPosition {
    /// The same place with a finished pass wrapped to the next one's start, for data with
    /// `per_epoch` batches per pass (positions are stored unwrapped: `batch` may equal it).
    pub fn wrapped(self, per_epoch: u64) -> Self {
        if self.batch >= per_epoch {
            Self {
                epoch: self.epoch + 1,
                batch: 0,
            }
        } else {
            self
        }
    }

    /// The position after the batch at `self`, for data with `per_epoch` batches per pass.
    pub fn after(self, per_epoch: u64) -> Self {
        let at = self.wrapped(per_epoch);
        Self {
            epoch: at.epoch,
            batch: at.batch + 1,
        }
    }
}

fn role_alias(role: &str) -> &str {
    match role {
        "human" => "user",
        "gpt" => "assistant",
        other => other,
    }
}

fn conversation(row: &Value) -> Option<std::result::Result<Vec<ChatMessage>, String>> {
    let turns = row.get("messages").or_else(|| row.get("conversations"))?;
    let Some(turns) = turns.as_array() else {
        return Some(Err("`messages` is not a list".into()));
    };
    let mut out = vec![];
    for (i, t) in turns.iter().enumerate() {
        let role = t
            .get("role")
            .or_else(|| t.get("from"))
            .and_then(Value::as_str);
        let content = t
            .get("content")
            .or_else(|| t.get("value"))
            .and_then(Value::as_str);
        match (role, content) {
            (Some(r), Some(c)) => out.push(ChatMessage::new(role_alias(r), c)),
            _ => return Some(Err(format!("turn {i} lacks role/content strings"))),
        }
    }
    if out.is_empty() {
        return Some(Err("empty conversation".into()));
    }
    Some(Ok(out))
}

/// ChatML as the reference formats conversations when the model has no template.
fn chatml(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    let mut s: String = messages
        .iter()
        .map(|m| format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content))
        .collect();
    if add_generation_prompt {
        s.push_str("<|im_start|>assistant\n");
    }
    s
}

/// Renders a conversation and finds its assistant turns: for turn i, the text between the render of
/// turns `..i` with the generation prompt and the render of turns `..=i`.
pub fn render_conversation(
    messages: &[ChatMessage],
    template: Option<&ChatTemplate>,
) -> std::result::Result<Document, String> {
    let render = |m: &[ChatMessage], generation: bool| match template {
        Some(t) => t.render(m, generation).map_err(|e| e.to_string()),
        None => Ok(chatml(m, generation)),
    };
    let text = render(messages, false)?;
    let mut spans = vec![];
    for (i, m) in messages.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let before = render(&messages[..i], true)?;
        let through = render(&messages[..=i], false)?;
        if !through.starts_with(&before) || !text.starts_with(&through) {
            return Err(
                "the chat template does not render this conversation prefix by prefix, so \
                        its assistant turns cannot be located"
                    .into(),
            );
        }
        spans.push(before.len()..through.len());
    }
    Ok(Document {
        text,
        targets: Some(spans),
    })
}

/// Reads the documents of one file.
fn read_documents(
    path: &Path,
    template: Option<&ChatTemplate>,
    bad: &mut BadRows,
) -> Result<Vec<Document>> {
    let text = crate::error::read_to_string(path)?;
    let is_jsonl = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("jsonl") | Some("json")
    );
    if !is_jsonl {
        return Ok(text
            .split("\n\n")
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| Document {
                text: p.to_string(),
                targets: None,
            })
            .collect());
    }
    crate::jsonl::read_rows(path, bad, |_, row| {
        if let Some(conv) = conversation(&row) {
            let messages = conv?;
            render_conversation(&messages, template).map_err(|e| format!("chat template: {e}"))
        } else if let Some(t) = row.get("text").and_then(Value::as_str) {
            Ok(Document {
                text: t.to_string(),
                targets: None,
            })
        } else {
            Err("no `text` string and no `messages`/`conversations` list".into())
        }
    })
}

/// Token ids of a document and which of them are SFT targets.
pub fn tokenise(tokenizer: &TextTokenizer, doc: &Document) -> Result<(Vec<u32>, Vec<bool>)> {
    match &doc.targets {
        None => {
            let ids = tokenizer.encode(&doc.text, false)?;
            let n = ids.len();
            Ok((ids, vec![true; n]))
        }
        Some(spans) => {
            let (ids, offsets) = tokenizer.encode_with_offsets(&doc.text)?;
            let targets = offsets
                .iter()
                .map(|&(start, _)| spans.iter().any(|s| s.contains(&start)))
                .collect();
            Ok((ids, targets))
        }
    }
}

impl Dataset {
    /// Reads, tokenises and cuts every file of `config`.
    pub fn load(
        config: &DataConfig,
        tokenizer: &TextTokenizer,
        template: Option<&ChatTemplate>,
        seed: u64,
    ) -> Result<Self> {
        Self::load_for(config, tokenizer, template, seed, false)
    }

    /// As [`Dataset::load`]; with `need_targets` (SFT), rows without a target token are skipped
    /// and counted as bad rows.
    pub fn load_for(
        config: &DataConfig,
        tokenizer: &TextTokenizer,
        template: Option<&ChatTemplate>,
        seed: u64,
        need_targets: bool,
    ) -> Result<Self> {
        if config.files.is_empty() {
            return Err(Error::Setting {
                scope: "data".into(),
                key: "files".into(),
                message: "is empty: no files given".into(),
            });
        }
        if config.context < 2 || config.batch_size == 0 {
            return Err(Error::Setting {
                scope: "data".into(),
                key: "context".into(),
                message: "must be at least 2 and batch_size at least 1".into(),
            });
        }
        let mut bad = BadRows::default();
        let mut docs = vec![];
        for f in &config.files {
            docs.extend(read_documents(f, template, &mut bad)?);
        }
        let eot = tokenizer.token_to_id("<|endoftext|>");
        let pad_id = eot.unwrap_or(0);
        let mut rows = vec![];
        let mut tokenised = Vec::with_capacity(docs.len());
        for d in &docs {
            tokenised.push(tokenise(tokenizer, d)?);
        }
        if config.pack {
            let mut ids = vec![];
            let mut targets = vec![];
            for (doc_ids, doc_targets) in tokenised {
                ids.extend(doc_ids);
                targets.extend(doc_targets);
                if let Some(e) = eot {
                    ids.push(e);
                    targets.push(true);
                }
            }
            rows = ids
                .chunks_exact(config.context)
                .zip(targets.chunks_exact(config.context))
                .map(|(c, t)| Row {
                    ids: c.to_vec(),
                    len: c.len(),
                    targets: t.to_vec(),
                })
                .collect();
        } else {
            for (mut ids, mut targets) in tokenised {
                if ids.is_empty() {
                    continue;
                }
                ids.truncate(config.context);
                targets.truncate(config.context);
                let len = ids.len();
                ids.resize(config.context, pad_id);
                targets.resize(config.context, false);
                rows.push(Row { ids, len, targets });
            }
        }
        if need_targets {
            let before = rows.len();
            rows.retain(|r| r.targets.iter().any(|&t| t));
            let dropped = before - rows.len();
            if dropped > 0 {
                bad.count += dropped;
                bad.first.push(format!(
                    "{dropped} row(s) without an assistant token within the context of {} tokens",
                    config.context
                ));
            }
        }
        if rows.len() < config.batch_size {
            let names: Vec<String> = config
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect();
            return Err(Error::Data {
                source_name: format!("data ({})", names.join(", ")),
                message: format!(
                    "{} document(s) give {} row(s) of {} tokens, fewer than one batch of {} \
                 ({} bad row(s) skipped{})",
                    docs.len(),
                    rows.len(),
                    config.context,
                    config.batch_size,
                    bad.count,
                    bad.first
                        .first()
                        .map(|f| format!(", e.g. {f}"))
                        .unwrap_or_default()
                ),
            });
        }
        Ok(Self {
            rows,
            config: config.clone(),
            pad_id,
            seed,
            bad_rows: bad,
        })
    }

    /// Rows in the dataset.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether it holds no rows (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Full batches per pass.
    pub fn batches_per_epoch(&self) -> u64 {
        (self.rows.len() / self.config.batch_size) as u64
    }

    /// The padding id.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.rows.len()).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(
            self.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        order.shuffle(&mut rng);
        order
    }

    /// The position after the batch at `pos`, without reading it.
    pub fn next_position(&self, pos: DataPosition) -> DataPosition {
        pos.after(self.batches_per_epoch())
    }

    /// The batch at `pos` and the position after it.
    pub fn batch(&self, pos: DataPosition, device: &Device) -> (Batch, DataPosition) {
        let per_epoch = self.batches_per_epoch();
        let next = pos.after(per_epoch);
        let pos = pos.wrapped(per_epoch);
        let order = self.order(pos.epoch);
        let bs = self.config.batch_size;
        let t = self.config.context;
        let start = pos.batch as usize * bs;
        let mut ids = Vec::with_capacity(bs * t);
        let mut mask = Vec::with_capacity(bs * t);
        let mut targets = Vec::with_capacity(bs * t);
        let mut tokens = 0;
        for &r in &order[start..start + bs] {
            let row = &self.rows[r];
            ids.extend(row.ids.iter().map(|&x| x as i64));
            mask.extend((0..t).map(|i| if i < row.len { 1.0f32 } else { 0.0 }));
            targets.extend(row.targets.iter().map(|&x| if x { 1.0f32 } else { 0.0 }));
            tokens += row.len;
        }
        let batch = Batch {
            ids: Tensor::from_data(TensorData::new(ids, [bs, t]), device),
            mask: Tensor::from_data(TensorData::new(mask, [bs, t]), device),
            target_mask: Tensor::from_data(TensorData::new(targets, [bs, t]), device),
            tokens,
        };
        (batch, next)
    }
}
