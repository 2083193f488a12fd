"""Direct Preference Optimization on pre-tokenized (prompt, chosen, rejected) triples.

Why not TRL's ``DPOTrainer`` (a judgement call, revisit when TRL changes): it wants a
``datasets.Dataset`` it tokenizes and pads itself, and drives its own loop, so Ladle's
guarantees (exact resume from a step number, DDP shards planned without a sampler, the
same checkpoint/manifest code as SFT) would have to be re-threaded through its
callbacks. The loss itself is ten lines; this module computes exactly TRL's ``sigmoid``,
``hinge`` and ``ipo`` losses (IPO length-normalised as TRL does) and:

- flattens the 2 x B sequences (prompt+chosen, prompt+rejected) of a micro-batch into ONE
  padding-free row with per-sequence ``position_ids``, like packed SFT, so no pad token
  is computed and lm_head runs only on continuation positions;
- takes the reference log-probs from the same weights with the adapter disabled
  (``PeftModel.disable_adapter()``), so there is no second model copy in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ladle.errors import TrainError
from ladle.recipe.schema import DpoSpec
from ladle.train.rows import TokenTable
from ladle.train.sft import forward_packed


def truncate_pair(
    prompt: np.ndarray, cont: np.ndarray, max_length: int, max_prompt: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Prompt cut from the left to ``max_prompt``; then prompt+continuation cut at the end
    to ``max_length`` (TRL's ``keep_start``)."""
    if max_prompt is not None and len(prompt) > max_prompt:
        prompt = prompt[-max_prompt:]
    room = max(0, max_length - len(prompt))
    return prompt[:max_length], cont[:room]


class DPO:
    packed = True
    name = "dpo"

    def __init__(self, tt: TokenTable, spec: DpoSpec, max_length: int) -> None:
        self.tt = tt
        self.spec = spec
        self.max_length = max_length
        n = tt.n
        lengths = np.zeros(n, dtype=np.int64)
        self.dropped: list[int] = []
        for i in range(n):
            p = tt.get("prompt_input_ids", i)
            if len(p) == 0:
                raise TrainError(f"preference row {i} has an empty prompt")
            total = 0
            ok = True
            for col in ("chosen_input_ids", "rejected_input_ids"):
                pp, c = truncate_pair(p, tt.get(col, i), max_length, spec.max_prompt_length)
                ok &= len(c) > 0
                total += len(pp) + len(c)
            lengths[i] = total
            if not ok:
                self.dropped.append(i)
        self.lengths = lengths
        # Pairs whose continuation is truncated away carry no preference: they weigh 0.
        self.units = np.ones(n, dtype=np.int64)
        self.units[self.dropped] = 0
        if n and len(self.dropped) == n:
            raise TrainError(
                "every preference pair loses its continuation to data.max_length/"
                "train.dpo.max_prompt_length truncation"
            )

    def batch(self, rows: Sequence[int], device: torch.device) -> dict[str, torch.Tensor]:
        ids, pos, keep, targets, seg, counts, valid = [], [], [], [], [], [], []
        offset = 0
        for j, i in enumerate(rows):
            p = self.tt.get("prompt_input_ids", i)
            for k, col in enumerate(("chosen_input_ids", "rejected_input_ids")):
                pp, c = truncate_pair(
                    p, self.tt.get(col, i), self.max_length, self.spec.max_prompt_length
                )
                seq = np.concatenate([pp, c])
                ids.append(seq)
                pos.append(np.arange(len(seq)))
                # Continuation token t is predicted by the logits at t - 1.
                start = offset + len(pp) - 1
                keep.append(np.arange(start, start + len(c)))
                targets.append(c)
                seg.append(np.full(len(c), 2 * j + k))
                counts.append(len(c))
                offset += len(seq)
            valid.append(self.units[i])
        return {
            "input_ids": torch.from_numpy(np.concatenate(ids))[None].to(device),
            "position_ids": torch.from_numpy(np.concatenate(pos))[None].to(device),
            "keep": torch.from_numpy(np.concatenate(keep)).to(device),
            "targets": torch.from_numpy(np.concatenate(targets)).to(device),
            "seg": torch.from_numpy(np.concatenate(seg)).to(device),
            "counts": torch.tensor(counts, dtype=torch.float32, device=device),
            "valid": torch.tensor(valid, dtype=torch.float32, device=device),
        }

    def sequence_logps(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Summed log-prob of each continuation, ``[2B]`` (chosen, rejected interleaved)."""
        logits = forward_packed(model, batch["input_ids"], batch["position_ids"], batch["keep"])
        token_logps = -F.cross_entropy(logits.float(), batch["targets"], reduction="none")
        out = torch.zeros(len(batch["counts"]), device=token_logps.device, dtype=token_logps.dtype)
        return out.index_add(0, batch["seg"], token_logps)

    def loss(
        self, model: Any, core: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        logps = self.sequence_logps(model, batch)
        with torch.no_grad(), core.disable_adapter():
            ref = self.sequence_logps(core, batch)
        per_pair, rewards = dpo_loss(
            logps[0::2],
            logps[1::2],
            ref[0::2],
            ref[1::2],
            self.spec,
            batch["counts"][0::2],
            batch["counts"][1::2],
        )
        valid = batch["valid"]
        ch, rj = rewards
        extras = {
            "rewards_chosen": float((ch * valid).sum()),
            "rewards_rejected": float((rj * valid).sum()),
            "accuracy": float(((ch > rj).float() * valid).sum()),
            "margin": float(((ch - rj) * valid).sum()),
        }
        return (per_pair * valid).sum(), extras


def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    spec: DpoSpec,
    chosen_len: torch.Tensor | None = None,
    rejected_len: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Per-pair DPO loss and the implicit rewards ``beta * (logp - ref_logp)`` (detached)."""
    chosen_ratio = chosen - ref_chosen
    rejected_ratio = rejected - ref_rejected
    delta = chosen_ratio - rejected_ratio
    beta = spec.beta
    if spec.loss_type == "sigmoid":
        loss = -F.logsigmoid(beta * delta)
    elif spec.loss_type == "hinge":
        loss = torch.relu(1 - beta * delta)
    else:  # ipo, length-normalised like TRL
        if chosen_len is None or rejected_len is None:
            raise TrainError("ipo needs continuation lengths")
        ipo = chosen_ratio / chosen_len.clamp(min=1) - rejected_ratio / rejected_len.clamp(min=1)
        loss = (ipo - 1 / (2 * beta)) ** 2
    rewards = (beta * chosen_ratio.detach(), beta * rejected_ratio.detach())
    return loss, rewards
