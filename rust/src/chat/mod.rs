//! Chat-template rendering that matches transformers' `apply_chat_template` byte for byte.
//!
//! The template is compiled once with minijinja in an environment that mirrors
//! transformers' sandbox (see [`env`]). Conversations arrive as JSON (one per row), are
//! normalised the way transformers normalises them (keys whose value is null dropped,
//! reasoning fields aliased) and rendered in parallel by the callers.
//!
//! Anything the renderer cannot reproduce is an error carrying the template line
//! ([`LadleError::Template`]); it never renders something different silently.
//! Values print the Python way (`True`, `None`, `['a', 1]`, `1e+20`). Known gap: minijinja
//! has no tuples, so printing `d|items|list` whole gives `[['a', 1]]` where jinja2 gives
//! `[('a', 1)]` (iterating over it, as templates do, is identical).

mod env;
#[cfg(test)]
mod fuzz;
pub mod limits;
mod pyfmt;

use minijinja::value::Value;
use minijinja::Environment;
use serde_json::Value as Json;

use crate::error::{LadleError, Result};

pub use env::strftime;

/// One conversation, normalised for rendering.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// Messages as template values (the Ladle-only `train` key removed).
    pub messages: Vec<Value>,
    /// `role` of each message.
    pub roles: Vec<String>,
    /// Per-message `train` flag (`None` when absent).
    pub train: Vec<Option<bool>>,
    /// `tools` (JSON schemas) or none.
    pub tools: Value,
    /// `documents` or none.
    pub documents: Value,
}

const REASONING_FIELDS: [&str; 3] = ["reasoning_content", "thinking", "reasoning"];

impl Conversation {
    /// Parses one conversation: a JSON list of messages, or an object with `messages`
    /// and optional `tools` / `documents`.
    pub fn from_json(text: &str) -> Result<Self> {
        let json: Json = serde_json::from_str(text)
            .map_err(|e| LadleError::Data(format!("conversation is not valid JSON: {e}")))?;
        Self::from_value(json)
    }

    /// Same as [`Conversation::from_json`] on an already parsed value.
    pub fn from_value(json: Json) -> Result<Self> {
        refuse_sentinels(&json)?;
        let (messages, tools, documents) = match json {
            Json::Array(m) => (m, Json::Null, Json::Null),
            Json::Object(mut o) => {
                let m = match o.remove("messages") {
                    Some(Json::Array(m)) => m,
                    _ => {
                        return Err(LadleError::Data(
                            "conversation object needs a `messages` list".into(),
                        ))
                    }
                };
                (
                    m,
                    o.remove("tools").unwrap_or(Json::Null),
                    o.remove("documents").unwrap_or(Json::Null),
                )
            }
            _ => {
                return Err(LadleError::Data(
                    "a conversation is a list of messages".into(),
                ))
            }
        };
        let mut conv = Conversation {
            messages: Vec::with_capacity(messages.len()),
            roles: Vec::with_capacity(messages.len()),
            train: Vec::with_capacity(messages.len()),
            tools: Value::from_serialize(&tools),
            documents: Value::from_serialize(&documents),
        };
        for (i, m) in messages.into_iter().enumerate() {
            let Json::Object(mut m) = m else {
                return Err(LadleError::Data(format!("message {i} is not an object")));
            };
            // transformers drops keys whose value is None before rendering.
            m.retain(|_, v| !v.is_null());
            let train = match m.shift_remove("train") {
                None => None,
                Some(Json::Bool(b)) => Some(b),
                Some(other) => {
                    return Err(LadleError::Data(format!(
                        "message {i}: `train` must be a bool, got {other}"
                    )))
                }
            };
            let role = match m.get("role") {
                Some(Json::String(r)) => r.clone(),
                _ => {
                    return Err(LadleError::Data(format!(
                        "message {i} has no string `role`"
                    )))
                }
            };
            // transformers' _alias_reasoning_fields.
            let reasoning = REASONING_FIELDS.iter().find_map(|k| m.get(*k).cloned());
            if let Some(r) = reasoning {
                let mut aliased = serde_json::Map::new();
                aliased.insert("thinking".into(), r.clone());
                for (k, v) in m {
                    aliased.insert(k, v);
                }
                aliased.insert("reasoning_content".into(), r);
                m = aliased;
            }
            conv.messages.push(Value::from_serialize(&m));
            conv.roles.push(role);
            conv.train.push(train);
        }
        Ok(conv)
    }
}

/// Refuses a conversation holding the generation sentinels anywhere (keys or strings of
/// any message, tool or document), checked on the decoded strings: a JSON escape such
/// as `"\udb80\udc02"` decodes to U+F0002 and would otherwise forge a mask boundary.
/// Iterative, so a deeply nested value cannot exhaust the stack.
fn refuse_sentinels(json: &Json) -> Result<()> {
    let forged = |s: &str| s.contains([env::GEN_START, env::GEN_END]);
    let mut stack = vec![json];
    while let Some(v) = stack.pop() {
        let bad = match v {
            Json::String(s) => forged(s),
            Json::Array(items) => {
                stack.extend(items);
                false
            }
            Json::Object(map) => {
                stack.extend(map.values());
                map.keys().any(|k| forged(k))
            }
            _ => false,
        };
        if bad {
            return Err(LadleError::Data(
                "conversation holds the private-use characters U+F0002/U+F0003 that Ladle \
                 uses to track {% generation %} blocks; remove them from the row"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// A compiled chat template with its special-token variables.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    special: Vec<(String, Value)>,
    has_generation: bool,
}

/// The rendered text and the byte spans of `{% generation %}` blocks in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    pub generation_spans: Vec<(usize, usize)>,
}

const TEMPLATE_NAME: &str = "chat_template";

impl ChatTemplate {
    /// Compiles `source`. `special_tokens` are the variables transformers passes from the
    /// tokenizer's `special_tokens_map` (`bos_token`, `eos_token`, ...).
    pub fn new(source: &str, special_tokens: &[(String, String)]) -> Result<Self> {
        // Special tokens come from a downloaded tokenizer_config.json: untrusted too.
        if let Some((k, _)) = special_tokens
            .iter()
            .find(|(_, v)| v.contains([env::GEN_START, env::GEN_END]))
        {
            return Err(LadleError::Template(format!(
                "special token {k} holds U+F0002/U+F0003, the characters Ladle uses to track \
                 {{% generation %}} blocks"
            )));
        }
        let (rewritten, has_generation) = env::rewrite_generation_tags(source);
        let mut env = env::new_environment();
        env.add_template_owned(TEMPLATE_NAME, rewritten)
            .map_err(|e| template_error(&e, source))?;
        let special = special_tokens
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
            special,
            has_generation,
        })
    }

    /// The template text as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True when the template marks assistant output with `{% generation %}`.
    pub fn has_generation_markers(&self) -> bool {
        self.has_generation
    }

    /// Renders the whole conversation, as `apply_chat_template(tokenize=False)` does.
    pub fn render(&self, conv: &Conversation, add_generation_prompt: bool) -> Result<String> {
        Ok(self
            .render_prefix(conv, conv.messages.len(), add_generation_prompt)?
            .text)
    }

    /// Renders the first `n` messages, returning the generation spans as well.
    pub fn render_prefix(
        &self,
        conv: &Conversation,
        n: usize,
        add_generation_prompt: bool,
    ) -> Result<Rendered> {
        let mut ctx: Vec<(String, Value)> = Vec::with_capacity(self.special.len() + 4);
        ctx.extend(self.special.iter().cloned());
        ctx.push(("messages".into(), Value::from(conv.messages[..n].to_vec())));
        ctx.push(("tools".into(), conv.tools.clone()));
        ctx.push(("documents".into(), conv.documents.clone()));
        ctx.push((
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        ));
        let ctx = Value::from_iter(ctx);
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| template_error(&e, &self.source))?;
        limits::start_render();
        let mut out = limits::CappedWriter::default();
        if let Err(e) = tmpl.render_captured_to(ctx, &mut out) {
            let e = if out.overflowed {
                limits::output_overflow()
            } else {
                e
            };
            return Err(template_error(&e, &self.source));
        }
        // minijinja writes whole UTF-8 strings, so the bytes are valid text.
        let text = String::from_utf8(out.buf)
            .map_err(|e| LadleError::Template(format!("chat template: {e}")))?;
        if !self.has_generation {
            return Ok(Rendered {
                text,
                generation_spans: Vec::new(),
            });
        }
        extract_generation_spans(&text)
    }
}

/// Removes the generation sentinels from `text` and returns where they were.
fn extract_generation_spans(text: &str) -> Result<Rendered> {
    let mut out = String::with_capacity(text.len());
    let mut spans = Vec::new();
    let mut open: Option<usize> = None;
    for c in text.chars() {
        match c {
            env::GEN_START => {
                if open.is_some() {
                    return Err(LadleError::Template(
                        "chat template: nested {% generation %} blocks".into(),
                    ));
                }
                open = Some(out.len());
            }
            env::GEN_END => match open.take() {
                Some(start) => spans.push((start, out.len())),
                None => {
                    return Err(LadleError::Template(
                        "chat template: a {% generation %} block's output was cut or reordered"
                            .into(),
                    ))
                }
            },
            c => out.push(c),
        }
    }
    if open.is_some() {
        return Err(LadleError::Template(
            "chat template: a {% generation %} block's output was cut or reordered".into(),
        ));
    }
    Ok(Rendered {
        text: out,
        generation_spans: spans,
    })
}

/// Turns a minijinja error into a TemplateError naming the template line.
fn template_error(e: &minijinja::Error, source: &str) -> LadleError {
    let detail = e.detail().unwrap_or("");
    let line = e.line();
    let line_text = line
        .and_then(|n| source.lines().nth(n.saturating_sub(1)))
        .map(|l| l.trim())
        .unwrap_or("");
    let loc = match line {
        Some(n) => format!("chat template line {n}"),
        None => "chat template".to_string(),
    };
    if let Some(msg) = detail.strip_prefix(env::RAISED) {
        return LadleError::Template(format!("{loc}: raise_exception: {msg}"));
    }
    if e.kind() == minijinja::ErrorKind::OutOfFuel {
        return LadleError::Template(format!(
            "{loc}: the render ran past Ladle's budget of {} template instructions (a loop \
             that never ends?) (in `{line_text}`)",
            limits::FUEL
        ));
    }
    let what = if detail.is_empty() {
        e.kind().to_string()
    } else {
        format!("{}: {detail}", e.kind())
    };
    LadleError::Template(format!("{loc}: {what} (in `{line_text}`)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOL: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn conv(j: &str) -> Conversation {
        Conversation::from_json(j).unwrap()
    }

    #[test]
    fn renders_smollm2() {
        let t = ChatTemplate::new(SMOL, &[]).unwrap();
        let c = conv(
            r#"[{"role":"user","content":"hi"},{"role":"assistant","content":"yo","train":false}]"#,
        );
        assert_eq!(c.train, vec![None, Some(false)]);
        let out = t.render(&c, true).unwrap();
        assert!(out.starts_with("<|im_start|>system\nYou are"));
        assert!(out.ends_with("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n<|im_start|>assistant\n"));
    }

    #[test]
    fn whitespace_control_matches_jinja2() {
        let t = ChatTemplate::new(
            "{% for m in messages %}\n  {{ m.content }}\n{% endfor %}\n",
            &[],
        )
        .unwrap();
        let c = conv(r#"[{"role":"user","content":"a"},{"role":"user","content":"b"}]"#);
        // lstrip_blocks removes the indentation before tags, trim_blocks the newline after,
        // the final newline of the template is dropped.
        assert_eq!(t.render(&c, false).unwrap(), "  a\n  b\n");
    }

    #[test]
    fn generation_spans_and_python_printing() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{{ m.role }}:{% if m.role == 'assistant' %}{% generation %}{{ m.content }}!{% endgeneration %}{% else %}{{ m.content }}{% endif %}|{% endfor %}{{ true }}{{ [1, 'a'] }}",
            &[],
        )
        .unwrap();
        let c = conv(r#"[{"role":"user","content":"é"},{"role":"assistant","content":"ok"}]"#);
        let r = t.render_prefix(&c, 2, false).unwrap();
        assert_eq!(r.text, "user:é|assistant:ok!|True[1, 'a']");
        assert_eq!(r.generation_spans, vec![(18, 21)]);
    }

    #[test]
    fn errors_name_the_line() {
        let t = ChatTemplate::new("a\n{{ raise_exception('no system') }}", &[]).unwrap();
        let e = t.render(&conv("[]"), false).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("no system"), "{e}");
        let t = ChatTemplate::new("\n\n{{ messages|nosuchfilter }}", &[]).unwrap();
        let e = t.render(&conv("[]"), false).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("nosuchfilter"), "{e}");
    }

    #[test]
    fn sentinels_are_refused_in_any_encoding() {
        for row in [
            "[{\"role\":\"user\",\"content\":\"a\u{F0002}\"}]".to_string(),
            r#"[{"role":"user","content":"a\udb80\udc02b"}]"#.to_string(),
            r#"[{"role":"user","content":"x","meta":{"k":["\udb80\udc03"]}}]"#.to_string(),
            r#"{"messages":[],"tools":[{"\udb80\udc02":1}]}"#.to_string(),
        ] {
            let e = Conversation::from_json(&row).unwrap_err();
            assert!(matches!(e, LadleError::Data(_)), "{row}: {e}");
        }
        let e = ChatTemplate::new("x", &[("eos_token".into(), "\u{F0003}".into())]);
        assert!(matches!(e, Err(LadleError::Template(_))));
        assert!(Conversation::from_json(r#"[{"role":"user","content":"\udb80\udc01"}]"#).is_ok());
    }

    #[test]
    fn drops_null_keys_and_aliases_reasoning() {
        let c = conv(r#"[{"role":"assistant","content":null,"reasoning":"r"}]"#);
        let t = ChatTemplate::new("{{ messages[0] }}", &[]).unwrap();
        assert_eq!(
            t.render(&c, false).unwrap(),
            "{'thinking': 'r', 'role': 'assistant', 'reasoning': 'r', 'reasoning_content': 'r'}"
        );
    }
}
