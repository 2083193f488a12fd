"""``model.trust_remote_code`` reaches every load: training (model and tokenizer),
evaluation and export, so a recipe whose model ships its own code trains and then
evaluates and exports, and one without the flag fails at once with a one-line hint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ladle.errors import ModelError
from ladle.recipe.schema import Recipe

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def custom_code_dir(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama as a model whose config, model and tokenizer classes ship in the
    folder (``auto_map``), as custom-architecture checkpoints do."""
    out = tmp_path_factory.mktemp("custom-code") / "tinycustom"
    shutil.copytree(tiny_llama_dir, out)
    (out / "configuration_tinycustom.py").write_text(
        "from transformers import LlamaConfig\n\n\n"
        "class TinyCustomConfig(LlamaConfig):\n    model_type = 'tinycustom'\n"
    )
    (out / "modeling_tinycustom.py").write_text(
        "from transformers import LlamaForCausalLM\n\n"
        "from .configuration_tinycustom import TinyCustomConfig\n\n\n"
        "class TinyCustomForCausalLM(LlamaForCausalLM):\n    config_class = TinyCustomConfig\n"
    )
    (out / "tokenization_tinycustom.py").write_text(
        "from transformers import PreTrainedTokenizerFast\n\n\n"
        "class TinyCustomTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )
    config = json.loads((out / "config.json").read_text())
    config |= {
        "model_type": "tinycustom",
        "architectures": ["TinyCustomForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_tinycustom.TinyCustomConfig",
            "AutoModelForCausalLM": "modeling_tinycustom.TinyCustomForCausalLM",
        },
    }
    (out / "config.json").write_text(json.dumps(config))
    tok = json.loads((out / "tokenizer_config.json").read_text())
    tok |= {
        "tokenizer_class": "TinyCustomTokenizer",
        "auto_map": {"AutoTokenizer": [None, "tokenization_tinycustom.TinyCustomTokenizer"]},
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok))
    return out


def recipe(model_dir: Path, trust: bool) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "t",
            "model": {"base": str(model_dir), "trust_remote_code": trust},
            "data": {"datasets": [{"path": "x"}], "max_length": 64},
            "train": {"max_steps": 1, "lr": 1e-3, "report_to": ["none"], "threads": 2},
        }
    )


ROW = {
    "input_ids": list(range(10, 30)),
    "labels": list(range(10, 30)),
    "position_ids": list(range(20)),
    "seq_lengths": [20],
}


def test_trust_remote_code_reaches_train_eval_and_export(
    custom_code_dir: Path, tmp_path: Path
) -> None:
    from ladle.evaluate.generate import ModelSource, load_model
    from ladle.train import export_run, train

    with pytest.raises(ModelError, match="trust_remote_code: true") as info:
        train(recipe(custom_code_dir, trust=False), [ROW], output_dir=tmp_path / "refused")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "refused").exists()

    run = train(recipe(custom_code_dir, trust=True), [ROW], output_dir=tmp_path / "run")
    assert (run.output / "adapter_config.json").is_file()

    source = ModelSource(custom_code_dir, run.output)
    model, tok = load_model(source, trust_remote_code=True)
    assert type(model).__name__ == "TinyCustomForCausalLM"
    assert type(tok).__name__ == "TinyCustomTokenizer"
    with pytest.raises(ModelError, match="trust_remote_code"):
        load_model(source, trust_remote_code=False)

    out = export_run(run.run_dir, tmp_path / "merged", merge=True)
    assert (out / "model.safetensors").is_file() and (out / "ladle_export.json").is_file()
