"""bf16 autocast for generation without re-casting the weights at every step.

Why: under ``torch.autocast`` every ``nn.Linear`` call casts its fp32 weight to bf16
first. Generation calls each linear once per new token, so a decode step of
SmolLM2-135M read 540 MB and wrote 270 MB just to cast weights, on 2 CPU cores most of a
step's time (measured on 2026-12-02: 132 ms a step at batch 1 against 51 ms in fp32; 278
against 136 ms at batch 16). Casting the linear weights once per ``generate`` call and
keeping autocast on gives the same arithmetic (autocast's cast is the same
round-to-nearest ``.to(bfloat16)``; inputs are still cast by autocast, norms and softmax
still run in fp32) at half the step time; benchmarks/eval.py and
tests/evaluate/test_eval_prefix.py compare the outputs.

Only plain ``nn.Linear`` layers with fp32 weights are cast: quantized layers
(bitsandbytes' ``Linear4bit`` is a subclass) and other layer types keep theirs. A weight
tied to the input embedding (``lm_head``) gets its own bf16 copy, so the embedding stays
fp32 as under autocast. The original parameters are put back on exit; meanwhile the
model holds an extra bf16 copy of its linear weights (half their fp32 size).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def bf16_linear_weights(model: Any) -> Iterator[int]:
    """Swap every plain fp32 ``nn.Linear``'s weight and bias for bf16 copies; yields how
    many layers were swapped."""
    import torch

    swapped: list[tuple[Any, Any, Any]] = []

    def bf16(p: Any) -> Any:
        return None if p is None else torch.nn.Parameter(p.detach().to(torch.bfloat16), False)

    try:
        for m in model.modules():
            if type(m) is torch.nn.Linear and m.weight.dtype == torch.float32:
                swapped.append((m, m.weight, m.bias))
                m.weight, m.bias = bf16(m.weight), bf16(m.bias)
        yield len(swapped)
    finally:
        for m, weight, bias in swapped:
            m.weight, m.bias = weight, bias
