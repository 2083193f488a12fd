//! Python's text forms of template values: `json.dumps` (for transformers' `tojson`) and
//! `str()`/`repr()` (what jinja2 prints for `{{ value }}`).
//!
//! minijinja prints `true`, `none` and `["a"]` where jinja2, running on Python objects,
//! prints `True`, `None` and `['a']`; chat templates that print a bool or a list would
//! otherwise render differently from transformers without any error.

use minijinja::value::{Value, ValueKind};
use minijinja::{Error, ErrorKind};
use std::fmt::Write;

fn number_str(v: &Value, json: bool) -> Result<String, Error> {
    if v.is_integer() {
        return Ok(v.to_string());
    }
    let f = f64::try_from(v.clone())?;
    Ok(if json {
        crate::pyfloat::json(f)
    } else {
        crate::pyfloat::repr(f)
    })
}

/// Python's `repr(str)`: single quotes unless the text holds `'` and no `"`.
pub fn str_repr(s: &str, out: &mut String) {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c)
            }
            c if !is_printable(c) => {
                let n = c as u32;
                let _ = match n {
                    0..=0xff => write!(out, "\\x{n:02x}"),
                    0x100..=0xffff => write!(out, "\\u{n:04x}"),
                    _ => write!(out, "\\U{n:08x}"),
                };
            }
            c => out.push(c),
        }
    }
    out.push(q);
}

/// Python's `str.isprintable` for one char: false for the Unicode categories Other (C*)
/// and Separator (Z*) except the ASCII space. Non-ASCII chars are looked up in a table
/// built once from onig's `\p{C}` and `\p{Z}`.
fn is_printable(c: char) -> bool {
    let n = c as u32;
    if n < 0x80 {
        return (0x20..0x7f).contains(&n);
    }
    static TABLE: std::sync::OnceLock<Vec<bool>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = vec![true; 0x110000];
        let all: String = (0x80u32..0x110000).filter_map(char::from_u32).collect();
        let re = onig::Regex::new(r"[\p{C}\p{Z}]+").expect("valid class regex");
        for (start, end) in re.find_iter(&all) {
            for ch in all[start..end].chars() {
                table[ch as usize] = false;
            }
        }
        // Surrogates never occur in a Rust string; mark them unprintable like Python.
        for t in &mut table[0xd800..0xe000] {
            *t = false;
        }
        table
    });
    table[n as usize]
}

fn map_items(v: &Value) -> Result<Vec<(Value, Value)>, Error> {
    let mut items = Vec::new();
    for k in v.try_iter()? {
        let item = v.get_item(&k)?;
        items.push((k, item));
    }
    Ok(items)
}

/// Python's `repr()` of a template value (as an element of a printed list or dict).
pub fn repr(v: &Value, out: &mut String) -> Result<(), Error> {
    match v.kind() {
        ValueKind::Undefined => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "printing an undefined value inside a container has no faithful rendering",
            ))
        }
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if v.is_true() { "True" } else { "False" }),
        ValueKind::Number => out.push_str(&number_str(v, false)?),
        ValueKind::String => str_repr(v.as_str().unwrap_or_default(), out),
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (i, item) in v.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr(&item, out)?;
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, (k, item)) in map_items(v)?.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr(&k, out)?;
                out.push_str(": ");
                repr(&item, out)?;
            }
            out.push('}');
        }
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("cannot print a {} value the way Python would", v.kind()),
            ))
        }
    }
    Ok(())
}

/// Python's `str()` of a template value: what jinja2 prints for `{{ value }}`.
pub fn py_str(v: &Value, out: &mut String) -> Result<(), Error> {
    match v.kind() {
        ValueKind::Undefined => {}
        ValueKind::String => out.push_str(v.as_str().unwrap_or_default()),
        _ => repr(v, out)?,
    }
    Ok(())
}

/// Options of Python's `json.dumps` that transformers' `tojson` exposes.
pub struct JsonOpts {
    pub indent: Option<String>,
    pub ensure_ascii: bool,
    pub item_sep: String,
    pub key_sep: String,
    pub sort_keys: bool,
}

fn json_str(s: &str, ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ascii && (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{:04x}", unit);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `json.dumps(v, ...)` (the value has already passed through minijinja).
pub fn json_dumps(v: &Value, o: &JsonOpts, depth: usize, out: &mut String) -> Result<(), Error> {
    let newline = |out: &mut String, d: usize| {
        if let Some(ind) = &o.indent {
            out.push('\n');
            for _ in 0..d {
                out.push_str(ind);
            }
        }
    };
    match v.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&number_str(v, true)?),
        ValueKind::String => json_str(v.as_str().unwrap_or_default(), o.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item_sep);
                }
                newline(out, depth + 1);
                json_dumps(item, o, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let mut items = map_items(v)?;
            if items.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if o.sort_keys {
                items.sort_by(|a, b| a.0.cmp(&b.0));
            }
            out.push('{');
            for (i, (k, item)) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item_sep);
                }
                newline(out, depth + 1);
                match k.kind() {
                    ValueKind::String => {
                        json_str(k.as_str().unwrap_or_default(), o.ensure_ascii, out)
                    }
                    ValueKind::Number | ValueKind::Bool | ValueKind::None => {
                        let mut s = String::new();
                        json_dumps(k, o, depth, &mut s)?;
                        json_str(&s, o.ensure_ascii, out)
                    }
                    _ => {
                        return Err(Error::new(
                            ErrorKind::InvalidOperation,
                            "tojson: keys must be str, int, float, bool or None",
                        ))
                    }
                }
                out.push_str(&o.key_sep);
                json_dumps(item, o, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "tojson: Object of type {} is not JSON serializable",
                    v.kind()
                ),
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_of_containers() {
        let v = Value::from_serialize(serde_json::json!({"a": [1, true, null, "it's"], "b": 1.0}));
        let mut s = String::new();
        repr(&v, &mut s).unwrap();
        assert_eq!(s, r#"{'a': [1, True, None, "it's"], 'b': 1.0}"#);
        let mut s = String::new();
        str_repr("é中\u{200b}\u{a0}\u{7f}\n\u{e000}\u{f0000}😀", &mut s);
        assert_eq!(s, r"'é中\u200b\xa0\x7f\n\ue000\U000f0000😀'");
    }
}
