"""GRPO (train.method: grpo): rewards are the evaluation metrics' own scores, the recipe
rules, and a 2-step run on the tiny Llama that generates, scores, takes loss steps from a
starting adapter and writes a run folder like every other Ladle run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from ladle.evaluate.metrics import score_metric
from ladle.recipe.schema import Recipe, RewardSpec
from ladle.train.grpo import Recorder, reward_functions, total_reward, write_completions

REF = '{"category": "billing", "priority": "high"}'
PREDS = [
    REF,
    '{"category": "billing", "priority": "low"}',
    '{"category": "refund"}',
    "Sure! Here is the JSON you asked for.",
]


def grpo_recipe(**grpo: Any) -> dict[str, Any]:
    return {
        "name": "g",
        "data": {"datasets": [{"path": "x.jsonl"}]},
        "train": {"method": "grpo", "grpo": {"rewards": ["json_valid"], **grpo}},
    }


# ----------------------------------------------------------------------------- rewards


def test_reward_is_the_weighted_metric_values_from_score_metric(tmp_path: Path) -> None:
    specs = [
        RewardSpec.model_validate("json_valid"),
        RewardSpec.model_validate(
            {"name": "json_field_accuracy", "fields": ["category", "priority"], "weight": 2.0}
        ),
        RewardSpec.model_validate({"name": "length", "weight": -0.1}),
    ]
    refs = [REF] * len(PREDS)
    recorder = Recorder()
    funcs = reward_functions(specs, allow_code=False, recorder=recorder)
    assert [f.__name__ for f in funcs] == ["json_valid", "json_field_accuracy", "length"]
    # TRL passes conversational completions; the metric sees their text.
    completions = [[{"role": "assistant", "content": p}] for p in PREDS]
    prompts = [[{"role": "user", "content": "t"}]] * len(PREDS)
    got = [f(prompts=prompts, completions=completions, reference=refs) for f in funcs]
    for spec, values in zip(specs, got, strict=True):
        expected = score_metric(spec, PREDS, refs)[0].values
        np.testing.assert_array_equal(values, expected)
    assert got[0] == [1.0, 1.0, 1.0, 0.0]
    assert got[1] == [1.0, 0.5, 0.0, 0.0]
    # The total is TRL's nansum of weight x value, which the completions log records.
    total = total_reward(specs, PREDS, refs, allow_code=False)
    words = [4, 4, 2, 8]
    assert got[2] == words
    expected_total = [1 + 2 * 1.0 - 0.4, 1 + 2 * 0.5 - 0.4, 1 + 0 - 0.2, -0.8]
    np.testing.assert_allclose(total, expected_total)
    assert recorder.batch is not None
    log = tmp_path / "completions.jsonl"
    write_completions(log, 3, recorder.batch, specs)
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["reward"] for x in lines] == pytest.approx(expected_total)
    assert lines[1]["rewards"] == {"json_valid": 1.0, "json_field_accuracy": 0.5, "length": 4.0}


def test_unscorable_field_is_nan_not_zero() -> None:
    """A field the reference lacks has nothing to score: NaN, which TRL leaves out."""
    spec = RewardSpec.model_validate({"name": "json_field_accuracy", "fields": ["product"]})
    f = reward_functions([spec], allow_code=False, recorder=Recorder())[0]
    out = f(prompts=[[]], completions=["{}"], reference=[REF])
    assert math.isnan(out[0])


# ----------------------------------------------------------------------------- schema


def test_grpo_recipe_validates_with_rewards_and_settings() -> None:
    r = Recipe.model_validate(
        grpo_recipe(
            rewards=["json_valid", {"name": "regex", "pattern": "{.*}", "weight": 0.5}],
            num_generations=8,
            kl_coef=0.0,
            loss="dr_grpo",
        )
    )
    assert r.train.grpo.rewards[1].weight == 0.5
    assert r.train.grpo.loss == "dr_grpo"


@pytest.mark.parametrize(
    ("grpo", "evaluate", "message"),
    [
        ({"rewards": []}, {}, "needs train.grpo.rewards"),
        (
            {"rewards": [{"name": "custom", "function": "m:f"}]},
            {},
            "custom rewards import user code",
        ),
        ({"rewards": [{"name": "macro_f1", "field": "c"}]}, {}, "use label_accuracy"),
        ({"rewards": [{"name": "json_valid", "weight": 0}]}, {}, "weight 0"),
        ({"rewards": ["json_valid", "json_valid"]}, {}, "give one a `label`"),
        ({"rewards": [{"name": "regex"}]}, {}, "needs `pattern`"),
        ({"num_generations": 1}, {}, "greater than or equal to 2"),
        ({"clip_range": 1.5}, {}, "less than 1"),
        ({"kl_coef": -0.1}, {}, "greater than or equal to 0"),
        ({"loss": "ppo"}, {}, "'grpo', 'dr_grpo' or 'dapo'"),
        ({"rewards": ["json_valid"], "typo": 1}, {}, "Extra inputs"),
    ],
)
def test_grpo_recipe_errors(grpo: dict[str, Any], evaluate: dict[str, Any], message: str) -> None:
    raw = grpo_recipe(**grpo)
    raw["evaluate"] = evaluate
    with pytest.raises(ValidationError, match=message):
        Recipe.model_validate(raw)


def test_custom_reward_allowed_with_allow_code_eval_loss_and_text_data_refused() -> None:
    raw = grpo_recipe(rewards=[{"name": "custom", "function": "m:f"}])
    raw["evaluate"] = {"allow_code": True}
    assert Recipe.model_validate(raw).train.grpo.rewards[0].name == "custom"
    raw = grpo_recipe()
    raw["train"]["eval_every"] = 5
    with pytest.raises(ValidationError, match="eval_every"):
        Recipe.model_validate(raw)
    raw = grpo_recipe()
    raw["data"]["datasets"][0]["format"] = "text"
    with pytest.raises(ValidationError, match="needs conversations"):
        Recipe.model_validate(raw)


# ----------------------------------------------------------------------------- smoke


def write_conversations(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    with path.open("w") as f:
        for i in range(n):
            cat = ["billing", "refund", "shipping"][int(rng.integers(0, 3))]
            pri = ["low", "high"][int(rng.integers(0, 2))]
            user = f"Ticket {i}: my {cat} issue number {int(rng.integers(0, 10**6))} is {pri}."
            answer = json.dumps({"category": cat, "priority": pri})
            msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
            f.write(json.dumps({"messages": msgs}) + "\n")
    return path


def start_adapter(model_dir: Path, out: Path) -> Path:
    """A LoRA adapter (r=4, B non-zero) standing in for an SFT run's ``RUN/adapter``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(base, cfg)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    peft_model.save_pretrained(out)
    return out


@pytest.mark.slow
def test_grpo_two_steps_from_an_adapter_writes_a_ladle_run(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file

    from ladle.train import train

    train_file = write_conversations(tmp_path / "train.jsonl", 12, 1)
    eval_file = write_conversations(tmp_path / "eval.jsonl", 3, 2)
    adapter = start_adapter(tiny_llama_dir, tmp_path / "sft-adapter")
    recipe = Recipe.model_validate(
        {
            "name": "grpo-smoke",
            "seed": 3,
            "model": {"base": str(tiny_llama_dir), "adapter": str(adapter)},
            "data": {
                "datasets": [
                    {"path": str(train_file), "split": "train"},
                    {"path": str(eval_file), "split": "eval"},
                ],
                "max_length": 128,
            },
            "train": {
                "method": "grpo",
                "lr": 1e-2,
                "max_steps": 2,
                "threads": 1,
                "precision": "fp32",
                "grpo": {
                    "rewards": [
                        "json_valid",
                        {"name": "json_field_accuracy", "fields": ["category"], "weight": 2},
                        # Random-model text is never valid JSON: length gives the group
                        # the reward spread that makes advantages (and a gradient) non-zero.
                        {"name": "length", "weight": -0.1},
                    ],
                    "num_generations": 4,
                    "prompts_per_step": 2,
                    "max_completion_tokens": 8,
                    "kl_coef": 0.05,
                    "log_completions_every": 1,
                },
            },
        }
    )
    res = train(recipe, None, output_dir=tmp_path / "run", progress=False)
    run = res.run_dir
    assert res.steps == 2
    # A Ladle run folder: adapter (continuing the r=4 start, not a new r=16 one), manifest,
    # metrics, loss PNG, TensorBoard.
    cfg = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert cfg["r"] == 4
    man = json.loads((run / "manifest.json").read_text())
    assert man["training"]["method"] == "grpo" and man["training"]["steps"] == 2
    assert man["data"]["prompts"] == 12 and man["throughput"]["train_s"] > 0
    assert (run / "loss_curve.png").is_file()
    assert any((run / "tensorboard").iterdir())
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for key in (
        "loss",
        "reward_mean",
        "reward_json_valid_mean",
        "reward_json_valid_std",
        "reward_length_mean",
        "reward_length_std",
        "kl",
        "completion_length",
        "clip_fraction",
    ):
        assert all(key in r for r in rows), key
    assert 1 <= rows[0]["completion_length"] <= 8
    # Completions with their rewards, each component the metric's own value.
    logged = [json.loads(x) for x in (run / "completions.jsonl").read_text().splitlines()]
    assert {x["step"] for x in logged} == {1, 2} and len(logged) == 16
    for x in logged:
        length = float(len(x["completion"].split()))
        assert x["rewards"]["length"] == length
        valid = x["rewards"]["json_valid"]
        acc = x["rewards"]["json_field_accuracy"]
        assert x["reward"] == pytest.approx(valid + 2 * (acc or 0.0) - 0.1 * length)
    # The loss moved the adapter: the saved weights differ from the starting ones.
    before = load_file(adapter / "adapter_model.safetensors")
    after = load_file(run / "adapter" / "adapter_model.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # TRL's frozen KL reference is not part of the saved adapter.
    assert not any(".ref." in k for k in after)


def test_prompts_carry_the_candidate_system_prompt_and_skip_rows_without_answer(
    tmp_path: Path,
) -> None:
    from ladle.train.grpo import prompt_rows

    train_file = write_conversations(tmp_path / "train.jsonl", 5, 1)
    with train_file.open("a") as f:  # no assistant turn: nothing to reward against
        f.write(json.dumps({"messages": [{"role": "user", "content": "only a question"}]}) + "\n")
    eval_file = write_conversations(tmp_path / "eval.jsonl", 2, 2)
    raw = grpo_recipe()
    raw["data"]["datasets"] = [
        {"path": str(train_file), "split": "train"},
        {"path": str(eval_file), "split": "eval"},
    ]
    raw["evaluate"] = {"candidate": {"system_prompt": "Reply with JSON."}}
    rows, info = prompt_rows(Recipe.model_validate(raw), None)
    assert info["prompts"] == 5 and info["skipped"] == 1
    assert "no assistant message" in info["first_skips"][0]
    for r in rows:
        assert r["prompt"][0] == {"role": "system", "content": "Reply with JSON."}
        assert r["prompt"][-1]["role"] == "user"
        assert json.loads(r["reference"])["category"] in {"billing", "refund", "shipping"}


def test_max_steps_0_saves_the_start_adapter_untrained(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    """`train.max_steps: 0` is "no training" (the gate's control run), not "one epoch"."""
    from safetensors.torch import load_file

    from ladle.train import train

    adapter = start_adapter(tiny_llama_dir, tmp_path / "sft-adapter")
    raw = grpo_recipe()
    raw["model"] = {"base": str(tiny_llama_dir), "adapter": str(adapter)}
    raw["data"]["datasets"] = [
        {"path": str(write_conversations(tmp_path / "t.jsonl", 4, 1)), "split": "train"}
    ]
    raw["train"].update({"max_steps": 0, "report_to": ["none"], "threads": 1})
    res = train(Recipe.model_validate(raw), None, output_dir=tmp_path / "run", progress=False)
    assert res.steps == 0 and res.losses == []
    before = load_file(adapter / "adapter_model.safetensors")
    after = load_file(res.output / "adapter_model.safetensors")
    assert before.keys() == after.keys()
    assert all((before[k] == after[k]).all() for k in before)


def test_a_failing_custom_reward_is_a_one_line_train_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ladle.errors import TrainError

    (tmp_path / "my_rewards.py").write_text(
        "def short(pred, ref):\n    return 1.0 / (len(pred) - len(pred))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = RewardSpec.model_validate({"name": "custom", "function": "my_rewards:short"})
    f = reward_functions([spec], allow_code=True, recorder=Recorder())[0]
    with pytest.raises(TrainError, match=r"train.grpo.rewards 'custom'.*ZeroDivisionError"):
        f(prompts=[[]], completions=["x"], reference=["y"])
    # Without allow_code the metric code refuses to import it at all.
    g = reward_functions([spec], allow_code=False, recorder=Recorder())[0]
    with pytest.raises(TrainError, match="allow_code"):
        g(prompts=[[]], completions=["x"], reference=["y"])
