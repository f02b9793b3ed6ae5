//! The `arwkv` binary end to end: `logits`, `generate`, `inspect`, model resolution through the
//! Hugging Face cache, and one clear error for every kind of bad input.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen2")
}

fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

fn arwkv(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_arwkv"));
    cmd.args(args)
        .env_remove("ARWKV_DEVICE")
        .env_remove("HF_HUB_OFFLINE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run arwkv")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and expects failure with a message containing every needle.
fn expect_error(args: &[&str], env: &[(&str, &str)], needles: &[&str]) {
    let out = arwkv(args, env);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "expected failure for {args:?}, got success"
    );
    for n in needles {
        assert!(err.contains(n), "stderr for {args:?} lacks `{n}`:\n{err}");
    }
    assert!(
        !err.contains("panicked"),
        "a panic instead of an error:\n{err}"
    );
    assert_eq!(
        err.trim().lines().count(),
        1,
        "one clear error line expected:\n{err}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Rewrites a safetensors file through `edit`, which gets (name → (dtype, shape, bytes)).
fn rewrite(path: &Path, edit: impl FnOnce(&mut HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>)) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut map: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut map);
    let views: Vec<(String, TensorView)> = map
        .iter()
        .map(|(k, (d, s, b))| (k.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn logits_of(out: &Output) -> Vec<Vec<f64>> {
    assert!(out.status.success(), "arwkv failed: {}", stderr(out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn golden_logits(dir: &Path) -> (String, Vec<Vec<f64>>) {
    let g: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let ids: Vec<String> = g["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.to_string())
        .collect();
    let rows = g["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    (ids.join(","), rows)
}

fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f64::max)
}

#[test]
fn logits_command_reproduces_golden_logits() {
    for name in ["tied-gqa2-f32", "untied-gqa4-bf16-sharded", "mha-f16"] {
        let dir = fixture(name);
        let (ids, golden) = golden_logits(&dir);
        let got = logits_of(&arwkv(
            &["logits", "--model", dir.to_str().unwrap(), "--ids", &ids],
            &[],
        ));
        let diff = max_diff(&got, &golden);
        assert!(diff <= 1e-4, "{name}: max |Δlogit| = {diff}");
    }
}

#[test]
fn hub_ids_resolve_through_the_cache_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("home/hub");
    let repo = hub.join("models--tiny-org--tiny-qwen");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd\n").unwrap();
    copy_dir(&fixture("tied-gqa2-f32"), &repo.join("snapshots/0123abcd"));
    let (ids, golden) = golden_logits(&fixture("tied-gqa2-f32"));
    let args = ["logits", "--model", "tiny-org/tiny-qwen", "--ids", &ids];
    // via HF_HUB_CACHE, and via HF_HOME/hub
    let got = logits_of(&arwkv(
        &args,
        &[
            ("HF_HUB_CACHE", hub.to_str().unwrap()),
            ("HF_HUB_OFFLINE", "1"),
        ],
    ));
    assert!(max_diff(&got, &golden) <= 1e-4);
    let home = tmp.path().join("home");
    let got = logits_of(&arwkv(
        &args,
        &[("HF_HOME", home.to_str().unwrap()), ("HF_HUB_CACHE", "")],
    ));
    assert!(max_diff(&got, &golden) <= 1e-4);
}

#[test]
fn cache_miss_offline_says_which_file_and_how_to_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let env = [
        ("HF_HUB_CACHE", tmp.path().to_str().unwrap()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    expect_error(
        &[
            "logits",
            "--model",
            "Qwen/Qwen2.5-0.5B-Instruct",
            "--ids",
            "1",
        ],
        &env,
        &[
            "Qwen/Qwen2.5-0.5B-Instruct",
            "config.json",
            "download Qwen/Qwen2.5-0.5B-Instruct",
        ],
    );
    // A snapshot without its shards names the missing shard.
    let repo = tmp.path().join("models--o--sharded");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "feed").unwrap();
    let snap = repo.join("snapshots/feed");
    copy_dir(&fixture("untied-gqa4-bf16-sharded"), &snap);
    std::fs::remove_file(snap.join("model-00003-of-00006.safetensors")).unwrap();
    expect_error(
        &["logits", "--model", "o/sharded", "--ids", "1"],
        &env,
        &["model-00003-of-00006.safetensors"],
    );
}

#[test]
fn bad_checkpoints_name_file_and_tensor() {
    let base = fixture("tied-gqa2-f32");
    let case = |edit: &dyn Fn(&Path), needles: &[&str]| {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&base, tmp.path());
        edit(tmp.path());
        expect_error(
            &[
                "logits",
                "--model",
                tmp.path().to_str().unwrap(),
                "--ids",
                "1,2",
            ],
            &[],
            needles,
        );
    };
    case(
        &|d| {
            rewrite(&d.join("model.safetensors"), |m| {
                drop(m.remove("model.layers.1.mlp.up_proj.weight"))
            })
        },
        &["model.layers.1.mlp.up_proj.weight", "missing"],
    );
    case(
        &|d| {
            rewrite(&d.join("model.safetensors"), |m| {
                m.insert(
                    "model.layers.0.self_attn.extra.weight".into(),
                    (Dtype::F32, vec![2], vec![0; 8]),
                );
            })
        },
        &[
            "model.safetensors",
            "model.layers.0.self_attn.extra.weight",
            "unexpected",
        ],
    );
    case(
        &|d| {
            rewrite(&d.join("model.safetensors"), |m| {
                m.insert(
                    "model.norm.weight".into(),
                    (Dtype::F32, vec![63], vec![0; 63 * 4]),
                );
            })
        },
        &["model.safetensors", "model.norm.weight", "[63]", "[64]"],
    );
    case(
        &|d| {
            rewrite(&d.join("model.safetensors"), |m| {
                m.insert(
                    "model.norm.weight".into(),
                    (Dtype::I32, vec![64], vec![0; 64 * 4]),
                );
            })
        },
        &["model.norm.weight", "dtype"],
    );
    case(
        &|d| {
            let p = d.join("model.safetensors");
            let bytes = std::fs::read(&p).unwrap();
            std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
        },
        &["model.safetensors", "corrupt or truncated"],
    );
    case(
        &|d| {
            let p = d.join("model.safetensors");
            let mut bytes = std::fs::read(&p).unwrap();
            bytes[8..16].copy_from_slice(b"garbage!");
            std::fs::write(&p, &bytes).unwrap();
        },
        &["model.safetensors", "not a valid safetensors file"],
    );
    case(
        &|d| std::fs::write(d.join("config.json"), "{ \"vocab_size\": 320, ").unwrap(),
        &["config.json", "invalid JSON"],
    );
    case(
        &|d| {
            let p = d.join("config.json");
            let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            v["rope_parameters"] =
                serde_json::json!({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0});
            std::fs::write(&p, v.to_string()).unwrap();
        },
        &["config.json", "rope_parameters", "yarn"],
    );
    case(
        &|d| std::fs::remove_file(d.join("model.safetensors")).unwrap(),
        &["no weights found"],
    );
}

#[test]
fn bad_tokenizer_files_are_named() {
    let base = fixture("untied-gqa4-bf16-sharded");
    let case = |edit: &dyn Fn(&Path), args: &[&str], needles: &[&str]| {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&base, tmp.path());
        edit(tmp.path());
        let mut full = vec![
            "generate",
            "--model",
            tmp.path().to_str().unwrap(),
            "--prompt",
            "hi",
            "--max-new-tokens",
            "2",
        ];
        full.extend_from_slice(args);
        expect_error(&full, &[], needles);
    };
    case(
        &|d| std::fs::write(d.join("tokenizer.json"), "{\"version\": ").unwrap(),
        &[],
        &["tokenizer.json"],
    );
    case(
        &|d| std::fs::remove_file(d.join("tokenizer.json")).unwrap(),
        &[],
        &["tokenizer.json", "no tokenizer"],
    );
    case(
        &|d| std::fs::write(d.join("tokenizer_config.json"), "[1, 2").unwrap(),
        &[],
        &["tokenizer_config.json", "invalid JSON"],
    );
    case(
        &|d| std::fs::write(d.join("tokenizer_config.json"), "{\"chat_template\": 42}").unwrap(),
        &["--chat"],
        &["tokenizer_config.json", "chat_template"],
    );
    case(
        &|d| {
            std::fs::write(
                d.join("tokenizer_config.json"),
                "{\"chat_template\": \"{% for m in messages %}\"}",
            )
            .unwrap()
        },
        &["--chat"],
        &["chat template", "tokenizer_config.json"],
    );
    case(
        &|d| std::fs::write(d.join("tokenizer_config.json"), "{}").unwrap(),
        &["--chat"],
        &["--chat", "has no chat template"],
    );
}

#[test]
fn sharded_index_naming_a_missing_tensor_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("untied-gqa4-bf16-sharded"), tmp.path());
    let p = tmp.path().join("model.safetensors.index.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["weight_map"]["model.layers.9.mlp.up_proj.weight"] =
        "model-00001-of-00006.safetensors".into();
    std::fs::write(&p, v.to_string()).unwrap();
    expect_error(
        &[
            "logits",
            "--model",
            tmp.path().to_str().unwrap(),
            "--ids",
            "1",
        ],
        &[],
        &[
            "model-00001-of-00006.safetensors",
            "model.layers.9.mlp.up_proj.weight",
            "not present",
        ],
    );
}

#[test]
fn bad_arguments_are_clear_errors() {
    let dir = fixture("tied-gqa2-f32");
    let m = dir.to_str().unwrap();
    expect_error(
        &["logits", "--model", m, "--ids", "1,x"],
        &[],
        &["--ids", "`x`"],
    );
    expect_error(
        &["logits", "--model", m, "--ids", "1,400"],
        &[],
        &["token id 400"],
    );
    expect_error(
        &["logits", "--model", "/nonexistent/model", "--ids", "1"],
        &[],
        &["/nonexistent/model"],
    );
    expect_error(
        &["logits", "--model", m, "--ids", "1", "--device", "tpu"],
        &[],
        &["unknown backend `tpu`"],
    );
    if !cfg!(feature = "cuda") {
        expect_error(
            &["logits", "--model", m, "--ids", "1", "--device", "cuda"],
            &[],
            &["--features cuda"],
        );
        expect_error(
            &["logits", "--model", m, "--ids", "1"],
            &[("ARWKV_DEVICE", "cuda")],
            &["--features cuda"],
        );
    }
}

#[test]
fn generate_streams_text_and_honours_chat_and_seed() {
    let m = fixture("tied-gqa2-f32");
    let m = m.to_str().unwrap();
    let out = arwkv(
        &[
            "generate",
            "--model",
            m,
            "--prompt",
            "The quick brown fox",
            "--max-new-tokens",
            "12",
            "--ids-only",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let g: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tied-gqa2-f32").join("golden.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(v["prompt_ids"], g["greedy"]["prompt_ids"]);
    let sampled = |seed: &str| {
        let out = arwkv(
            &[
                "generate",
                "--model",
                m,
                "--prompt",
                "Hello",
                "--chat",
                "--temperature",
                "1.0",
                "--top-p",
                "0.9",
                "--seed",
                seed,
                "--max-new-tokens",
                "8",
            ],
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(sampled("3"), sampled("3"), "same seed, same text");
    assert!(!sampled("3").trim().is_empty());
}

#[test]
fn inspect_summarises_the_model() {
    let out = arwkv(
        &[
            "inspect",
            "--model",
            fixture("untied-gqa4-bf16-sharded").to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "3 layers",
        "hidden 64",
        "GQA 4:1",
        "BF16",
        "6 file(s)",
        "separate LM head",
        "ChatML",
        "parameters:",
    ] {
        assert!(
            text.contains(needle),
            "inspect output lacks `{needle}`:\n{text}"
        );
    }
}

#[test]
fn build_student_then_generate_logits_and_inspect_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("student");
    let teacher = fixture("tied-gqa2-f32");
    let out = arwkv(
        &[
            "build-student",
            "--teacher",
            teacher.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--seed",
            "5",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let student = out_dir.to_str().unwrap();

    let sample = |seed: &str| {
        let out = arwkv(
            &[
                "generate",
                "--model",
                student,
                "--prompt",
                "Hello",
                "--max-new-tokens",
                "6",
                "--temperature",
                "0.9",
                "--seed",
                seed,
                "--ids-only",
            ],
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["generated_ids"].clone()
    };
    let first = sample("1");
    assert_eq!(first, sample("1"), "the same seed generates the same ids");
    assert!(!first.as_array().unwrap().is_empty());

    // Greedy generation continues exactly as the parallel forward's argmax says.
    let out = arwkv(
        &[
            "generate",
            "--model",
            student,
            "--prompt",
            "Hello",
            "--max-new-tokens",
            "3",
            "--ids-only",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut ids: Vec<u64> = v["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    let generated: Vec<u64> = v["generated_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    for &next in &generated {
        let joined: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        let out = arwkv(
            &["logits", "--model", student, "--ids", &joined.join(",")],
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let logits = logits_of(&out);
        let last = logits.last().unwrap();
        let argmax = (0..last.len())
            .max_by(|&a, &b| last[a].total_cmp(&last[b]).then(b.cmp(&a)))
            .unwrap() as u64;
        assert_eq!(argmax, next, "greedy id vs parallel-forward argmax");
        ids.push(next);
    }

    let out = arwkv(&["inspect", "--model", student], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rwkv_hybrid") && text.contains("RWKV-7, 1 heads of 64"),
        "{text}"
    );

    expect_error(
        &[
            "build-student",
            "--teacher",
            fixture("mha-f16").to_str().unwrap(),
            "--out",
            dir.path().join("x").to_str().unwrap(),
        ],
        &[],
        &["hidden_size 48 is not a multiple of the RWKV head size 64"],
    );
}

#[test]
fn dpo_pairs_take_the_answer_as_chosen_and_a_student_sample_as_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let student = dir.path().join("student");
    let out = arwkv(
        &[
            "build-student",
            "--teacher",
            fixture("tied-gqa2-f32").to_str().unwrap(),
            "--out",
            student.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"}]}\n\
         {\"prompt\": \"Count\", \"answer\": \"1 2 3\"}\n\
         {\"prompt\": \"no answer\"}\n",
    )
    .unwrap();
    let pairs = dir.path().join("pairs.jsonl");
    let run = || {
        arwkv(
            &[
                "dpo-pairs",
                "--student",
                student.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
                "--out",
                pairs.to_str().unwrap(),
                "--max-new-tokens",
                "5",
            ],
            &[],
        )
    };
    let out = run();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("skipped 1 bad row(s)") && stderr(&out).contains("in.jsonl:3"));
    let text = std::fs::read_to_string(&pairs).unwrap();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["prompt"], "Hi");
    assert_eq!(rows[0]["chosen"], "Hello!");
    assert_eq!(rows[1]["chosen"], "1 2 3");
    assert!(rows.iter().all(|r| r["rejected"].is_string()));
    assert!(run().status.success());
    assert_eq!(
        std::fs::read_to_string(&pairs).unwrap(),
        text,
        "the same seed samples the same answers"
    );
}

#[test]
fn corpus_tokenizer_and_pretraining_make_a_teacher_that_loads_like_a_hub_qwen() {
    let dir = tempfile::tempdir().unwrap();
    let texts = dir.path().join("texts");
    std::fs::create_dir_all(&texts).unwrap();
    let play = |title: &str| {
        let mut s = format!(
            "The Project Gutenberg EBook of {title}\r\n*** START OF THIS PROJECT GUTENBERG EBOOK ***\r\n{title}\r\n\r\n"
        );
        for i in 0..60 {
            s.push_str(&format!(
                "Ham.\r\nTo be, or not to be, that is the question {i}.\r\n\r\n"
            ));
        }
        s + "*** END OF THIS PROJECT GUTENBERG EBOOK ***\r\nLicence.\r\n"
    };
    for name in ["hamlet", "lear", "tempest"] {
        std::fs::write(texts.join(format!("{name}_gut.txt")), play(name)).unwrap();
    }
    std::fs::write(texts.join("hamlet_gut_f.txt"), "folio, not used").unwrap();
    let corpus = dir.path().join("corpus");
    let out = arwkv(
        &[
            "corpus",
            "--from",
            texts.to_str().unwrap(),
            "--out",
            corpus.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let train = std::fs::read_to_string(corpus.join("train.txt")).unwrap();
    assert!(train.starts_with("hamlet\n") && train.contains("lear\n"));
    assert!(!train.to_lowercase().contains("gutenberg") && !train.contains("Licence"));
    assert!(
        std::fs::read_to_string(corpus.join("heldout.txt"))
            .unwrap()
            .starts_with("tempest")
    );

    let teacher = dir.path().join("teacher");
    let out = arwkv(
        &[
            "train-tokenizer",
            "--corpus",
            corpus.join("train.txt").to_str().unwrap(),
            "--vocab-size",
            "300",
            "--out",
            teacher.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let config = dir.path().join("pretrain.toml");
    std::fs::write(
        &config,
        format!(
            "tokenizer = \"{t}\"\nout = \"{t}\"\nsteps = 3\n[model]\nhidden_size = 64\n\
             intermediate_size = 96\nnum_hidden_layers = 2\nnum_attention_heads = 2\n\
             num_key_value_heads = 1\n[data]\nfiles = [\"{c}\"]\ncontext = 32\nbatch_size = 2\n",
            t = teacher.display(),
            c = corpus.join("train.txt").display()
        ),
    )
    .unwrap();
    let out = arwkv(&["pretrain", "--config", config.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.path().join("teacher-run/metrics.jsonl").is_file());
    let out = arwkv(&["inspect", "--model", teacher.to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("Qwen2ForCausalLM") && text.contains("(ChatML)"),
        "{text}"
    );
    let out = arwkv(
        &[
            "generate",
            "--model",
            teacher.to_str().unwrap(),
            "--prompt",
            "To be",
            "--chat",
            "--max-new-tokens",
            "4",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn eval_compares_teacher_and_student_in_a_table_and_names_bad_rows() {
    let teacher = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tiny/teacher");
    let dir = tempfile::tempdir().unwrap();
    let student = dir.path().join("student");
    let out = arwkv(
        &[
            "build-student",
            "--teacher",
            teacher.to_str().unwrap(),
            "--out",
            student.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = dir.path().join("heldout.txt");
    let heldout = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tiny/corpus/heldout.txt"),
    )
    .unwrap();
    std::fs::write(&text, &heldout[..6000]).unwrap();
    let mc = dir.path().join("mmlu.jsonl");
    std::fs::write(
        &mc,
        "{\"question\": \"Who wrote The Tempest?\", \"choices\": [\"Shakespeare\", \"Milton\"], \"answer\": 0}\n\
         {\"question\": \"broken\", \"choices\": [\"a\"], \"answer\": 0}\n\
         {\"question\": \"Who is Prospero's daughter?\", \"choices\": [\"Juliet\", \"Miranda\"], \"answer\": \"B\"}\n",
    )
    .unwrap();
    let json = dir.path().join("report.json");
    let out = arwkv(
        &[
            "eval",
            "--model",
            student.to_str().unwrap(),
            "--teacher",
            teacher.to_str().unwrap(),
            "--task",
            text.to_str().unwrap(),
            "--task",
            mc.to_str().unwrap(),
            "--context",
            "128",
            "--json",
            json.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("| model | heldout (perplexity) | mmlu (acc) | tokens/s |"),
        "{table}"
    );
    assert!(
        table.contains("| teacher |") && table.contains("| model |"),
        "{table}"
    );
    assert!(
        table.contains("kl_vs_first") && table.contains("top5_agreement"),
        "{table}"
    );
    assert!(
        table.contains("mmlu.jsonl:2: `choices` needs at least two options"),
        "{table}"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["tasks"][1]["items"], 2);
    expect_error(
        &[
            "eval",
            "--model",
            teacher.to_str().unwrap(),
            "--task",
            "/nonexistent/task.jsonl",
        ],
        &[],
        &["/nonexistent/task.jsonl"],
    );
}
