"""Cross-entropy over the vocabulary without materialising the ``[tokens, vocab]`` logits.

SmolLM2's vocabulary is 49k: a 2,048-token micro-batch gives 100M logits, 400 MB in fp32,
and autograd keeps them (plus the softmax it builds from them) until the backward pass.
That was most of the gap between Ladle's and TRL's peak RSS. Here the trained positions'
final hidden states ``[N, H]`` meet the output embedding ``[V, H]`` in row chunks; each
chunk's logits live only inside the forward, where the chunk's loss AND its gradients
(``softmax - onehot`` against the hidden states and the weight) are computed at once,
Liger-kernel style. The backward pass then only scales the stored gradients, so nothing is
recomputed and the peak is one chunk of logits.

On CUDA with ``liger-kernel`` installed, its Triton ``LigerFusedLinearCrossEntropyLoss``
does the same in one kernel and is used instead (not tested here: no GPU in this
project's CI).

Models whose logits are not a plain ``hidden @ W.T`` (a bias, logit soft-capping or
scaling, or an adapter on the output layer) fall back to the ordinary logits path.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from ladle._core import IGNORE_INDEX

# Rows of logits per chunk: 1024 x 49k fp32 = 200 MB at most in flight, while each chunk
# stays a large matmul (smaller chunks measured slower on CPU).
CHUNK_ROWS = 1024


class _LinearCrossEntropy(torch.autograd.Function):
    """Sum of token cross-entropies of ``hidden @ weight.T``; gradients made in forward."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        chunk: int,
        need_hidden: bool,
        need_weight: bool,
    ) -> torch.Tensor:
        # Autocast (if active) applies to these matmuls exactly as to the model's lm_head.
        acc = torch.promote_types(hidden.dtype, torch.float32)  # fp32, or fp64 in tests
        total = torch.zeros((), dtype=acc, device=hidden.device)
        grad_h = torch.zeros_like(hidden) if need_hidden else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_weight else None
        for lo in range(0, hidden.shape[0], chunk):
            h = hidden[lo : lo + chunk]
            t = targets[lo : lo + chunk]
            logits = (h @ weight.T).to(acc)
            valid = t != IGNORE_INDEX
            safe = torch.where(valid, t, 0)
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, safe[:, None])[:, 0]
            total += torch.where(valid, lse - picked, 0.0).sum()
            if grad_h is None and grad_w is None:
                continue
            # d(sum CE)/d logits = softmax - onehot, zero on ignored rows.
            g = logits.sub_(lse[:, None]).exp_()  # in place: one chunk of logits at a time
            g[torch.arange(len(t), device=g.device), safe] -= 1.0
            g *= valid[:, None]
            gc = g.to(_compute_dtype(h))
            del g, logits  # the fp32 chunk is not needed by the two matmuls below
            if grad_h is not None:
                grad_h[lo : lo + chunk] = (gc @ weight.to(gc.dtype)).to(grad_h.dtype)
            if grad_w is not None:
                grad_w += (gc.T @ h.to(gc.dtype)).to(acc)
        ctx.save_for_backward(
            grad_h if grad_h is not None else torch.empty(0),
            grad_w if grad_w is not None else torch.empty(0),
        )
        ctx.has = (grad_h is not None, grad_w is not None)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        grad_h, grad_w = ctx.saved_tensors
        has_h, has_w = ctx.has
        gh = grad_h * grad_out.to(grad_h.dtype) if has_h else None
        gw = (grad_w * grad_out).to(ctx.weight_dtype) if has_w else None
        return gh, gw, None, None, None, None


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype autocast gives a matmul on ``t``'s device (bf16/fp16), else ``t``'s own."""
    device = t.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return t.dtype


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int | None = None
) -> torch.Tensor:
    """``F.cross_entropy(hidden @ weight.T, targets, reduction="sum", ignore_index=-100)``
    computed chunk by chunk: the full logits never exist, in forward or backward."""
    hidden = hidden.reshape(-1, hidden.shape[-1])
    targets = targets.reshape(-1)
    grad = torch.is_grad_enabled()
    need_h = grad and hidden.requires_grad
    need_w = grad and weight.requires_grad
    if hidden.device.type == "cuda" and importlib.util.find_spec("liger_kernel") is not None:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        fused = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="sum")
        return fused(weight, hidden, targets)
    rows = chunk or CHUNK_ROWS
    return _LinearCrossEntropy.apply(hidden, weight, targets, rows, need_h, need_w)


def plain_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The reference the chunked loss must equal: fp32 logits, token sum."""
    acc = torch.promote_types(logits.dtype, torch.float32)
    return F.cross_entropy(
        logits.to(acc).reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def output_head(core: Any) -> torch.nn.Linear | None:
    """The output embedding when logits are exactly ``hidden @ W.T``, else None."""
    head = core.get_output_embeddings() if hasattr(core, "get_output_embeddings") else None
    config = getattr(core, "config", None)
    if type(head) is not torch.nn.Linear or head.bias is not None:
        return None  # a peft LoRA layer on lm_head, a bias, or an unknown head
    from torch.distributed.tensor import DTensor

    if isinstance(head.weight, DTensor):
        return None  # FSDP: the weight is whole only inside the model's own forward
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None  # Gemma 2 / Cohere post-process their logits
    return head


@contextlib.contextmanager
def final_hidden(core: Any) -> Iterator[list[torch.Tensor]]:
    """Capture the decoder's last hidden state during a forward of ``core`` (or a DDP
    wrapper around it): the model is still called as a whole, so DDP/FSDP hooks run."""
    box: list[torch.Tensor] = []

    def hook(_module: Any, _args: Any, output: Any) -> None:
        box.append(output[0] if isinstance(output, tuple) else output.last_hidden_state)

    lm = core.get_base_model() if hasattr(core, "get_base_model") else core  # peft
    handle = lm.get_decoder().register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()
