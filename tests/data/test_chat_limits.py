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
