//! Property tests of every parser that reads untrusted bytes (docs/SECURITY.md): safetensors headers
//! and shard indices, teacher and student `config.json`, whole model folders, tokenizer and chat
//! template files, run configs and eval task files. Each input is a valid file with random
//! mutations (or plain random bytes); the only property is that loading returns `Ok` or an `Err`
//! and never panics, aborts or hangs. Failing cases proptest finds are kept in
//! `tests/untrusted_inputs.regressions` and replayed first on every run.
//!
//! Bounded for CI: `PROPTEST_CASES` (default below) cases per target; raise it to fuzz longer.

use std::path::{Path, PathBuf};

use arwkv::chat::{ChatMessage, ChatTemplate};
use arwkv::distill::run::RunConfig;
use arwkv::eval::task::{TaskOptions, load_task};
use arwkv::student::ArwkvConfig;
use arwkv::teacher::{PretrainedQwen2, Qwen2Config};
use arwkv::tokenizer::TextTokenizer;
use arwkv::weights::Checkpoint;
use arwkv_tests::fixtures_dir;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use serde_json::{Value, json};

/// Cases per target unless `PROPTEST_CASES` says otherwise (all targets together stay well under a
/// minute on two cores).
const DEFAULT_CASES: u32 = 2000;

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

fn teacher_fixture() -> PathBuf {
    fixtures_dir().join("qwen2").join("tied-gqa2-f32")
}

/// A JSON value a hostile file might hold where another was expected.
fn hostile_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(u64::MAX),
            Just(1 << 60),
            Just(1 << 31),
            Just(1 << 24),
            Just(1 << 16),
            Just(3),
        ]
        .prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        Just(json!(-1)),
        Just(json!(1e308)),
        "[ -~]{0,12}".prop_map(Value::from),
        Just(json!("../../../etc/passwd")),
        Just(json!([])),
        Just(json!([1, 2, 3])),
        Just(json!({})),
        Just(json!({"a": null})),
    ]
}

/// The JSON pointers of `value` down to `depth` levels.
fn pointers(value: &Value, prefix: String, depth: usize, out: &mut Vec<String>) {
    if depth == 0 {
        return;
    }
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v))
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => vec![],
    };
    for (key, child) in children {
        let pointer = format!("{prefix}/{key}");
        out.push(pointer.clone());
        pointers(child, pointer, depth - 1, out);
    }
}

/// One edit of a JSON document: replace the value at a pointer, or delete it.
#[derive(Clone, Debug)]
enum Edit {
    Replace(usize, Value),
    Delete(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(
        prop_oneof![
            4 => (any::<usize>(), hostile_scalar()).prop_map(|(i, v)| Edit::Replace(i, v)),
            1 => any::<usize>().prop_map(Edit::Delete),
        ],
        1..4,
    )
}

/// `base` with `edits` applied (pointer indices taken modulo the document's pointers to `depth`).
fn mutated(base: &Value, edits: &[Edit], depth: usize) -> Value {
    let mut doc = base.clone();
    for edit in edits {
        let mut all = vec![];
        pointers(&doc, String::new(), depth, &mut all);
        if all.is_empty() {
            return doc;
        }
        let (Edit::Replace(i, _) | Edit::Delete(i)) = edit;
        let pointer = all[i % all.len()].clone();
        let (parent, key) = pointer.rsplit_once('/').expect("pointers start with '/'");
        let key = key.replace("~1", "/").replace("~0", "~");
        let Some(parent) = doc.pointer_mut(parent) else {
            continue;
        };
        match (edit, parent) {
            (Edit::Replace(_, v), Value::Object(map)) => {
                map.insert(key, v.clone());
            }
            (Edit::Replace(_, v), Value::Array(items)) => {
                if let Ok(i) = key.parse::<usize>() {
                    items[i] = v.clone();
                }
            }
            (Edit::Delete(_), Value::Object(map)) => {
                map.remove(&key);
            }
            (Edit::Delete(_), Value::Array(items)) => {
                if let Ok(i) = key.parse::<usize>() {
                    items.remove(i);
                }
            }
            _ => {}
        }
    }
    doc
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A copy of the fixture teacher folder with `overrides` (file name → bytes) written over it.
fn teacher_folder(overrides: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(teacher_fixture()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "golden.json" {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    for (name, bytes) in overrides {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    dir
}

/// A safetensors file: an 8-byte little-endian header length, the header, the data.
fn safetensors_bytes(header: &[u8], claimed_len: Option<u64>, data: &[u8]) -> Vec<u8> {
    let mut bytes = claimed_len
        .unwrap_or(header.len() as u64)
        .to_le_bytes()
        .to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(data);
    bytes
}

/// A plausible header: tensors with random dtypes, shapes and offsets.
fn safetensors_header() -> impl Strategy<Value = Value> {
    let dtype = prop::sample::select(vec!["F32", "F16", "BF16", "F64", "I64", "U8", "BOOL", "XX"]);
    let dim = prop_oneof![0u64..6, Just(u64::MAX), Just(1 << 40), Just(1 << 20)];
    let offset = prop_oneof![0u64..64, Just(u64::MAX), Just(1 << 40)];
    let tensor = (
        dtype,
        prop::collection::vec(dim, 0..4),
        offset.clone(),
        offset,
    )
        .prop_map(|(d, shape, a, b)| json!({"dtype": d, "shape": shape, "data_offsets": [a, b]}));
    let name = prop_oneof![
        Just("model.embed_tokens.weight".to_string()),
        Just("model.layers.0.self_attn.q_proj.weight".to_string()),
        Just("model.layers.9999999999.mlp.up_proj.weight".to_string()),
        "[a-z._0-9]{1,24}",
    ];
    prop::collection::btree_map(name, tensor, 0..4).prop_map(|m| json!(m))
}

/// Opens a checkpoint and reads every tensor it lists with its own shape.
fn open_and_read(dir: &Path) {
    let Ok(ck) = Checkpoint::open_dir(dir) else {
        return;
    };
    let _ = ck.check_layer_count(2);
    for name in ck.names() {
        if let Some(shape) = ck.shape(&name)
            && shape
                .iter()
                .try_fold(1usize, |n, d| n.checked_mul(*d))
                .is_some_and(|n| n < 1 << 20)
        {
            let _ = ck.read_f32(&name, &shape);
        }
    }
}

/// Writes `text` as a run config named `name` (its extension picks TOML or JSON), loads and
/// validates it; either may fail, neither may panic.
fn load_and_validate_run_config(name: &str, text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    if let Ok(cfg) = RunConfig::from_file(&path) {
        let _ = cfg.validate();
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn safetensors_files_of_random_bytes_are_refused_cleanly(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.safetensors"), &bytes).unwrap();
        open_and_read(dir.path());
    }

    #[test]
    fn safetensors_headers_with_hostile_shapes_and_offsets_are_refused_cleanly(
        header in safetensors_header(),
        lie in prop_oneof![Just(None), any::<u64>().prop_map(Some), Just(Some(u64::MAX))],
        data in prop::collection::vec(any::<u8>(), 0..96),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let text = serde_json::to_vec(&header).unwrap();
        std::fs::write(dir.path().join("model.safetensors"), safetensors_bytes(&text, lie, &data)).unwrap();
        open_and_read(dir.path());
    }

    #[test]
    fn shard_indices_with_hostile_entries_are_refused_cleanly(
        entries in prop::collection::btree_map(
            "[a-z._0-9]{1,16}",
            prop_oneof![
                Just("model.safetensors".to_string()),
                Just("../model.safetensors".to_string()),
                Just("/etc/passwd".to_string()),
                Just("".to_string()),
                Just(".".to_string()),
                Just("sub/../../x".to_string()),
                "[ -~]{0,16}",
            ],
            0..4,
        ),
        shape in any::<bool>(),
    ) {
        let dir = teacher_folder(&[]);
        let index = if shape { json!({"weight_map": entries}) } else { json!(entries) };
        std::fs::write(dir.path().join("model.safetensors.index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        open_and_read(dir.path());
    }

    #[test]
    fn teacher_configs_with_hostile_values_load_or_are_refused(edits in edits()) {
        let base = read_json(&teacher_fixture().join("config.json"));
        let doc = mutated(&base, &edits, 2);
        if let Ok(cfg) = Qwen2Config::from_value(doc, Path::new("config.json")) {
            let _ = cfg.parameter_count();
            let _ = cfg.to_json();
            let _ = ArwkvConfig::from_teacher(&cfg, true, true).map(|s| s.parameter_count());
        }
    }

    #[test]
    fn student_configs_with_hostile_values_load_or_are_refused(edits in edits()) {
        let teacher = Qwen2Config::from_file(&teacher_fixture().join("config.json")).unwrap();
        let base = ArwkvConfig::from_teacher(&teacher, true, true).unwrap().to_json();
        let doc = mutated(&base, &edits, 3);
        if let Ok(cfg) = ArwkvConfig::from_value(doc, Path::new("config.json")) {
            let _ = cfg.parameter_count();
            let _ = cfg.time_mixer_parameter_count();
            let _ = cfg.num_wkv_heads();
        }
    }

    #[test]
    fn model_folders_with_hostile_config_and_settings_load_or_are_refused(
        config_edits in edits(),
        generation_edits in edits(),
        tokenizer_config_edits in edits(),
        which in 0usize..3,
    ) {
        let fixture = teacher_fixture();
        let file = ["config.json", "generation_config.json", "tokenizer_config.json"][which];
        let edits = [&config_edits, &generation_edits, &tokenizer_config_edits][which];
        let doc = mutated(&read_json(&fixture.join(file)), edits, 2);
        let dir = teacher_folder(&[(file, serde_json::to_vec(&doc).unwrap())]);
        let device = arwkv::BackendKind::Cpu.device().unwrap();
        if let Ok(teacher) = PretrainedQwen2::load(&dir.path().to_string_lossy(), &device) {
            let _ = teacher.stop_ids();
            if let Ok(tokenizer) = teacher.tokenizer() {
                let _ = tokenizer.encode("hello there", false);
            }
        }
    }

    #[test]
    fn tokenizer_files_with_hostile_values_load_or_are_refused(
        edits in edits(),
        text in "\\PC{0,40}",
        ids in prop::collection::vec(any::<u32>(), 0..8),
    ) {
        let base = read_json(&teacher_fixture().join("tokenizer.json"));
        let doc = mutated(&base, &edits, 3);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
        if let Ok(tokenizer) = TextTokenizer::from_file(&path) {
            if let Ok(encoded) = tokenizer.encode(&text, true) {
                let _ = tokenizer.decode(&encoded, false);
            }
            let _ = tokenizer.decode(&ids, true);
        }
    }

    #[test]
    fn chat_templates_of_random_jinja_compile_and_render_or_are_refused(
        pieces in prop::collection::vec(
            prop_oneof![
                Just("{% for m in messages %}".to_string()),
                Just("{% endfor %}".to_string()),
                Just("{{ m['content'] }}".to_string()),
                Just("{{ m.role | upper }}".to_string()),
                Just("{% if add_generation_prompt %}".to_string()),
                Just("{% endif %}".to_string()),
                Just("{{ raise_exception('no') }}".to_string()),
                Just("{{ messages[99].content }}".to_string()),
                Just("{{ tools | tojson }}".to_string()),
                Just("{{ m.content.split('x')[5] }}".to_string()),
                Just("{{ strftime_now('%Y') }}".to_string()),
                Just("{% set x = namespace(a=1) %}".to_string()),
                Just("{{ 1 / 0 }}".to_string()),
                Just("{{".to_string()),
                Just("{%".to_string()),
                "[ -~]{0,10}",
            ],
            0..8,
        ),
        content in "\\PC{0,20}",
        generation_prompt in any::<bool>(),
    ) {
        let source = pieces.concat();
        if let Ok(template) = ChatTemplate::new(source, PathBuf::from("chat_template.jinja"), vec![]) {
            let messages = [ChatMessage::new("user", content.clone()), ChatMessage::new("assistant", content)];
            let _ = template.render(&messages, generation_prompt);
        }
    }

    #[test]
    fn run_configs_with_hostile_values_load_or_are_refused(edits in edits()) {
        let base = json!({
            "stage": "kl",
            "teacher": "x",
            "out": "o",
            "steps": 3,
            "save_every": 2,
            "grad_accum": 1,
            "kl_top_k": 4,
            "data": {"files": ["a.txt"], "context": 32, "batch_size": 2, "pack": true},
            "schedule": {"lr": 0.001, "warmup_steps": 1, "decay": "cosine", "lr_final": 0.0001},
            "optim": {"weight_decay": 0.0, "grad_clip": 1.0},
            "student_options": {"gate": true},
        });
        let doc = mutated(&base, &edits, 3);
        load_and_validate_run_config("run.json", &doc.to_string());
    }

    #[test]
    fn toml_run_configs_with_random_insertions_load_or_are_refused(
        at in any::<usize>(),
        insert in prop_oneof![
            "\\PC{0,12}",
            Just("\n[data]\n".to_string()),
            Just("\nsteps = 18446744073709551615\n".to_string()),
            Just("\nlr = inf\n".to_string()),
            Just("\n[student_options]\nbogus = 1\n".to_string()),
            Just("\"".to_string()),
        ],
    ) {
        let base = "stage = \"align\"\nteacher = \"x\"\nout = \"o\"\nsteps = 3\nsave_every = 2\n\
                    [data]\nfiles = [\"a.txt\"]\ncontext = 32\nbatch_size = 2\n\
                    [schedule]\nlr = 0.001\nwarmup_steps = 1\n";
        let mut text = base.to_string();
        let mut at = at % (text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.insert_str(at, &insert);
        load_and_validate_run_config("run.toml", &text);
    }

    #[test]
    fn run_configs_of_random_text_are_refused_cleanly(text in "\\PC{0,200}") {
        load_and_validate_run_config("run.toml", &text);
    }

    #[test]
    fn task_files_with_hostile_rows_load_or_are_refused(
        rows in prop::collection::vec((0usize..5, edits()), 0..6),
        raw_line in "\\PC{0,30}",
        num_fewshot in 0usize..4,
        limit in prop::option::of(0usize..4),
    ) {
        let templates = [
            json!({"context": "Q:", "choices": ["a", "b"], "answer": 1}),
            json!({"question": "q", "choices": ["a", "b", "c", "d"], "answer": 0, "subject": "s"}),
            json!({"question": "2+2?", "answer": "#### 4"}),
            json!({"prompt": "p", "target": "t"}),
            json!({"ctx": "c", "endings": ["x", "y"], "label": "1"}),
        ];
        let mut text = String::new();
        for (which, edits) in &rows {
            text += &mutated(&templates[*which], edits, 2).to_string();
            text.push('\n');
        }
        text += &raw_line;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("task.jsonl");
        std::fs::write(&path, text).unwrap();
        let options = TaskOptions { num_fewshot, fewshot_file: None, limit };
        let _ = load_task(&path, &options);
    }
}

#[test]
fn a_template_that_would_loop_for_hours_runs_out_of_fuel() {
    let source = "{% for i in range(99999) %}{% for j in range(99999) %}.{% endfor %}{% endfor %}";
    let template =
        ChatTemplate::new(source.into(), PathBuf::from("chat_template.jinja"), vec![]).unwrap();
    let started = std::time::Instant::now();
    let e = template
        .render(&[ChatMessage::new("user", "hi")], true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("fuel"), "{e}");
    assert!(
        started.elapsed().as_secs() < 30,
        "bounded: {:?}",
        started.elapsed()
    );
}
