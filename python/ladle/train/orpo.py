"""ORPO (Hong et al. 2024, "Monolithic preference optimization without reference model")
on pre-tokenized (prompt, chosen, rejected) triples, in Ladle's loop like DPO.

Per pair: the chosen reply's NLL (per-token mean) plus ``beta`` x the odds-ratio term
``-log sigmoid(log odds(chosen) - log odds(rejected))``, where a reply's odds are those
of its per-token mean probability ``p``: ``odds = p / (1 - p)``. There is no reference
model (no second forward pass, no SFT start needed): the NLL term does SFT's job while
the odds ratio pushes the rejected reply down. When chosen and rejected are equally
likely the odds-ratio term is exactly ``log 2``.

The formula is TRL's (``trl.experimental.orpo.ORPOTrainer.odds_ratio_loss``); two
differences, both so that the loss does not depend on how a step is cut into micro-
batches or ranks: the NLL is each pair's per-token mean (TRL: the mean over all chosen
tokens of a batch), and the loss is summed per pair and divided by the step's pairs by
the loop (TRL: a batch mean).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ladle.recipe.schema import OrpoSpec
from ladle.train.preference import PAIR_REPLIES, Replies, pack, sequence_logps
from ladle.train.rows import TokenTable

# Mean log-probs are capped just below 0: a reply the model is certain of (p = 1 in
# fp32) would otherwise have infinite odds and a NaN loss.
MAX_MEAN_LOGP = -1e-6


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, stable on both sides of ``-log 2``."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def odds_ratio_loss(
    chosen_mean: torch.Tensor, rejected_mean: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair ``-log sigmoid(log odds ratio)`` and the log odds ratio, from each reply's
    per-token mean log-prob."""
    c = chosen_mean.float().clamp(max=MAX_MEAN_LOGP)
    r = rejected_mean.float().clamp(max=MAX_MEAN_LOGP)
    log_odds = (c - r) - (log1mexp(c) - log1mexp(r))
    return -F.logsigmoid(log_odds), log_odds


class ORPO:
    packed = True
    name = "orpo"

    def __init__(self, tt: TokenTable, spec: OrpoSpec, max_length: int) -> None:
        self.tt = tt
        self.spec = spec
        self.replies = Replies(tt, PAIR_REPLIES, max_length, spec.max_prompt_length, "orpo")
        self.lengths, self.units = self.replies.lengths, self.replies.units

    def batch(self, rows: Sequence[int], device: torch.device) -> dict[str, torch.Tensor]:
        """Chosen and rejected interleaved: sequence 2j is row j's chosen reply."""
        batch = pack([s for i in rows for s in self.replies.row(i)], device)
        batch["valid"] = torch.tensor(
            [self.units[i] for i in rows], dtype=torch.float32, device=device
        )
        return batch

    def loss(
        self, model: Any, core: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        logps = sequence_logps(model, batch)
        mean = logps / batch["counts"].clamp(min=1)
        nll = -mean[0::2]
        ratio_loss, log_odds = odds_ratio_loss(mean[0::2], mean[1::2])
        per_pair = nll + self.spec.beta * ratio_loss
        valid = batch["valid"]

        def total(x: torch.Tensor) -> float:
            return float((x.detach() * valid).sum())

        extras = {
            "nll_chosen": total(nll),
            "odds_ratio_loss": total(ratio_loss),
            "log_odds_ratio": total(log_odds),
            "accuracy": total((log_odds > 0).float()),
            "logps_chosen": total(logps[0::2]),
            "logps_rejected": total(logps[1::2]),
        }
        return (per_pair * valid).sum(), extras
