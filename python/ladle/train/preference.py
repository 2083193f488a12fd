"""What the preference objectives (DPO, ORPO, KTO) share: each example's prompt + reply
sequences flattened into ONE padding-free row with per-sequence ``position_ids`` (like
packed SFT, so no pad token is computed and lm_head runs only on reply positions), and
each reply's summed log-prob from that row.

A row of the prepared table holds one prompt and its replies: chosen and rejected
(DPO, ORPO) or one labelled completion (KTO). Truncation is TRL's: the prompt is cut
from the left to ``max_prompt_length``, then prompt + reply at the end to ``max_length``.
A row whose reply is truncated away carries no preference: it weighs 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ladle.errors import TrainError
from ladle.train.rows import DPO_COLUMNS, KTO_COLUMNS, TokenTable
from ladle.train.sft import forward_packed

PROMPT = DPO_COLUMNS[0]
PAIR_REPLIES = DPO_COLUMNS[1:]  # chosen, rejected
LABELLED_REPLIES = KTO_COLUMNS[1:]  # completion

Sequences = list[tuple[np.ndarray, np.ndarray]]  # (prompt, reply) per sequence


def truncate_pair(
    prompt: np.ndarray, cont: np.ndarray, max_length: int, max_prompt: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Prompt cut from the left to ``max_prompt``; then prompt+continuation cut at the end
    to ``max_length`` (TRL's ``keep_start``)."""
    if max_prompt is not None and len(prompt) > max_prompt:
        prompt = prompt[-max_prompt:]
    room = max(0, max_length - len(prompt))
    return prompt[:max_length], cont[:room]


class Replies:
    """The rows' prompts and replies, truncated, with each row's planning length and
    weight (``units``: 1, or 0 when a reply is truncated away)."""

    def __init__(
        self,
        tt: TokenTable,
        replies: Sequence[str],
        max_length: int,
        max_prompt: int | None,
        section: str,
    ) -> None:
        self.tt = tt
        self.replies = tuple(replies)
        self.max_length = max_length
        self.max_prompt = max_prompt
        n = tt.n
        self.lengths = np.zeros(n, dtype=np.int64)
        self.dropped: list[int] = []
        for i in range(n):
            if len(tt.get(PROMPT, i)) == 0:
                raise TrainError(f"preference row {i} has an empty prompt")
            seqs = self.row(i)
            self.lengths[i] = sum(len(p) + len(c) for p, c in seqs)
            if any(len(c) == 0 for _, c in seqs):
                self.dropped.append(i)
        self.units = np.ones(n, dtype=np.int64)
        self.units[self.dropped] = 0
        if n and len(self.dropped) == n:
            raise TrainError(
                "every preference row loses its reply to data.max_length/"
                f"train.{section}.max_prompt_length truncation"
            )

    def row(self, i: int) -> Sequences:
        """Row ``i``'s (prompt, reply) sequences, in ``replies`` order."""
        p = self.tt.get(PROMPT, i)
        return [self.cut(p, self.tt.get(col, i)) for col in self.replies]

    def cut(self, prompt: np.ndarray, reply: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return truncate_pair(prompt, reply, self.max_length, self.max_prompt)


def pack(seqs: Sequences, device: torch.device) -> dict[str, torch.Tensor]:
    """Sequences flattened into one row: ``input_ids``/``position_ids`` ``[1, T]``, the
    positions whose logits predict reply tokens (``keep``), those tokens (``targets``),
    which sequence each belongs to (``seg``) and the reply lengths (``counts``)."""
    ids, pos, keep, targets, seg, counts = [], [], [], [], [], []
    offset = 0
    for k, (p, c) in enumerate(seqs):
        seq = np.concatenate([p, c])
        ids.append(seq)
        pos.append(np.arange(len(seq)))
        # Reply token t is predicted by the logits at t - 1.
        start = offset + len(p) - 1
        keep.append(np.arange(start, start + len(c)))
        targets.append(c)
        seg.append(np.full(len(c), k))
        counts.append(len(c))
        offset += len(seq)
    return {
        "input_ids": torch.from_numpy(np.concatenate(ids))[None].to(device),
        "position_ids": torch.from_numpy(np.concatenate(pos))[None].to(device),
        "keep": torch.from_numpy(np.concatenate(keep)).to(device),
        "targets": torch.from_numpy(np.concatenate(targets)).to(device),
        "seg": torch.from_numpy(np.concatenate(seg)).to(device),
        "counts": torch.tensor(counts, dtype=torch.float32, device=device),
    }


def sequence_logps(model: Any, batch: dict[str, torch.Tensor], prefix: str = "") -> torch.Tensor:
    """Summed log-prob of each packed reply, ``[sequences]``. ``prefix`` selects a second
    packed set in the same batch (KTO's mismatched ``kl_`` sequences)."""
    b = {k: batch[prefix + k] for k in ("input_ids", "position_ids", "keep", "targets", "seg")}
    logits = forward_packed(model, b["input_ids"], b["position_ids"], b["keep"])
    token_logps = -F.cross_entropy(logits.float(), b["targets"], reduction="none")
    n = len(batch[prefix + "counts"])
    out = torch.zeros(n, device=token_logps.device, dtype=token_logps.dtype)
    return out.index_add(0, b["seg"], token_logps)
