"""Token-id preference data and a plain log-prob reference, shared by the DPO, ORPO and
KTO tests."""

from __future__ import annotations

from typing import Any

import numpy as np


def pref_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Token-id preference pairs: the chosen reply continues the prompt's arithmetic run
    (next = current + 3, learnable), the rejected one is random."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        start = int(rng.integers(0, 200))
        prompt = [(start + 3 * k) % 300 + 10 for k in range(int(rng.integers(3, 10)))]
        nxt = prompt[-1] + 3
        chosen = [(nxt + 3 * k - 10) % 300 + 10 for k in range(int(rng.integers(2, 8)))] + [2]
        rejected = [int(x) for x in rng.integers(10, 310, size=int(rng.integers(2, 8)))] + [2]
        rows.append(
            {"prompt_input_ids": prompt, "chosen_input_ids": chosen, "rejected_input_ids": rejected}
        )
    return rows


def labelled_rows(n_pairs: int, seed: int = 0) -> list[dict[str, Any]]:
    """KTO examples from ``pref_rows``: each pair split into its chosen reply (desirable)
    and its rejected one (undesirable), as prep does."""
    out = []
    for r in pref_rows(n_pairs, seed):
        for key, label in (("chosen_input_ids", True), ("rejected_input_ids", False)):
            out.append(
                {
                    "prompt_input_ids": r["prompt_input_ids"],
                    "completion_input_ids": r[key],
                    "label": label,
                }
            )
    return out


def reference_logps(model: Any, prompt: list[int], cont: list[int]) -> float:
    """Summed log-prob of ``cont`` after ``prompt``: one plain forward pass, no packing."""
    import torch

    ids = torch.tensor([prompt + cont])
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits[0].float()
    logp = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
    return float(logp[torch.arange(len(cont)), torch.tensor(cont)].sum())


def write_preference_file(path: Any, n: int, labelled: int = 0) -> Any:
    """A ``format: preference`` JSONL file of ticket-style text: ``n`` pairs (the right
    JSON record against a wrong label) and ``labelled`` single completions with
    ``label: true/false`` (KTO's form), alternating."""
    import json

    rng = np.random.default_rng(n)
    cats = ["billing", "refund", "shipping"]
    with open(path, "w") as f:
        for i in range(n + labelled):
            k = int(rng.integers(0, 3))
            prompt = f"Ticket {i}: my {cats[k]} problem {int(rng.integers(0, 10**6))}."
            good = json.dumps({"category": cats[k]})
            bad = json.dumps({"category": cats[(k + 1) % 3]})
            if i < n:
                row = {"prompt": prompt, "chosen": good, "rejected": bad}
            else:
                label = i % 2 == 0
                row = {"prompt": prompt, "completion": good if label else bad, "label": label}
            f.write(json.dumps(row) + "\n")
    return path


def smoke_recipe(model_dir: Any, data: Any, method: str) -> dict[str, Any]:
    """A 2-step preference recipe on the tiny model that prepares ``data`` itself."""
    return {
        "name": f"{method}-smoke",
        "seed": 3,
        "model": {"base": str(model_dir)},
        "data": {
            "datasets": [{"path": str(data), "format": "preference"}],
            "max_length": 96,
            "dedup": {"enabled": False},
        },
        "train": {
            "method": method,
            "lr": 1e-3,
            "max_steps": 2,
            "micro_batch_size": 2,
            "threads": 1,
            "save_every": 0,
            "report_to": ["none"],
        },
    }


MAX_LEN = 64


def tiny_recipe(
    model_dir: Any,
    method: str,
    spec: dict[str, Any],
    *,
    model: dict[str, Any] | None = None,
    **train: Any,
) -> Any:
    """A preference recipe on the tiny Llama: ``method`` with its ``spec`` (e.g.
    ``{"beta": 0.5}``), LoRA r=8, 6 steps of 4, overridable through ``train``."""
    from ladle.recipe.schema import Recipe

    settings: dict[str, Any] = {
        "method": method,
        "lr": 5e-3,
        "max_steps": 6,
        "micro_batch_size": 4,
        "save_every": 0,
        "report_to": ["none"],
        "lora": {"r": 8, "alpha": 16},
        method: spec,
    }
    settings.update(train)
    return Recipe.model_validate(
        {
            "name": "t",
            "seed": 7,
            "model": {"base": str(model_dir), **(model or {})},
            "data": {"datasets": [{"path": "x", "format": "preference"}], "max_length": MAX_LEN},
            "train": settings,
        }
    )
