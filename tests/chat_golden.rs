//! Chat templates and tokenisation against transformers' `apply_chat_template` and tokenizer:
//! the rendered text must be identical, and so must its token ids.

use arwkv::chat::ChatTemplate;
use arwkv::tokenizer::TextTokenizer;
use arwkv_tests::{golden, ids, qwen2_fixtures};

#[test]
fn qwen25_template_renders_exactly_as_transformers() {
    for dir in qwen2_fixtures() {
        let template = ChatTemplate::from_model_dir(&dir)
            .unwrap()
            .expect("fixture has a chat template");
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
        let g = golden(&dir);
        let cases = g["chat"].as_array().unwrap();
        assert!(cases.len() >= 6);
        for (i, case) in cases.iter().enumerate() {
            let messages = case["messages"].as_array().unwrap();
            let tools = case["tools"].as_array().map(|t| t.as_slice());
            let with_prompt = case["add_generation_prompt"].as_bool().unwrap();
            let text = template.render_json(messages, tools, with_prompt).unwrap();
            assert_eq!(
                text,
                case["text"].as_str().unwrap(),
                "{} case {i} (generation prompt {with_prompt})",
                dir.display()
            );
            let got = tokenizer.encode(&text, false).unwrap();
            assert_eq!(
                got,
                ids(&case["ids"]),
                "{} case {i}: token ids",
                dir.display()
            );
            assert_eq!(
                tokenizer.decode(&got, false).unwrap(),
                text,
                "decode round trip"
            );
        }
    }
}

#[test]
fn both_template_locations_are_read() {
    // One fixture keeps `chat_template.jinja`, the others the `chat_template` key of tokenizer_config.json.
    let origins: Vec<String> = qwen2_fixtures()
        .iter()
        .map(|d| {
            ChatTemplate::from_model_dir(d)
                .unwrap()
                .unwrap()
                .origin
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into()
        })
        .collect();
    assert!(
        origins.iter().any(|o| o == "chat_template.jinja"),
        "{origins:?}"
    );
    assert!(
        origins.iter().any(|o| o == "tokenizer_config.json"),
        "{origins:?}"
    );
}
