//! Bounds on what a chat template can make a render do.
//!
//! A template comes from a recipe or from a downloaded model folder, so it is untrusted
//! input: it must end in a result or a TemplateError, never a crash or a hang. minijinja
//! already caps macro recursion (500), `range` (100,000 items) and string repetition
//! (100 MB). Ladle adds:
//! - an instruction budget per render ([`FUEL`], minijinja's `fuel`), so nested loops end;
//! - a bound on the nesting and size of a value before it is printed or `tojson`ed
//!   ([`check_printable`]): a namespace that holds itself is infinitely deep, and the
//!   printer would otherwise recurse until the stack overflows (SIGSEGV);
//! - a cap on `tojson`'s `indent` ([`MAX_INDENT`]);
//! - a cap on the text a render produces ([`MAX_OUTPUT`]), counted both where values are
//!   printed (including inside `{% set %}` blocks and macros) and where the final text
//!   is written.
//!
//! Known gaps (minijinja offers no hook where they happen): a template that doubles a
//! string by repeated concatenation (`{% set ns.s = ns.s ~ ns.s %}` in a loop) grows it
//! without printing it, so only the instruction budget limits the number of doublings;
//! and minijinja's own string conversion of a namespace that holds itself (`ns ~ ''`,
//! `ns|upper`, `ns|trim`, `ns|indent`, `'%s'|format(ns)`...) still recurses without
//! bound. Printing, `string`, `tojson`, `pprint`, `e`, `safe` and `urlencode` are
//! guarded here; the rest needs a recursion guard in minijinja's `Value` display.

use std::cell::Cell;

use minijinja::value::{Value, ValueKind};
use minijinja::{Error, ErrorKind};

/// Instructions one render may execute. Real templates use under 125 per message: every
/// reference template renders a 40,000-message conversation within this budget
/// (`tests/test_chat_limits.py` checks 4,000), while a runaway loop stops in about a
/// second.
pub const FUEL: u64 = 5_000_000;
/// Bytes of text one render may produce.
pub const MAX_OUTPUT: usize = 64 << 20;
/// Nesting depth of a value that is printed or serialized.
pub const MAX_DEPTH: usize = 64;
/// Largest `tojson(indent=...)`, in characters (Python allows any; templates use 2 or 4).
pub const MAX_INDENT: usize = 64;

thread_local! {
    /// Bytes printed by the render running on this thread (renders never nest).
    static PRINTED: Cell<usize> = const { Cell::new(0) };
}

fn too_big(what: &str) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("{what} exceeds Ladle's bound on rendered text ({MAX_OUTPUT} bytes)"),
    )
}

/// Resets the printed-bytes count at the start of a render.
pub fn start_render() {
    PRINTED.with(|p| p.set(0));
}

/// Counts `n` printed bytes against [`MAX_OUTPUT`].
pub fn count_printed(n: usize) -> Result<(), Error> {
    PRINTED.with(|p| {
        let total = p.get().saturating_add(n);
        p.set(total);
        if total > MAX_OUTPUT {
            Err(too_big("the rendered text"))
        } else {
            Ok(())
        }
    })
}

/// Shape of a value: how many nodes, how many bytes of text, how deep.
#[derive(Debug, Default, Clone, Copy)]
pub struct Shape {
    pub nodes: usize,
    pub bytes: usize,
    pub depth: usize,
}

/// Checks that `v` can be printed within the bounds: nesting at most [`MAX_DEPTH`]
/// and at most [`MAX_OUTPUT`] bytes of text and nodes (a list holding the same big list
/// many times is small in memory but huge printed). Returns its shape.
pub fn check_printable(v: &Value) -> Result<Shape, Error> {
    let mut shape = Shape::default();
    walk(v, 1, &mut shape)?;
    Ok(shape)
}

fn walk(v: &Value, depth: usize, shape: &mut Shape) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "value nested deeper than {MAX_DEPTH} levels (a namespace or dict that holds \
                 itself?) cannot be printed"
            ),
        ));
    }
    shape.depth = shape.depth.max(depth);
    shape.nodes += 1;
    shape.bytes = shape.bytes.saturating_add(match v.as_str() {
        Some(s) => s.len(),
        None => 8,
    });
    if shape.bytes.saturating_add(shape.nodes) > MAX_OUTPUT {
        return Err(too_big("a printed value"));
    }
    match v.kind() {
        ValueKind::Seq | ValueKind::Iterable => {
            for item in v.try_iter()? {
                walk(&item, depth + 1, shape)?;
            }
        }
        ValueKind::Map => {
            for key in v.try_iter()? {
                let item = v.get_item(&key)?;
                walk(&key, depth + 1, shape)?;
                walk(&item, depth + 1, shape)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Checks that `tojson` output with these separators and indent stays within bounds.
pub fn check_json_size(shape: Shape, seps: usize, indent: usize) -> Result<(), Error> {
    if indent > MAX_INDENT {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: indent of {indent} is over Ladle's limit of {MAX_INDENT}"),
        ));
    }
    let per_node = seps.saturating_add(indent.saturating_mul(shape.depth) + 1);
    let total = shape
        .nodes
        .saturating_mul(per_node)
        .saturating_add(shape.bytes);
    if total > MAX_OUTPUT {
        return Err(too_big("tojson output"));
    }
    Ok(())
}

/// The writer a render writes into: fails once [`MAX_OUTPUT`] bytes are written.
#[derive(Default)]
pub struct CappedWriter {
    pub buf: Vec<u8>,
    pub overflowed: bool,
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > MAX_OUTPUT {
            self.overflowed = true;
            return Err(std::io::Error::other("rendered text too long"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The error a render that overflowed [`CappedWriter`] reports.
pub fn output_overflow() -> Error {
    too_big("the rendered text")
}
