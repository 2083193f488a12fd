"""``ladle render``: show examples exactly as the model will see them, masks included."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ladle._core import IGNORE_INDEX
from ladle.commands.common import add_recipe_args, subparser

DESCRIPTION = """\
Render the first training examples with the recipe's chat template and tokenizer and
show which tokens carry loss (highlighted) and which do not (dim). Check this before
spending GPU hours: a wrong template or mask trains the wrong thing silently.
--json prints the rendered text, input_ids and labels (-100 = no loss) instead."""

EXAMPLE = """\
ladle render recipes/quickstart.yaml --limit 3
ladle render recipe.yaml data.train_on=last --json"""


def register(subparsers: Any) -> None:
    p = subparser(
        subparsers,
        "render",
        help="show examples as the model sees them, trained tokens highlighted",
        description=DESCRIPTION,
        example=EXAMPLE,
    )
    add_recipe_args(p)
    p.add_argument("--limit", type=int, default=3, help="examples to show (default 3)")
    p.add_argument("--split", choices=["train", "eval"], default="train")
    p.add_argument("--json", action="store_true", help="print text, ids and labels as JSON")
    p.set_defaults(func=run)


def examples(
    recipe: Any, limit: int, split: str = "train", tokenizer: Any = None
) -> list[dict[str, Any]]:
    """The first ``limit`` rows of a split as ``{"text", "input_ids", "labels"}``."""
    from ladle.data.examples import text_encoder
    from ladle.data.load import load_dataset
    from ladle.data.prep import load_chat_tokenizer
    from ladle.demo import ensure_generated
    from ladle.models import resolve_model

    ensure_generated(recipe)
    model_dir = Path(resolve_model(recipe.model.base))
    chat = tokenizer or load_chat_tokenizer(model_dir, recipe.data.template)
    out: list[dict[str, Any]] = []
    for i, spec in enumerate(recipe.data.datasets):
        if spec.split != split or len(out) >= limit:
            continue
        spec = spec.model_copy(update={"limit": limit - len(out)})
        for row in load_dataset(spec, i, strict=recipe.data.strict).rows:
            out.append(_encode(chat, row, recipe.data.train_on, model_dir, text_encoder))
    return out


def _encode(
    chat: Any, row: dict[str, Any], train_on: str, model_dir: Path, text_encoder: Any
) -> dict[str, Any]:
    if "text" in row:
        enc, eos = text_encoder(chat, model_dir)
        ids = enc([row["text"]])[0] + ([eos] if eos is not None else [])
        return {"text": row["text"], "input_ids": ids, "labels": list(ids)}
    if "chosen" in row:
        msgs = [{**m, "train": False} for m in row["prompt"]] + row["chosen"]
        train_on = "assistant"
    else:
        msgs = row["messages"]
    tools = row.get("tools")
    enc = chat.encode(msgs, train_on=train_on, tools=tools)
    return {
        "text": chat.render(msgs, tools=tools),
        "input_ids": list(enc["input_ids"]),
        "labels": list(enc["labels"]),
    }


def run(args: argparse.Namespace) -> int:
    from rich.rule import Rule
    from rich.text import Text

    from ladle.commands.common import console
    from ladle.data.prep import load_chat_tokenizer
    from ladle.models import resolve_model
    from ladle.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    tok = load_chat_tokenizer(Path(resolve_model(recipe.model.base)), recipe.data.template)
    rows = examples(recipe, args.limit, args.split, tokenizer=tok)
    if args.json:
        for r in rows:
            print(json.dumps(r, ensure_ascii=False))
        return 0
    for n, r in enumerate(rows):
        trained = sum(1 for x in r["labels"] if x != IGNORE_INDEX)
        console.print(Rule(f"example {n + 1}: {len(r['input_ids'])} tokens, {trained} trained"))
        console.print(highlight(tok, r["input_ids"], r["labels"]))
    console.print(
        Text("legend: ", style="bold")
        + Text("trained", style="bold green")
        + Text(" / ")
        + Text("not trained", style="dim")
    )
    return 0


def highlight(tok: Any, ids: list[int], labels: list[int]) -> Any:
    """Rich text of the ids, runs of trained tokens bold green, the rest dim."""
    from rich.text import Text

    text = Text()
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or (labels[i] != IGNORE_INDEX) != (labels[start] != IGNORE_INDEX):
            piece = tok.decode(ids[start:i], skip_special_tokens=False)
            text.append(piece, style="bold green" if labels[start] != IGNORE_INDEX else "dim")
            start = i
    return text
