"""The evaluation measures what was trained, on what was held out (#20): a QLoRA candidate
is evaluated on its 4-bit base, eval rows keep the fields the template reads, and the
baseline's shots never near-copy an eval prompt."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ladle.recipe.schema import Recipe  # noqa: E402


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def conv(q: str, a: str, **extra: Any) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
        **extra,
    }


# ------------------------------------------------------------------ QLoRA as trained


def test_qlora_candidate_is_evaluated_as_trained(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The evaluated QLoRA candidate's logits equal the trained model's own eval-mode
    forward (4-bit base + adapter), and merging into the full-precision base, the old
    path, gives other logits."""
    from ladle.evaluate.generate import candidate_source, load_model
    from ladle.train import adapters, train

    ids = torch.tensor([[5, 17, 300, 42, 9, 1000, 77, 3]])
    seen: dict[str, torch.Tensor] = {}
    save = adapters.save_trained

    def spy(model: Any, out: Path, adapter: str, tokenizer: Any, state_dict: Any = None) -> None:
        # The trained model itself, in eval mode, just before its adapter is written
        # (bitsandbytes' CPU eval kernel differs from its training path by ~2e-3, so both
        # sides must be in the same mode; the adapter's weights are not touched).
        model.eval()
        with torch.no_grad():
            seen["logits"] = model(input_ids=ids, use_cache=False).logits.float()
        save(model, out, adapter, tokenizer, state_dict)

    monkeypatch.setattr(adapters, "save_trained", spy)
    rows = [
        {
            "input_ids": list(range(10 + k, 40 + k)),
            "labels": [-100, *range(11 + k, 40 + k)],
            "position_ids": list(range(30)),
            "seq_lengths": [30],
        }
        for k in range(8)
    ]
    recipe = Recipe.model_validate(
        {
            "name": "q",
            "model": {"base": str(tiny_llama_dir)},
            "data": {"datasets": [{"path": "x"}], "max_length": 64},
            "train": {
                "adapter": "qlora",
                "lr": 5e-2,
                "max_steps": 3,
                "precision": "fp32",
                "save_every": 0,
                "report_to": ["none"],
                "lora": {"r": 8, "alpha": 16},
                "threads": 2,
            },
        }
    )
    res = train(recipe, rows, output_dir=tmp_path / "run")

    source = candidate_source(res.run_dir, tiny_llama_dir)
    assert source.quantized and "4-bit" in source.describe()
    model, _ = load_model(source)
    with torch.no_grad():
        evaluated = model(input_ids=ids, use_cache=False).logits.float()
    assert torch.allclose(evaluated, seen["logits"], atol=1e-6, rtol=0), (
        (evaluated - seen["logits"]).abs().max()
    )

    merged_src = candidate_source(res.run_dir, tiny_llama_dir, merge=True)
    assert not merged_src.quantized and "merged" in merged_src.describe()
    merged, _ = load_model(merged_src)
    with torch.no_grad():
        other = merged(input_ids=ids, use_cache=False).logits.float()
    assert (other - seen["logits"]).abs().max() > 1e-3  # not the model that was trained


# -------------------------------------------------------------- tools and few-shot


def _recipe(tmp_path: Path, model_dir: Path, train: Path, evals: Path, **data: Any) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "fid",
            "model": {"base": str(model_dir)},
            "data": {
                "datasets": [
                    {"path": str(train), "split": "train"},
                    {"path": str(evals), "split": "eval"},
                ],
                "max_length": 1024,
                **data,
            },
            "train": {"max_steps": 0, "report_to": ["none"]},
            "evaluate": {
                "baseline": {"few_shot": 2},
                "generation": {"max_new_tokens": 3, "precision": "fp32"},
                "bootstrap": 100,
            },
            "output": {"dir": str(tmp_path / "runs")},
        }
    )


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order_status",
            "description": "Find where an order is",
            "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
        },
    }
]


def test_eval_rows_keep_tools_for_both_contestants(
    tiny_llama_dir: Path, tmp_path: Path, shared_dir: Path
) -> None:
    """A tool-calling task is evaluated with the tool definitions it was trained with,
    rendered by a tool-using template (Qwen2.5's), for the baseline and the candidate."""
    from ladle.data import prep
    from ladle.evaluate import evaluate
    from ladle.pipeline import eval_inputs

    template = shared_dir / "reference" / "chat_templates" / "qwen2.5-instruct.jinja"
    train = _write_jsonl(
        tmp_path / "train.jsonl",
        [
            conv(f"where is order {k}? it was due {k} days ago", f"ok {k}", tools=TOOLS)
            for k in range(6)
        ],
    )
    evals = _write_jsonl(
        tmp_path / "eval.jsonl",
        [
            conv(f"has parcel {k} shipped yet, please check", f"yes {k}", tools=TOOLS)
            for k in range(3)
        ],
    )
    recipe = _recipe(tmp_path, tiny_llama_dir, train, evals, template=str(template))
    eval_rows, train_rows, _ = eval_inputs(recipe, prep(recipe))
    assert all(r["tools"] == TOOLS for r in eval_rows)
    report = evaluate(recipe, eval_rows, train_rows, [tiny_llama_dir])
    for contestant in (report.baseline, report.candidates[0]):
        assert len(contestant.prompts) == 3
        assert all("lookup_order_status" in p for p in contestant.prompts), contestant.name


def test_near_copy_of_an_eval_prompt_never_becomes_a_shot(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    """Train rows that near-copy an eval prompt (a changed word, other case and
    punctuation) stay out of the few-shot pool even with decontamination off in prep;
    the shots' ids (file:line) are recorded in report.json."""
    from ladle.data import prep
    from ladle.evaluate import evaluate, write_reports
    from ladle.pipeline import eval_inputs

    words = (
        "my {p} stopped syncing with the phone after the update and the battery now drains "
        "within a few hours even when idle, I tried a factory reset twice, reinstalled the "
        "companion app, changed the charging cable and the wall adapter, and still nothing "
        "works as it did last month before the firmware {v} rollout reached my region"
    )
    eval_q = [words.format(p=p, v="7.1") for p in ("watch", "router", "laptop")]
    near = [q.replace("twice", "three times").upper() + "!!" for q in eval_q]
    plain = [f"question number {k} about something else entirely" for k in range(4)]
    train = _write_jsonl(
        tmp_path / "train.jsonl",
        [conv(q, "near") for q in near] + [conv(q, f"a{k}") for k, q in enumerate(plain)],
    )
    evals = _write_jsonl(tmp_path / "eval.jsonl", [conv(q, "ref") for q in eval_q])
    recipe = _recipe(
        tmp_path, tiny_llama_dir, train, evals, dedup={"decontaminate": False}, template="chatml"
    )
    recipe.evaluate.baseline.few_shot = 4
    eval_rows, train_rows, decon = eval_inputs(recipe, prep(recipe))
    assert len(train_rows) == 4
    assert all(r["messages"][-1]["content"] != "near" for r in train_rows)
    assert decon is not None and decon["few_shot_pool"]["eval_copies_removed"] == 3
    report = evaluate(recipe, eval_rows, train_rows, [tiny_llama_dir])
    write_reports(report, tmp_path / "eval")
    shots = json.loads((tmp_path / "eval" / "report.json").read_text())["few_shot"]
    assert sorted(s["id"] for s in shots) == [f"{train}:{k}" for k in (4, 5, 6, 7)]
    assert all(s.reference != "near" for s in report.few_shot)


@pytest.mark.parametrize("eval_file", ["broken", "absent"])
def test_empty_eval_split_is_refused_before_training(
    tiny_llama_dir: Path, tmp_path: Path, eval_file: str
) -> None:
    from ladle.errors import LadleError
    from ladle.pipeline import run_recipe

    train = _write_jsonl(tmp_path / "train.jsonl", [conv(f"q {k}", f"a {k}") for k in range(4)])
    datasets = f"    - {{path: {train}, split: train}}\n"
    if eval_file == "broken":  # an eval file none of whose rows is usable
        evals = tmp_path / "eval.jsonl"
        evals.write_text('{"broken": true}\n')
        datasets += f"    - {{path: {evals}, split: eval}}\n"
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(
        f"name: e\nmodel: {{base: {tiny_llama_dir}}}\n"
        f"data:\n  datasets:\n{datasets}"
        "train: {max_steps: 1, report_to: [none]}\n"
    )
    with pytest.raises(LadleError, match=r"no usable rows|eval split is empty"):
        run_recipe(recipe_file, output=tmp_path / "run")
    assert not (tmp_path / "run").exists()
