"""Rendering parity: Ladle's Rust renderer vs transformers' apply_chat_template.

Every template (SmolLM2's own and each one in ../shared/reference/chat_templates) is
rendered on the same conversations, with and without the generation prompt; the texts
must be byte-identical, or both renderers must raise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ladle.data import ChatTokenizer
from ladle.data.chat import BUILTIN_TEMPLATES
from ladle.errors import DataError, TemplateError

ROOT = Path(__file__).resolve().parents[2]


def _shared_templates() -> Path | None:
    # ../shared from the repo root; a worktree under /work/wt/NAME sits one level deeper.
    for base in (ROOT.parent, ROOT.parent.parent):
        d = base / "shared" / "reference" / "chat_templates"
        if d.is_dir():
            return d
    return None


SHARED = _shared_templates()
REFERENCE_TEMPLATES = sorted(SHARED.glob("*.jinja")) if SHARED else []


@pytest.fixture(scope="session")
def hf_tok(smollm2_dir: Path) -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(smollm2_dir))


@pytest.fixture(scope="session")
def ladle_tok(smollm2_dir: Path) -> ChatTokenizer:
    return ChatTokenizer.from_pretrained(smollm2_dir)


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "City name"}},
                "required": ["city"],
            },
        },
    }
]

CONVERSATIONS: dict[str, list[dict[str, Any]]] = {
    "single": [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello, how can I help?"},
    ],
    "system_multi": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": " 6\n"},
    ],
    "no_system_multi": [
        {"role": "user", "content": "Écris un haïku 🍂"},
        {"role": "assistant", "content": "  Feuilles qui tombent\n\tle vent\n"},
        {"role": "user", "content": "merci <|im_end|> «ok»\u00a0\u200b\x7f"},
        {"role": "assistant", "content": "De rien."},
    ],
    "ends_with_user": [
        {"role": "system", "content": "Be nice."},
        {"role": "user", "content": "Tell me a joke."},
    ],
    "tools": [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {"role": "tool", "name": "get_weather", "content": '{"temp_c": 21.5, "sky": "clear"}'},
        {"role": "assistant", "content": "It is 21.5°C and clear."},
    ],
}


def _render_pair(
    hf_tok: Any, ours: ChatTokenizer, template: str, conv: list[dict[str, Any]], agp: bool
) -> tuple[str | None, str | None, str, str]:
    tools = TOOLS if any("tool_calls" in m for m in conv) else None
    try:
        want = hf_tok.apply_chat_template(
            conv, chat_template=template, tools=tools, add_generation_prompt=agp, tokenize=False
        )
        want_err = ""
    except Exception as e:  # transformers raises jinja2 errors of several kinds
        want, want_err = None, f"{type(e).__name__}: {e}"
    try:
        got = ours.render(conv, add_generation_prompt=agp, tools=tools)
        got_err = ""
    except TemplateError as e:
        got, got_err = None, str(e)
    return want, got, want_err, got_err


def _check_template(hf_tok: Any, smollm2_dir: Path, template: str) -> int:
    ours = ChatTokenizer(smollm2_dir / "tokenizer.json", template, dict(hf_tok.special_tokens_map))
    rendered = 0
    for name, conv in CONVERSATIONS.items():
        for agp in (False, True):
            want, got, want_err, got_err = _render_pair(hf_tok, ours, template, conv, agp)
            assert (want is None) == (got is None), (
                f"{name} agp={agp}: transformers {want_err or 'rendered'}, "
                f"ladle {got_err or 'rendered'}"
            )
            assert got == want, f"{name} agp={agp}"
            rendered += want is not None
    return rendered


def test_smollm2_template_matches_transformers(hf_tok: Any, smollm2_dir: Path) -> None:
    template = (smollm2_dir / "chat_template.jinja").read_text()
    assert _check_template(hf_tok, smollm2_dir, template) == 2 * len(CONVERSATIONS)


@pytest.mark.parametrize("name", sorted(BUILTIN_TEMPLATES))
def test_builtin_templates_match_transformers(hf_tok: Any, smollm2_dir: Path, name: str) -> None:
    assert _check_template(hf_tok, smollm2_dir, BUILTIN_TEMPLATES[name]) > 0


@pytest.mark.skipif(not REFERENCE_TEMPLATES, reason="../shared/reference/chat_templates absent")
@pytest.mark.parametrize("path", REFERENCE_TEMPLATES, ids=lambda p: p.stem)
def test_reference_templates_match_transformers(hf_tok: Any, smollm2_dir: Path, path: Path) -> None:
    # Templates that refuse some inputs (e.g. no system role, strict alternation) must
    # refuse them in both renderers; each must still render something.
    assert _check_template(hf_tok, smollm2_dir, path.read_text()) > 0


# Jinja features exercised one by one, each compared with transformers.
FEATURE_TEMPLATES = {
    "tojson": "{{ messages|tojson }}|{{ tools|tojson(indent=2) }}|{{ {'b': 1, 'a': [1.5, none, true]}|tojson(sort_keys=true) }}",
    "python_print": "{{ messages }}{{ true }}{{ none }}{{ [1, 'x', 2.0] }}{{ 1e20 }}",
    "string_methods": "{% for m in messages %}{{ m.content.strip().upper() }}|{{ m.content.split(' ')|length }}|{{ m.content.startswith('H') }}|{{ m.role.title() }}|{{ m.content.replace('i', 'I') }}|{{ m.content.lstrip('H') }}{% endfor %}",
    "loop_controls": "{% for m in messages %}{% if loop.index0 == 1 %}{% continue %}{% endif %}{% if loop.index0 > 2 %}{% break %}{% endif %}{{ loop.index }}{{ m.role }}{{ loop.last }}{% endfor %}",
    "namespace_dict": "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}{% set d = dict(a=1) %}{{ d.a }}{% for k, v in d|items %}{{ k }}={{ v }}{% endfor %}",
    "whitespace": "{% for m in messages %}\n    {% if m.role == 'user' %}\n  U: {{ m.content }}\n    {% else %}\n  A: {{ m.content }}\n    {%- endif %}\n{% endfor %}\n{% if add_generation_prompt %}\n  A:\n{% endif %}\n",
    "special_tokens": "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}{{ pad_token }}{{ unk_token }}",
    "raise": "{% if messages[0].role != 'system' %}{{ raise_exception('System first!') }}{% endif %}ok",
    "slicing_filters": "{{ (messages[1:]|map(attribute='role')|join(',')) }}|{{ messages|selectattr('role', 'equalto', 'user')|list|length }}|{{ messages[-1].content|trim|lower }}|{{ 7 // 2 }}{{ 7 / 2 }}{{ 'x' * 3 }}",
    "undefined": "[{{ foo }}]{{ messages[9] }}{% if messages[0].tool_calls is defined %}X{% endif %}{{ messages[0].nope|default('d') }}",
    "concat_numbers": "{{ 'x' ~ true ~ none }} {{ 1 + 1.5 }} {{ 10 / 2 }} {{ 2 ** 10 }} {{ 3 % 2 }} {{ -1.0 }} {{ 2.567|round(1) }} {{ 3|float }} {{ '5'|int }}",
    "string_filters": "{{ 'hELLO wORLD'|capitalize }} {{ 'hello world'|title }} {{ '<a>'|e }} {{ '%s-%d'|format('a', 3) }} {{ '{}-{}'.format('a', 1) }} {{ ' a b  c '.split() }}",
    "tests_and_in": "{{ messages is sequence }}{{ messages[0] is mapping }}{{ 'a' is string }}{{ 1 is number }}{{ none is none }}{{ 'role' in messages[0] }}{{ 'x' in 'xyz' }}",
    "blocks_macros": "{% macro f(m) %}<{{ m.role }}>{% endmacro %}{% set x %}a{{ 1 }}b{% endset %}{{ x }}{% for m in messages|reverse %}{{ f(m) }}{% endfor %}{{ messages[::-1]|length }}{{ messages[0].get('zzz', 'def') }}{{ messages[0].keys()|list }}",
    "generation": "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}\n{% else %}{{ m.content }}\n{% endif %}{% endfor %}",
}


@pytest.mark.parametrize("name", sorted(FEATURE_TEMPLATES))
def test_template_features_match_transformers(hf_tok: Any, smollm2_dir: Path, name: str) -> None:
    assert _check_template(hf_tok, smollm2_dir, FEATURE_TEMPLATES[name]) > 0


def test_strftime_now_matches_transformers(hf_tok: Any, smollm2_dir: Path) -> None:
    template = "{{ strftime_now('%d %B %Y %A %b %a %m %y %j') }}"
    ours = ChatTokenizer(smollm2_dir / "tokenizer.json", template, {})
    conv = CONVERSATIONS["single"]
    want = hf_tok.apply_chat_template(conv, chat_template=template, tokenize=False)
    assert ours.render(conv) == want


def test_unsupported_feature_fails_with_the_line(smollm2_dir: Path) -> None:
    template = "{% for m in messages %}\n{{ m.content.zfill(5) }}\n{% endfor %}"
    ours = ChatTokenizer(smollm2_dir / "tokenizer.json", template, {})
    with pytest.raises(TemplateError, match="line 2"):
        ours.render([{"role": "user", "content": "x"}])


def test_raise_exception_is_a_template_error(smollm2_dir: Path) -> None:
    ours = ChatTokenizer(smollm2_dir / "tokenizer.json", FEATURE_TEMPLATES["raise"], {})
    with pytest.raises(TemplateError, match="System first!"):
        ours.render([{"role": "user", "content": "x"}])


def test_bad_messages_are_data_errors(ladle_tok: ChatTokenizer) -> None:
    with pytest.raises(DataError):
        ladle_tok.render([{"content": "no role"}])
    with pytest.raises(DataError):
        ladle_tok.render([{"role": "user", "content": "x", "train": "yes"}])
    with pytest.raises(DataError):
        ladle_tok.render("not a list")  # type: ignore[arg-type]


def test_template_choice(smollm2_dir: Path) -> None:
    conv = CONVERSATIONS["single"]
    default = ChatTokenizer.from_pretrained(smollm2_dir)
    assert default.render(conv).startswith("<|im_start|>system\nYou are a helpful")
    chatml = ChatTokenizer.from_pretrained(smollm2_dir, template="chatml")
    assert chatml.render(conv).startswith("<|im_start|>user\nHi!")
    inline = ChatTokenizer.from_pretrained(smollm2_dir, template="{{ messages|length }}")
    assert inline.render(conv) == "2"
    with pytest.raises(TemplateError, match="chatml"):
        ChatTokenizer.from_pretrained(smollm2_dir, template="no-such-template")


def test_render_batch_and_train_key(ladle_tok: ChatTokenizer, hf_tok: Any) -> None:
    convs = list(CONVERSATIONS.values())
    with_flags = [[{**m, "train": False} for m in c] for c in convs]
    # The Ladle-only `train` key never reaches the template.
    assert ladle_tok.render_batch(with_flags) == [
        hf_tok.apply_chat_template(c, tokenize=False) for c in convs
    ]
    # A dict row carries its own tools.
    row = {"messages": CONVERSATIONS["tools"], "tools": TOOLS}
    assert ladle_tok.render(row) == ladle_tok.render(CONVERSATIONS["tools"], tools=TOOLS)
    assert json.loads(json.dumps(row)) == row


@pytest.mark.parametrize(
    "content",
    [
        "a\U000f0002b",  # the sentinel itself
        "a\udb80\udc02b",  # its surrogate pair, as two Python code points
        "\U000f0003",
    ],
)
def test_sentinels_cannot_forge_a_mask_boundary(smollm2_dir: Path, content: str) -> None:
    tok = ChatTokenizer.from_pretrained(smollm2_dir, template="chatml-generation")
    conv = [{"role": "user", "content": content}, {"role": "assistant", "content": "ok"}]
    with pytest.raises(DataError, match="U\\+F0002"):
        tok.encode(conv)
    with pytest.raises(DataError, match="U\\+F0002"):
        tok.render([{"role": "user", "content": "x", "meta": {"k": [content]}}])


def test_sentinel_json_escapes_are_refused(smollm2_dir: Path) -> None:
    # Rows reach the encoder as JSON text; the guard checks the decoded strings, so an
    # escape spelling of the sentinel (in content, a key or a tool) is refused too.
    tok = ChatTokenizer.from_pretrained(smollm2_dir, template="chatml-generation")
    rows = [
        '[{"role": "user", "content": "a\\udb80\\udc02"}, {"role": "assistant", "content": "b"}]',
        '{"messages": [{"role": "user", "content": "x"}], "tools": [{"\\udb80\\udc03": 1}]}',
        '[{"role": "user", "content": "\\udb80"}]',  # a lone surrogate: not valid JSON text
        '[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]',
    ]
    batch = tok.encode_json(rows)
    assert [type(e).__name__ for e in batch.errors] == ["DataError"] * 3 + ["NoneType"]
    assert batch.n_trained[3] > 0
