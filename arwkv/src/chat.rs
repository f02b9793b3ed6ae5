//! Chat templates: the Jinja `chat_template` of `tokenizer_config.json` (or `chat_template.jinja`),
//! rendered with minijinja the way transformers' `apply_chat_template` renders it with Jinja2
//! (`trim_blocks`, `lstrip_blocks`, loop controls, `raise_exception`, Python-style `tojson`).

use std::path::{Path, PathBuf};

use minijinja::value::Serde;
use minijinja::{Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::{Error, Result};

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// "system", "user", "assistant" or "tool".
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with this role and text.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Work units (minijinja "fuel", about one per template instruction) one render may spend: far
/// more than a chat template needs per conversation, and spent in ~0.6 s by the nested-loop test
/// in `tests/untrusted_inputs.rs` (2 cores).
pub const TEMPLATE_FUEL: u64 = 20_000_000;

/// A compiled chat template with the special tokens it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// The template source.
    pub source: String,
    /// Where it was read from.
    pub origin: PathBuf,
    /// Special tokens passed to the template as variables (`bos_token`, `eos_token`, ...).
    pub special_tokens: Vec<(String, String)>,
}

impl ChatTemplate {
    /// Reads the template of a model folder: `chat_template.jinja`, else `tokenizer_config.json`'s
    /// `chat_template` (a string, or a list of `{name, template}` of which "default" is used).
    /// `Ok(None)` when the model has no template.
    pub fn from_model_dir(dir: &Path) -> Result<Option<Self>> {
        let config_path = dir.join("tokenizer_config.json");
        let config: Json = if config_path.is_file() {
            crate::error::read_json(&config_path)?
        } else {
            Json::Null
        };
        let special_tokens = special_tokens(&config);
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            let source = crate::error::read_to_string(&jinja)?;
            return Self::new(source, jinja, special_tokens).map(Some);
        }
        let source = match config.get("chat_template") {
            None | Some(Json::Null) => return Ok(None),
            Some(Json::String(s)) => s.clone(),
            Some(Json::Array(items)) => {
                let named = |n: &str| {
                    items
                        .iter()
                        .find(|t| t.get("name").and_then(Json::as_str) == Some(n))
                };
                let chosen = named("default").or_else(|| items.first());
                match chosen
                    .and_then(|t| t.get("template"))
                    .and_then(Json::as_str)
                {
                    Some(s) => s.to_string(),
                    None => {
                        return Err(Error::Config {
                            path: config_path,
                            key: "chat_template".into(),
                            message: "list entries need `name` and `template` strings".into(),
                        });
                    }
                }
            }
            Some(_) => {
                return Err(Error::Config {
                    path: config_path,
                    key: "chat_template".into(),
                    message: "expected a string or a list of named templates".into(),
                });
            }
        };
        Self::new(source, config_path, special_tokens).map(Some)
    }

    /// Compiles a template source (rendering is bounded by [`TEMPLATE_FUEL`]).
    pub fn new(
        source: String,
        origin: PathBuf,
        special_tokens: Vec<(String, String)>,
    ) -> Result<Self> {
        let mut env = Environment::new();
        // transformers renders with Jinja2's trim_blocks and lstrip_blocks.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| Error::Template(e.to_string()))?;
        env.set_syntax(syntax);
        // A template comes from a model folder (untrusted): bounded work per render, so nested
        // loops cannot hang a run.
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_function("strftime_now", |fmt: String| {
            chrono::Local::now().format(&fmt).to_string()
        });
        env.add_filter("tojson", python_tojson);
        env.add_template_owned("chat", source.clone())
            .map_err(|e| Error::Template(format!("{}: {}", origin.display(), describe(&e))))?;
        Ok(Self {
            env,
            source,
            origin,
            special_tokens,
        })
    }

    /// Renders a conversation; `add_generation_prompt` appends the assistant header.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let json: Vec<Json> = messages
            .iter()
            .map(|m| serde_json::to_value(m).expect("plain struct"))
            .collect();
        self.render_json(&json, None, add_generation_prompt)
    }

    /// Renders arbitrary JSON messages (tool calls and all) and optional tool definitions.
    pub fn render_json(
        &self,
        messages: &[Json],
        tools: Option<&[Json]>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let tmpl = self.env.get_template("chat").expect("added in new");
        let mut ctx: std::collections::BTreeMap<String, Value> = self
            .special_tokens
            .iter()
            .map(|(name, token)| (name.clone(), Value::from(token.as_str())))
            .collect();
        ctx.insert("messages".into(), Value::from(Serde(messages)));
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        );
        ctx.insert(
            "tools".into(),
            tools
                .map(|t| Value::from(Serde(t)))
                .unwrap_or(Value::UNDEFINED),
        );
        tmpl.render(ctx)
            .map_err(|e| Error::Template(format!("{}: {}", self.origin.display(), describe(&e))))
    }
}

fn describe(e: &minijinja::Error) -> String {
    let mut s = e.to_string();
    if let Some(line) = e.line() {
        s.push_str(&format!(" (template line {line})"));
    }
    s
}

fn special_tokens(config: &Json) -> Vec<(String, String)> {
    ["bos_token", "eos_token", "pad_token", "unk_token"]
        .iter()
        .filter_map(|k| {
            let v = config.get(*k)?;
            let s = v
                .as_str()
                .or_else(|| v.get("content").and_then(Json::as_str))?;
            Some((k.to_string(), s.to_string()))
        })
        .collect()
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent)`,
/// i.e. `", "` and `": "` separators, keys in insertion order, non-ASCII kept.
fn python_tojson(
    value: Value,
    indent: Option<Value>,
) -> std::result::Result<Value, minijinja::Error> {
    let json: Json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = Vec::new();
    let indent = indent.and_then(|v| v.as_usize());
    match indent {
        Some(n) => {
            let pad = " ".repeat(n);
            let mut ser = serde_json::Serializer::with_formatter(
                &mut out,
                serde_json::ser::PrettyFormatter::with_indent(pad.as_bytes()),
            );
            serde::Serialize::serialize(&json, &mut ser).expect("in-memory write");
        }
        None => {
            let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
            serde::Serialize::serialize(&json, &mut ser).expect("in-memory write");
        }
    }
    Ok(Value::from_safe_string(
        String::from_utf8(out).expect("serde_json writes UTF-8"),
    ))
}

/// serde_json formatter with Python's default separators.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_trim_and_python_json() {
        let src = "{% for m in messages %}\n  {{- m.role }}:{{ m.content }}|{% endfor %}{{ {'a': 1, 'b': [1, 2]} | tojson }}";
        let t = ChatTemplate::new(src.into(), "t".into(), vec![]).unwrap();
        let out = t.render(&[ChatMessage::new("user", "hi")], false).unwrap();
        assert_eq!(out, "user:hi|{\"a\": 1, \"b\": [1, 2]}");
    }

    #[test]
    fn raise_exception_is_an_error_naming_the_template() {
        let t = ChatTemplate::new(
            "{{ raise_exception('no system role') }}".into(),
            "tc.json".into(),
            vec![],
        )
        .unwrap();
        let err = t.render(&[], false).unwrap_err().to_string();
        assert!(
            err.contains("no system role") && err.contains("tc.json"),
            "{err}"
        );
    }

    #[test]
    fn syntax_error_is_reported() {
        let err = ChatTemplate::new("{% for %}".into(), "bad.jinja".into(), vec![])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("bad.jinja"), "{err}");
    }
}
