"""Shared-prefix KV caching: prefill the prompts' common token prefix once, reuse it in
every batch.

Why: the prompted baseline's prompts are the same system prompt and few-shot turns
followed by one row's question, so most of their tokens are shared (the quickstart: 326
of 350-384 tokens), and prefilling them was most of its generation time (63% with bf16
autocast on 2 cores). Prefilling the shared part once and copying its KV cache into each
batch leaves only the per-row suffixes to prefill.

How it stays exact:

- The prefix is the longest common prefix of the prompts' *token ids*, each prompt
  tokenized whole and then split, so every row's tokens are exactly those of its
  uncached prompt (a text-level prefix could cut a BPE merge in two).
- A batch is laid out ``[prefix | left padding | suffix]`` with the padding masked.
  ``generate`` derives position ids from the attention mask (``cumsum - 1``), so the
  suffix starts at position ``len(prefix)`` as it does unpadded, and no token attends to
  the padding.
- The prefix's keys and values are computed at batch 1 instead of once per row: the same
  arithmetic in differently shaped matmuls, so they may differ in the last bits
  (benchmarks/eval.py counts identical greedy outputs; tests/evaluate/test_eval_prefix.py
  checks them in fp32 on the real model).

When it is not used (the caller prefills every prompt in full): fewer than two prompts
(a lone prompt shares nothing, and a latency pass would not time its prefill), a common
prefix shorter than ``MIN_PREFIX_TOKENS``, a model whose KV cache is not plain
full-attention layers (a sliding window counts the padding in the middle as positions; a
recurrent state cannot skip it), attention other than sdpa or eager (the only kernels
this layout is verified with), and prompt-learning adapters (their virtual tokens already
occupy the cache).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from inspect import signature
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

MIN_PREFIX_TOKENS = 16
"""Shorter common prefixes are prefilled with each row (benchmarks/eval.py: the saving of
a few shared template tokens is within noise; below this it is not worth a second path)."""

VERIFIED_ATTENTION = ("sdpa", "eager")


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own
    (``generate`` needs a suffix to prefill)."""
    if not rows:
        return 0
    first = rows[0]
    limit = min(len(r) for r in rows) - 1
    n = 0
    while n < limit and all(r[n] == first[n] for r in rows):
        n += 1
    return n


def cache_keyword() -> str:
    """The name ``generate`` takes a KV cache under: ``cache`` since transformers 5.x
    renamed it, ``past_key_values`` before."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


@dataclass
class SharedPrefix:
    """A prefilled prompt prefix: its token ids and its batch-1 KV cache."""

    ids: torch.Tensor
    """``[1, n]`` token ids, on the model's device."""
    cache: Any
    seconds: float
    """Wall time of the one prefill (the caller counts it in the generation time)."""

    @property
    def length(self) -> int:
        return int(self.ids.shape[1])

    def layout(
        self, ids: torch.Tensor, mask: torch.Tensor, samples: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """A batch of left-padded suffixes laid out ``[prefix | padding | suffix]``, the
        padding masked, and the ``generate`` keyword that hands it a copy of the cache for
        each of its rows (times ``samples``: ``generate`` repeats every row that often)."""
        import torch

        rows = ids.shape[0]
        ids = torch.cat([self.ids.expand(rows, -1), ids], dim=1)
        mask = torch.cat([torch.ones_like(ids[:, : self.length]), mask], dim=1)
        return ids, mask, {cache_keyword(): self.cache_for(rows * samples)}

    def cache_for(self, rows: int) -> Any:
        """A fresh copy of the cache for a batch of ``rows`` (``generate`` appends to it
        in place, so every batch needs its own)."""
        cache = copy.deepcopy(self.cache)
        if rows > 1:
            cache.batch_repeat_interleave(rows)
        return cache


def _plain_cache(cache: Any) -> bool:
    from transformers.cache_utils import DynamicCache, DynamicLayer

    if not isinstance(cache, DynamicCache) or not cache.layers:
        return False
    return all(type(layer) is DynamicLayer for layer in cache.layers)


def supports_prefix_cache(model: Any) -> bool:
    """Whether the model's attention and adapter allow the shared-prefix layout (the
    cache type is checked after the prefill, where it is known for certain)."""
    attention = getattr(model.config, "_attn_implementation", None)
    peft_config = getattr(model, "active_peft_config", None)
    return attention in VERIFIED_ATTENTION and not getattr(peft_config, "is_prompt_learning", False)


def prefill_prefix(
    model: Any, rows: Sequence[Sequence[int]], *, min_tokens: int = MIN_PREFIX_TOKENS
) -> SharedPrefix | None:
    """Prefill the rows' common token prefix once, or None where it does not apply (see
    the module's notes). Call under ``torch.inference_mode()`` and the caller's autocast,
    as the batches that reuse it will run."""
    import torch

    if len(rows) < 2 or not supports_prefix_cache(model):
        return None
    n = common_prefix_length(rows)
    if n < max(min_tokens, 1):
        return None
    device = next(model.parameters()).device
    ids = torch.tensor([list(rows[0][:n])], dtype=torch.long, device=device)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    # Only the cache is wanted: skip the vocabulary projection of every prefix position.
    keep = {"logits_to_keep": 1} if "logits_to_keep" in signature(base.forward).parameters else {}
    t0 = time.perf_counter()
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, **keep)
    seconds = time.perf_counter() - t0
    cache = out.get(cache_keyword())
    if not _plain_cache(cache) or cache.get_seq_length() != n:
        return None
    return SharedPrefix(ids=ids, cache=cache, seconds=seconds)
