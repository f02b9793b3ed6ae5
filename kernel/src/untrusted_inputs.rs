//! Property tests of what the kernel reads from outside (docs/SECURITY.md): Jupyter messages off the
//! wire (signed and unsigned frames, malformed JSON, wrong types), the code and history queries in
//! their content, and notebook files given to `run` and `export`. The property: every input gets
//! `Ok` or an error and nothing panics or hangs. Failing cases are kept in
//! `src/untrusted_inputs.regressions` and replayed first; `PROPTEST_CASES` raises the count.

use std::path::Path;

use jupyter_zmq_client::connection::RawMessage;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use ring::hmac;
use serde_json::{Value, json};

use crate::notebook::notebook_file::Notebook;
use crate::{
    jupyter::completeness, jupyter::history, jupyter::wire, notebook::cell_code, notebook::export,
    notebook::parameters,
};

/// Cases per target unless `PROPTEST_CASES` says otherwise.
const DEFAULT_CASES: u32 = 1000;

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        max_shrink_iters: 256,
        ..Config::default()
    }
}

const KEY: &str = "a-connection-file-key";
const DELIMITER: &[u8] = b"<IDS|MSG>";

/// A JSON value of any shape, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4).prop_map(|m| json!(m)),
        ]
    })
}

/// Content for `msg_type`: a valid one with some keys replaced by anything, or anything at all.
fn content() -> impl Strategy<Value = (String, Value)> {
    let msg_type = prop::sample::select(vec![
        "execute_request",
        "complete_request",
        "inspect_request",
        "is_complete_request",
        "history_request",
        "kernel_info_request",
        "comm_info_request",
        "comm_open",
        "comm_msg",
        "shutdown_request",
        "interrupt_request",
        "input_reply",
        "unknown_request",
        "",
    ]);
    let valid = json!({
        "code": "let x = 1;", "silent": false, "store_history": true, "user_expressions": {},
        "allow_stdin": false, "stop_on_error": true, "cursor_pos": 3, "detail_level": 0,
        "hist_access_type": "search", "pattern": "l*", "n": 3, "unique": true, "output": false,
        "raw": true, "session": 0, "start": -2, "stop": 5, "restart": false,
        "comm_id": "c", "target_name": "t", "data": {}, "value": "v",
    });
    let replaced = prop::collection::vec(("[a-z_]{1,16}", any_json()), 0..4);
    (
        msg_type,
        prop_oneof![
            3 => replaced.prop_map(move |edits| {
                let mut doc = valid.clone();
                for (k, v) in edits {
                    doc[k] = v;
                }
                doc
            }),
            1 => any_json(),
        ],
    )
        .prop_map(|(t, c)| (t.to_string(), c))
}

fn header(msg_type: &str) -> Value {
    json!({
        "msg_id": "m", "session": "s", "username": "u", "date": "2026-12-02T00:00:00Z",
        "msg_type": msg_type, "version": "5.3",
    })
}

/// One part of a message: its JSON, or raw bytes that may not be JSON at all.
fn part(json: Value) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => Just(serde_json::to_vec(&json).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..24),
        1 => any_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ]
}

fn sign(parts: &[Vec<u8>]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, KEY.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts.iter().take(4) {
        ctx.update(p);
    }
    ctx.sign()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into_bytes()
}

/// Frames as a client (or anyone who can reach the port) might send them.
fn frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
    content().prop_flat_map(|(msg_type, content)| {
        (
            part(header(&msg_type)),
            part(json!({})),
            part(json!({})),
            part(content),
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..8), 0..2),
            0usize..4,
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 0..3),
        )
            .prop_map(|(h, p, m, c, buffers, signature, noise)| {
                let mut jparts = vec![h, p, m, c];
                jparts.extend(buffers);
                let mut frames = vec![b"client-id".to_vec(), DELIMITER.to_vec()];
                frames.push(match signature {
                    0 | 1 => sign(&jparts),
                    2 => b"00".to_vec(),
                    _ => b"not hex".to_vec(),
                });
                frames.extend(jparts);
                if signature == 3 {
                    // Framing noise: frames dropped, added or no delimiter at all.
                    frames.truncate(noise.len() + 1);
                    frames.extend(noise);
                }
                frames
            })
    })
}

/// A small notebook: a parameters cell, code, markdown.
fn notebook_doc() -> Value {
    json!({
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "arwkv", "display_name": "Rust (ARWKV)", "language": "rust"}},
        "cells": [
            {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "execution_count": 1,
             "outputs": [], "source": ["let steps: u64 = 3;\n", "let out_dir = \"runs/x\";"]},
            {"cell_type": "markdown", "metadata": {}, "source": "# Title"},
            {"cell_type": "code", "metadata": {}, "execution_count": 2, "outputs": [],
             "source": "use std::path::PathBuf;\nfn twice(x: u64) -> u64 { 2 * x }\ntwice(steps)"},
            {"cell_type": "code", "metadata": {}, "execution_count": null, "outputs": [],
             "source": ":dep serde = \"1\"\nlet p = PathBuf::from(out_dir);"},
        ]
    })
}

/// `doc` with values at random places replaced by anything (pointer indices modulo the count).
fn mutate(doc: &mut Value, edits: &[(usize, Value)]) {
    fn pointers(v: &Value, prefix: String, out: &mut Vec<String>) {
        let children: Vec<(String, &Value)> = match v {
            Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
            _ => vec![],
        };
        for (k, child) in children {
            let p = format!("{prefix}/{k}");
            out.push(p.clone());
            pointers(child, p, out);
        }
    }
    for (i, value) in edits {
        let mut all = vec![];
        pointers(doc, String::new(), &mut all);
        if all.is_empty() {
            return;
        }
        if let Some(slot) = doc.pointer_mut(&all[i % all.len()]) {
            *slot = value.clone();
        }
    }
}

/// Every read-only use `run` and `export` make of a notebook.
fn use_notebook(nb: &mut Notebook, overrides: &[(String, String)]) {
    for i in 0..nb.len() {
        let _ = (nb.kind(i), nb.source(i), nb.tags(i), nb.execution_count(i));
    }
    let _ = export::check_execution_order(nb);
    if let Ok(program) = export::program(nb) {
        let _ = export::main_rs(&program, Path::new("nb.ipynb"));
    }
    let _ = export::percent_script(nb);
    if let Some(i) = parameters::parameters_cell(nb) {
        let _ = parameters::declared(&nb.source(i));
    }
    let _ = parameters::inject(nb, overrides);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn jupyter_frames_are_decoded_or_refused_never_panic(frames in frames()) {
        let key = Some(hmac::Key::new(hmac::HMAC_SHA256, KEY.as_bytes()));
        let mut frames = frames.into_iter();
        let Some(first) = frames.next() else {
            return Ok(());
        };
        let mut message = zeromq::ZmqMessage::from(first);
        for frame in frames {
            message.push_back(frame.into());
        }
        if let Ok(raw) = RawMessage::from_multipart(message, &key) {
            match wire::decode(raw) {
                Ok(_) => {}
                Err(wire::ReadError::Malformed { request, reason }) => {
                    let _ = wire::malformed_reply(&request, &reason);
                }
                Err(wire::ReadError::Dropped(_)) => {}
            }
        }
    }

    #[test]
    fn message_content_defaults_never_panic((msg_type, mut content) in content()) {
        wire::with_spec_defaults(&msg_type, &mut content);
    }

    #[test]
    fn cell_code_from_a_client_is_classified_never_panics(code in prop_oneof![
        "\\PC{0,60}",
        prop::collection::vec(
            prop::sample::select(vec![
                "fn f() {", "}", "let x = ", "1;", "\"", "'", "r#\"", "/*", "*/", "//", "\n",
                ":dep x", ":timing", "impl", "<", ">", "{", "(", ")", "x.await", "#[derive(Debug)]",
                "macro_rules! m { () => {} }", "use std::{", "'a", "b'\\x", "\\u{110000}",
            ]),
            0..12,
        ).prop_map(|p| p.concat()),
    ]) {
        let _ = completeness::completeness(&code);
        let _ = cell_code::split(&code);
        let _ = cell_code::is_expression(&code);
    }

    #[test]
    fn history_queries_with_hostile_numbers_and_patterns_never_panic(
        start in any::<i64>(),
        stop in any::<i64>(),
        n in any::<usize>(),
        pattern in "[*?a-z]{0,24}",
        unique in any::<bool>(),
    ) {
        let mut h = history::History::default();
        for (i, code) in ["let a = 1;", "a + 1", "", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaab"].iter().enumerate() {
            h.push(i + 1, code, "");
        }
        let _ = h.range(start, stop);
        let _ = h.tail(n);
        let _ = h.search(&pattern, unique, n);
    }

    #[test]
    fn notebooks_with_hostile_values_are_read_run_and_exported_or_refused(
        edits in prop::collection::vec((any::<usize>(), any_json()), 0..4),
        overrides in prop::collection::vec(("[a-z_]{1,8}", "\\PC{0,12}"), 0..3),
        assignment in "\\PC{0,20}",
    ) {
        let mut doc = notebook_doc();
        mutate(&mut doc, &edits);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nb.ipynb");
        std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
        let _ = parameters::parse_assignment(&assignment);
        if let Ok(mut nb) = Notebook::read(&path) {
            use_notebook(&mut nb, &overrides);
        }
    }

    #[test]
    fn notebook_files_of_random_bytes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nb.ipynb");
        std::fs::write(&path, bytes).unwrap();
        if let Ok(mut nb) = Notebook::read(&path) {
            use_notebook(&mut nb, &[]);
        }
    }
}
