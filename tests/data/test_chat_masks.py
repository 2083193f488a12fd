"""Loss masks on every template transformers renders.

For each template (SmolLM2's own, every builtin, every reference template in
../shared/reference/chat_templates) and each conversation transformers can render, the
trained tokens Ladle computes are checked against turn regions derived from
transformers' own renders: message ``i`` occupies the text between where the render of
``messages[:i]`` and the render of ``messages[:i+1]`` leave the whole conversation.
Every trained token must lie in a selected assistant turn, each selected reply's content
and its end-of-turn text must be trained, and no other reply may be.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ladle._core import IGNORE_INDEX
from ladle.data import ChatTokenizer
from ladle.data.chat import BUILTIN_TEMPLATES
from ladle.errors import TemplateError

REFERENCE_DIR = Path("reference") / "chat_templates"

# Replies chosen so their text cannot be confused with a role header ("t" is in
# "<start_of_turn>", so it checks that the header is skipped before the reply is sought).
CONVERSATIONS: dict[str, list[dict[str, Any]]] = {
    "system_multi": [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": " Hello there\n"},
        {"role": "user", "content": "more"},
        {"role": "assistant", "content": "Sure, 42."},
    ],
    "no_system": [
        {"role": "user", "content": "Écris un haïku 🍂"},
        {"role": "assistant", "content": "Feuilles qui tombent"},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "t"},
    ],
    "single": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ],
}

# Templates that were refused before turn-locating existed: transformers renders them,
# but their generation prompt is not a prefix of the conversation.
TURN_LOCATED = {"gemma-it", "vicuna", "alpaca", "amberchat", "chatqa", "saiga"}


@pytest.fixture(scope="module")
def hf_tok(smollm2_dir: Path) -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(smollm2_dir))


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _hf_render(hf_tok: Any, template: str, conv: list[dict[str, Any]]) -> str | None:
    try:
        return str(hf_tok.apply_chat_template(conv, chat_template=template, tokenize=False))
    except Exception:  # jinja2 raises several kinds; a render that fails has no region
        return None


def _regions(hf_tok: Any, template: str, conv: list[dict[str, Any]], text: str) -> list[range]:
    """Character region of each message in ``text``, from transformers' renders."""
    bounds = [0]
    for j in range(1, len(conv)):
        r = _hf_render(hf_tok, template, conv[:j])
        bounds.append(max(bounds[-1], _common_prefix(r, text) if r is not None else 0))
    bounds.append(len(text))
    return [range(bounds[i], bounds[i + 1]) for i in range(len(conv))]


def _reply_position(hf_tok: Any, template: str, conv: list[dict[str, Any]], i: int) -> int:
    """Where message i's content is printed: the render with the content replaced by a
    marker is identical up to that point (a search for the content itself could hit a
    role header: "t" is in "<start_of_turn>")."""
    marker = "\u27e6REPLY\u27e7"
    probe = [dict(m) for m in conv]
    probe[i]["content"] = marker
    r = _hf_render(hf_tok, template, probe)
    assert r is not None and marker in r
    return r.index(marker)


def _check_masks(hf_tok: Any, smollm2_dir: Path, template: str) -> set[str]:
    """Checks every conversation the template renders; returns the mask methods used."""
    ours = ChatTokenizer(smollm2_dir / "tokenizer.json", template, dict(hf_tok.special_tokens_map))
    methods: set[str] = set()
    checked = 0
    for name, conv in CONVERSATIONS.items():
        text = _hf_render(hf_tok, template, conv)
        if text is None:
            continue
        regions = _regions(hf_tok, template, conv, text)
        enc = hf_tok(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        assistants = [i for i, m in enumerate(conv) if m["role"] == "assistant"]
        for train_on in ("assistant", "last"):
            batch = ours.encode_json([json.dumps(conv)], train_on=train_on)  # type: ignore[arg-type]
            assert batch.errors[0] is None, f"{name} {train_on}: {batch.errors[0]}"
            row = batch.row(0)
            assert row["input_ids"] == enc["input_ids"], name
            methods.add(batch.mask_methods[0])
            trained = [t for t, lab in enumerate(row["labels"]) if lab != IGNORE_INDEX]
            selected = assistants if train_on == "assistant" else assistants[-1:]
            where = f"{name} train_on={train_on}"
            # Nothing outside the selected assistant turns is trained.
            for t in trained:
                s, e = offsets[t]
                inside = [i for i in selected if s < regions[i].stop and e > regions[i].start]
                assert inside, f"{where}: trained token {text[s:e]!r} at {s} is in no reply"
            covered = set()
            for t in trained:
                covered.update(range(*offsets[t]))
            # The decoded trained runs hold each selected reply, and only those.
            runs: list[list[int]] = []
            for t in trained:
                if runs and runs[-1][-1] == t - 1:
                    runs[-1].append(t)
                else:
                    runs.append([t])
            decoded = [ours.decode([row["input_ids"][t] for t in run]) for run in runs]
            for i in assistants:
                raw, content = conv[i]["content"], conv[i]["content"].strip()
                pos = _reply_position(hf_tok, template, conv, i)
                if text.startswith(raw, pos):  # printed as given, not trimmed
                    pos += raw.index(content)
                assert text[pos : pos + len(content)] == content, f"{where}: reply {i}"
                assert pos in regions[i], f"{where}: reply {i} not printed in its turn"
                span = set(range(pos, pos + len(content)))
                if i in selected:
                    assert span <= covered, f"{where}: reply {i} not fully trained"
                    assert any(content in d for d in decoded), f"{where}: {decoded}"
                    # The end of the turn (end-of-turn token) is trained too.
                    turn = text[regions[i].start : regions[i].stop].rstrip()
                    assert regions[i].start + len(turn) - 1 in covered, f"{where}: end of {i}"
                else:
                    assert not span & covered, f"{where}: unselected reply {i} trained"
            checked += 1
    assert checked > 0, "the template rendered none of the conversations"
    return methods


def test_smollm2_template_masks(hf_tok: Any, smollm2_dir: Path) -> None:
    template = (smollm2_dir / "chat_template.jinja").read_text()
    assert _check_masks(hf_tok, smollm2_dir, template) == {"prefix"}


@pytest.mark.parametrize("name", sorted(BUILTIN_TEMPLATES))
def test_builtin_templates_mask(hf_tok: Any, smollm2_dir: Path, name: str) -> None:
    want = "generation" if "generation" in name else "prefix"
    assert _check_masks(hf_tok, smollm2_dir, BUILTIN_TEMPLATES[name]) == {want}


def _reference_names() -> list[str]:
    # Collected before fixtures run; the test itself reads through `shared_dir`, which
    # skips cleanly when ../shared is absent.
    d = Path(__file__).resolve().parents[2].parent / "shared" / REFERENCE_DIR
    return sorted(p.stem for p in d.glob("*.jinja")) if d.is_dir() else []


@pytest.mark.parametrize("name", _reference_names() or ["(none)"])
def test_reference_templates_mask(
    hf_tok: Any, smollm2_dir: Path, shared_dir: Path, name: str
) -> None:
    path = shared_dir / REFERENCE_DIR / f"{name}.jinja"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    methods = _check_masks(hf_tok, smollm2_dir, path.read_text())
    assert methods == ({"turn"} if name in TURN_LOCATED else {"prefix"}), methods


# The template never prints an assistant reply and its generation prompt is not a prefix
# of the conversation: no rule can place the reply.
UNPLACEABLE = (
    "{% for m in messages %}{% if m.role == 'user' %}[{{ m.content }}]{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def test_unplaceable_reply_is_a_template_error_naming_the_row(smollm2_dir: Path) -> None:
    tok = ChatTokenizer(smollm2_dir / "tokenizer.json", UNPLACEABLE, {})
    good = [{"role": "user", "content": "x"}]
    bad = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    with pytest.raises(TemplateError, match=r"row 1: .*assistant message 1.*generation"):
        tok.encode_batch([good, bad, good])
    batch = tok.encode_arrays([good, bad])
    assert batch.errors[0] is None and isinstance(batch.errors[1], TemplateError)
    # train_on: all needs no reply located, so the same row encodes.
    assert tok.encode(bad, train_on="all")["labels"][0] != IGNORE_INDEX


def test_mask_method_is_reported(smollm2_dir: Path) -> None:
    conv = CONVERSATIONS["single"]
    gen = ChatTokenizer.from_pretrained(smollm2_dir, template="chatml-generation")
    assert gen.encode_arrays([conv]).mask_method() == "generation"
    plain = ChatTokenizer.from_pretrained(smollm2_dir, template="chatml")
    assert plain.encode_arrays([conv, conv]).mask_method() == "prefix"
    assert plain.encode_arrays([conv], train_on="all").mask_method() == "none"


def _prep_recipe(tmp_path: Path, smollm2_dir: Path, rows: list[Any], template: str) -> Path:
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"messages": r}) + "\n" for r in rows))
    recipe = tmp_path / "r.yaml"
    body = {
        "name": "t",
        "model": {"base": str(smollm2_dir)},
        "data": {
            "datasets": [{"path": str(src)}],
            "template": template,
            "max_length": 128,
            "dedup": {"enabled": False},
        },
    }
    recipe.write_text(json.dumps(body))
    return recipe


@pytest.mark.parametrize("template", ["chatml-generation", "gemma-it"])
def test_prep_manifest_records_the_mask_method(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    smollm2_dir: Path,
    shared_dir: Path,
    template: str,
) -> None:
    from ladle.data import prep
    from ladle.recipe import load_recipe

    monkeypatch.setenv("LADLE_HOME", str(tmp_path / "home"))
    if template == "gemma-it":
        template = str(shared_dir / REFERENCE_DIR / "gemma-it.jinja")
    rows = [
        [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": f"A{i}."}]
        for i in range(8)
    ]
    manifest = prep(load_recipe(_prep_recipe(tmp_path, smollm2_dir, rows, template))).manifest
    want = "generation" if template == "chatml-generation" else "turn"
    assert manifest.datasets[0].mask_method == want
    assert manifest.train.examples == 8


def test_prep_names_the_row_no_rule_can_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smollm2_dir: Path
) -> None:
    from ladle.data import prep
    from ladle.recipe import load_recipe

    monkeypatch.setenv("LADLE_HOME", str(tmp_path / "home"))
    # Row 2's reply is the only one the template does not print.
    template = (
        "{% for m in messages %}{% if m.content != 'hidden' %}[{{ m.content }}]{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    )
    rows = [
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        [{"role": "user", "content": "c"}, {"role": "assistant", "content": "hidden"}],
    ]
    recipe = _prep_recipe(tmp_path, smollm2_dir, rows, template)
    manifest = prep(load_recipe(recipe)).manifest
    drop = manifest.drops["template_error"]
    assert drop.count == 1
    assert "d.jsonl:2" in drop.first[0] and "assistant message 1" in drop.first[0]
    with pytest.raises(TemplateError, match=r"d\.jsonl:2: .*assistant message 1"):
        prep(load_recipe(recipe, ["data.strict=true"]), force=True)
