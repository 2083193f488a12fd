"""Training on the tiny Llama: adapters, packing isolation, resume, reproducibility,
export, several processes. Runs are a few steps on short rows so the file stays fast."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")

from ladle._core import IGNORE_INDEX  # noqa: E402
from ladle.errors import TrainError  # noqa: E402
from ladle.recipe.schema import Recipe  # noqa: E402
from ladle.train import train  # noqa: E402

MAX_LEN = 64


# ----------------------------------------------------------------------------- data


def make_docs(
    n: int, seed: int = 0, lo: int = 4, hi: int = 24
) -> list[tuple[list[int], list[int]]]:
    """Arithmetic token runs (learnable: next = current + 3) with a masked prompt."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(lo, hi))
        start = int(rng.integers(0, 200))
        ids = [(start + 3 * k) % 300 + 10 for k in range(length)]
        p = int(rng.integers(1, length // 2 + 1))
        out.append((ids, [IGNORE_INDEX] * p + ids[p:]))
    return out


def pack(docs: list[tuple[list[int], list[int]]], cap: int = MAX_LEN) -> list[dict[str, Any]]:
    """First-fit in order: rows in the data contract of `ladle prep`."""
    rows: list[dict[str, Any]] = []
    cur: list[tuple[list[int], list[int]]] = []

    def flush() -> None:
        pos = [p for d in cur for p in range(len(d[0]))]
        labels = [lab for d in cur for lab in d[1]]
        rows.append(
            {
                "input_ids": [t for d in cur for t in d[0]],
                "labels": [
                    IGNORE_INDEX if p == 0 else lab for p, lab in zip(pos, labels, strict=True)
                ],
                "position_ids": pos,
                "seq_lengths": [len(d[0]) for d in cur],
            }
        )

    for d in docs:
        if cur and sum(len(x[0]) for x in cur) + len(d[0]) > cap:
            flush()
            cur = []
        cur.append(d)
    if cur:
        flush()
    return rows


def unpacked(docs: list[tuple[list[int], list[int]]]) -> list[dict[str, Any]]:
    return [
        {
            "input_ids": i,
            "labels": [IGNORE_INDEX, *lab[1:]],
            "position_ids": list(range(len(i))),
            "seq_lengths": [len(i)],
        }
        for i, lab in docs
    ]


def recipe(model_dir: Path, **train: Any) -> Recipe:
    data = train.pop("data", {})
    fmt = "preference" if train.get("method") == "dpo" else "messages"
    base = {
        "lr": 1e-2,
        "max_steps": 6,
        "save_every": 0,
        "report_to": ["none"],
        "lora": {"r": 8, "alpha": 16},
        "threads": 2,
    }
    base.update(train)
    return Recipe.model_validate(
        {
            "name": "t",
            "seed": 7,
            "model": {"base": str(model_dir)},
            "data": {"datasets": [{"path": "x", "format": fmt}], "max_length": MAX_LEN, **data},
            "train": base,
        }
    )


# Learning is judged on held-out rows, before vs after: each step's training loss moves
# more with its batch's make-up than with what 8 steps teach, while the held-out drop
# (0.08 for LoRA, QLoRA and DoRA over 8 steps, 0.35 for full; the same with 1 or 2
# threads) is over 2.5x this margin.
LEARNED = 0.03


def falling(losses: list[float]) -> bool:
    k = max(1, len(losses) // 3)
    return float(np.mean(losses[-k:])) < float(np.mean(losses[:k]))


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return pack(make_docs(80))


@pytest.fixture(scope="module")
def held_docs() -> list[tuple[list[int], list[int]]]:
    return make_docs(24, seed=5)


@pytest.fixture(scope="module")
def untrained_loss(
    tiny_llama_dir: Path, rows: list, held_docs: list, tmp_path_factory: pytest.TempPathFactory
) -> float:
    """Held-out loss of the untrained model (LoRA starts as the identity)."""
    out = tmp_path_factory.mktemp("untrained") / "run"
    return train(recipe(tiny_llama_dir, max_steps=0), rows, pack(held_docs), output_dir=out).eval[
        "eval_loss"
    ]


# ------------------------------------------------------------------------- adapters


@pytest.mark.parametrize("adapter", ["lora", "qlora", "dora", "full"])
def test_sft_adapters_loss_falls(
    adapter: str,
    tiny_llama_dir: Path,
    rows: list,
    held_docs: list,
    untrained_loss: float,
    tmp_path: Path,
) -> None:
    lr = 3e-3 if adapter == "full" else 1e-2
    r = recipe(
        tiny_llama_dir,
        adapter=adapter,
        lr=lr,
        max_steps=8,
        gradient_checkpointing=adapter == "lora",
    )
    res = train(r, rows, pack(held_docs), output_dir=tmp_path / "run")
    assert res.eval["eval_loss"] < untrained_loss - LEARNED, (untrained_loss, res.eval)
    assert len(res.losses) == 8
    out = tmp_path / "run" / ("model" if adapter == "full" else "adapter")
    assert res.output == out
    files = {p.name for p in out.iterdir()}
    if adapter == "full":
        assert "model.safetensors" in files
    else:
        assert {"adapter_config.json", "adapter_model.safetensors"} <= files
        cfg = json.loads((out / "adapter_config.json").read_text())
        assert cfg["use_dora"] is (adapter == "dora")
    assert "chat_template.jinja" in files or "tokenizer_config.json" in files


def test_lora_adapter_loads_with_peft(tiny_llama_dir: Path, rows: list, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    r = recipe(tiny_llama_dir, max_steps=3, report_to=["tensorboard"], log_every=1)
    res = train(r, rows, eval_rows=rows[:3], output_dir=tmp_path / "run")
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    model = PeftModel.from_pretrained(base, res.output)
    trained = {n for n, p in model.named_parameters() if "lora_B" in n and p.abs().sum() > 0}
    assert trained, "the saved adapter is the untrained initialisation"
    run = tmp_path / "run"
    man = json.loads((run / "manifest.json").read_text())
    assert man["data"]["fingerprint"] and man["model"]["fingerprint"]
    assert man["model"]["tokenizer_fingerprint"]
    assert man["versions"]["torch"] and man["hardware"]["torch_threads"] == 2
    assert man["throughput"]["tokens_per_s"] > 0 and man["throughput"]["peak_rss_mib"] > 0
    assert man["training"]["eval"]["eval_loss"] > 0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [1, 2, 3]
    assert {"loss", "lr", "tokens", "tokens_per_s"} <= set(lines[0])
    assert (run / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert any((run / "tensorboard").iterdir())


def test_padded_sft_and_zero_steps(
    tiny_llama_dir: Path, held_docs: list, untrained_loss: float, tmp_path: Path
) -> None:
    docs = make_docs(48, seed=3)
    r = recipe(tiny_llama_dir, micro_batch_size=8, max_steps=8, data={"packing": "none"})
    # Padded held-out rows score like packed ones (isolation), so the baseline is shared.
    res = train(r, unpacked(docs), unpacked(held_docs), output_dir=tmp_path / "padded")
    assert res.eval["eval_loss"] < untrained_loss - LEARNED, (untrained_loss, res.eval)
    # max_steps 0 trains nothing but still writes an adapter that evaluation can load.
    zero = train(recipe(tiny_llama_dir, max_steps=0), pack(docs), output_dir=tmp_path / "zero")
    assert zero.steps == 0 and zero.losses == []
    assert (zero.output / "adapter_model.safetensors").is_file()


# -------------------------------------------------------------------- contamination


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_document_isolated(attn: str, tiny_llama_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    from ladle.train.rows import sft_table
    from ladle.train.sft import PackedSFT, forward_packed

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation=attn).eval()
    docs = make_docs(3, seed=11, lo=12, hi=20)
    row = pack(docs, cap=200)[0]
    assert len(row["seq_lengths"]) == 3
    n0, n1, _ = row["seq_lengths"]
    ids = torch.tensor(row["input_ids"])[None]
    pos = torch.tensor(row["position_ids"])[None]
    alone_ids = torch.tensor(docs[1][0])[None]
    with torch.no_grad():
        packed = forward_packed(model, ids, pos, torch.arange(ids.shape[1]))[n0 : n0 + n1]
        alone = model(input_ids=alone_ids, use_cache=False).logits[0]
        assert (packed - alone).abs().max().item() < 1e-4
        # The per-document loss through the training objective equals the document's alone.
        single = [pack([d], cap=200)[0] for d in docs]
        obj = PackedSFT(sft_table(pa.Table.from_pylist([row, *single])))
        whole, _ = obj.loss(model, model, obj.batch([0], torch.device("cpu")))
        parts = [obj.loss(model, model, obj.batch([i], torch.device("cpu")))[0] for i in (1, 2, 3)]
        assert whole.item() == pytest.approx(
            sum(p.item() for p in parts), abs=1e-4 * len(row["input_ids"])
        )
        # Rows stacked [B, L] (padded, sdpa/eager) score as when concatenated into one row.
        flat = PackedSFT(obj.tt, stack=False)
        for o in (obj, flat):
            b = o.batch([0, 1, 2, 3], torch.device("cpu"))
            assert b["input_ids"].shape[0] == (4 if o.stack else 1)
            assert int(b["keep"].sum()) == int(o.units[[0, 1, 2, 3]].sum())
        stacked = obj.loss(model, model, obj.batch([0, 1, 2, 3], torch.device("cpu")))[0]
        joined = flat.loss(model, model, flat.batch([0, 1, 2, 3], torch.device("cpu")))[0]
        assert stacked.item() == pytest.approx(joined.item(), abs=1e-4 * len(row["input_ids"]))
        # With the KV cache on, transformers skips the packed-sequence mask: documents leak.
        cached = model(input_ids=ids, position_ids=pos, use_cache=True).logits[0, n0 : n0 + n1]
        assert (cached - alone).abs().max().item() > 1e-2


def test_rows_stacked_except_for_varlen_attention(tiny_llama_dir: Path, rows: list) -> None:
    """sdpa/eager get packed rows stacked [B, L]; flash-attention (varlen only within one
    flattened row) gets them concatenated, or its documents would see each other."""
    from ladle.train.run import _objective, _plan
    from ladle.train.sft import PackedSFT

    table = pa.Table.from_pylist(rows)
    for attn, stacked in (("sdpa", True), ("eager", True), ("flash_attention_2", False)):
        r = recipe(tiny_llama_dir, micro_batch_tokens=4 * MAX_LEN)
        r.model.attn_implementation = attn
        obj = _objective(r, table, 0)
        assert isinstance(obj, PackedSFT) and obj.stack is stacked
        mb = _plan(r, obj, 1, training=True)[0].shards[0][0]
        shape = obj.batch(mb.rows, torch.device("cpu"))["input_ids"].shape
        assert shape[0] == (len(mb.rows) if stacked else 1) and len(mb.rows) > 1


def test_leaky_attention_refused(tiny_llama_dir: Path, rows: list, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from ladle.train import check_packing_attention, verify_packing_isolation

    cpu = torch.device("cpu")
    for attn in ("flex_attention", "flash_attention_3", "paged|sdpa"):
        with pytest.raises(TrainError, match="leak"):
            check_packing_attention(attn, cpu)
    with pytest.raises(TrainError, match="GPU"):
        check_packing_attention("flash_attention_2", cpu)

    class MaskingModel(torch.nn.Module):
        """A model that always passes a full attention mask: packed documents see each other."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, input_ids: Any, **kw: Any) -> Any:
            kw["attention_mask"] = torch.ones_like(input_ids)
            return self.inner(input_ids=input_ids, **kw)

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    assert verify_packing_isolation(model, cpu) < 1e-4
    with pytest.raises(TrainError, match="not isolated"):
        verify_packing_isolation(MaskingModel(model), cpu)


# ---------------------------------------------------------- folders, resume, repro


def test_run_folder_never_overwritten(tiny_llama_dir: Path, rows: list, tmp_path: Path) -> None:
    r = recipe(tiny_llama_dir, max_steps=0)
    train(r, rows, output_dir=tmp_path / "run")
    with pytest.raises(TrainError, match="already exists"):
        train(r, rows, output_dir=tmp_path / "run")
    with pytest.raises(TrainError, match="already finished"):
        train(r, rows, output_dir=tmp_path / "run", resume=True)
    r.output.overwrite = True
    train(r, rows, output_dir=tmp_path / "run")


KILL_SCRIPT = """
import os, signal, sys
import pyarrow.parquet as pq
from ladle.recipe.schema import Recipe
from ladle.train import train

recipe = Recipe.model_validate_json(open(sys.argv[1]).read())
rows = pq.read_table(sys.argv[2])

def hook(info):
    if info.step == 5:  # after the step-4 checkpoint, before the step-6 one
        os.kill(os.getpid(), signal.SIGKILL)

train(recipe, rows, output_dir=sys.argv[3], on_step=hook)
"""


def test_resume_after_kill_and_reproducible(
    tiny_llama_dir: Path, rows: list, tmp_path: Path
) -> None:
    r = recipe(tiny_llama_dir, max_steps=8, save_every=2, lr=5e-3, lora={"r": 4, "dropout": 0.1})
    a = train(r, rows, output_dir=tmp_path / "a")
    b = train(r, rows, output_dir=tmp_path / "b")
    assert a.losses == b.losses, "same recipe, data and seed must give the same loss curve"

    (tmp_path / "recipe.json").write_text(r.model_dump_json())
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    script = tmp_path / "killme.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / "recipe.json"),
            str(tmp_path / "rows.parquet"),
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpts = sorted(
        p.name for p in (tmp_path / "c" / "checkpoints").iterdir() if p.name.startswith("step")
    )
    assert ckpts == ["step-00000002", "step-00000004"]
    assert not (tmp_path / "c" / "adapter").exists()

    c = train(r, rows, output_dir=tmp_path / "c", resume=True)
    assert c.final_loss == pytest.approx(a.final_loss, abs=1e-4)
    assert c.losses == pytest.approx(a.losses[4:], abs=1e-4)
    steps = [
        json.loads(x)["step"] for x in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(1, 9))
    man = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert man["training"]["resumed_from_step"] == 4

    changed = recipe(
        tiny_llama_dir, max_steps=8, save_every=2, lr=1e-3, lora={"r": 4, "dropout": 0.1}
    )
    (tmp_path / "c" / "manifest.json").unlink()
    with pytest.raises(TrainError, match="changed"):
        train(changed, rows, output_dir=tmp_path / "c", resume=True)


def test_export_merged_equal_logits(tiny_llama_dir: Path, rows: list, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ladle.cli import main as cli

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(
        textwrap.dedent(f"""\
        name: cli
        model: {{base: {tiny_llama_dir}}}
        data:
          datasets: [{{path: x.jsonl}}]
          max_length: {MAX_LEN}
        train: {{max_steps: 3, lr: 0.01, report_to: [none], threads: 2}}
        """)
    )
    run = tmp_path / "run"
    assert (
        cli(
            [
                "train",
                str(recipe_file),
                "train.lora.r=4",
                "--data",
                str(tmp_path / "rows.parquet"),
                "--output",
                str(run),
            ]
        )
        == 0
    )
    assert (
        cli(
            [
                "train",
                str(recipe_file),
                "--data",
                str(tmp_path / "rows.parquet"),
                "--output",
                str(run),
            ]
        )
        == 2
    )  # exists: one-line error, exit 2
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["r"] == 4
    out = tmp_path / "merged"
    assert cli(["export", str(run), "--merge", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and "im_start" in tok.chat_template

    ids = torch.tensor([rows[0]["input_ids"]])
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    peft_model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir), run / "adapter"
    ).eval()
    with torch.no_grad():
        diff = (merged(input_ids=ids).logits - peft_model(input_ids=ids).logits).abs().max().item()
    assert diff < 1e-4


# ----------------------------------------------------------------------- processes


DDP_SCRIPT = """
import json, os, sys
import pyarrow.parquet as pq
from ladle.recipe.schema import Recipe
from ladle.train import train

recipe = Recipe.model_validate_json(open(sys.argv[1]).read())
seen = []
rows = pq.read_table(sys.argv[2])
# One eval row for two ranks: evaluation must not drop it or deadlock.
res = train(recipe, rows, rows.slice(0, 1), output_dir=sys.argv[3],
            on_step=lambda info: seen.append([info.step, info.loss, list(info.rows)]))
rank = int(os.environ["RANK"])
with open(os.path.join(sys.argv[4], f"rank-{rank}.json"), "w") as f:
    json.dump(seen, f)
"""


def test_two_processes_gloo(tiny_llama_dir: Path, rows: list, tmp_path: Path) -> None:
    r = recipe(tiny_llama_dir, max_steps=3, threads=1)
    (tmp_path / "recipe.json").write_text(r.model_dump_json())
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(tmp_path / "ddp.py"),
        str(tmp_path / "recipe.json"),
        str(tmp_path / "rows.parquet"),
        str(tmp_path / "run"),
        str(tmp_path),
    ]
    # Own process group: a hang must not leave orphaned workers behind.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-3000:]
    seen = [json.loads((tmp_path / f"rank-{k}.json").read_text()) for k in (0, 1)]
    assert [s[0] for s in seen[0]] == [1, 2, 3] == [s[0] for s in seen[1]]
    for s0, s1 in zip(*seen, strict=True):
        assert s0[1] == pytest.approx(s1[1])  # both ranks log the same global loss
        assert s0[2] and s1[2] and not set(s0[2]) & set(s1[2])  # disjoint data
    run = tmp_path / "run"
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert [p.name for p in run.iterdir() if p.name.startswith(("adapter", "model"))] == ["adapter"]
    training = json.loads((run / "manifest.json").read_text())["training"]
    assert training["world_size"] == 2 and training["eval"]["eval_loss"] > 0


# ------------------------------------------------------------------------------ plan


def test_plan_deals_disjoint_shards() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from ladle.train.rows import plan_steps

    @settings(max_examples=60, deadline=None)
    @given(
        lengths=st.lists(st.integers(1, 64), min_size=1, max_size=60),
        world=st.integers(1, 3),
        accum=st.integers(1, 3),
        budget=st.integers(64, 200),
        seed=st.integers(0, 5),
        stack=st.booleans(),
    )
    def check(
        lengths: list[int], world: int, accum: int, budget: int, seed: int, stack: bool
    ) -> None:
        arr = np.asarray(lengths)
        kw = dict(
            lengths=arr,
            units=arr,
            packed=True,
            micro_batch_tokens=budget,
            micro_batch_size=4,
            grad_accum=accum,
            world_size=world,
            epochs=1.0,
            max_steps=None,
            seed=seed,
            shuffle=True,
            stack_rows=stack,
        )
        try:
            plan = plan_steps(**kw)
        except TrainError:
            assert world > 1  # fewer micro-batches than processes
            return
        assert plan == plan_steps(**kw)  # deterministic
        seen = [r for s in plan for shard in s.shards for mb in shard for r in mb.rows]
        assert len(seen) == len(set(seen))  # no row twice in an epoch
        if world == 1:
            assert sorted(seen) == list(range(len(lengths)))
        for s in plan:
            assert len(s.shards) == world
            assert len({len(sh) for sh in s.shards}) == 1  # same backward count per rank
            assert all(len(sh) <= accum for sh in s.shards)
            assert all(mb.tokens <= budget for sh in s.shards for mb in sh)
            for sh in s.shards:
                if stack:  # the budget holds the padded batch: rows x the longest row
                    assert all(len(mb.rows) * arr[list(mb.rows)].max() <= budget for mb in sh)

    check()


def test_qlora_gradients_exact(tiny_llama_dir: Path) -> None:
    """LoRA gradients through the 4-bit base equal those through its dequantized weights,
    also after the packing probe ran (bitsandbytes repacks 4-bit weights for CPU inference
    on an eval forward, and that layout has no backward)."""
    import bitsandbytes as bnb

    from ladle.train import adapters
    from ladle.train import model as model_mod

    r = recipe(tiny_llama_dir, adapter="qlora", precision="fp32", lora={"r": 4, "alpha": 8})
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    core = adapters.attach(model_mod.load_base(r, tiny_llama_dir, cpu), r.train)
    for n, p in core.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.02)  # B = 0 would hide wrong input gradients
    model_mod.verify_packing_isolation(core, cpu)
    core.train()
    x = torch.tensor([make_docs(1, seed=5, lo=20, hi=21)[0][0]])

    def grads() -> dict[str, Any]:
        core.zero_grad()
        core(input_ids=x, labels=x, use_cache=False).loss.backward()
        return {n: p.grad.clone() for n, p in core.named_parameters() if p.grad is not None}

    got = grads()
    for name, mod in list(core.named_modules()):
        if isinstance(mod, bnb.nn.Linear4bit):
            w = bnb.functional.dequantize_4bit(mod.weight.data, mod.weight.quant_state).float()
            lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
            lin.weight = torch.nn.Parameter(w, requires_grad=False)
            parent, attr = name.rsplit(".", 1)
            setattr(core.get_submodule(parent), attr, lin)
    want = grads()
    assert set(got) == set(want) and len(got) == 28
    for n in want:
        assert torch.allclose(got[n], want[n], atol=1e-5, rtol=1e-4), n


def test_qlora_from_prequantized_checkpoint(
    tiny_llama_dir: Path,
    rows: list,
    held_docs: list,
    untrained_loss: float,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """model.quantize: nf4 trains from Ladle's cached NF4 folder (ladle.quant), not on the fly."""
    monkeypatch.setenv("LADLE_HOME", str(tmp_path / "home"))
    r = recipe(tiny_llama_dir, adapter="qlora", max_steps=8)
    r.model.quantize = "nf4"
    res = train(r, rows, pack(held_docs), output_dir=tmp_path / "run")
    assert res.eval["eval_loss"] < untrained_loss - LEARNED, (untrained_loss, res.eval)
    cached = list((tmp_path / "home" / "quantized").iterdir())
    assert len(cached) == 1 and (cached[0] / "config.json").is_file()
    assert (res.output / "adapter_model.safetensors").is_file()
    quant = res.manifest["model"]["quantization"]
    assert quant["method"] == "ladle pre-quantized"
    assert Path(quant["path"]) == cached[0]
    assert quant["provenance"] is not None


def test_progress_bar_shows_loss_and_throughput(capsys: pytest.CaptureFixture[str]) -> None:
    from ladle.train.loop import _progress

    with _progress(True, 4, 1) as bar:
        assert bar is not None
        bar(4, 1.2345, 6789.0)
    err = capsys.readouterr().err
    assert "loss 1.2345" in err and "6,789 tok/s" in err and "4/4" in err


def test_cli_trains_from_ladle_prep(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ladle train RECIPE` with no --data prepares the recipe's data (ladle.data.prep) and
    trains on its packed rows."""
    from ladle.cli import main as cli

    monkeypatch.setenv("LADLE_HOME", str(tmp_path / "home"))
    convs = [
        {
            "messages": [
                {"role": "user", "content": f"count from {i}"},
                {"role": "assistant", "content": " ".join(str(i + k) for k in range(12))},
            ]
        }
        for i in range(40)
    ]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(c) + "\n" for c in convs))
    (tmp_path / "r.yaml").write_text(
        textwrap.dedent(f"""\
        name: prepped
        model: {{base: {tiny_llama_dir}}}
        data:
          datasets: [{{path: train.jsonl}}]
          max_length: 128
          dedup: {{enabled: false}}
        train: {{max_steps: 2, lr: 0.01, report_to: [none], threads: 2}}
        evaluate: {{enabled: false}}
        """)
    )
    assert (
        cli(["train", str(tmp_path / "r.yaml"), "--output", str(tmp_path / "run"), "--no-progress"])
        == 0
    )
    man = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert man["training"]["steps"] == 2 and man["data"]["rows"] >= 1
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
