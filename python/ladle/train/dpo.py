"""Direct Preference Optimization on pre-tokenized (prompt, chosen, rejected) triples.

Why not TRL's ``DPOTrainer`` (a judgement call, revisit when TRL changes): it wants a
``datasets.Dataset`` it tokenizes and pads itself, and drives its own loop, so Ladle's
guarantees (exact resume from a step number, DDP shards planned without a sampler, the
same checkpoint/manifest code as SFT) would have to be re-threaded through its
callbacks. The loss itself is ten lines; this module computes exactly TRL's ``sigmoid``,
``hinge`` and ``ipo`` losses (IPO length-normalised as TRL does) and:

- flattens the 2 x B sequences (prompt+chosen, prompt+rejected) of a micro-batch into ONE
  padding-free row with per-sequence ``position_ids``, like packed SFT, so no pad token
  is computed and lm_head runs only on continuation positions (``preference``, shared
  with ORPO and KTO);
- takes the reference log-probs from the same weights with the adapter disabled
  (``PeftModel.disable_adapter()``), or with the frozen copy of the starting adapter
  when training continues one (``model.adapter``), so there is no second model copy;
- adds ``sft_weight`` x the chosen answers' NLL (RPO, TRL's ``rpo_alpha``). TRL averages
  it over all chosen tokens of a batch; here each pair's NLL is its per-token mean, so
  the term does not depend on how a step is cut into micro-batches or ranks;
- watches for likelihood displacement: on pairs that share most of their tokens DPO can
  raise the margin by pushing BOTH answers down, and the policy then drifts into text
  neither answer contains (the shipped recipe did: valid JSON 0.92 -> 0.00). ``watch``
  turns the logged metrics into a warning when that happens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ladle.errors import TrainError
from ladle.recipe.schema import DpoSpec
from ladle.train.adapters import reference_model
from ladle.train.preference import PAIR_REPLIES, Replies, pack, sequence_logps
from ladle.train.rows import TokenTable


class DPO:
    packed = True
    name = "dpo"

    def __init__(self, tt: TokenTable, spec: DpoSpec, max_length: int) -> None:
        self.tt = tt
        self.spec = spec
        self.replies = Replies(tt, PAIR_REPLIES, max_length, spec.max_prompt_length, "dpo")
        self.lengths, self.units = self.replies.lengths, self.replies.units
        self.displacement = Displacement()

    def batch(self, rows: Sequence[int], device: torch.device) -> dict[str, torch.Tensor]:
        """Chosen and rejected interleaved: sequence 2j is row j's chosen reply."""
        batch = pack([s for i in rows for s in self.replies.row(i)], device)
        batch["valid"] = torch.tensor(
            [self.units[i] for i in rows], dtype=torch.float32, device=device
        )
        return batch

    def sequence_logps(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Summed log-prob of each continuation, ``[2B]`` (chosen, rejected interleaved)."""
        return sequence_logps(model, batch)

    def loss(
        self, model: Any, core: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        logps = self.sequence_logps(model, batch)
        with torch.no_grad(), reference_model(core):
            ref = self.sequence_logps(core, batch)
        chosen_len = batch["counts"][0::2]
        per_pair, rewards = dpo_loss(
            logps[0::2],
            logps[1::2],
            ref[0::2],
            ref[1::2],
            self.spec,
            chosen_len,
            batch["counts"][1::2],
        )
        valid = batch["valid"]
        ch, rj = rewards
        extras = {
            "rewards_chosen": float((ch * valid).sum()),
            "rewards_rejected": float((rj * valid).sum()),
            "accuracy": float(((ch > rj).float() * valid).sum()),
            "margin": float(((ch - rj) * valid).sum()),
            # The policy's own summed log-probs: falling chosen ones are displacement.
            "logps_chosen": float((logps[0::2].detach() * valid).sum()),
            "logps_rejected": float((logps[1::2].detach() * valid).sum()),
        }
        if self.spec.sft_weight:
            nll = -logps[0::2] / chosen_len.clamp(min=1)
            extras["nll_chosen"] = float((nll.detach() * valid).sum())
            per_pair = per_pair + self.spec.sft_weight * nll
        return (per_pair * valid).sum(), extras

    def watch(self, row: dict[str, Any]) -> list[str]:
        """Warnings from one logged metrics row (rank 0): likelihood displacement."""
        return self.displacement.update(row, self.spec.beta)


# The chosen answers' mean summed log-prob may fall this many nats below the reference
# (e^-1: about a third as likely) before a rising margin counts as displacement; smaller
# dips are noise of a few pairs per step.
DISPLACEMENT_NATS = 1.0
DISPLACEMENT_WINDOW = 3  # logged steps averaged, so one odd batch does not warn


class Displacement:
    """Flags the first logged step where the chosen answers' log-prob has fallen below
    the reference's while the margin has grown: DPO is winning by making the chosen
    answers less likely too."""

    def __init__(self) -> None:
        self.chosen: list[float] = []
        self.margin: list[float] = []
        self.warned_at: int | None = None

    def update(self, row: dict[str, Any], beta: float) -> list[str]:
        if "rewards_chosen" not in row or "margin" not in row:
            return []
        self.chosen.append(row["rewards_chosen"] / beta)
        self.margin.append(row["margin"] / beta)
        w = DISPLACEMENT_WINDOW
        if self.warned_at is not None or len(self.chosen) < w:
            return []
        chosen = float(np.mean(self.chosen[-w:]))
        margin = float(np.mean(self.margin[-w:]))
        first = float(np.mean(self.margin[:w]))
        if chosen < -DISPLACEMENT_NATS and margin > 0 and margin > first:
            self.warned_at = int(row.get("step", len(self.chosen)))
            return [
                f"step {self.warned_at}: likelihood displacement: the chosen answers' "
                f"log-prob is {-chosen:.1f} nats below the reference while the margin rose "
                f"to {margin:.1f} nats; the model may drift into text neither answer "
                "contains. Set train.dpo.sft_weight (e.g. 1.0), lower train.lr, or start "
                "from an SFT adapter (model.adapter)"
            ]
        return []


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
