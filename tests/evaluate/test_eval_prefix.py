"""Faster eval generation gives the same answers: the prompts' shared token prefix
prefilled once (evaluate/prefix.py) and bf16 weights cast once (evaluate/casting.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ladle.evaluate.generate import (  # noqa: E402
    ModelSource,
    generate,
    left_pad,
    load_model,
    prompt_renderer,
)
from ladle.evaluate.prefix import (  # noqa: E402
    MIN_PREFIX_TOKENS,
    common_prefix_length,
    prefill_prefix,
)
from ladle.recipe.schema import GenerationSpec  # noqa: E402

SYSTEM = (
    "You turn support tickets into JSON with keys category (billing, technical, shipping, "
    "account, refund), priority (low, medium, high, urgent), product and sentiment "
    "(positive, neutral, negative). Answer with the JSON object only."
)
SHOTS = [
    ("My laptop fan is very loud since the update.", "technical", "laptop"),
    ("Where is my smartwatch order? Ordered 10 days ago.", "shipping", "smartwatch"),
]
TICKETS = [
    "Someone charged my card twice for the subscription this month.",
    "My router keeps dropping the connection every evening!!",
    "My routers keep dropping the connection every evening.",  # same text up to "router"
    "hi, the headphones I got are the wrong colour. can I swap them?",
    "I cannot log in to the mobile app since the password reset, please help ASAP",
    "Thanks for the quick refund last week, all good now.",
]


def few_shot_conversation(ticket: str) -> list[dict[str, str]]:
    """The quickstart baseline's shape: system prompt, few-shot turns, then the ticket."""
    msgs = [{"role": "system", "content": SYSTEM}]
    for q, category, product in SHOTS:
        answer = {"category": category, "priority": "medium", "product": product}
        msgs += [
            {"role": "user", "content": q},
            {"role": "assistant", "content": json.dumps(answer)},
        ]
    return [*msgs, {"role": "user", "content": ticket}]


def token_rows(tok: Any, prompts: list[str]) -> list[list[int]]:
    return [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]


def test_common_prefix_is_counted_in_tokens_and_leaves_each_row_a_suffix():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter keeps one
    assert common_prefix_length([[5, 6, 7], [5, 6, 7]]) == 2  # equal prompts too
    assert common_prefix_length([[7, 1], [8, 1]]) == 0
    assert common_prefix_length([]) == 0


@pytest.fixture(scope="module")
def smollm2(smollm2_dir: Path) -> tuple[Any, Any]:
    """The real SmolLM2-135M-Instruct in fp32, loaded as the eval loads it."""
    return load_model(ModelSource(smollm2_dir))


@pytest.mark.slow
def test_prefix_layout_masks_the_padding_and_keeps_positions(
    smollm2: tuple[Any, Any], smollm2_dir: Path
):
    """The scores ``generate`` computes from ``[prefix | padding | suffix]`` and the
    prefix's cache equal, to float noise, those of the whole prompts left-padded: the
    padding is masked and each suffix sits at the positions it has unpadded."""
    model, tok = smollm2
    render = prompt_renderer(smollm2_dir)
    rows = token_rows(tok, [render({"messages": few_shot_conversation(t)}) for t in TICKETS[:4]])
    pad = int(tok.pad_token_id)
    greedy = {
        "max_new_tokens": 3,
        "do_sample": False,
        "output_scores": True,
        "return_dict_in_generate": True,
        "pad_token_id": pad,
    }
    with torch.inference_mode():
        prefix = prefill_prefix(model, rows)
        assert prefix is not None and prefix.length == common_prefix_length(rows)
        ids, mask = left_pad([r[prefix.length :] for r in rows], pad)
        assert not mask.all()  # rows of different lengths: padding between the two parts
        ids, mask, cache = prefix.layout(ids, mask)
        cached = model.generate(input_ids=ids, attention_mask=mask, **cache, **greedy)
        ids, mask = left_pad(rows, pad)
        full = model.generate(input_ids=ids, attention_mask=mask, **greedy)
    for a, b in zip(cached.scores, full.scores, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-3)


@pytest.mark.slow
def test_real_model_fp32_prefix_cache_gives_the_uncached_answers(
    smollm2: tuple[Any, Any], smollm2_dir: Path
):
    """SmolLM2 in fp32: the baseline-shaped prompts answered with their shared prefix
    prefilled once equal the prompts prefilled in full, in batches (padding between prefix
    and suffix, a partial last batch) and one at a time (the latency pass)."""
    model, tok = smollm2
    render = prompt_renderer(smollm2_dir)
    prompts = [render({"messages": few_shot_conversation(t)}) for t in TICKETS]
    rows = token_rows(tok, prompts)
    shared = common_prefix_length(rows)
    assert shared > MIN_PREFIX_TOKENS
    # "router" and "routers" share text, not tokens: the common *text* of those two
    # prompts, tokenized, ends in " router", which the second prompt does not contain.
    cut = next(i for i, (a, b) in enumerate(zip(prompts[1], prompts[2], strict=False)) if a != b)
    text_ids = token_rows(tok, [prompts[1][:cut]])[0]
    assert rows[2][: len(text_ids)] != text_ids
    pair = common_prefix_length(rows[1:3])
    assert pair < len(text_ids) and rows[1][:pair] == rows[2][:pair]

    spec = GenerationSpec(max_new_tokens=24, batch_size=4, precision="fp32")
    full = generate(model, tok, prompts, spec.model_copy(update={"prefix_cache": False}))
    cached = generate(model, tok, prompts, spec)
    assert full.prefix_tokens == 0 and cached.prefix_tokens == shared
    assert cached.outputs == full.outputs
    assert cached.completion_tokens.tolist() == full.completion_tokens.tolist()
    assert cached.prompt_tokens.tolist() == [len(r) for r in rows]  # billed in full
    assert any('"category"' in o[0] for o in cached.outputs)  # real answers, not noise

    two = generate(model, tok, prompts[1:3], spec)  # the prefix ends inside the text
    assert two.prefix_tokens == pair and two.outputs == full.outputs[1:3]
    one = spec.model_copy(update={"batch_size": 1})  # the latency pass
    assert generate(model, tok, prompts[:3], one).outputs == full.outputs[:3]


@pytest.mark.slow
def test_real_model_bf16_weights_cast_once_give_autocast_answers(
    smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    """bf16: casting the linear weights once per call gives the answers autocast gives
    when it casts them at every step; the model's own parameters are untouched."""
    import contextlib

    from ladle.evaluate import casting

    model, tok = load_model(ModelSource(smollm2_dir))
    before = dict(model.named_parameters())
    render = prompt_renderer(smollm2_dir)
    prompts = [render({"messages": few_shot_conversation(t)}) for t in TICKETS[:4]]
    spec = GenerationSpec(max_new_tokens=16, batch_size=4, precision="bf16", prefix_cache=False)
    once = generate(model, tok, prompts, spec)
    with casting.bf16_linear_weights(model) as n:
        assert n == 7 * model.config.num_hidden_layers + 1  # q k v o gate up down, lm_head
        assert model.lm_head.weight.dtype == torch.bfloat16
        assert model.model.embed_tokens.weight.dtype == torch.float32  # tied, not cast
    after = dict(model.named_parameters())
    assert after.keys() == before.keys() and all(after[k] is p for k, p in before.items())
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied again

    monkeypatch.setattr(casting, "bf16_linear_weights", lambda _m: contextlib.nullcontext(0))
    every_step = generate(model, tok, prompts, spec)
    assert once.outputs == every_step.outputs


def test_prefix_cache_falls_back_where_nothing_long_is_shared(tiny_llama_dir: Path):
    model, tok = load_model(ModelSource(tiny_llama_dir))
    spec = GenerationSpec(max_new_tokens=4, batch_size=4, precision="fp32")
    render = prompt_renderer(tiny_llama_dir)
    prompts = [render({"messages": few_shot_conversation(t)}) for t in TICKETS[:3]]
    assert generate(model, tok, prompts[:1], spec).prefix_tokens == 0  # a lone prompt
    short = ["alpha beta gamma", "alpha delta", "omega"]
    assert generate(model, tok, short, spec).prefix_tokens == 0
    off = spec.model_copy(update={"prefix_cache": False})
    assert generate(model, tok, prompts, off).prefix_tokens == 0
    assert generate(model, tok, prompts, spec).prefix_tokens > MIN_PREFIX_TOKENS


def test_prefix_cache_with_samples_and_an_unmerged_adapter(tiny_llama_dir: Path, tmp_path: Path):
    """Several samples per prompt (the cache is copied for every sample row) and a LoRA
    adapter applied by peft, not merged: the same outputs as without the cache."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    lora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    lora.save_pretrained(tmp_path / "adapter")
    src = ModelSource(tiny_llama_dir, tmp_path / "adapter", merge=False)
    model, tok = load_model(src)
    assert hasattr(model, "active_peft_config")  # peft applies it, not merged
    render = prompt_renderer(tiny_llama_dir)
    prompts = [render({"messages": few_shot_conversation(t)}) for t in TICKETS[:5]]
    spec = GenerationSpec(
        max_new_tokens=6, batch_size=2, do_sample=True, num_samples=3, temperature=1.5
    )
    for precision in ("fp32", "bf16"):
        s = spec.model_copy(update={"precision": precision})
        cached = generate(model, tok, prompts, s, seed=3)
        full = generate(model, tok, prompts, s.model_copy(update={"prefix_cache": False}), seed=3)
        assert cached.prefix_tokens > 0 and [len(o) for o in cached.outputs] == [3] * 5
        if precision == "fp32":
            assert cached.outputs == full.outputs
        assert cached.completion_tokens.shape == full.completion_tokens.shape


def test_sliding_window_model_is_prefilled_in_full(chat_tokenizer: Any, smollm2_dir: Path):
    """A sliding window counts the padding between prefix and suffix as positions: such a
    model takes the uncached path, and answers as it does there."""
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=49152,
        sliding_window=32,
        attn_implementation="sdpa",
    )
    model = MistralForCausalLM(config).eval()
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    tok.pad_token = tok.pad_token or tok.eos_token
    prompts = [
        chat_tokenizer.render(few_shot_conversation(t), add_generation_prompt=True)
        for t in TICKETS[:3]
    ]
    spec = GenerationSpec(max_new_tokens=4, batch_size=4, precision="fp32")
    g = generate(model, tok, prompts, spec)
    assert g.prefix_tokens == 0
    off = generate(model, tok, prompts, spec.model_copy(update={"prefix_cache": False}))
    assert g.outputs == off.outputs


def test_prefix_cache_on_a_qlora_candidate(tiny_llama_dir: Path, tmp_path: Path):
    """A QLoRA candidate is evaluated on its 4-bit base with the adapter applied by peft:
    its quantized layers keep their weights (only plain fp32 linears are cast) and the
    shared prefix gives the answers of the full prefill."""
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ladle.evaluate.generate import candidate_source

    torch.manual_seed(0)
    lora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    lora.save_pretrained(tmp_path / "run" / "adapter")
    recipe = {
        "name": "q",
        "model": {"base": str(tiny_llama_dir)},
        "data": {"datasets": [{"path": "x"}]},
        "train": {"adapter": "qlora", "precision": "fp32", "lora": {"r": 4}},
    }
    (tmp_path / "run" / "run.json").write_text(json.dumps({"recipe": recipe}))
    src = candidate_source(tmp_path / "run", tiny_llama_dir)
    assert src.quantized
    model, tok = load_model(src)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    render = prompt_renderer(tiny_llama_dir)
    prompts = [render({"messages": few_shot_conversation(t)}) for t in TICKETS[:5]]
    for precision in ("fp32", "bf16"):
        spec = GenerationSpec(max_new_tokens=6, batch_size=2, precision=precision)
        cached = generate(model, tok, prompts, spec)
        full = generate(model, tok, prompts, spec.model_copy(update={"prefix_cache": False}))
        assert cached.prefix_tokens > 0
        if precision == "fp32":
            assert cached.outputs == full.outputs
        assert cached.completion_tokens.shape == full.completion_tokens.shape
