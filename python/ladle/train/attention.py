"""Per-document attention for packed rows.

transformers keeps packed documents apart with sdpa by building a block-diagonal causal
mask over the whole row: every layer then scores all ``L x L`` pairs (most of them
masked), and a CPU sdpa given an explicit mask cannot use its fused causal kernel. This
kernel instead cuts each row at its document boundaries (where ``position_ids`` stop
counting up by one) and runs sdpa with ``is_causal=True`` on each document alone: the
work is the sum of the documents' squared lengths, and the fused kernel applies.

It is registered with transformers as ``ladle_packed`` (``AttentionInterface``), with a
mask function that builds no mask for a whole sequence without padding (the kernel cuts
it by ``position_ids``) and transformers' sdpa mask otherwise. Any call that gets a mask,
a KV cache or no ``position_ids`` goes to transformers' own sdpa unchanged, so padding
and generation behave exactly as with sdpa.
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "ladle_packed"

# The boundaries of the last position_ids seen: every layer of one forward gets the same
# tensor object, so they are computed once per forward. Holding the tensor keeps its id
# from being reused by a later one.
_last: tuple[torch.Tensor, list[list[tuple[int, int]]]] | None = None


def segments(position_ids: torch.Tensor, rows: int) -> list[list[tuple[int, int]]]:
    """Per row (``position_ids`` of one row are shared by all ``rows``), the
    ``(start, end)`` spans of its documents: a document starts wherever a position id is
    not the previous one plus one."""
    global _last
    if _last is not None and _last[0] is position_ids:
        return _last[1]
    pos = position_ids.detach().to("cpu", torch.int64).expand(rows, -1)
    cuts = torch.ones_like(pos, dtype=torch.bool)
    cuts[:, 1:] = pos[:, 1:] != pos[:, :-1] + 1
    length = pos.shape[1]
    spans = []
    for row in cuts:
        starts = row.nonzero().flatten().tolist()
        spans.append(list(zip(starts, [*starts[1:], length], strict=True)))
    _last = (position_ids, spans)
    return spans


def packed_sdpa_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """``query``/``key``/``value`` are ``[B, heads, L, D]``; returns ``[B, L, heads, D]``
    like transformers' ``sdpa_attention_forward``."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    position_ids = kwargs.get("position_ids")
    q_len = query.shape[2]
    if (
        position_ids is None
        or attention_mask is not None
        or key.shape[2] != q_len
        or position_ids.shape[-1] != q_len
        or kwargs.get("position_bias") is not None
        or not getattr(module, "is_causal", True)
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    # The tensor transformers passes, not a view of it: the memo in ``segments`` keys on
    # its identity, so the boundaries are found once per forward, not once per layer.
    groups = getattr(module, "num_key_value_groups", 1)
    rows = []
    for b, spans in enumerate(segments(position_ids, query.shape[0])):
        parts = [
            torch.nn.functional.scaled_dot_product_attention(
                query[b : b + 1, :, s:e],
                key[b : b + 1, :, s:e],
                value[b : b + 1, :, s:e],
                dropout_p=dropout,
                scale=scaling,
                is_causal=True,
                enable_gqa=groups > 1,
            )
            for s, e in spans
        ]
        rows.append(torch.cat(parts, dim=2))
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


def packed_mask(**kwargs: Any) -> torch.Tensor | None:
    """No mask when every query sees every earlier key of its own row (no padding, no
    cache): the kernel then isolates documents itself. Otherwise sdpa's mask, which sends
    the call to sdpa."""
    from transformers.masking_utils import sdpa_mask

    mask = kwargs.get("attention_mask")
    whole = kwargs.get("q_offset", 0) == 0 and kwargs.get("kv_length") == kwargs.get("q_length")
    whole = whole and kwargs.get("local_size") is None  # a sliding window needs its mask
    if whole and (mask is None or bool(mask.all())):
        return None
    return sdpa_mask(**kwargs)


def supports(config: Any) -> bool:
    """Full causal attention in every layer: no sliding window, chunked or linear layers,
    which this kernel does not reproduce."""
    if getattr(config, "sliding_window", None) or getattr(config, "attention_chunk_size", None):
        return False
    kinds = getattr(config, "layer_types", None) or ["full_attention"]
    return set(kinds) == {"full_attention"}


def register() -> str:
    """Register the kernel and its mask with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface, AttentionMaskInterface

    AttentionInterface.register(NAME, packed_sdpa_forward)
    AttentionMaskInterface.register(NAME, packed_mask)
    return NAME
