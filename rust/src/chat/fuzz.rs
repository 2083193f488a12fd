//! Bounded fuzzing of the chat renderer and the mask encoder (issue #11, "Fuzzing").
//!
//! Random templates (assembled from Jinja fragments, plus raw fragments of Jinja syntax
//! that rarely parse) and random conversations (odd roles, unicode, empty and large
//! content, null and list content, tools, generation sentinels) go through compile,
//! render and encode. Property: every input ends in a value or a Ladle error (Template,
//! Data or Tokenizer), never a panic; results are well formed. Sizes are bounded (loops
//! over at most 3 x 7 items, 96 cases per property) so it runs in seconds in CI.

use proptest::prelude::*;
use serde_json::json;

use super::{ChatTemplate, Conversation};
use crate::error::LadleError;
use crate::tokenize::mask::{ChatEncoder, TrainOn, IGNORE};
use crate::tokenize::TextTokenizer;

/// A tiny word-level tokenizer: real offsets through the `tokenizers` crate, no files.
fn tokenizer() -> TextTokenizer {
    let spec = json!({
        "version": "1.0",
        "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "a": 1, "<eot>": 2}, "unk_token": "[UNK]"},
        "pre_tokenizer": {"type": "Whitespace"},
        "added_tokens": [{"id": 2, "content": "<eot>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}]
    });
    TextTokenizer::from_bytes(spec.to_string().as_bytes()).expect("tiny tokenizer")
}

fn fragment() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        "[a-z<>|: \n]{0,8}".prop_map(|s| s.replace('{', "")),
        Just("{{ m.content }}".to_string()),
        Just("{{ m['role'] }}".to_string()),
        Just("{{ m.content|trim }}".to_string()),
        Just("{{ m }}".to_string()),
        Just("{{ messages|tojson }}".to_string()),
        Just("{{ tools|tojson(indent=2) }}".to_string()),
        Just("{{ m.content|tojson(indent=99) }}".to_string()),
        Just("{{ eos_token }}".to_string()),
        Just("{{ raise_exception('no') }}".to_string()),
        Just("{% set ns = namespace(a=1) %}{% set ns.me = ns %}{{ ns }}".to_string()),
        Just("{% set ns = namespace(a=1) %}{% set ns.me = ns %}{{ ns ~ m.content }}".to_string()),
        Just("{{ [m, messages]|sort|length }}{{ messages|unique|list|length }}".to_string()),
        Just("{{ (m.content * 3)[1:] }}".to_string()),
        Just("{{ range(7)|join(',') }}".to_string()),
        Just("{{ m.tool_calls[0].function.name }}".to_string()),
        Just("{% if add_generation_prompt %}<|assistant|>\n{% endif %}".to_string()),
        // Raw syntax pieces, mostly unparsable.
        Just("{%".to_string()),
        Just("}}".to_string()),
        Just("{# c".to_string()),
        Just("{% endfor %}".to_string()),
        Just("{% generation %}".to_string()),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(|v| v.concat()),
            inner
                .clone()
                .prop_map(|b| format!("{{% for m in messages %}}{b}{{% endfor %}}")),
            inner.clone().prop_map(|b| format!(
                "{{% for m in messages %}}{{% if m.role == 'assistant' %}}{{% generation %}}{b}\
                 {{% endgeneration %}}{{% else %}}{{{{ m.content }}}}{{% endif %}}{{% endfor %}}"
            )),
            inner
                .clone()
                .prop_map(|b| format!("{{% for i in range(3) %}}{b}{{% endfor %}}")),
            inner.prop_map(|b| format!("{{% if m is defined %}}{b}{{% endif %}}\n    ")),
        ]
    })
}

fn text() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        4 => "\\PC{0,12}".prop_map(serde_json::Value::from),
        1 => Just(json!("")),
        1 => Just(json!(" a <eot> \n")),
        1 => (1usize..3000).prop_map(|n| json!("a ".repeat(n))),
        1 => Just(json!(null)),
        1 => Just(json!([{"type": "text", "text": "a"}])),
        1 => Just(json!("a\u{F0002}")),
        1 => Just(json!({"nested": [[[1]]]})),
    ]
}

fn message() -> impl Strategy<Value = serde_json::Value> {
    let role = prop_oneof![
        Just(json!("user")),
        Just(json!("assistant")),
        Just(json!("assistant")),
        Just(json!("system")),
        Just(json!("tool")),
        Just(json!("")),
        Just(json!("ρόλος 🤖")),
        Just(json!(3)),
    ];
    (role, text(), any::<u8>()).prop_map(|(role, content, flags)| {
        let mut m = json!({"role": role, "content": content});
        if flags & 1 == 1 {
            m["train"] = json!(flags & 2 == 2);
        }
        if flags & 4 == 4 {
            m["tool_calls"] =
                json!([{"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]);
        }
        m
    })
}

fn conversation() -> impl Strategy<Value = String> {
    (prop::collection::vec(message(), 0..7), any::<bool>()).prop_map(|(msgs, tools)| {
        if tools {
            json!({"messages": msgs, "tools": [{"type": "function", "function": {"name": "f"}}]})
                .to_string()
        } else {
            serde_json::Value::from(msgs).to_string()
        }
    })
}

fn ladle_error(e: &LadleError) -> bool {
    matches!(
        e,
        LadleError::Template(_) | LadleError::Data(_) | LadleError::Tokenizer(_)
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_templates_and_conversations_end_in_a_result_or_an_error(
        template in fragment(),
        conv in conversation(),
        agp in any::<bool>(),
    ) {
        let special = [("eos_token".to_string(), "<eot>".to_string())];
        let tmpl = match ChatTemplate::new(&template, &special) {
            Ok(t) => t,
            Err(e) => {
                prop_assert!(ladle_error(&e), "{e}");
                return Ok(());
            }
        };
        let enc = ChatEncoder::new(tmpl, tokenizer());
        for r in enc.render_batch_json(std::slice::from_ref(&conv), agp) {
            if let Err(e) = r {
                prop_assert!(ladle_error(&e), "{e}");
            }
        }
        for mode in [TrainOn::Assistant, TrainOn::Last, TrainOn::All] {
            match enc.encode_batch_json(std::slice::from_ref(&conv), mode).remove(0) {
                Ok(e) => {
                    prop_assert_eq!(e.input_ids.len(), e.labels.len());
                    let trained = e.labels.iter().filter(|&&l| l != IGNORE).count();
                    prop_assert_eq!(trained, e.n_trained);
                }
                Err(e) => prop_assert!(ladle_error(&e), "{e}"),
            }
            if let Ok(c) = Conversation::from_json(&conv) {
                if let Ok(loc) = enc.locate(&c, mode) {
                    for w in loc.spans.windows(2) {
                        prop_assert!(w[0].1 <= w[1].0, "spans overlap: {:?}", loc.spans);
                    }
                    for &(s, e) in &loc.spans {
                        prop_assert!(s <= e && e <= loc.text.len());
                        prop_assert!(loc.text.is_char_boundary(s) && loc.text.is_char_boundary(e));
                    }
                }
            }
        }
    }

    #[test]
    fn arbitrary_template_text_never_panics(template in "[{}%#a-z()|'\" .=\n-]{0,60}") {
        if let Ok(t) = ChatTemplate::new(&template, &[]) {
            let conv = Conversation::from_json(r#"[{"role":"user","content":"x"}]"#).unwrap();
            if let Err(e) = t.render(&conv, true) {
                prop_assert!(ladle_error(&e), "{e}");
            }
        }
    }
}
