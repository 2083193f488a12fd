"""KTO (Ethayarajh et al. 2024, "Model alignment as prospect theoretic optimization") on
pre-tokenized (prompt, completion, label) examples, in Ladle's loop like DPO.

Each completion is labelled desirable (thumbs up) or undesirable (down); no pairs are
needed (a preference pair is split into one of each at prep). With ``r = log pi(y|x) -
log pi_ref(y|x)`` (the reference is the base with the adapter switched off, or the frozen
starting adapter, as for DPO) and ``z`` a detached estimate of KL(pi || pi_ref), the
per-example loss is

    desirable:    desirable_weight   * (1 - sigmoid(beta * (r - z)))
    undesirable:  undesirable_weight * (1 - sigmoid(beta * (z - r)))

so with the policy at the reference (r = z = 0) every example costs ``weight / 2``.

``z`` is TRL's estimate: the mean of ``r`` over mismatched (prompt, completion) pairs of
the same micro-batch (completions cycled by one), clamped at 0, without gradient. Two
extra forward passes without gradient pay for it. TRL averages it over all processes;
here each micro-batch uses its own, so the loss does not depend on the process count.
The formula is ``trl.KTOTrainer``'s ``loss_type="kto"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ladle.recipe.schema import KtoSpec
from ladle.train.adapters import reference_model
from ladle.train.preference import LABELLED_REPLIES, PROMPT, Replies, pack, sequence_logps
from ladle.train.rows import TokenTable

COMPLETION = LABELLED_REPLIES[0]


def kto_loss(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor,
    spec: KtoSpec,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example KTO loss and the implicit rewards ``beta * (logp - ref_logp)``
    (detached)."""
    ratio = logps - ref_logps
    beta = spec.beta
    good = spec.desirable_weight * (1 - F.sigmoid(beta * (ratio - kl)))
    bad = spec.undesirable_weight * (1 - F.sigmoid(beta * (kl - ratio)))
    return torch.where(desirable, good, bad), beta * ratio.detach()


def kl_estimate(policy: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """KTO's reference point: mean log-ratio of the mismatched pairs, at least 0."""
    return (policy - reference).mean().clamp(min=0).detach()


class KTO:
    packed = True
    name = "kto"

    def __init__(self, tt: TokenTable, labels: np.ndarray, spec: KtoSpec, max_length: int):
        self.tt = tt
        self.spec = spec
        self.labels = np.asarray(labels, dtype=bool)
        self.replies = Replies(tt, LABELLED_REPLIES, max_length, spec.max_prompt_length, "kto")
        self.lengths, self.units = self.replies.lengths, self.replies.units

    def batch(self, rows: Sequence[int], device: torch.device) -> dict[str, torch.Tensor]:
        """The examples packed, plus (two or more rows) the mismatched ``kl_`` sequences:
        row j's prompt with row j+1's completion."""
        rows = list(rows)
        batch = pack([self.replies.row(i)[0] for i in rows], device)
        if len(rows) > 1:
            shifted = rows[1:] + rows[:1]
            kl = [
                self.replies.cut(self.tt.get(PROMPT, i), self.tt.get(COMPLETION, j))
                for i, j in zip(rows, shifted, strict=True)
            ]
            batch.update({f"kl_{k}": v for k, v in pack(kl, device).items()})
        batch["valid"] = torch.tensor(
            [self.units[i] for i in rows], dtype=torch.float32, device=device
        )
        batch["desirable"] = torch.tensor(self.labels[rows], dtype=torch.bool, device=device)
        return batch

    def loss(
        self, model: Any, core: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        logps = sequence_logps(model, batch)
        mismatched = "kl_input_ids" in batch
        with torch.no_grad():
            # The policy side of the KL estimate needs no gradient: the unwrapped model.
            kl_policy = sequence_logps(core, batch, "kl_") if mismatched else None
            with reference_model(core):
                ref = sequence_logps(core, batch)
                kl_ref = sequence_logps(core, batch, "kl_") if mismatched else None
        if kl_policy is not None and kl_ref is not None:
            kl = kl_estimate(kl_policy, kl_ref)
        else:  # one example: its mismatched pair would be itself
            kl = torch.zeros((), device=logps.device)
        desirable = batch["desirable"]
        per_example, rewards = kto_loss(logps, ref, desirable, kl, self.spec)
        valid = batch["valid"]
        # Positive when the example moved the right way: up if desirable, down if not.
        signed = torch.where(desirable, rewards, -rewards)
        extras = {
            "kl": float(kl) * float(valid.sum()),
            "rewards_signed": float((signed * valid).sum()),
            "accuracy": float(((signed > 0).float() * valid).sum()),
            "logps": float((logps.detach() * valid).sum()),
            "desirable": float((desirable.float() * valid).sum()),
        }
        return (per_example * valid).sum(), extras
