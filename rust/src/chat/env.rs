//! The minijinja environment that mirrors transformers' chat-template sandbox
//! (`transformers.utils.chat_template_utils._cached_compile_jinja_template`):
//! trim_blocks + lstrip_blocks, no trailing newline kept, loop controls, `raise_exception`,
//! `strftime_now`, transformers' `tojson` (json.dumps, ensure_ascii=False), Python string
//! methods (minijinja-contrib pycompat) and Python's way of printing values.

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State};

use super::limits;
use super::pyfmt;

/// Private-use code points that wrap the output of a `{% generation %}` block while
/// rendering, so its character span can be recovered afterwards. Input text holding
/// them is refused (see `Conversation::from_json`).
pub const GEN_START: char = '\u{F0002}';
pub const GEN_END: char = '\u{F0003}';
/// Prefix of the error detail produced by `raise_exception`, so it can be reported as
/// the template's own message rather than a rendering failure.
pub const RAISED: &str = "raise_exception: ";

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISED}{msg}"),
    ))
}

fn tojson(v: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(i) if i.is_none() => None,
        Some(i) if i.kind() == ValueKind::String => {
            Some(i.as_str().unwrap_or_default().to_string())
        }
        Some(i) => {
            let n = i64::try_from(i)?.max(0) as usize;
            // Checked before allocating: tojson(indent=10**12) must not abort.
            limits::check_json_size(limits::Shape::default(), 0, n)?;
            Some(" ".repeat(n))
        }
    };
    let (item_sep, key_sep) = match separators {
        Some(s) if !s.is_none() => {
            let parts: Vec<Value> = s.try_iter()?.collect();
            if parts.len() != 2 {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: separators needs 2 items",
                ));
            }
            (parts[0].to_string(), parts[1].to_string())
        }
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let opts = pyfmt::JsonOpts {
        indent,
        ensure_ascii: ensure_ascii.unwrap_or(false),
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
    };
    let shape = limits::check_printable(&v)?;
    limits::check_json_size(
        shape,
        opts.item_sep.len() + opts.key_sep.len(),
        opts.indent.as_ref().map_or(0, String::len),
    )?;
    let mut out = String::new();
    pyfmt::json_dumps(&v, &opts, 0, &mut out)?;
    Ok(Value::from(out))
}

/// Python's `str(value)`, used for the `string` filter so `true|string` gives `True`.
fn string_filter(v: Value) -> Result<Value, Error> {
    if v.kind() == ValueKind::String {
        return Ok(v);
    }
    limits::check_printable(&v)?;
    let mut s = String::new();
    pyfmt::py_str(&v, &mut s)?;
    Ok(Value::from(s))
}

fn generation_filter(body: String) -> String {
    let mut s = String::with_capacity(body.len() + 8);
    s.push(GEN_START);
    s.push_str(&body);
    s.push(GEN_END);
    s
}

/// Directives whose output chrono and Python's `strftime` agree on (`-` drops the
/// padding in both). Others (`%Z`, `%c`, `%x`, ...) differ between the two or depend on
/// the locale, so they are an error rather than a guess.
const STRFTIME_DIRECTIVES: &str = "YymdeHIMSjpBbhAauwFT%";

/// `datetime.now().strftime(fmt)` for the directives chat templates use.
pub fn strftime<Tz: chrono::TimeZone>(
    now: &chrono::DateTime<Tz>,
    fmt: &str,
) -> Result<String, Error>
where
    Tz::Offset: std::fmt::Display,
{
    let unsupported = |d: &str| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: directive %{d} is not supported by Ladle's renderer"),
        )
    };
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        let d = match chars.next() {
            Some('-') => chars.next(),
            d => d,
        };
        match d {
            Some(d) if STRFTIME_DIRECTIVES.contains(d) => {}
            Some(d) => return Err(unsupported(&d.to_string())),
            None => return Err(unsupported("")),
        }
    }
    let mut out = String::new();
    use std::fmt::Write;
    write!(out, "{}", now.format(fmt)).map_err(|_| unsupported(fmt))?;
    Ok(out)
}

fn strftime_now(fmt: String) -> Result<Value, Error> {
    // Python's datetime.now() is local time (chrono reads TZ and the zone database).
    strftime(&chrono::Local::now(), &fmt).map(Value::from)
}

/// minijinja's filters that turn any value into text, each behind the printable check so
/// that a value too deep or too big is refused with Ladle's message (the patched
/// minijinja would also stop it, at 256 levels).
fn guarded_escape(state: &State, v: Value) -> Result<Value, Error> {
    limits::check_printable(&v)?;
    minijinja::filters::escape(state, &v)
}

fn guarded_safe(v: Value) -> Result<Value, Error> {
    limits::check_printable(&v)?;
    Ok(minijinja::filters::safe(v.to_string()))
}

fn guarded_urlencode(v: Value) -> Result<String, Error> {
    limits::check_printable(&v)?;
    minijinja::filters::urlencode(&v)
}

fn guarded_pprint(v: Value) -> Result<String, Error> {
    limits::check_printable(&v)?;
    Ok(minijinja::filters::pprint(&v))
}

/// jinja2 prints Python objects with `str()`: `True`, `None`, `['a', 1]`.
/// Every printed value is counted against the render's output bound, including text
/// captured by `{% set %}` blocks and macros (which never reaches the final writer).
fn python_formatter(out: &mut minijinja::Output, _state: &State, v: &Value) -> Result<(), Error> {
    if let Some(s) = v.as_str() {
        limits::count_printed(s.len())?;
        return out.write_str(s).map_err(Error::from);
    }
    limits::check_printable(v)?;
    let mut s = String::new();
    pyfmt::py_str(v, &mut s)?;
    limits::count_printed(s.len())?;
    out.write_str(&s).map_err(Error::from)
}

/// Rewrites `{% generation %}` / `{% endgeneration %}` (transformers' AssistantTracker
/// extension tags) into a filter block. Both are block tags, so trim_blocks and
/// lstrip_blocks treat them exactly as jinja2 treats the extension tags.
pub fn rewrite_generation_tags(src: &str) -> (String, bool) {
    let mut out = String::with_capacity(src.len());
    let mut found = false;
    let mut rest = src;
    while let Some(pos) = rest.find("{%") {
        out.push_str(&rest[..pos]);
        let tag = &rest[pos..];
        // The tag's end is searched after its "{%": in "{%}" the "%}" overlaps the opener.
        let Some(end) = tag[2..].find("%}").map(|e| e + 2) else {
            out.push_str(tag);
            rest = "";
            break;
        };
        let inner = &tag[2..end];
        let (lead, body) = match inner.strip_prefix(['-', '+']) {
            Some(b) => (&inner[..1], b),
            None => ("", inner),
        };
        let (body, trail) = match body.strip_suffix(['-', '+']) {
            Some(b) => (b, &body[body.len() - 1..]),
            None => (body, ""),
        };
        let word = body.trim();
        let replacement = match word {
            "generation" => Some("filter __ladle_generation"),
            "endgeneration" => Some("endfilter"),
            _ => None,
        };
        match replacement {
            Some(r) => {
                found = true;
                out.push_str(&format!("{{%{lead} {r} {trail}%}}"));
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    (out, found)
}

/// The environment every chat template is compiled in.
pub fn new_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(limits::FUEL));
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(python_formatter);
    env.add_filter("tojson", tojson);
    env.add_filter("string", string_filter);
    env.add_filter("__ladle_generation", generation_filter);
    env.add_filter("escape", guarded_escape);
    env.add_filter("e", guarded_escape);
    env.add_filter("safe", guarded_safe);
    env.add_filter("urlencode", guarded_urlencode);
    env.add_filter("pprint", guarded_pprint);
    // jinja2 (transformers' sandbox) has no debug(); minijinja's dumps the whole context,
    // which a namespace holding itself makes endless.
    env.remove_global("debug");
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_generation_tags_keeping_whitespace_control() {
        let (s, found) =
            rewrite_generation_tags("a{%- generation %}b{% endgeneration -%}c{% if x %}");
        assert!(found);
        assert_eq!(
            s,
            "a{%- filter __ladle_generation %}b{% endfilter -%}c{% if x %}"
        );
        assert!(!rewrite_generation_tags("{{ x }}{% for m in y %}").1);
        // Found by chat::fuzz: "{%}" used to slice backwards and panic.
        assert_eq!(rewrite_generation_tags("a{%}}b").0, "a{%}}b");
    }

    #[test]
    fn strftime_directives() {
        use chrono::TimeZone;
        let t = chrono::Utc.with_ymd_and_hms(2024, 7, 5, 14, 3, 9).unwrap();
        assert_eq!(strftime(&t, "%d %b %Y").unwrap(), "05 Jul 2024");
        assert_eq!(
            strftime(&t, "%-d %B %Y, %A %I:%M %p").unwrap(),
            "5 July 2024, Friday 02:03 PM"
        );
        // Values checked against Python's datetime(2024, 7, 5, 14, 3, 9).strftime.
        assert_eq!(
            strftime(
                &t,
                "%Y-%m-%d %H:%M:%S|%y|%e|%j|%u|%w|%F|%T|%h|%a|%%|%-m/%-H"
            )
            .unwrap(),
            "2024-07-05 14:03:09|24| 5|187|5|5|2024-07-05|14:03:09|Jul|Fri|%|7/14"
        );
        let midnight = chrono::Utc.with_ymd_and_hms(2024, 1, 7, 0, 5, 0).unwrap();
        assert_eq!(
            strftime(&midnight, "%I %p %A %u %w %j").unwrap(),
            "12 AM Sunday 7 0 007"
        );
        for bad in ["%Z", "%c", "100%", "%-", "%Q"] {
            assert!(strftime(&t, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tojson_is_python_json_dumps() {
        let env = new_environment();
        let v = serde_json::json!({"a": "é<>", "b": [1, 2.0, null, true], "c": {}});
        let out = env
            .render_str(
                "{{ v|tojson }}|{{ v|tojson(indent=2) }}",
                minijinja::context! { v => Value::from_serialize(&v) },
            )
            .unwrap();
        assert_eq!(
            out,
            "{\"a\": \"é<>\", \"b\": [1, 2.0, null, true], \"c\": {}}|{\n  \"a\": \"é<>\",\n  \"b\": [\n    1,\n    2.0,\n    null,\n    true\n  ],\n  \"c\": {}\n}"
        );
    }
}
