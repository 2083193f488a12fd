"""Model resolution: builtin conversion, local folders, safety rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from ladle.errors import ModelError
from ladle.models import check_model_dir, resolve_model


def test_builtin_resolves_to_a_loadable_folder_with_template(smollm2_dir: Path) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert (smollm2_dir / name).is_file(), name
    assert "<|im_start|>" in (smollm2_dir / "chat_template.jinja").read_text()
    assert resolve_model("builtin:smollm2-135m-instruct") == smollm2_dir  # cached


@pytest.mark.slow
def test_converted_builtin_generates_like_the_gguf(smollm2_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ladle.models import builtin_source

    gguf = builtin_source("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tok(prompt, return_tensors="pt").input_ids
    outs = []
    for kwargs in (
        {"pretrained_model_name_or_path": smollm2_dir},
        {"pretrained_model_name_or_path": gguf.parent, "gguf_file": gguf.name},
    ):
        model = AutoModelForCausalLM.from_pretrained(**kwargs)
        with torch.no_grad():
            outs.append(model.generate(ids, max_new_tokens=12, do_sample=False)[0].tolist())
    assert outs[0] == outs[1]
    assert len(outs[0]) > ids.shape[1]


def test_local_folder_rules(tmp_path: Path, tiny_llama_dir: Path) -> None:
    assert resolve_model(str(tiny_llama_dir)) == tiny_llama_dir
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "missing"))
    pickle_only = tmp_path / "pickle"
    pickle_only.mkdir()
    (pickle_only / "config.json").write_text("{}")
    (pickle_only / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelError, match="safetensors only"):
        check_model_dir(pickle_only)


def test_relative_folder_resolves_against_base_dir(tiny_llama_dir: Path) -> None:
    assert resolve_model(tiny_llama_dir.name, base_dir=tiny_llama_dir.parent) == tiny_llama_dir


def test_hub_id_offline_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        resolve_model("someorg/somemodel")


def test_damaged_weights_are_a_model_error(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from ladle.models import load_causal_lm

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for f in tiny_llama_dir.iterdir():
        (damaged / f.name).symlink_to(f)
    (damaged / "model.safetensors").unlink()
    (damaged / "model.safetensors").write_bytes(b"\xff" * 100)  # not a safetensors header
    with pytest.raises(ModelError, match="cannot load") as info:
        load_causal_lm(damaged)
    assert "\n" not in str(info.value)
