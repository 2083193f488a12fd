"""Where computation runs, and whether it has native bf16: the one device probe.

Training, evaluation and the benchmarks all ask here, so a GPU, a CPU with AVX-512 bf16 /
AMX, and a plain CPU are told apart the same way everywhere. Nothing in a recipe names a
device. torch is imported inside the functions: the CLI imports this module without it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def pick_device() -> torch.device:
    """CUDA (this process's ``LOCAL_RANK`` under torchrun/accelerate) when present, else CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def has_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 natively: a bf16-capable GPU, or a CPU whose oneDNN
    has bf16 kernels (AVX-512 bf16 / AMX), where bf16 autocast is the fastest mode."""
    import torch

    kind = device if isinstance(device, str) else device.type
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # torch built without oneDNN
        return False
