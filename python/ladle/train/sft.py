"""Supervised fine-tuning objectives: padding-free packed micro-batches and padded batches.

Performance notes (why this is not TRL's SFTTrainer):

- A packed micro-batch is the packed rows stacked ``[B, L]`` (padded to the longest with a
  dummy document that never trains), per-document ``position_ids``, no attention mask,
  ``use_cache=False``. sdpa and eager attention keep packed documents apart with a
  block-diagonal mask over each row, computed in full: concatenating a micro-batch into
  one ``[1, B*L]`` row (what this did before) made attention cost grow with ``(B*L)^2``
  instead of ``B * L^2``; on SmolLM2 with 4 rows of 512 that was 44% of the step (profiled).
  flash-attention runs the documents as variable-length sequences (``cu_seqlens``) only
  in ONE flattened row, so with it the rows are concatenated instead (``stack=False``),
  which also computes no padding.
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
    """Packed rows (several documents each), up to the micro-batch budget per batch."""

    packed = True
    name = "sft"

    def __init__(self, tt: TokenTable, stack: bool = True) -> None:
        self.tt = tt
        self.stack = stack  # rows stacked [B, L]; False: concatenated into one row [1, T]
        self.lengths = tt.lengths("input_ids")
        self.units = sft_loss_tokens(tt)

    def batch(self, rows: Sequence[int], device: torch.device) -> dict[str, torch.Tensor]:
        tt = self.tt
        parts = [
            (tt.get("input_ids", i), tt.get("position_ids", i), tt.get("labels", i)) for i in rows
        ]
        if not self.stack:
            ids_, pos_, labels_ = zip(*parts, strict=True)
            parts = [(np.concatenate(ids_), np.concatenate(pos_), np.concatenate(labels_))]
        width = max(len(p[0]) for p in parts)
        ids = np.zeros((len(parts), width), dtype=np.int64)
        pos = np.zeros((len(parts), width), dtype=np.int64)
        target = np.full((len(parts), width), IGNORE_INDEX, dtype=np.int64)
        for j, (x, p, lab) in enumerate(parts):
            n = len(x)
            ids[j, :n], pos[j, :n] = x, p
            # Padding is a document of its own (positions restart at 0): isolated, untrained.
            pos[j, n:] = np.arange(width - n)
            t = target[j, : n - 1]
            t[:] = lab[1:]
            # A document's first token is never predicted from the previous document.
            t[p[1:] == 0] = IGNORE_INDEX
        keep = target != IGNORE_INDEX
        return {
            "input_ids": torch.from_numpy(ids).to(device),
            "position_ids": torch.from_numpy(pos).to(device),
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
    """Summed cross-entropy of ``targets`` (row-major) at the positions where the boolean
    ``keep [B, L]`` is set. ``model`` is what is called (``core`` or its DDP wrapper, so
    the wrapper's hooks run); ``core`` is the unwrapped model whose output layer the loss
    uses."""
    head = output_head(core) if chunked else None
    if head is None:
        cols = keep.any(dim=0).nonzero()[:, 0]  # logits_to_keep selects columns of every row
        out = model(**inputs, use_cache=False, logits_to_keep=cols)
        return plain_cross_entropy(out.logits[keep[:, cols]], targets)
    with final_hidden(core) as seen:
        model(**inputs, use_cache=False, logits_to_keep=NO_LOGITS.to(keep.device))
    return linear_cross_entropy(seen[-1][keep], head.weight, targets)


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
        keep = target != IGNORE_INDEX
        return {
            "input_ids": torch.from_numpy(ids).to(device),
            "attention_mask": torch.from_numpy(mask).to(device),
            "keep": torch.from_numpy(keep).to(device),
            "targets": torch.from_numpy(target[keep]).to(device),
        }

    def loss(
        self, model: Any, core: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        return token_loss(model, core, inputs, batch["keep"], batch["targets"]), {}
