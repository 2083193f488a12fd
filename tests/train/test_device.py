"""The one device probe (``ladle.device``): training and evaluation decide alike."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from ladle.device import has_bf16, pick_device  # noqa: E402
from ladle.evaluate.generate import resolve_precision  # noqa: E402
from ladle.train.model import autocast_dtype  # noqa: E402


def test_training_and_evaluation_agree_on_bf16() -> None:
    device = pick_device()
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    native = has_bf16(device)
    assert (autocast_dtype("auto", device) == torch.bfloat16) is native
    assert (resolve_precision("auto", device.type) == "bf16") is native
    assert has_bf16(device.type) is native


def test_cuda_device_follows_local_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    monkeypatch.setenv("LOCAL_RANK", str(torch.cuda.device_count() - 1))
    assert pick_device() == torch.device("cuda", torch.cuda.device_count() - 1)
