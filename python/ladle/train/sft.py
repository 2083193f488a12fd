"""Supervised fine-tuning objectives: padding-free packed micro-batches and padded batches.

Performance notes (why this is not TRL's SFTTrainer):

- A packed micro-batch is ONE flattened row ``[1, T]``: the packed rows concatenated,
  per-document ``position_ids``, no attention mask, ``use_cache=False``. No pad token is
  ever computed.
- The output projection runs only where a label is trained: prompt tokens never pay for
  the ``hidden x vocab`` matmul. It runs chunk by chunk inside the loss
  (:mod:`ladle.train.loss`), so the ``[tokens, vocab]`` logits never exist at once.
- The loss is a token SUM; the loop divides by the number of trained tokens of the whole
  optimizer step (all micro-batches, all ranks), so gradient accumulation and DDP give
  the same update as one big batch. No per-token entropy/accuracy metrics are computed
  (TRL spends about half its step in a chunked log-prob helper for them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ladle._core import IGNORE_INDEX
from ladle.train.loss import final_hidden, linear_cross_entropy, output_head, plain_cross_entropy
from ladle.train.rows import TokenTable, sft_loss_tokens

NO_LOGITS = torch.zeros(0, dtype=torch.long)  # logits_to_keep: project nothing


class PackedSFT:
    """Packed rows (several documents each), concatenated up to the micro-batch budget."""

    packed = True
    name = "sft"

    def __init__(self, tt: TokenTable) -> None:
        self.tt = tt
        self.lengths = tt.lengths("input_ids")
        self.units = sft_loss_tokens(tt)

    def batch(self, rows: Sequence[int], device: torch.device) -> dict[str, torch.Tensor]:
        tt = self.tt
        ids = np.concatenate([tt.get("input_ids", i) for i in rows])
        pos = np.concatenate([tt.get("position_ids", i) for i in rows])
        labels = np.concatenate([tt.get("labels", i) for i in rows])
        target = np.full_like(labels, IGNORE_INDEX)
        target[:-1] = labels[1:]
        # A document's first token is never predicted from the previous document.
        target[:-1][pos[1:] == 0] = IGNORE_INDEX
        keep = np.nonzero(target != IGNORE_INDEX)[0]
        return {
            "input_ids": torch.from_numpy(ids)[None].to(device),
            "position_ids": torch.from_numpy(pos)[None].to(device),
            "keep": torch.from_numpy(keep).to(device),
            "targets": torch.from_numpy(target[keep]).to(device),
        }

    def loss(
        self, model: Any, core: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
        return token_loss(model, core, inputs, batch["keep"], batch["targets"]), {}


def token_loss(
    model: Any,
    core: Any,
    inputs: dict[str, torch.Tensor],
    keep: torch.Tensor,
    targets: torch.Tensor,
    chunked: bool = True,
) -> torch.Tensor:
    """Summed cross-entropy of ``targets`` at sequence positions ``keep`` (every row of
    the batch). ``model`` is what is called (``core`` or its DDP wrapper, so the wrapper's
    hooks run); ``core`` is the unwrapped model whose output layer the loss uses."""
    head = output_head(core) if chunked else None
    if head is None:
        out = model(**inputs, use_cache=False, logits_to_keep=keep)
        return plain_cross_entropy(out.logits, targets)
    with final_hidden(core) as seen:
        model(**inputs, use_cache=False, logits_to_keep=NO_LOGITS.to(keep.device))
    return linear_cross_entropy(seen[-1][:, keep], head.weight, targets)


def forward_packed(
    model: Any, input_ids: torch.Tensor, position_ids: torch.Tensor, keep: torch.Tensor
) -> torch.Tensor:
    """Logits ``[len(keep), vocab]`` of a flattened packed row: no mask, no cache.

    ``position_ids`` restarting at 0 are what makes transformers build a block-diagonal
    mask; passing an attention mask or enabling the cache would silently disable that.
    """
    out = model(
        input_ids=input_ids, position_ids=position_ids, use_cache=False, logits_to_keep=keep
    )
    return out.logits[0]


class PaddedSFT:
    """One example per row, right-padded into ``[B, L]`` batches with an attention mask."""

    packed = False
    name = "sft"

    def __init__(self, tt: TokenTable, pad_id: int = 0) -> None:
        self.tt = tt
        self.pad_id = pad_id
        self.lengths = tt.lengths("input_ids")
        self.units = sft_loss_tokens(tt)

    def batch(self, rows: Sequence[int], device: torch.device) -> dict[str, torch.Tensor]:
        tt = self.tt
        width = max(int(self.lengths[i]) for i in rows)
        b = len(rows)
        ids = np.full((b, width), self.pad_id, dtype=np.int64)
        mask = np.zeros((b, width), dtype=np.int64)
        target = np.full((b, width), IGNORE_INDEX, dtype=np.int64)
        for j, i in enumerate(rows):
            x, lab, pos = tt.get("input_ids", i), tt.get("labels", i), tt.get("position_ids", i)
            n = len(x)
            ids[j, :n], mask[j, :n] = x, 1
            t = target[j, : n - 1]
            t[:] = lab[1:]
            t[pos[1:] == 0] = IGNORE_INDEX
        # Positions where any row trains: lm_head runs on those columns only.
        keep = np.nonzero((target != IGNORE_INDEX).any(axis=0))[0]
        return {
            "input_ids": torch.from_numpy(ids).to(device),
            "attention_mask": torch.from_numpy(mask).to(device),
            "keep": torch.from_numpy(keep).to(device),
            "targets": torch.from_numpy(target[:, keep]).to(device),
        }

    def loss(
        self, model: Any, core: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        return token_loss(model, core, inputs, batch["keep"], batch["targets"]), {}
