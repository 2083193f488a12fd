//! Bounds on what a chat template can make a render do.
//!
//! A template comes from a recipe or from a downloaded model folder, so it is untrusted
//! input: it must end in a result or a TemplateError, never a crash or a hang. minijinja
//! already caps macro recursion (500), `range` (100,000 items) and string repetition
//! (100 MB). Ladle adds:
//! - an instruction budget per render ([`FUEL`], minijinja's `fuel`), so nested loops end;
//! - a bound on the nesting and size of a value before it is printed or `tojson`ed
//!   ([`check_printable`]): a namespace that holds itself is infinitely deep, and
//!   Ladle's Python-style printer recurses once per level;
//! - a cap on `tojson`'s `indent` ([`MAX_INDENT`]);
//! - a cap on the text a render produces ([`MAX_OUTPUT`]), counted both where values are
//!   printed (including inside `{% set %}` blocks and macros) and where the final text
//!   is written.
//!
//! minijinja itself (vendored with Ladle's patches, `rust/vendor/minijinja/PATCHES.md`)
//! bounds every other walk of a value: its own conversions to text (`~`, `upper`,
//! `trim`, `format`, `join`...), comparisons (`==`, `in`, `sort`, `max`...), hashing
//! (`unique`, dict keys) and (de)serialization stop past 256 levels of nesting, 10 million
//! objects or 100 MB of text per instruction, and the instruction fails; dropping a deep
//! value takes constant stack; and a namespace that holds itself is emptied when the
//! render ends, so the cycle is freed. The checks here come first where both apply, and
//! say what is wrong in Python's terms.
//!
//! A template that doubles a string or a list by repeated concatenation (`{% set ns.s =
//! ns.s ~ ns.s %}` in a loop) grows it without printing it; the vendored minijinja bounds
//! `~` and `+` like string repetition (100 MB, 10 million list items; `PATCHES.md`, 4).

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

#[cfg(test)]
mod tests {
    //! Values that recurse, through Ladle's renderer and through minijinja directly. Each
    //! runs on a thread with the 2 MiB stack rayon gives its workers; before the vendored
    //! patch (rust/vendor/minijinja/PATCHES.md) every case overflowed it and aborted the
    //! test binary.

    use std::collections::hash_map::DefaultHasher;
    use std::hash::Hash;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use minijinja::value::{Object, Value};

    use crate::chat::{ChatTemplate, Conversation};

    fn on_worker_stack(f: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(f)
            .expect("thread")
            .join()
            .expect("no panic");
    }

    /// Renders `body` through Ladle's template path.
    fn render(body: &str) -> Result<String, String> {
        let conv = Conversation::from_json(r#"[{"role": "user", "content": "x"}]"#).unwrap();
        ChatTemplate::new(body, &[])
            .and_then(|t| t.render(&conv, false))
            .map_err(|e| e.to_string())
    }

    /// Two namespaces that hold themselves.
    const SELF: &str = "{% set ns = namespace(a=1) %}{% set ns.me = ns %}\
                        {% set n2 = namespace(a=1) %}{% set n2.me = n2 %}";
    /// Two equal lists nested 20,000 levels deep (far past any stack), built within the
    /// instruction budget.
    const DEEP: &str = "{% set ns = namespace(l=[], m=[]) %}{% for i in range(100) %}\
                        {% for j in range(200) %}{% set ns.l = [ns.l] %}{% set ns.m = [ns.m] %}\
                        {% endfor %}{% endfor %}";

    /// minijinja's own conversions and comparisons, on `V` and `W`.
    const USES: &[&str] = &[
        "{{ (V ~ '')|length }}",
        "{{ V|upper|length }}",
        "{{ V|trim|length }}",
        "{{ V|indent|length }}",
        "{{ V|replace('a', 'b')|length }}",
        "{{ V|title|length }}",
        "{{ '%s'|format(V)|length }}",
        "{{ [V]|join(',')|length }}",
        "{{ '{}'.format(V)|length }}",
        "{{ V in [W] }}",
        "{{ V == W }}",
        "{{ V < W }}",
        "{{ [V, W]|sort|length }}",
        "{{ [V, W]|unique|list|length }}",
        "{{ {'a': V, 'b': W}|dictsort(by='value')|length }}",
        "{{ {V: 1}|length }}",
        "{{ [V, W]|max is defined }}",
        "{{ [V].count(W) }}",
        "{{ raise_exception(V) }}",
    ];

    #[test]
    fn values_that_recurse_end_in_a_template_error() {
        on_worker_stack(|| {
            for (setup, v, w) in [(SELF, "ns", "n2"), (DEEP, "ns.l", "ns.m")] {
                for use_ in USES {
                    let body = format!("{setup}{}", use_.replace('V', v).replace('W', w));
                    let err = render(&body).expect_err(&body);
                    assert!(
                        err.contains("nested deeper than 256 levels"),
                        "{body}: {err}"
                    );
                    assert!(err.len() < 2000, "{body}: {err}");
                }
            }
        });
    }

    #[test]
    fn walks_fit_the_stack_under_the_deepest_macro_recursion() {
        // 82 nested macro calls is as deep as minijinja's recursion limit lets this go.
        on_worker_stack(|| {
            for use_ in ["{{ V == W }}", "{{ [V, W]|sort|length }}", "{{ V ~ '' }}"] {
                let body = format!(
                    "{SELF}{{% macro f(n) %}}{{% if n > 0 %}}{{{{ f(n - 1) }}}}{{% else %}}{}\
                     {{% endif %}}{{% endmacro %}}{{{{ f(82) }}}}",
                    use_.replace('V', "ns").replace('W', "n2")
                );
                let err = render(&body).expect_err(&body);
                assert!(
                    err.contains("nested deeper than 256 levels"),
                    "{body}: {err}"
                );
            }
        });
    }

    #[test]
    fn deep_values_are_dropped_without_recursion() {
        on_worker_stack(|| {
            let loop_ = |set: &str| {
                format!(
                    "{{% for i in range(100) %}}{{% for j in range(200) %}}{set}\
                     {{% endfor %}}{{% endfor %}}done"
                )
            };
            let cases = [
                format!("{DEEP}done"),
                format!(
                    "{{% set ns = namespace(d={{}}) %}}{}",
                    loop_("{% set ns.d = {'k': ns.d} %}")
                ),
                format!(
                    "{{% set ns = namespace(c=none) %}}{}",
                    loop_("{% set ns.c = namespace(next=ns.c) %}")
                ),
                // Appending at the tail: every assignment is shallow, the chain is not.
                format!(
                    "{{% set ns = namespace() %}}{{% set ns.t = namespace() %}}\
                     {{% set ns.h = ns.t %}}{}",
                    loop_("{% set t = namespace() %}{% set ns.t.n = t %}{% set ns.t = t %}")
                ),
            ];
            for body in cases {
                assert_eq!(render(&body).as_deref(), Ok("done"), "{body}");
            }
        });
    }

    #[test]
    fn deep_values_dropped_while_a_thread_exits_use_constant_stack() {
        // A value held in a thread-local is dropped after the thread's other
        // thread-locals may be gone (upstream's own tests hit this while the patch still
        // queued drops in a thread-local with a destructor: it aborted).
        thread_local! {
            static HELD: std::cell::RefCell<Option<Value>> = const { std::cell::RefCell::new(None) };
        }
        on_worker_stack(|| {
            let deep = (0..200_000).fold(Value::from(0), |v, _| Value::from(vec![v]));
            HELD.with(|h| *h.borrow_mut() = Some(deep));
            // Registers the drop queue after HELD, so it would be destroyed first.
            drop((0..1_000).fold(Value::from(0), |v, _| Value::from(vec![v])));
        });
    }

    #[test]
    fn values_too_large_to_walk_end_in_a_template_error() {
        // 2^12 copies of a 1 MB string: 4 GB of text from 1 MB in memory. (Walks of 2^40
        // shared parts stop at the node budget, which takes long in a debug build; the
        // Python test in tests/data/test_chat_limits.py covers them.)
        on_worker_stack(|| {
            let body = "{% set ns = namespace(v='x' * 1000000) %}{% for i in range(12) %}\
                        {% set ns.v = [ns.v, ns.v] %}{% endfor %}{{ (ns.v ~ '')|length }}";
            let err = render(body).expect_err(body);
            assert!(err.contains("too large to convert or compare"), "{err}");
        });
    }

    #[test]
    fn doubling_by_concatenation_ends_in_a_template_error() {
        // 64 doublings is 2^64 bytes or items: before the bound, memory ran out (or the
        // first `list` aborted on its allocation) long before the instruction budget.
        on_worker_stack(|| {
            for (init, step, use_, what) in [
                ("'x'", "ns.v ~ ns.v", "ns.v|length", "string"),
                ("'x'", "ns.v + ns.v", "ns.v|length", "string"),
                ("'x'", "ns.v ~ ns.v ~ 1", "ns.v|length", "string"),
                ("[1]", "ns.v + ns.v", "ns.v|list|length", "list"),
            ] {
                let msg = format!("concatenated {what} is too large");
                let body = format!(
                    "{{% set ns = namespace(v={init}) %}}{{% for i in range(64) %}}\
                     {{% set ns.v = {step} %}}{{% endfor %}}{{{{ {use_} }}}}"
                );
                let err = render(&body).expect_err(&body);
                assert!(err.contains(&msg), "{body}: {err}");
            }
            // Below the bound nothing changes.
            let ok = "{% set ns = namespace(v='x', l=[1]) %}{% for i in range(20) %}\
                      {% set ns.v = ns.v ~ ns.v %}{% set ns.l = ns.l + ns.l %}{% endfor %}\
                      {{ ns.v|length }} {{ ns.l|list|length }}";
            assert!(render(ok).unwrap().ends_with("1048576 1048576"));
        });
    }

    #[test]
    fn a_namespace_that_holds_itself_is_freed_after_the_render() {
        // The render's state empties every namespace assigned an object when it drops,
        // which breaks the cycle; before, the namespace and all it held leaked.
        #[derive(Debug)]
        struct DropProbe(Arc<AtomicBool>);
        impl Object for DropProbe {}
        impl Drop for DropProbe {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let probe = Value::from_object(DropProbe(dropped.clone()));
        // `context!` clones the value: the render holds the only other reference.
        let ctx = minijinja::context! { p => probe };
        drop(probe);
        let tmpl = "{% set ns = namespace(p=p) %}{% set ns.me = ns %}{{ ns.me.me.p is defined }}";
        let out = minijinja::Environment::new().render_str(tmpl, ctx);
        assert_eq!(out.unwrap(), "True");
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn deep_values_built_in_rust_are_walked_within_the_stack() {
        on_worker_stack(|| {
            let deep = || (0..200_000).fold(Value::from(0), |v, _| Value::from(vec![v]));
            let (v, w) = (deep(), deep());
            // Outside a render nobody reports a walk cut short: it answers, bounded.
            let text = v.to_string();
            assert!(text.len() < 1000 && text.contains("..."), "{}", text.len());
            assert!(format!("{v:?}").len() < 1000);
            assert_ne!(v, w);
            let _ = v.cmp(&w);
            v.hash(&mut DefaultHasher::new());
            // serde reports it as an error.
            assert!(serde_json::to_string(&v).is_err());
            assert!(<serde_json::Value as serde::Deserialize>::deserialize(v.clone()).is_err());
            // A render fails the instruction that met it.
            let env = minijinja::Environment::new();
            for tmpl in [
                "{{ v }}",
                "{{ v|tojson }}",
                "{{ v == w }}",
                "{{ v|pprint }}",
            ] {
                let ctx = minijinja::context! { v => v.clone(), w => w.clone() };
                let err = env.render_str(tmpl, ctx).expect_err(tmpl).to_string();
                assert!(
                    err.contains("nested deeper than 256 levels"),
                    "{tmpl}: {err}"
                );
            }
            drop((v, w));
        });
    }
}
