"""Held-out rows for the loss during training (``train.eval_every``).

The eval split of ``ladle prep`` keeps conversations for generation-based evaluation.
Scoring the loss of their reference answers needs no generation: each conversation is
tokenized with the training chat template and only its final assistant turn carries
loss (``train_on: last``), so the number is "how likely is the reference answer", the
quantity training lowers, on rows training never saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ladle._core import IGNORE_INDEX
from ladle.recipe.schema import Recipe


def prepared_source(rows: Any) -> Any | None:
    """``rows`` when it is a ``ladle prep`` result or folder (which has an eval split)."""
    if hasattr(rows, "manifest") and hasattr(rows, "path"):
        return rows
    if isinstance(rows, (str, Path)) and (Path(rows) / "manifest.json").is_file():
        return rows
    return None


def heldout_rows(recipe: Recipe, prepared: Any, model_dir: Path) -> list[dict[str, Any]]:
    """SFT rows (``input_ids``, ``labels``) of the eval split's first
    ``train.eval_max_rows`` conversations, loss on the reference answer only, cut to
    ``data.max_length``. Rows that cannot be encoded or keep no answer token are skipped
    (prep already counted the split's bad rows)."""
    from ladle.data import load_prepared
    from ladle.data.prep import load_chat_tokenizer

    _, evals, _ = load_prepared(prepared)
    convs = [r["messages"] for r in evals if r.get("messages")]
    if recipe.train.eval_max_rows:
        convs = convs[: recipe.train.eval_max_rows]
    if not convs:
        return []
    tok = load_chat_tokenizer(model_dir, recipe.data.template)
    batch = tok.encode_arrays(convs, train_on="last")
    n = recipe.data.max_length
    rows = []
    for i in range(len(batch)):
        if batch.errors[i] is not None:
            continue
        a, b = int(batch.offsets[i]), int(batch.offsets[i + 1])
        ids = batch.input_ids[a:b][:n].astype(np.int64)
        labels = batch.labels[a:b][:n].astype(np.int64)
        labels[0] = IGNORE_INDEX  # a row's first token is never predicted
        if (labels != IGNORE_INDEX).any():
            rows.append({"input_ids": ids.tolist(), "labels": labels.tolist()})
    return rows
