"""The chunked linear cross-entropy (ladle.train.loss): equal to the plain loss and its
gradients, used by the SFT objectives, and never holding the full logits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ladle.train.loss import linear_cross_entropy, plain_cross_entropy  # noqa: E402


def _grads(fn: Any, h: Any, w: Any) -> tuple[float, Any, Any]:
    h = h.detach().requires_grad_(True)
    w = w.detach().requires_grad_(True)
    loss = fn(h, w)
    (0.5 * loss).backward()  # a non-unit upstream gradient must scale correctly
    return loss.item(), h.grad, w.grad


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_equals_plain_loss_and_gradients(chunk: int) -> None:
    g = torch.Generator().manual_seed(chunk)
    n, hidden, vocab = 150, 32, 500
    h = torch.randn(n, hidden, generator=g, dtype=torch.float64)
    w = 0.2 * torch.randn(vocab, hidden, generator=g, dtype=torch.float64)
    t = torch.randint(0, vocab, (n,), generator=g)
    t[::5] = -100  # ignored positions (padded batches)
    got = _grads(lambda a, b: linear_cross_entropy(a, b, t, chunk=chunk), h, w)
    want = _grads(lambda a, b: plain_cross_entropy(a @ b.T, t), h, w)
    assert got[0] == pytest.approx(want[0], rel=1e-12)
    assert torch.allclose(got[1], want[1], atol=1e-12)
    assert torch.allclose(got[2], want[2], atol=1e-12)
    # fp32, as training runs it: within 1e-5 relative (sums of ~100 terms of ~6).
    got32 = _grads(lambda a, b: linear_cross_entropy(a, b, t, chunk=chunk), h.float(), w.float())
    assert got32[0] == pytest.approx(want[0], rel=1e-5)
    assert torch.allclose(got32[1].double(), want[1], atol=1e-5)
    assert torch.allclose(got32[2].double(), want[2], atol=1e-5)


def test_frozen_weight_and_no_grad() -> None:
    h = torch.randn(20, 8, requires_grad=True)
    w = torch.randn(40, 8)  # LoRA: the output embedding is frozen
    t = torch.randint(0, 40, (20,))
    linear_cross_entropy(h, w, t, chunk=3).backward()
    assert h.grad is not None and w.grad is None
    with torch.no_grad():
        assert linear_cross_entropy(h, w, t).item() == pytest.approx(
            plain_cross_entropy(h @ w.T, t).item(), rel=1e-5
        )


class Largest:
    """Records the largest tensor any torch op creates while active."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        probe = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kw: Any = None):
                out = func(*args, **(kw or {}))
                for o in out if isinstance(out, (tuple, list)) else (out,):
                    if isinstance(o, torch.Tensor):
                        probe.biggest = max(probe.biggest, o.numel())
                return out

        self.biggest = 0
        self.mode = Mode()

    def __enter__(self) -> Largest:
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.mode.__exit__(*exc)


def test_full_logits_never_exist() -> None:
    """No tensor as large as [tokens, vocab] is created in forward or backward."""
    n, vocab, chunk = 256, 2000, 32
    h = torch.randn(n, 16, requires_grad=True)
    w = torch.randn(vocab, 16, requires_grad=True)
    t = torch.randint(0, vocab, (n,))
    with Largest() as chunked:
        linear_cross_entropy(h, w, t, chunk=chunk).backward()
    with Largest() as plain:
        plain_cross_entropy(h @ w.T, t).backward()
    assert plain.biggest >= n * vocab  # the probe sees the full logits when they exist
    assert chunked.biggest <= chunk * vocab


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_sft_objective_chunked_equals_logits_path(
    adapter: str, tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packed SFT through the tiny Llama: loss and every trainable gradient (full: the tied
    embedding too) equal the unchunked logits path, and the objective's forward and
    backward never hold the trained positions' full logits."""
    import pyarrow as pa
    from transformers import AutoModelForCausalLM

    from ladle.recipe.schema import TrainSection
    from ladle.train import adapters
    from ladle.train.rows import sft_table
    from ladle.train.sft import PackedSFT, token_loss

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    core = adapters.attach(base, TrainSection(adapter=adapter, lora={"r": 4}))
    for n, p in core.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.05)
    # Two packed rows of three arithmetic documents each, prompts masked.
    docs = [[(s + 3 * k) % 300 + 10 for k in range(n)] for s, n in enumerate([20, 30] * 3)]
    rows = []
    for part in (docs[:3], docs[3:]):
        pos = [p for d in part for p in range(len(d))]
        ids = [t for d in part for t in d]
        labels = [t if p >= 4 else -100 for t, p in zip(ids, pos, strict=True)]
        rows.append({"input_ids": ids, "labels": labels, "position_ids": pos})
    obj = PackedSFT(sft_table(pa.Table.from_pylist(rows)))
    batch = obj.batch([0, 1], torch.device("cpu"))
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}

    def run(chunked: bool) -> tuple[float, dict[str, Any]]:
        core.zero_grad(set_to_none=True)
        loss = token_loss(core, core, inputs, batch["keep"], batch["targets"], chunked=chunked)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in core.named_parameters() if p.grad is not None}
        return loss.item(), grads

    monkeypatch.setattr("ladle.train.loss.CHUNK_ROWS", 16)
    with Largest() as probe:
        got = run(True)
    vocab = core.config.vocab_size
    trained = int(batch["keep"].sum())
    assert trained > 32 and probe.biggest < trained * vocab
    want = run(False)
    assert got[0] == pytest.approx(want[0], rel=1e-5)
    assert set(got[1]) == set(want[1]) and got[1]
    for name, g in want[1].items():
        assert torch.allclose(got[1][name], g, atol=1e-5, rtol=1e-4), name
