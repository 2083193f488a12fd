"""Hostile chat templates end in a TemplateError naming the row: no crash, no hang.

A template comes from a recipe or a downloaded model folder, so it is untrusted. Each
case renders in a child process, because a stack overflow or an allocation failure would
kill pytest itself; the child must exit normally, within a time budget, having caught a
TemplateError for the hostile row and encoded the harmless one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Each template misbehaves only on a row whose first message says "evil", so the error
# must name that row (row 1) while row 0 renders.
EVIL = "{% if messages[0].content == 'evil' %}BODY{% endif %}ok"

CASES = {
    # A namespace that holds itself, printed four ways (recursed until SIGSEGV before).
    "self_namespace_print": (
        "{% set ns = namespace(a=1) %}{% set ns.me = ns %}{{ ns }}",
        "nested deeper",
    ),
    "self_namespace_tojson": (
        "{% set ns = namespace(a=1) %}{% set ns.me = ns %}{{ ns|tojson }}",
        "nested deeper",
    ),
    "self_namespace_string": (
        "{% set ns = namespace() %}{% set ns.me = [ns] %}{{ ns|string }}",
        "nested deeper",
    ),
    "self_namespace_in_dict": (
        "{% set ns = namespace() %}{% set ns.d = {'x': ns} %}{{ {'y': ns}|tojson(indent=2) }}",
        "nested deeper",
    ),
    "debug_is_undefined": ("{{ debug() }}", "debug"),
    # tojson(indent=N) with a huge N allocated N spaces and aborted.
    "huge_indent": ("{{ messages|tojson(indent=100000000000) }}", "indent"),
    "huge_string_indent": ("{{ messages|tojson(indent=' ' * 90000000) }}", "indent"),
    # Nested loops that never end: the instruction budget stops them.
    "nested_ranges": (
        "{% set ns = namespace(n=0) %}{% for a in range(100000) %}{% for b in range(100000) %}"
        "{% for c in range(100000) %}{% set ns.n = ns.n + 1 %}{% endfor %}{% endfor %}"
        "{% endfor %}{{ ns.n }}",
        "budget",
    ),
    # Output growth, printed directly and captured by a {% set %} block.
    "huge_output": (
        "{% for i in range(100000) %}{{ 'x' * 10000000 }}{% endfor %}",
        "bound on rendered text",
    ),
    "huge_capture": (
        "{% set s %}{% for i in range(100000) %}{{ 'x' * 10000000 }}{% endfor %}{% endset %}"
        "{{ s|length }}",
        "bound on rendered text",
    ),
    # A value printed with exponential size (each level holds the previous one twice).
    "exponential_value": (
        "{% set ns = namespace(v='x' * 1000) %}{% for i in range(40) %}"
        "{% set ns.v = [ns.v, ns.v] %}{% endfor %}{{ ns.v|tojson }}",
        "bound on rendered text",
    ),
    # Unbounded macro recursion on rayon's worker threads (smaller stacks than main).
    "macro_recursion": (
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "recursion",
    ),
}

# minijinja's filters that turn any value into text.
for _f in ("pprint", "e", "safe", "urlencode"):
    CASES[f"self_namespace_{_f}"] = (
        f"{{% set ns = namespace() %}}{{% set ns.me = ns %}}{{{{ ns|{_f} }}}}",
        "nested deeper",
    )

CHILD = textwrap.dedent(
    """
    import json, sys
    from ladle.data import ChatTokenizer
    from ladle.errors import TemplateError
    tok_path, template = sys.argv[1], sys.stdin.read()
    tok = ChatTokenizer(tok_path, template, {})
    rows = [
        [{"role": "user", "content": "fine"}, {"role": "assistant", "content": "ok"}],
        [{"role": "user", "content": "evil"}, {"role": "assistant", "content": "ok"}],
    ]
    for call in ("render_batch", "encode_batch"):
        try:
            getattr(tok, call)(rows)
        except TemplateError as e:
            print(call, "TemplateError", e)
        else:
            print(call, "no error")
    batch = tok.encode_arrays(rows, train_on="all")
    print("row0", batch.errors[0] is None and batch.n_trained[0] > 0)
    """
)


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A word-level tokenizer.json: loads in milliseconds (these tests are about the
    renderer, not the vocabulary)."""
    spec = {
        "version": "1.0",
        "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "ok": 1}, "unk_token": "[UNK]"},
        "pre_tokenizer": {"type": "Whitespace"},
    }
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_template_is_a_template_error(tiny_tokenizer: Path, case: str) -> None:
    body, expected = CASES[case]
    template = EVIL.replace("BODY", body)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tiny_tokenizer)],
        input=template,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"child died ({proc.returncode}): {proc.stderr[-2000:]}"
    lines = proc.stdout.splitlines()
    for call in ("render_batch", "encode_batch"):
        line = next(x for x in lines if x.startswith(call))
        assert "TemplateError row 1: " in line, line
        assert expected in line, line
        assert len(line) < 1000, "one-line error expected"
    assert "row0 True" in lines


# Values that recurse: minijinja's own conversions (`~`, string filters, `format`,
# `join`), comparisons (`==`, `in`, `<`, `sort`, `max`), hashing (`unique`, dict keys)
# and drops walk a value once per level of nesting. On a namespace that holds itself
# or a value nested 20,000 levels deep, each overflowed the stack (SIGSEGV) before
# minijinja was patched (rust/vendor/minijinja/PATCHES.md).
SELF_REF = (
    "{% set ns = namespace(a=1) %}{% set ns.me = ns %}"
    "{% set n2 = namespace(a=1) %}{% set n2.me = n2 %}"
)
# Two equal lists nested 20,000 levels deep, built within the instruction budget.
NESTED = (
    "{% set ns = namespace(l=[], m=[]) %}{% for i in range(100) %}{% for j in range(200) %}"
    "{% set ns.l = [ns.l] %}{% set ns.m = [ns.m] %}{% endfor %}{% endfor %}"
)
# Two equal lists of shared parts: 2^40 leaves to walk, 40 objects in memory.
WIDE = (
    "{% set ns = namespace(l='x', m='x') %}{% for i in range(40) %}"
    "{% set ns.l = [ns.l, ns.l] %}{% set ns.m = [ns.m, ns.m] %}{% endfor %}"
)
# 2^12 copies of a 1 MB string: 4 GB of text from 1 MB in memory.
LONG = (
    "{% set ns = namespace(l='x' * 1000000) %}{% for i in range(12) %}"
    "{% set ns.l = [ns.l, ns.l] %}{% endfor %}"
)
USES = {
    "concat": "{{ (V ~ '')|length }}",
    "upper": "{{ V|upper|length }}",
    "lower": "{{ V|lower|length }}",
    "trim": "{{ V|trim|length }}",
    "indent": "{{ V|indent|length }}",
    "replace": "{{ V|replace('a', 'b')|length }}",
    "title": "{{ V|title|length }}",
    "capitalize": "{{ V|capitalize|length }}",
    "format": "{{ '%s'|format(V)|length }}",
    "join": "{{ [V]|join(',')|length }}",
    "str_format": "{{ '{}'.format(V)|length }}",
    "str_join": "{{ ','.join([V])|length }}",
    "in": "{{ V in [W] }}",
    "eq": "{{ V == W }}",
    "ne": "{{ V != W }}",
    "lt": "{{ V < W }}",
    "sort": "{{ [V, W]|sort|length }}",
    "unique": "{{ [V, W]|unique|list|length }}",
    "dictsort": "{{ {'a': V, 'b': W}|dictsort(by='value')|length }}",
    "dict_key": "{{ {V: 1}|length }}",
    "max": "{{ [V, W]|max is defined }}",
    "count": "{{ [V].count(W) }}",
    "raise": "{{ raise_exception(V) }}",
}


def _uses(setup: str, v: str, w: str, names: list[str]) -> dict[str, str]:
    return {n: setup + USES[n].replace("V", v).replace("W", w) for n in names}


def _loop(body: str) -> str:
    return "{% for i in range(100) %}{% for j in range(200) %}" + body + "{% endfor %}{% endfor %}"


RECURSING = {
    "self_ref": (_uses(SELF_REF, "ns", "n2", list(USES)), "nested deeper than 256 levels"),
    "nested": (_uses(NESTED, "ns.l", "ns.m", list(USES)), "nested deeper than 256 levels"),
    "too_large": (
        {
            # Each stops at the budget of 10 million objects per instruction (~2 s).
            **_uses(WIDE, "ns.l", "ns.m", ["concat", "eq"]),
            **_uses(LONG, "ns.l", "ns.l", ["concat"]),
        },
        "too large to convert or compare",
    ),
    # Dropped at the end of the render, 20,000 levels deep, in four shapes.
    "dropped": (
        {
            "lists": NESTED + "done",
            "dicts": "{% set ns = namespace(d={}) %}"
            + _loop("{% set ns.d = {'k': ns.d} %}")
            + "done",
            "namespaces": "{% set ns = namespace(c=none) %}"
            + _loop("{% set ns.c = namespace(next=ns.c) %}")
            + "done",
            # Appending at the tail: every assignment is shallow, the chain is not.
            "tail_chain": "{% set ns = namespace() %}{% set ns.t = namespace() %}"
            "{% set ns.h = ns.t %}"
            + _loop("{% set t = namespace() %}{% set ns.t.n = t %}{% set ns.t = t %}")
            + "done",
        },
        "",
    ),
}

RECURSING_CHILD = textwrap.dedent(
    """
    import json, sys
    from ladle.data import ChatTokenizer
    from ladle.errors import TemplateError
    tok_path, cases = sys.argv[1], json.load(sys.stdin)
    rows = [[{"role": "user", "content": "fine"}], [{"role": "user", "content": "evil"}]]
    for name, template in cases.items():
        print("start", name, flush=True)
        tok = ChatTokenizer(tok_path, template, {})
        try:
            out = tok.render_batch(rows)
        except TemplateError as e:
            print("error", name, e, flush=True)
        else:
            print("result", name, json.dumps(out), flush=True)
    """
)


@pytest.mark.parametrize("family", sorted(RECURSING))
def test_values_that_recurse_end_in_a_result_or_a_template_error(
    tiny_tokenizer: Path, family: str
) -> None:
    cases, expected = RECURSING[family]
    templates = {name: EVIL.replace("BODY", body) for name, body in cases.items()}
    # One child for the whole family (one interpreter start); a crash names its case.
    proc = subprocess.run(
        [sys.executable, "-c", RECURSING_CHILD, str(tiny_tokenizer)],
        input=json.dumps(templates),
        capture_output=True,
        text=True,
        timeout=300,
    )
    started = [x.split()[1] for x in proc.stdout.splitlines() if x.startswith("start ")]
    assert proc.returncode == 0, (
        f"child died ({proc.returncode}) on {started[-1:]}: {proc.stderr[-2000:]}"
    )
    outcomes = {x.split()[1]: x for x in proc.stdout.splitlines() if not x.startswith("start ")}
    assert sorted(outcomes) == sorted(cases)
    for name, line in outcomes.items():
        if expected:
            assert line.startswith(f"error {name} row 1: "), line
            assert expected in line, line
            assert len(line) < 1000, "one-line error expected"
        else:
            assert line == f'result {name} ["ok", "doneok"]', line


def test_long_real_conversations_fit_the_budgets(tiny_tokenizer: Path, shared_dir: Path) -> None:
    # The bounds stop hostile templates, not real ones: a 4,000-message conversation
    # renders under every reference template (40,000 do too; kept short for CI).
    from ladle.data import ChatTokenizer

    conv = []
    for i in range(2000):
        conv += [
            {"role": "user", "content": f"question {i} " * 10},
            {"role": "assistant", "content": f"answer {i} " * 10},
        ]
    special = {"bos_token": "<s>", "eos_token": "</s>"}
    paths = sorted((shared_dir / "reference" / "chat_templates").glob("*.jinja"))
    assert paths
    for path in paths:
        tok = ChatTokenizer(tiny_tokenizer, path.read_text(), special)
        assert tok.render(conv).count("answer 1999") == 10, path.stem
