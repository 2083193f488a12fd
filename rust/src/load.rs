//! Row normalisation: parse JSON rows (JSONL lines, JSON array items, or table rows that
//! Python serialised as JSONL) in parallel and turn each dataset format into one
//! internal form, so everything downstream sees only three shapes:
//!
//! - chat: `{"messages": [{"role", "content", ...}], "tools"?: [...]}`
//! - text: `{"text": "..."}`
//! - preference: `{"prompt": [msgs], "chosen": [msgs], "rejected": [msgs]}`, or one
//!   labelled completion (KTO's thumbs up/down, TRL's unpaired preference format):
//!   `{"prompt": [msgs], "completion": [msgs], "label": bool}`
//!
//! Bad rows are data, not crashes: each is classified by reason (malformed JSON, missing
//! field, wrong type, unknown role, empty content) and counted with the first few
//! locations, unless the caller asked for `strict`, where the first one is an error
//! naming the file, line and field. Parsing runs with rayon over blocks of lines, so a
//! `limit` stops early instead of parsing a whole corpus to keep its head.

use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;
use serde_json::{Map, Value};

use crate::error::{LadleError, Result};

/// How many locations to keep per bad-row reason.
pub const FIRST_BAD: usize = 5;
/// Lines parsed per parallel block (bounds the work wasted past a `limit`).
const BLOCK: usize = 16_384;

const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Chosen per row from its keys (`ladle dedup`, whose inputs carry no recipe).
    Auto,
    Messages,
    ShareGpt,
    Alpaca,
    PromptCompletion,
    Text,
    Preference,
}

impl std::str::FromStr for Format {
    type Err = LadleError;
    fn from_str(name: &str) -> Result<Self> {
        Ok(match name {
            "auto" => Format::Auto,
            "messages" => Format::Messages,
            "sharegpt" => Format::ShareGpt,
            "alpaca" => Format::Alpaca,
            "prompt_completion" => Format::PromptCompletion,
            "text" => Format::Text,
            "preference" => Format::Preference,
            other => {
                return Err(crate::error::bad_choice(
                    "data format",
                    other,
                    &[
                        "messages",
                        "sharegpt",
                        "alpaca",
                        "prompt_completion",
                        "text",
                        "preference",
                        "auto",
                    ],
                ))
            }
        })
    }
}

impl Format {
    /// The format a row's keys (after column renames) say it is in, for `Format::Auto`.
    fn detect(obj: &Map<String, Value>, opts: &Options) -> std::result::Result<Self, Bad> {
        let has = |name: &str| obj.contains_key(opts.col(name));
        Ok(if has("messages") {
            Format::Messages
        } else if has("conversations") {
            Format::ShareGpt
        } else if has("chosen") || has("rejected") || (has("completion") && has("label")) {
            Format::Preference
        } else if has("completion") {
            Format::PromptCompletion
        } else if has("instruction") || has("output") {
            Format::Alpaca
        } else if has("text") {
            Format::Text
        } else {
            return Err(bad(
                "missing_field",
                "",
                "no known row layout (expected messages, conversations, prompt/chosen/rejected, \
                 prompt/completion, instruction/output or text)",
            ));
        })
    }
}

/// What to do with each row.
#[derive(Debug, Clone)]
pub struct Options {
    pub format: Format,
    /// Format field name -> this file's column name.
    pub columns: HashMap<String, String>,
    /// Role renames applied before validation (added to the format's defaults).
    pub roles: HashMap<String, String>,
    /// System prompt for conversations that have none.
    pub system: Option<String>,
    pub strict: bool,
    /// Keep at most this many good rows.
    pub limit: Option<usize>,
    /// Name used in locations (the file path).
    pub source: String,
    /// What a row number counts: "line" (JSONL), "row" (tables), "item" (JSON arrays).
    pub unit: String,
    /// Added to every row number (a table read in batches numbers rows across batches).
    pub offset: usize,
}

/// One skipped row.
#[derive(Debug, Clone)]
pub struct Bad {
    pub reason: &'static str,
    pub line: usize,
    pub field: String,
    pub message: String,
}

/// Result of normalising one file.
#[derive(Debug, Default)]
pub struct Loaded {
    pub rows: Vec<Value>,
    /// 1-based line/row/item number of each kept row.
    pub lines: Vec<usize>,
    pub bad_counts: BTreeMap<&'static str, usize>,
    /// First [`FIRST_BAD`] bad rows per reason.
    pub bad_first: Vec<Bad>,
}

impl Loaded {
    /// Each kept row as compact JSON text (what the chat encoder parses).
    pub fn json_texts(&self) -> Vec<String> {
        self.rows
            .par_iter()
            .map(|r| serde_json::to_string(r).unwrap_or_default())
            .collect()
    }

    /// The kept rows as JSON lines, one buffer, and the byte offset where each line
    /// ends (after its `\n`). Compact JSON escapes every control character, so a row
    /// never holds a raw newline and the buffer is valid JSONL: prep spools it to disk
    /// as it is instead of holding a Python string per row.
    pub fn to_jsonl(&self) -> (Vec<u8>, Vec<i64>) {
        let texts = self.json_texts();
        let mut buf = Vec::with_capacity(texts.iter().map(|t| t.len() + 1).sum());
        let mut ends = Vec::with_capacity(texts.len());
        for t in &texts {
            buf.extend_from_slice(t.as_bytes());
            buf.push(b'\n');
            ends.push(buf.len() as i64);
        }
        (buf, ends)
    }
}

impl Options {
    fn col<'a>(&'a self, name: &'a str) -> &'a str {
        self.columns.get(name).map(String::as_str).unwrap_or(name)
    }

    /// `file:N` for lines, `file[item N]` / `file[row N]` otherwise (ladle.data.io's form).
    fn location(&self, line: usize) -> String {
        if self.unit == "line" {
            format!("{}:{line}", self.source)
        } else {
            format!("{}[{} {line}]", self.source, self.unit)
        }
    }

    fn role(&self, raw: &str, format: Format) -> String {
        if let Some(r) = self.roles.get(raw) {
            return r.clone();
        }
        if matches!(format, Format::ShareGpt) {
            let mapped = match raw {
                "human" => "user",
                "gpt" => "assistant",
                "observation" | "function" => "tool",
                "function_call" => "assistant",
                other => other,
            };
            return mapped.to_string();
        }
        raw.to_string()
    }
}

fn bad(reason: &'static str, field: &str, message: impl Into<String>) -> Bad {
    Bad {
        reason,
        line: 0,
        field: field.to_string(),
        message: message.into(),
    }
}

type RowResult = std::result::Result<Value, Bad>;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Normalise JSONL bytes (one JSON object per line; blank lines ignored). A UTF-8 byte
/// order mark at the start is skipped (editors on Windows write one; it is not JSON).
pub fn normalize_jsonl(bytes: &[u8], opts: &Options) -> Result<Loaded> {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let lines: Vec<(usize, &[u8])> = bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| l.iter().any(|b| !b.is_ascii_whitespace()))
        .collect();
    collect(&lines, opts, |raw| {
        serde_json::from_slice::<Value>(raw)
            .map_err(|e| bad("malformed_json", "", format!("invalid JSON: {e}")))
    })
}

/// Normalise a JSON document: an array of row objects, else one object per line.
pub fn normalize_json(bytes: &[u8], opts: &Options) -> Result<Loaded> {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'[') {
        return normalize_jsonl(bytes, opts);
    }
    let items: Vec<Value> = serde_json::from_slice(bytes)
        .map_err(|e| LadleError::Data(format!("{}: invalid JSON array: {e}", opts.source)))?;
    // Items are numbered as items, whatever unit the caller guessed.
    let opts = &Options {
        unit: "item".into(),
        ..opts.clone()
    };
    let items: Vec<(usize, &Value)> = items.iter().enumerate().map(|(i, v)| (i + 1, v)).collect();
    collect(&items, opts, |v| Ok((*v).clone()))
}

fn collect<T: Sync>(
    items: &[(usize, T)],
    opts: &Options,
    parse: impl Fn(&T) -> RowResult + Sync,
) -> Result<Loaded> {
    let mut out = Loaded::default();
    let limit = opts.limit.unwrap_or(usize::MAX);
    for block in items.chunks(BLOCK) {
        let results: Vec<RowResult> = block
            .par_iter()
            .map(|(_, raw)| parse(raw).and_then(|v| normalize_row(&v, opts)))
            .collect();
        for ((line, _), res) in block.iter().zip(results) {
            if out.rows.len() >= limit {
                break; // rows past the limit are neither kept nor counted as bad
            }
            let line = line.saturating_add(opts.offset);
            match res {
                Ok(v) => {
                    out.rows.push(v);
                    out.lines.push(line);
                }
                Err(mut b) => {
                    b.line = line;
                    if opts.strict {
                        let field = if b.field.is_empty() {
                            String::new()
                        } else {
                            format!(" field {:?}:", b.field)
                        };
                        return Err(LadleError::Data(format!(
                            "{}:{field} {} ({}; data.strict is on)",
                            opts.location(b.line),
                            b.message,
                            b.reason
                        )));
                    }
                    let count = out.bad_counts.entry(b.reason).or_insert(0);
                    *count += 1;
                    if *count <= FIRST_BAD {
                        out.bad_first.push(b);
                    }
                }
            }
        }
        if out.rows.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// Normalise one parsed row into the internal form.
pub fn normalize_row(row: &Value, opts: &Options) -> RowResult {
    let obj = row
        .as_object()
        .ok_or_else(|| bad("wrong_type", "", "row is not a JSON object"))?;
    let format = match opts.format {
        Format::Auto => Format::detect(obj, opts)?,
        f => f,
    };
    let mut out = Map::new();
    match format {
        Format::Auto => unreachable!("resolved above"),
        Format::Messages | Format::ShareGpt => {
            let default = if format == Format::ShareGpt {
                "conversations"
            } else {
                "messages"
            };
            let field = opts.col(default);
            let msgs = messages(get(obj, field)?, field, opts, format)?;
            out.insert("messages".into(), Value::Array(with_system(msgs, opts)));
        }
        Format::Alpaca => {
            let instruction = string(get(obj, opts.col("instruction"))?, opts.col("instruction"))?;
            let input = match obj.get(opts.col("input")) {
                None | Some(Value::Null) => String::new(),
                Some(v) => string_allow_empty(v, opts.col("input"))?,
            };
            let output = string(get(obj, opts.col("output"))?, opts.col("output"))?;
            let user = if input.trim().is_empty() {
                instruction
            } else {
                format!("{instruction}\n\n{input}")
            };
            let mut msgs = Vec::new();
            if let Some(Value::String(s)) = obj.get(opts.col("system")) {
                if !s.trim().is_empty() {
                    msgs.push(message("system", s));
                }
            }
            msgs.push(message("user", &user));
            msgs.push(message("assistant", &output));
            out.insert("messages".into(), Value::Array(with_system(msgs, opts)));
        }
        Format::PromptCompletion => {
            let mut msgs = turns(obj, "prompt", "user", opts)?;
            msgs.extend(turns(obj, "completion", "assistant", opts)?);
            out.insert("messages".into(), Value::Array(with_system(msgs, opts)));
        }
        Format::Text => {
            let text = string(get(obj, opts.col("text"))?, opts.col("text"))?;
            out.insert("text".into(), Value::String(text));
        }
        Format::Preference if obj.contains_key(opts.col("label")) => {
            // One completion labelled desirable (true) or undesirable (false).
            let label = label(get(obj, opts.col("label"))?, opts.col("label"))?;
            let key = if obj.contains_key(opts.col("prompt"))
                || !obj.contains_key(opts.col("messages"))
            {
                "prompt"
            } else {
                "messages"
            };
            let prompt = turns(obj, key, "user", opts)?;
            let completion = turns(obj, "completion", "assistant", opts)?;
            out.insert("prompt".into(), Value::Array(with_system(prompt, opts)));
            out.insert("completion".into(), Value::Array(completion));
            out.insert("label".into(), Value::Bool(label));
        }
        Format::Preference => {
            let mut chosen = turns(obj, "chosen", "assistant", opts)?;
            let mut rejected = turns(obj, "rejected", "assistant", opts)?;
            let prompt = match obj.get(opts.col("prompt")) {
                Some(v) if !v.is_null() => turns(obj, "prompt", "user", opts)?,
                // Implicit prompt (TRL style): chosen and rejected are whole conversations
                // sharing their opening turns.
                _ => {
                    let n = chosen
                        .iter()
                        .zip(&rejected)
                        .take_while(|(a, b)| a == b)
                        .count();
                    if n == 0 {
                        return Err(bad("missing_field", opts.col("prompt"), "missing prompt"));
                    }
                    rejected.drain(..n);
                    chosen.drain(..n).collect()
                }
            };
            if chosen.is_empty() || rejected.is_empty() {
                return Err(bad(
                    "empty_content",
                    opts.col("chosen"),
                    "empty continuation",
                ));
            }
            out.insert("prompt".into(), Value::Array(with_system(prompt, opts)));
            out.insert("chosen".into(), Value::Array(chosen));
            out.insert("rejected".into(), Value::Array(rejected));
        }
    }
    if let Some(tools) = obj.get(opts.col("tools")) {
        // Tool schemas are never content: JSON text of a list is the list.
        let tools = match tools {
            Value::String(s) if s.trim_start().starts_with('[') => {
                serde_json::from_str(s).unwrap_or_else(|_| tools.clone())
            }
            other => other.clone(),
        };
        match tools {
            Value::Null => {}
            Value::Array(_) => {
                out.insert("tools".into(), tools);
            }
            _ => return Err(bad("wrong_type", opts.col("tools"), "tools must be a list")),
        }
    }
    Ok(Value::Object(out))
}

fn get<'a>(obj: &'a Map<String, Value>, field: &str) -> std::result::Result<&'a Value, Bad> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(bad("missing_field", field, format!("missing {field:?}"))),
        Some(v) => Ok(v),
    }
}

fn string_allow_empty(v: &Value, field: &str) -> std::result::Result<String, Bad> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(bad(
            "wrong_type",
            field,
            format!("{field:?} must be a string"),
        )),
    }
}

fn string(v: &Value, field: &str) -> std::result::Result<String, Bad> {
    let s = string_allow_empty(v, field)?;
    if s.trim().is_empty() {
        return Err(bad("empty_content", field, format!("{field:?} is empty")));
    }
    Ok(s)
}

/// A KTO label: a JSON boolean, or (tables store them as text or numbers) `true`/`false`
/// in any case, `1`/`0`.
fn label(v: &Value, field: &str) -> std::result::Result<bool, Bad> {
    let parsed = match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) if n.as_f64() == Some(1.0) => Some(true),
        Value::Number(n) if n.as_f64() == Some(0.0) => Some(false),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    };
    parsed.ok_or_else(|| {
        bad(
            "wrong_type",
            field,
            format!("{field:?} must be true (desirable) or false (undesirable), got {v}"),
        )
    })
}

fn message(role: &str, content: &str) -> Value {
    let mut m = Map::new();
    m.insert("role".into(), Value::String(role.into()));
    m.insert("content".into(), Value::String(content.into()));
    Value::Object(m)
}

/// Tables (CSV, some Parquet) store message lists as JSON text; accept both. Only a
/// message object (one with a `role` or ShareGPT `from`), or a non-empty list of them, is
/// taken for messages: a reply that happens to BE JSON (`"chosen": "{\"category\": ...}"`
/// or `"completion": "[1, 2]"`) is content and must stay a string.
fn maybe_json(v: &Value) -> Value {
    fn is_message(v: &Value) -> bool {
        matches!(v, Value::Object(o) if o.contains_key("role") || o.contains_key("from"))
    }
    if let Value::String(s) = v {
        let t = s.trim_start();
        if t.starts_with('[') || t.starts_with('{') {
            if let Ok(parsed) = serde_json::from_str::<Value>(s) {
                let is_messages = match &parsed {
                    Value::Array(items) => !items.is_empty() && items.iter().all(is_message),
                    other => is_message(other),
                };
                if is_messages {
                    return parsed;
                }
            }
        }
    }
    v.clone()
}

/// A field that is either a string (one turn with `role`) or a message list.
fn turns(
    obj: &Map<String, Value>,
    name: &str,
    role: &str,
    opts: &Options,
) -> std::result::Result<Vec<Value>, Bad> {
    let field = opts.col(name);
    let v = maybe_json(get(obj, field)?);
    match v {
        Value::Array(_) => messages(&v, field, opts, opts.format),
        Value::Object(_) => messages(&Value::Array(vec![v]), field, opts, opts.format),
        other => Ok(vec![message(role, &string(&other, field)?)]),
    }
}

fn with_system(mut msgs: Vec<Value>, opts: &Options) -> Vec<Value> {
    if let Some(system) = &opts.system {
        let has = msgs
            .first()
            .and_then(|m| m.get("role"))
            .and_then(Value::as_str)
            == Some("system");
        if !has {
            msgs.insert(0, message("system", system));
        }
    }
    msgs
}

fn messages(
    v: &Value,
    field: &str,
    opts: &Options,
    format: Format,
) -> std::result::Result<Vec<Value>, Bad> {
    let v = maybe_json(v);
    let list = v.as_array().ok_or_else(|| {
        bad(
            "wrong_type",
            field,
            format!("{field:?} must be a list of messages"),
        )
    })?;
    if list.is_empty() {
        return Err(bad(
            "empty_content",
            field,
            format!("{field:?} has no messages"),
        ));
    }
    let sharegpt = format == Format::ShareGpt;
    let role_key = opts.col(if sharegpt { "from" } else { "role" });
    let content_key = opts.col(if sharegpt { "value" } else { "content" });
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let m = m
            .as_object()
            .ok_or_else(|| bad("wrong_type", &at, "message is not an object"))?;
        let raw_role = match m.get(role_key) {
            Some(Value::String(s)) => s.as_str(),
            None | Some(Value::Null) => {
                return Err(bad(
                    "missing_field",
                    &format!("{at}.{role_key}"),
                    "missing role",
                ))
            }
            Some(_) => {
                return Err(bad(
                    "wrong_type",
                    &format!("{at}.{role_key}"),
                    "role must be a string",
                ))
            }
        };
        let role = opts.role(raw_role, format);
        if !ROLES.contains(&role.as_str()) {
            return Err(bad(
                "unknown_role",
                &format!("{at}.{role_key}"),
                format!(
                    "unknown role {raw_role:?} (expected system/user/assistant/tool; map others \
                     with `roles`)"
                ),
            ));
        }
        let has_calls = matches!(m.get("tool_calls"), Some(Value::Array(a)) if !a.is_empty());
        let content = match m.get(content_key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => text_parts(parts).ok_or_else(|| {
                bad(
                    "wrong_type",
                    &format!("{at}.{content_key}"),
                    "bad content parts",
                )
            })?,
            None | Some(Value::Null) if has_calls => String::new(),
            None | Some(Value::Null) => {
                return Err(bad(
                    "missing_field",
                    &format!("{at}.{content_key}"),
                    "missing content",
                ))
            }
            Some(_) => {
                return Err(bad(
                    "wrong_type",
                    &format!("{at}.{content_key}"),
                    "content must be a string",
                ))
            }
        };
        if content.trim().is_empty() && !has_calls {
            return Err(bad(
                "empty_content",
                &format!("{at}.{content_key}"),
                "empty content",
            ));
        }
        let mut msg = Map::new();
        msg.insert("role".into(), Value::String(role));
        msg.insert("content".into(), Value::String(content));
        for (k, val) in m {
            if k == role_key || k == content_key || val.is_null() {
                continue;
            }
            if k == "train" && !val.is_boolean() {
                return Err(bad(
                    "wrong_type",
                    &format!("{at}.train"),
                    "train must be true/false",
                ));
            }
            msg.insert(k.clone(), val.clone());
        }
        out.push(Value::Object(msg));
    }
    Ok(out)
}

/// OpenAI content parts: keep the text parts, in order.
fn text_parts(parts: &[Value]) -> Option<String> {
    let mut s = String::new();
    for p in parts {
        match p {
            Value::String(t) => s.push_str(t),
            Value::Object(o) => s.push_str(o.get("text")?.as_str()?),
            _ => return None,
        }
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(format: &str) -> Options {
        Options {
            format: format.parse().unwrap(),
            columns: HashMap::new(),
            roles: HashMap::new(),
            system: None,
            strict: false,
            limit: None,
            source: "f.jsonl".into(),
            unit: "line".into(),
            offset: 0,
        }
    }

    #[test]
    fn jsonl_lines_are_the_json_texts() {
        let data = "{\"text\": \"two\\nlines \\u2028 \\u0000 \u{e9}\"}\n{\"text\": \"b\"}\n";
        let out = normalize_jsonl(data.as_bytes(), &opts("text")).unwrap();
        let (buf, ends) = out.to_jsonl();
        let texts = out.json_texts();
        assert_eq!(ends.len(), 2);
        assert_eq!(buf.iter().filter(|&&b| b == b'\n').count(), 2);
        let mut start = 0;
        for (t, &end) in texts.iter().zip(&ends) {
            let end = end as usize;
            assert_eq!(&buf[start..end - 1], t.as_bytes());
            assert_eq!(buf[end - 1], b'\n');
            start = end;
        }
        assert_eq!(
            texts[0],
            "{\"text\":\"two\\nlines \u{2028} \\u0000 \u{e9}\"}"
        );
    }

    #[test]
    fn messages_and_bad_rows() {
        let data = br#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "train": false}]}
not json

{"messages": [{"role": "wizard", "content": "x"}]}
{"messages": [{"role": "user", "content": " "}]}
{"other": 1}
"#;
        let out = normalize_jsonl(data, &opts("messages")).unwrap();
        assert_eq!(out.rows.len(), 1);
        assert_eq!(out.lines, vec![1]);
        assert_eq!(out.rows[0]["messages"][1]["train"], Value::Bool(false));
        assert_eq!(out.bad_counts["malformed_json"], 1);
        assert_eq!(out.bad_counts["unknown_role"], 1);
        assert_eq!(out.bad_counts["empty_content"], 1);
        assert_eq!(out.bad_counts["missing_field"], 1);
        let lines: Vec<usize> = out.bad_first.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![2, 4, 5, 6]);
        let mut strict = opts("messages");
        strict.strict = true;
        let err = normalize_jsonl(data, &strict).unwrap_err().to_string();
        assert!(err.starts_with("f.jsonl:2:"), "{err}");
    }

    #[test]
    fn labelled_completions() {
        let o = opts("preference");
        let row = serde_json::json!({"prompt": "p", "completion": "c", "label": false});
        let v = normalize_row(&row, &o).unwrap();
        assert_eq!(v["prompt"][0]["role"], "user");
        assert_eq!(v["completion"][0]["role"], "assistant");
        assert_eq!(v["label"], Value::Bool(false));
        assert!(v.get("chosen").is_none());
        // Tables: labels as text or numbers; the prompt as a messages list.
        let row = serde_json::json!({
            "messages": [{"role": "user", "content": "q"}], "completion": "c", "label": "True"});
        let v = normalize_row(&row, &o).unwrap();
        assert_eq!(v["prompt"][0]["content"], "q");
        assert_eq!(v["label"], Value::Bool(true));
        let row = serde_json::json!({"prompt": "p", "completion": "c", "label": 1});
        assert_eq!(normalize_row(&row, &o).unwrap()["label"], Value::Bool(true));
        // Detected without a format; a label that is not a boolean is a bad row.
        let row = serde_json::json!({"prompt": "p", "completion": "c", "label": true});
        assert!(normalize_row(&row, &opts("auto"))
            .unwrap()
            .get("label")
            .is_some());
        let row = serde_json::json!({"prompt": "p", "completion": "c", "label": "maybe"});
        let b = normalize_row(&row, &o).unwrap_err();
        assert_eq!((b.reason, b.field.as_str()), ("wrong_type", "label"));
        assert!(b.message.contains("true (desirable)"), "{}", b.message);
        let row = serde_json::json!({"prompt": "p", "label": true});
        assert_eq!(normalize_row(&row, &o).unwrap_err().field, "completion");
    }

    #[test]
    fn formats() {
        let o = opts("sharegpt");
        let row = serde_json::json!({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]});
        let v = normalize_row(&row, &o).unwrap();
        assert_eq!(v["messages"][1]["role"], "assistant");
        let row = serde_json::json!({"instruction": "do", "input": "this", "output": "done"});
        let v = normalize_row(&row, &opts("alpaca")).unwrap();
        assert_eq!(v["messages"][0]["content"], "do\n\nthis");
        let row = serde_json::json!({"prompt": "p", "chosen": "c", "rejected": "r"});
        let v = normalize_row(&row, &opts("preference")).unwrap();
        assert_eq!(v["chosen"][0]["role"], "assistant");
        let row = serde_json::json!({
            "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "c"}],
            "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}]});
        let v = normalize_row(&row, &opts("preference")).unwrap();
        assert_eq!(v["prompt"][0]["content"], "q");
        assert_eq!(v["rejected"][0]["content"], "r");
        let mut o = opts("prompt_completion");
        o.columns.insert("prompt".into(), "q".into());
        o.system = Some("sys".into());
        let row = serde_json::json!({"q": "p", "completion": "c"});
        let v = normalize_row(&row, &o).unwrap();
        assert_eq!(v["messages"][0]["role"], "system");
        assert_eq!(v["messages"][2]["content"], "c");
    }

    #[test]
    fn json_looking_replies_stay_strings() {
        // A structured-output task: the reply IS a JSON object, written as a string.
        let row =
            serde_json::json!({"prompt": "p", "chosen": "{\"a\": 1}", "rejected": "{\"a\": 2}"});
        let v = normalize_row(&row, &opts("preference")).unwrap();
        assert_eq!(v["chosen"][0]["role"], "assistant");
        assert_eq!(v["chosen"][0]["content"], "{\"a\": 1}");
        // ...while a message list stored as JSON text (CSV) is still parsed.
        let row = serde_json::json!({"prompt": "p", "chosen": "[{\"role\": \"assistant\", \"content\": \"c\"}]", "rejected": "r"});
        let v = normalize_row(&row, &opts("preference")).unwrap();
        assert_eq!(v["chosen"][0]["content"], "c");
    }

    #[test]
    fn limit_and_json_array() {
        let data = br#"[{"text": "a"}, {"text": ""}, {"text": "b"}, {"text": "c"}]"#;
        let mut o = opts("text");
        o.unit = "item".into();
        o.limit = Some(2);
        let out = normalize_json(data, &o).unwrap();
        assert_eq!(out.rows.len(), 2);
        assert_eq!(out.lines, vec![1, 3]);
        assert_eq!(out.bad_first[0].line, 2);
    }

    #[test]
    fn bom_is_skipped_and_items_are_items() {
        let data = b"\xEF\xBB\xBF{\"text\": \"a\"}\n{\"text\": \"b\"}\n";
        let out = normalize_jsonl(data, &opts("text")).unwrap();
        assert_eq!(out.lines, vec![1, 2]);
        let mut strict = opts("text");
        strict.strict = true;
        strict.source = "f.json".into();
        let err = normalize_json(
            b"\xEF\xBB\xBF[{\"text\": \"a\"}, {\"text\": 3.5e999}]",
            &strict,
        );
        assert!(err.is_err());
        let err = normalize_json(b"[{\"text\": \"a\"}, {\"text\": \"\"}]", &strict)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("f.json[item 2]:"), "{err}");
    }

    #[test]
    fn json_list_replies_stay_strings() {
        let row = serde_json::json!({"prompt": "p", "completion": "[1, 2]"});
        let v = normalize_row(&row, &opts("prompt_completion")).unwrap();
        assert_eq!(v["messages"][1]["content"], "[1, 2]");
        let row = serde_json::json!({"prompt": "p", "chosen": "[{\"a\": 1}]", "rejected": "[]"});
        let v = normalize_row(&row, &opts("preference")).unwrap();
        assert_eq!(v["chosen"][0]["content"], "[{\"a\": 1}]");
        assert_eq!(v["rejected"][0]["content"], "[]");
    }

    #[test]
    fn auto_detects_each_row() {
        let o = opts("auto");
        let rows = [
            (
                serde_json::json!({"messages": [{"role": "user", "content": "q"}]}),
                "messages",
            ),
            (
                serde_json::json!({"conversations": [{"from": "human", "value": "q"}]}),
                "messages",
            ),
            (
                serde_json::json!({"prompt": "p", "chosen": "c", "rejected": "r"}),
                "chosen",
            ),
            (
                serde_json::json!({"prompt": "p", "completion": "c"}),
                "messages",
            ),
            (
                serde_json::json!({"instruction": "i", "output": "o"}),
                "messages",
            ),
            (serde_json::json!({"text": "t"}), "text"),
        ];
        for (row, key) in rows {
            let v = normalize_row(&row, &o).unwrap();
            assert!(v.get(key).is_some(), "{row} -> {v}");
        }
        let v = normalize_row(
            &serde_json::json!({"conversations": [{"from": "gpt", "value": "a"}]}),
            &o,
        )
        .unwrap();
        assert_eq!(v["messages"][0]["role"], "assistant");
        assert_eq!(
            normalize_row(&serde_json::json!({"x": 1}), &o)
                .unwrap_err()
                .reason,
            "missing_field"
        );
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn any_json() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::Bool),
                any::<i64>().prop_map(|n| serde_json::json!(n)),
                "[a-z\\[\\]{}\":, ]{0,12}".prop_map(serde_json::Value::String),
                prop::sample::select(vec!["user", "assistant", "system", "tool", "gpt", "human"])
                    .prop_map(|s| serde_json::Value::String(s.into())),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                    prop::collection::btree_map(
                        prop::sample::select(vec![
                            "messages",
                            "role",
                            "content",
                            "text",
                            "prompt",
                            "chosen",
                            "rejected",
                            "completion",
                            "instruction",
                            "input",
                            "output",
                            "conversations",
                            "from",
                            "value",
                            "tools",
                            "train",
                            "tool_calls",
                        ])
                        .prop_map(String::from),
                        inner,
                        0..5,
                    )
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        const FORMATS: [&str; 7] = [
            "auto",
            "messages",
            "sharegpt",
            "alpaca",
            "prompt_completion",
            "text",
            "preference",
        ];

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            // Property: any bytes end in rows + counted skips, or an error; never a panic.
            #[test]
            fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..400),
                                        f in 0usize..7) {
                let o = opts(FORMATS[f]);
                if let Ok(out) = normalize_jsonl(&data, &o) {
                    let bad: usize = out.bad_counts.values().sum();
                    let body = data.strip_prefix(BOM).unwrap_or(&data);
                    let lines = body.split(|&b| b == b'\n')
                        .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace())).count();
                    prop_assert_eq!(out.rows.len() + bad, lines);
                }
                let _ = normalize_json(&data, &o);
            }

            #[test]
            fn random_rows_never_panic(rows in prop::collection::vec(any_json(), 0..8),
                                       f in 0usize..7, strict in any::<bool>()) {
                let mut o = opts(FORMATS[f]);
                o.strict = strict;
                let text: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
                let jsonl = text.join("\n");
                match normalize_jsonl(jsonl.as_bytes(), &o) {
                    Ok(out) => {
                        let bad: usize = out.bad_counts.values().sum();
                        prop_assert_eq!(out.rows.len() + bad, rows.len());
                    }
                    Err(e) => prop_assert!(strict, "non-strict load failed: {e}"),
                }
                let array = serde_json::Value::Array(rows).to_string();
                let _ = normalize_json(array.as_bytes(), &o);
            }
        }

        #[test]
        fn deep_nesting_is_a_counted_skip() {
            let deep = format!(
                "{{\"text\": {}1{}}}\n{{\"text\": \"ok\"}}\n",
                "[".repeat(100_000),
                "]".repeat(100_000)
            );
            let out = normalize_jsonl(deep.as_bytes(), &opts("text")).unwrap();
            assert_eq!(out.rows.len(), 1);
            assert_eq!(out.bad_counts["malformed_json"], 1);
        }
    }
}
