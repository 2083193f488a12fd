"""Ladle's per-document attention for packed rows (``train/attention.py``) against
transformers' sdpa with its block-diagonal mask, on a random GQA Llama in float32:
logits and gradients equal, documents isolated, and every call it does not handle
(padding, a KV cache) answered exactly as sdpa answers it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ladle.train import attention  # noqa: E402


def _packed(lengths: list[list[int]], vocab: int = 30000) -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(0)
    width = sum(lengths[0])
    ids = torch.randint(3, vocab, (len(lengths), width), generator=g)
    pos = torch.stack([torch.cat([torch.arange(n) for n in row]) for row in lengths])
    return ids, pos


@pytest.fixture(scope="module")
def model(tiny_llama_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    attention.register()
    m = AutoModelForCausalLM.from_pretrained(
        tiny_llama_dir, attn_implementation="sdpa", dtype=torch.float32
    )
    m.config.use_cache = False
    assert m.config.num_key_value_heads < m.config.num_attention_heads  # GQA is exercised
    return m


def _logits(m: Any, impl: str, **inputs: Any) -> Any:
    m.set_attn_implementation(impl)
    return m(**inputs, use_cache=False).logits


def test_segments_cut_where_positions_restart() -> None:
    pos = torch.tensor([[0, 1, 2, 0, 1, 0], [5, 6, 7, 8, 9, 10], [0, 0, 0, 1, 2, 0]])
    assert attention.segments(pos, 3) == [
        [(0, 3), (3, 5), (5, 6)],
        [(0, 6)],  # a row that continues a document keeps it whole
        [(0, 1), (1, 2), (2, 5), (5, 6)],
    ]
    # one row of position ids shared by the batch (transformers' unexpanded default)
    assert attention.segments(torch.tensor([[0, 1, 0]]), 2) == [[(0, 2), (2, 3)]] * 2


def test_boundaries_are_found_once_per_forward(model: Any, monkeypatch: Any) -> None:
    calls = []
    real = torch.Tensor.nonzero
    monkeypatch.setattr(torch.Tensor, "nonzero", lambda t, *a, **k: calls.append(1) or real(t))
    ids, pos = _packed([[10, 6], [16]])
    with torch.no_grad():
        _logits(model, attention.NAME, input_ids=ids, position_ids=pos)
    assert len(calls) == 2  # one per row, not one per row and layer


def test_equals_sdpa_mask_logits_and_gradients(model: Any) -> None:
    ids, pos = _packed([[7, 30, 1, 26], [64], [12, 12, 40]])
    ref = _logits(model, "sdpa", input_ids=ids, position_ids=pos)
    ref.float().pow(2).mean().backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if "proj" in n}
    model.zero_grad(set_to_none=True)
    got = _logits(model, attention.NAME, input_ids=ids, position_ids=pos)
    got.float().pow(2).mean().backward()
    try:
        assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5)
        for n, p in model.named_parameters():
            if "proj" in n:
                assert torch.allclose(p.grad, ref_grads[n], atol=1e-6, rtol=1e-4), n
    finally:
        model.zero_grad(set_to_none=True)


def test_documents_are_isolated(model: Any) -> None:
    ids, pos = _packed([[20, 16]])
    with torch.no_grad():
        packed = _logits(model, attention.NAME, input_ids=ids, position_ids=pos)[0, 20:]
        alone = _logits(model, attention.NAME, input_ids=ids[:, 20:])[0]
    assert (packed - alone).abs().max().item() < 1e-5


def test_padding_and_generation_are_sdpa_unchanged(model: Any) -> None:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 30000, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding: the kernel must not see this call
    with torch.no_grad():
        ref = _logits(model, "sdpa", input_ids=ids, attention_mask=mask)
        got = _logits(model, attention.NAME, input_ids=ids, attention_mask=mask)
        assert torch.equal(got[:, 5:], ref[:, 5:])
        outs = {}
        for impl in ("sdpa", attention.NAME):
            model.set_attn_implementation(impl)
            outs[impl] = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=6,
                do_sample=False,
                use_cache=True,
            )
    assert torch.equal(outs["sdpa"], outs[attention.NAME])


def test_sliding_window_models_keep_sdpa(model: Any) -> None:
    from ladle.train.model import use_packed_attention

    cpu = torch.device("cpu")
    model.set_attn_implementation("sdpa")
    model.config.sliding_window = 8
    try:
        assert attention.supports(model.config) is False
        assert use_packed_attention(model, cpu) is False
    finally:
        model.config.sliding_window = None
    assert use_packed_attention(model, cpu) is True
    assert model.config._attn_implementation == attention.NAME
    model.set_attn_implementation("sdpa")
