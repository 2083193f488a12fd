"""End to end on the tiny model: prompts, few-shot hygiene, reports, the CLI's exit codes."""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from ladle.errors import EvalError
from ladle.evaluate import check_output_dir, evaluate, write_reports
from ladle.evaluate.generate import candidate_source, stop_token_ids
from ladle.evaluate.prompts import Example, build_prompt, select_few_shot, split_row
from ladle.recipe import load_recipe
from ladle.recipe.schema import PromptSpec


def conv(q: str, a: str, system: str | None = None) -> dict:
    msgs = [{"role": "system", "content": system}] if system else []
    return {
        "messages": [*msgs, {"role": "user", "content": q}, {"role": "assistant", "content": a}]
    }


EVAL_ROWS = [conv(f"Classify ticket {i}", json.dumps({"label": "ab"[i % 2]})) for i in range(10)]
TRAIN_ROWS = [conv(f"Train ticket {i}", json.dumps({"label": "ab"[i % 3 % 2]})) for i in range(20)]


# ----------------------------------------------------------------------- prompts


def test_split_row_takes_the_last_assistant_message():
    row = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
        ]
    }
    ex = split_row(row)
    assert ex.reference == "4" and len(ex.prompt) == 3
    with pytest.raises(EvalError, match="no assistant"):
        split_row({"messages": [{"role": "user", "content": "x"}]})


def test_few_shot_never_draws_an_eval_prompt():
    evals = [split_row(r) for r in EVAL_ROWS]
    # The train split contains every eval row (a contaminated split) plus 5 clean rows.
    train = [split_row(r) for r in EVAL_ROWS + TRAIN_ROWS[:5]]
    eval_keys = {json.dumps(e.prompt) for e in evals}
    for seed in range(30):
        shots = select_few_shot(train, 5, seed, evals)
        assert len(shots) == 5
        assert not {json.dumps(s.prompt) for s in shots} & eval_keys
    # 6 shots cannot be drawn from 5 clean rows
    with pytest.raises(EvalError, match="outside the eval set"):
        select_few_shot(train, 6, 0, evals)


def test_few_shot_is_deterministic_by_seed():
    train = [split_row(r) for r in TRAIN_ROWS]
    assert select_few_shot(train, 3, 1) == select_few_shot(train, 3, 1)
    assert any(select_few_shot(train, 3, 1) != select_few_shot(train, 3, s) for s in range(2, 6))


def test_build_prompt_orders_system_shots_then_question():
    ex = split_row(conv("Q?", "A", system="row system"))
    shots = [Example([{"role": "system", "content": "x"}, {"role": "user", "content": "q1"}], "a1")]
    msgs = build_prompt(ex, PromptSpec(system_prompt="Be strict.", few_shot=1), shots)
    assert [(m["role"], m["content"]) for m in msgs] == [
        ("system", "Be strict."),
        ("user", "q1"),
        ("assistant", "a1"),
        ("user", "Q?"),
    ]
    assert build_prompt(ex, PromptSpec(), [])[0]["content"] == "row system"


# ----------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workspace(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recipe, its data and a run folder holding an (untrained) LoRA adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("eval-ws")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(root / "run" / "adapter")
    (root / "data").mkdir()
    for name, rows in (("eval", EVAL_ROWS), ("train", TRAIN_ROWS)):
        text = "\n".join(json.dumps(r) for r in rows) + "\n"
        (root / "data" / f"{name}.jsonl").write_text(text)
    recipe = {
        "name": "tiny-eval",
        "model": {"base": str(tiny_llama_dir)},
        "data": {
            "datasets": [
                {"path": "data/train.jsonl", "split": "train"},
                {"path": "data/eval.jsonl", "split": "eval"},
            ]
        },
        "evaluate": {
            "baseline": {"system_prompt": "Answer with JSON.", "few_shot": 2},
            "generation": {"max_new_tokens": 6, "batch_size": 4},
            "bootstrap": 200,
            "metrics": [
                "exact_match",
                "json_valid",
                {"name": "json_field_accuracy", "fields": ["label"]},
                {"name": "macro_f1", "field": "label"},
                "rouge_l",
            ],
            "price_per_1k_prompt": 0.5,
            "gate": [
                {"metric": "prompt_tokens", "max_ratio": 1.0},
                {"metric": "exact_match", "max_regression": 1.0},
            ],
        },
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return root


# ----------------------------------------------------------------------- end to end


def test_evaluate_end_to_end(workspace: Path, tiny_llama_dir: Path, monkeypatch):
    summary = workspace / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    recipe = load_recipe(workspace / "recipe.yaml")
    out = workspace / "api-report"
    report = evaluate(
        recipe,
        EVAL_ROWS,
        TRAIN_ROWS,
        [workspace / "run", tiny_llama_dir],
        decontamination={"decontaminated": True, "exact": 2, "near": 1},
    )
    assert not out.exists()  # evaluate() returns a value; the caller writes it
    write_reports(report, out)
    assert report.gate_passed
    assert [c.name for c in report.candidates] == ["run", tiny_llama_dir.name]
    # An untrained LoRA (B = 0) merged into the base is the base: same answers.
    lora, plain = report.candidates
    assert lora.generation.outputs == plain.generation.outputs
    # The baseline's prompt carries the system prompt and two shots: more tokens.
    assert report.baseline.generation.prompt_tokens.min() > lora.generation.prompt_tokens.max()
    assert "Answer with JSON." in report.baseline.prompts[0]
    # ... most of them shared: prefilled once, and the report says so
    shared = report.baseline.generation.prefix_tokens
    assert shared > 0 and report.baseline.operations["throughput"]["prefix_cached_tokens"] == shared
    assert (
        f"{shared}-token prompt prefix they share" in report.baseline.operations["latency_method"]
    )
    assert all(c.completion_tokens.max() <= 6 for c in (report.baseline.generation,))

    files = {p.name for p in out.iterdir()}
    assert files == {"report.json", "report.md", "junit.xml", "examples.jsonl", "chart.png"}
    data = json.loads((out / "report.json").read_text())
    assert data["gate_passed"] is True and data["n_examples"] == 10
    run_cmp = data["comparisons"]["run"]["baseline"]
    assert {"exact_match", "json_field_accuracy.label", "macro_f1", "cost", "latency_p95"} <= set(
        run_cmp
    )
    assert run_cmp["prompt_tokens"]["diff"] < 0
    assert run_cmp["cost"]["candidate"] < run_cmp["cost"]["baseline"]

    md = (out / "report.md").read_text()
    assert "| metric | baseline | candidate | diff [95% CI] | p |" in md
    assert "| exact_match |" in md and "| latency_p50 |" in md
    assert f"batch 4, shared {shared}-token prefix cached" in md
    assert (
        "Decontamination: train rows overlapping eval prompts were removed (exact: 2, near: 1)"
        in md
    )
    assert summary.read_text().strip() == md.strip()

    root = ET.parse(out / "junit.xml").getroot()
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == 4  # two conditions x two candidates
    assert root.get("failures") == "0"

    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (out / "examples.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert len(lines) == 10
    assert first["reference"] == EVAL_ROWS[0]["messages"][-1]["content"]
    assert {"output", "scores", "prompt_tokens"} <= set(first["baseline"])
    assert set(first["candidates"]) == {"run", tiny_llama_dir.name}


def _cli(argv: list[str]) -> int:
    from ladle.commands import eval as eval_cmd

    parser = argparse.ArgumentParser(prog="ladle")
    eval_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_gate_passes_then_fails(workspace: Path, capsys):
    recipe = str(workspace / "recipe.yaml")
    run = str(workspace / "run")
    assert _cli(["eval", recipe, "--candidate", run, "evaluate.limit=4"]) == 0
    assert (workspace / "run" / "eval" / "junit.xml").is_file()
    failing = (
        "evaluate.gate=[{metric: exact_match, min: 0.5}, {metric: prompt_tokens, max_ratio: 1}]"
    )
    code = _cli(
        [
            "eval",
            recipe,
            "--candidate",
            run,
            "--output",
            str(workspace / "failed"),
            "evaluate.limit=4",
            failing,
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "gate FAILED [run vs baseline] exact_match: value 0 < min 0.5" in err
    root = ET.parse(workspace / "failed" / "junit.xml").getroot()
    failed = [c for c in root.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["exact_match: min 0.5"]

    assert _cli(["compare", str(workspace / "run" / "eval"), str(workspace / "failed")]) == 0
    out = capsys.readouterr().out
    assert "| exact_match |" in out and "Gate: A passed, B FAILED." in out


def test_cli_rejects_unknown_gate_metric_before_generating(workspace: Path):
    with pytest.raises(EvalError, match="unknown measure"):
        _cli(
            [
                "eval",
                str(workspace / "recipe.yaml"),
                "--candidate",
                str(workspace / "run"),
                "evaluate.gate=[{metric: acuracy, min: 0.5}]",
            ]
        )


def test_report_folder_never_replaces_a_foreign_folder(workspace: Path):
    foreign = workspace / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(EvalError, match="not an eval report folder"):
        check_output_dir(foreign)
    with pytest.raises(EvalError, match="not an eval report folder"):
        _cli(
            [
                "eval",
                str(workspace / "recipe.yaml"),
                "-c",
                str(workspace / "run"),
                "-o",
                str(foreign),
            ]
        )
    assert (foreign / "keep.txt").read_text() == "mine"


def test_candidate_kinds(workspace: Path, tiny_llama_dir: Path, tmp_path: Path):
    src = candidate_source(workspace / "run", tiny_llama_dir)
    assert src.adapter_dir == workspace / "run" / "adapter" and src.model_dir == tiny_llama_dir
    assert candidate_source(tiny_llama_dir, tiny_llama_dir).adapter_dir is None
    with pytest.raises(EvalError, match="neither a run folder"):
        candidate_source(tmp_path, tiny_llama_dir)


def test_stop_tokens_include_chatml_end_of_turn(tiny_llama_dir: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    assert tok.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(tok)


def test_batched_generation_matches_one_by_one_and_samples(tiny_llama_dir: Path):
    from ladle.evaluate.generate import ModelSource, generate, load_model, prompt_renderer
    from ladle.evaluate.metrics import consistency
    from ladle.recipe.schema import GenerationSpec

    model, tok = load_model(ModelSource(tiny_llama_dir))
    render = prompt_renderer(tiny_llama_dir)
    prompts = [render(r["messages"][:-1]) for r in EVAL_ROWS[:5]]
    prompts[2] = render([{"role": "user", "content": "a much longer question " * 5}])
    # Ladle's renderer and transformers' agree on the prompt text
    hf = tok.apply_chat_template(
        EVAL_ROWS[0]["messages"][:-1], tokenize=False, add_generation_prompt=True
    )
    assert prompts[0] == hf
    spec = GenerationSpec(max_new_tokens=5, batch_size=4, precision="fp32")
    batched = generate(model, tok, prompts, spec)
    single = generate(model, tok, prompts, spec.model_copy(update={"batch_size": 1}))
    assert batched.outputs == single.outputs
    assert batched.prompt_tokens.tolist() == [
        len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts
    ]
    assert (batched.completion_tokens <= 5).all() and (batched.latency_s > 0).all()

    sampled = generate(
        model,
        tok,
        prompts[:2],
        spec.model_copy(update={"do_sample": True, "num_samples": 3, "temperature": 1.5}),
        seed=3,
    )
    assert [len(o) for o in sampled.outputs] == [3, 3]
    again = generate(
        model,
        tok,
        prompts[:2],
        spec.model_copy(update={"do_sample": True, "num_samples": 3, "temperature": 1.5}),
        seed=3,
    )
    assert again.outputs == sampled.outputs  # seeded sampling is reproducible
    assert ((consistency(sampled.outputs) > 0) & (consistency(sampled.outputs) <= 1)).all()


def test_cli_plan_prints_power_without_generating(workspace: Path, capsys):
    recipe = str(workspace / "recipe.yaml")
    gate = "evaluate.gate=[{metric: exact_match, min_gain: 0.05, significant: true}]"
    assert _cli(["eval", recipe, "--plan", gate]) == 0
    out = capsys.readouterr().out
    assert "power: WARNING exact_match: with 10 eval rows" in out
    assert "eval rows are needed to detect 0.05" in out
    assert not (workspace / "eval").exists()


def test_regression_suite_is_gated_and_reported(workspace: Path, tmp_path: Path):
    suite = {
        "name": "skills",
        "dataset": {
            "path": str(tmp_path / "skills.jsonl"),
            "generate": {"name": "general-skills", "rows": 6, "seed": 3},
        },
        "metrics": ["contains"],
        "gate": [{"metric": "contains", "max_regression": 1.0}],
    }
    over = [
        f"evaluate.suites=[{json.dumps(suite)}]",
        "evaluate.limit=3",
        "evaluate.latency_sample=0",
    ]
    recipe = load_recipe(workspace / "recipe.yaml", over)
    report = evaluate(recipe, EVAL_ROWS, TRAIN_ROWS, [workspace / "run"])
    assert (tmp_path / "skills.jsonl").is_file()  # generated once, then it is data
    (sub,) = report.suites
    assert sub.recipe == "skills" and sub.n_examples == 6
    # each row's own prompt: no main-task system prompt or few-shot turns
    assert "Answer with JSON." not in sub.baseline.prompts[0]
    assert "Reply with" in sub.baseline.prompts[0]
    assert [g.name for g in sub.gate] == ["[skills] contains: max_regression 1"]
    assert report.verdict == "pass"
    out = tmp_path / "report"
    write_reports(report, out)
    md = (out / "report.md").read_text()
    assert "## Regression suite `skills` (6 rows" in md and "[skills] contains" in md
    data = json.loads((out / "report.json").read_text())
    assert data["suites"][0]["recipe"] == "skills"
    # a suite condition that fails fails the whole verdict
    strict = [*over[:1], "evaluate.limit=3", "evaluate.latency_sample=0"]
    strict[0] = strict[0].replace('"max_regression": 1.0', '"min": 1.0')
    report = evaluate(
        load_recipe(workspace / "recipe.yaml", strict), EVAL_ROWS, TRAIN_ROWS, [workspace / "run"]
    )
    assert report.verdict == "fail" and report.exit_code == 1
    assert report.gate_failures[0].name == "[skills] contains: min 1"


def test_cli_without_any_candidate_is_a_one_line_error(workspace: Path):
    with pytest.raises(EvalError, match="no candidate: pass --candidate"):
        _cli(["eval", str(workspace / "recipe.yaml")])
