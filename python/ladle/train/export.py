"""``ladle export RUN --merge OUT``: a standalone model folder from a finished run.

The adapter is merged into the base weights loaded unquantized (a QLoRA adapter is
merged into the original-precision base, not into its 4-bit rounding), and the folder
gets the tokenizer and chat template the data was rendered with, so any
``AutoModelForCausalLM.from_pretrained`` + ``apply_chat_template`` user can serve it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from ladle.errors import TrainError
from ladle.models import load_causal_lm, load_tokenizer
from ladle.paths import atomic_dir, atomic_write_text, check_output_dir

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MARKER = "ladle_export.json"
"""Written into every export (where it came from); ``overwrite`` replaces only a folder
that holds it."""


def _run_info(run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """(base model folder, the recipe's model section) from a finished run's manifest."""
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise TrainError(f"{run_dir} is not a finished Ladle run (no manifest.json)")
    try:
        info = json.loads(path.read_bytes())
        return Path(info["model"]["path"]), dict(info["recipe"]["model"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TrainError(f"{path}: not a readable run manifest ({e!r})") from e


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    merge: bool = True,
    dtype: str = "auto",
    overwrite: bool = False,
) -> Path:
    """Write ``out``: merged weights (safetensors) + tokenizer + chat template, or, without
    ``merge``, a copy of the adapter folder with the tokenizer. ``overwrite`` replaces
    only an earlier export (a folder holding ``ladle_export.json``)."""
    run_dir, out = Path(run_dir), Path(out)
    base, model_cfg = _run_info(run_dir)
    trust = bool(model_cfg.get("trust_remote_code", False))
    full = (run_dir / "model").is_dir()
    source = run_dir / ("model" if full else "adapter")
    if not source.is_dir():
        raise TrainError(f"{run_dir} holds neither adapter/ nor model/")
    replace = check_output_dir(
        out, MARKER, overwrite=overwrite, command="ladle export", error=TrainError
    )
    name = dtype if dtype != "auto" else model_cfg.get("dtype", "auto")
    torch_dtype = DTYPES.get(name, torch.float32)
    try:
        with atomic_dir(out, replace=replace) as tmp:
            if full:
                model = load_causal_lm(source, trust_remote_code=trust, dtype=torch_dtype)
                model.save_pretrained(tmp, safe_serialization=True)
            elif merge:
                from peft import PeftModel

                if not base.is_dir():
                    raise TrainError(f"base model {base} recorded in the manifest is gone")
                model = load_causal_lm(base, trust_remote_code=trust, dtype=torch_dtype)
                try:
                    model = PeftModel.from_pretrained(model, source).merge_and_unload()
                except (ValueError, KeyError, TypeError, RuntimeError) as e:  # a bad adapter
                    brief = " ".join(str(e).split())[:300]
                    raise TrainError(f"cannot load the adapter in {source} ({brief})") from e
                model.save_pretrained(tmp, safe_serialization=True)
            else:
                for f in source.iterdir():
                    if f.is_file():
                        shutil.copy2(f, tmp / f.name)
            # The run's tokenizer (saved with the adapter) carries the training chat template.
            tok = load_tokenizer(
                source if (source / "tokenizer_config.json").is_file() else base,
                trust_remote_code=trust,
            )
            tok.save_pretrained(tmp)
            if tok.chat_template and not (tmp / "chat_template.jinja").is_file():
                (tmp / "chat_template.jinja").write_text(str(tok.chat_template))
            record = {"run": str(run_dir.resolve()), "merged": merge or full, "dtype": name}
            atomic_write_text(tmp / MARKER, json.dumps(record, indent=2) + "\n")
    except OSError as e:  # disk full, permissions
        raise TrainError(f"writing {out} failed: {e}") from e
    return out
