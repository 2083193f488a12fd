"""``ladle export RUN --merge OUT``: a standalone model folder from a finished run.

The adapter is merged into the base weights loaded unquantized (a QLoRA adapter is
merged into the original-precision base, not into its 4-bit rounding), and the folder
gets the tokenizer and chat template the data was rendered with, so any
``AutoModelForCausalLM.from_pretrained`` + ``apply_chat_template`` user can serve it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ladle.errors import TrainError
from ladle.paths import atomic_dir

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _run_info(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise TrainError(f"{run_dir} is not a finished Ladle run (no manifest.json)")
    return json.loads(path.read_text())


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    merge: bool = True,
    dtype: str = "auto",
    overwrite: bool = False,
) -> Path:
    """Write ``out``: merged weights (safetensors) + tokenizer + chat template, or, without
    ``merge``, a copy of the adapter folder with the tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, out = Path(run_dir), Path(out)
    info = _run_info(run_dir)
    base = Path(info["model"]["path"])
    full = (run_dir / "model").is_dir()
    source = run_dir / ("model" if full else "adapter")
    if not source.is_dir():
        raise TrainError(f"{run_dir} holds neither adapter/ nor model/")
    if out.exists() and not overwrite:
        raise TrainError(f"{out} already exists; choose another folder or pass --overwrite")
    recipe_dtype = info["recipe"]["model"]["dtype"]
    name = dtype if dtype != "auto" else recipe_dtype
    torch_dtype = DTYPES.get(name, torch.float32)
    with atomic_dir(out, replace=overwrite) as tmp:
        if full:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
            model.save_pretrained(tmp, safe_serialization=True)
        elif merge:
            from peft import PeftModel

            if not base.is_dir():
                raise TrainError(f"base model {base} recorded in the manifest is gone")
            model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype)
            model = PeftModel.from_pretrained(model, source).merge_and_unload()
            model.save_pretrained(tmp, safe_serialization=True)
        else:
            model = None
            for f in source.iterdir():
                (tmp / f.name).write_bytes(f.read_bytes())
        # The run's tokenizer (saved with the adapter) carries the training chat template.
        tok = AutoTokenizer.from_pretrained(
            source if (source / "tokenizer_config.json").is_file() else base
        )
        tok.save_pretrained(tmp)
        if tok.chat_template and not (tmp / "chat_template.jinja").is_file():
            (tmp / "chat_template.jinja").write_text(str(tok.chat_template))
    return out
