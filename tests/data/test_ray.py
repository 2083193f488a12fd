"""The Ray data engine on a real two-node Ray cluster (both nodes on this machine) gives
the local engine's output byte for byte: prep shards and manifest, dedup decisions and
reports, bad-row counts, also when a worker is killed mid-prep."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from ladle.data import prep  # noqa: E402
from ladle.recipe import load_recipe  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster() -> Any:
    """A head and a second node, one CPU each."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    c.add_node(num_cpus=1)
    ray.init(address=c.address, logging_level="ERROR", log_to_driver=False)
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smollm2_dir: Path) -> Path:
    monkeypatch.setenv("LADLE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many read blocks and tokenize batches from a small corpus."""
    from ladle.data import ray_engine, ray_read

    monkeypatch.setattr(ray_read, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(ray_engine, "TOKENIZE_ROWS", 64)


def conv(i: int, user: str | None = None, reply: str | None = None) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": user or f"Ticket {i}: my order {i * 7} arrived late."},
            {"role": "assistant", "content": reply or f"Sorry about order {i * 7}; refund {i}."},
        ]
    }


def corpus(tmp: Path) -> dict[str, str]:
    """Duplicates, near duplicates, eval leaks, bad rows, over-long rows, raw text."""
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "rain",
        "falls",
        "on",
        "the",
        "town",
    ]
    rows: list[Any] = []
    for i in range(240):
        long_user = " ".join(f"{words[(i * k) % len(words)]}{i}x{k}" for k in range(40))
        row = conv(i, user=long_user if i % 3 == 0 else None)
        rows.append(row)
        if i % 17 == 0:
            rows.append(row)  # exact copy
        if i % 12 == 0:
            rows.append(conv(i, user=f"{long_user} please"))  # near copy
        if i % 31 == 0:
            rows.append("{not json")
        if i % 37 == 0:
            rows.append({"messages": [{"role": "wizard", "content": "x"}]})
        if i % 41 == 0:
            rows.append(conv(i, reply=" ".join(words * 40)))  # over max_length
    rows.append(conv(999, user="leaked eval question about order 5"))
    train = tmp / "train.jsonl"
    train.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    extra = tmp / "extra.jsonl"
    extra.write_text("".join(json.dumps(conv(1000 + i)) + "\n" for i in range(30)))
    text = tmp / "text.jsonl"
    text.write_text(
        "".join(json.dumps({"text": " ".join(words * (5 + 3 * i))}) + "\n" for i in range(20))
    )
    evals = tmp / "eval.jsonl"
    no_reply = {"messages": [{"role": "user", "content": "a question with no reference"}]}
    evals.write_text(
        json.dumps(conv(999, user="leaked eval question about order 5"))
        + "\n"
        + json.dumps(no_reply)
        + "\n"
    )
    return {"train": str(train), "extra": str(extra), "text": str(text), "eval": str(evals)}


def recipe_file(tmp: Path, model: Path, datasets: list[dict[str, Any]], **data: Any) -> Path:
    body = {
        "name": "t",
        "model": {"base": str(model)},
        "data": {"datasets": datasets, "max_length": 512, **data},
    }
    path = tmp / "recipe.yaml"
    path.write_text(json.dumps(body))
    return path


def snapshot(res: Any) -> tuple[dict[str, bytes], dict[str, Any]]:
    files = {p.name: p.read_bytes() for p in sorted(res.path.glob("*.parquet"))}
    manifest = res.manifest.model_dump(mode="json")
    manifest.pop("created")
    # wall-clock seconds differ run to run and engine to engine; both engines record them
    stages = manifest.pop("stages")
    assert stages["total"] > 0 and "tokenizer" in stages
    return files, manifest


def both_engines(recipe_path: Path, *overrides: str) -> tuple[Any, Any]:
    local = prep(load_recipe(recipe_path, list(overrides)), force=True)
    lsnap = snapshot(local)
    ray_res = prep(load_recipe(recipe_path, [*overrides, "data.engine=ray"]), force=True)
    assert ray_res.path == local.path  # the engine is not part of the fingerprint
    return lsnap, snapshot(ray_res)


def test_prep_on_cluster_is_byte_identical(
    cluster: Any, home: Path, tmp_path: Path, smollm2_dir: Path, small_blocks: None
) -> None:
    c = corpus(tmp_path)
    recipe = recipe_file(
        tmp_path,
        smollm2_dir,
        [
            {"path": c["train"]},
            {"path": c["extra"], "weight": 2.5},
            {"path": c["eval"], "split": "eval"},
        ],
        dedup={"enabled": True, "threshold": 0.7},
    )
    (lfiles, lman), (rfiles, rman) = both_engines(recipe)
    assert rman == lman
    assert rfiles == lfiles and any(n.startswith("train-") for n in lfiles)
    # the corpus exercises every path it is meant to
    drops = lman["drops"]
    assert drops["duplicate"]["count"] == 15 + 20 and drops["contaminated"]["count"] == 1
    assert drops["malformed_json"]["count"] == 8 and drops["unknown_role"]["count"] == 7
    assert drops["overlong"]["count"] == 6
    assert drops["eval_no_reference"]["first"] == [
        f"{c['eval']}:2: no assistant reply to use as the reference"
    ]
    assert lman["eval"]["rows"] == 1 and lman["datasets"][2]["rows_out"] == 1
    assert lman["datasets"][1]["rows_out"] == 75  # weight 2.5 of 30 rows


def test_eval_fraction_and_no_dedup_on_cluster(
    cluster: Any, home: Path, tmp_path: Path, smollm2_dir: Path, small_blocks: None
) -> None:
    c = corpus(tmp_path)
    recipe = recipe_file(
        tmp_path,
        smollm2_dir,
        [{"path": c["train"]}, {"path": c["text"], "format": "text", "weight": 1.5}],
        eval_fraction=0.1,
        dedup={"enabled": False},
        packing="ffd",
        shuffle=False,
    )
    (lfiles, lman), (rfiles, rman) = both_engines(recipe)
    assert rman == lman and rfiles == lfiles
    assert lman["eval"]["rows"] > 20 and lman["train"]["overlong"]["split"] > 0


def dedup_corpus(seed: int = 3) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows with exact copies (case and punctuation changed), near copies, one large
    near-duplicate family (a bucket past the all-pairs limit), empty texts, eval leaks."""
    import random

    rng = random.Random(seed)
    vocab = [f"w{k}" for k in range(3000)]

    def text(n: int = 60) -> list[str]:
        return [rng.choice(vocab) for _ in range(n)]

    def row(user: str, reply: str) -> dict[str, Any]:
        return {
            "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        }

    rows: list[dict[str, Any]] = []
    family = text()
    for i in range(400):
        a, b = text(), text(30)
        rows.append(row(" ".join(a), " ".join(b)))
        if i % 13 == 0:
            rows.append(row(" ".join(a).upper() + "!", " ".join(b)))
        if i % 11 == 0:
            a2 = list(a)
            a2[rng.randrange(60)] = "changed"
            rows.append(row(" ".join(a2), " ".join(b)))
        if i % 40 == 0:
            f = list(family)
            f[rng.randrange(60)] = f"edit{i}"
            rows.append(row(" ".join(f), "same family"))
        if i % 97 == 0:
            rows.append(row("", ""))
    evals = [rows[5], row(rows[50]["messages"][0]["content"] + " extra", "other answer")]
    return rows, evals


@pytest.mark.parametrize(
    "config",
    [
        {"threshold": 0.8},
        {"threshold": 0.7, "keep": "longest", "fields": "user", "scheme": "datasketch"},
        {"near": False},
    ],
    ids=["default", "longest-user-datasketch", "exact-only"],
)
def test_dedup_on_cluster_keeps_the_same_rows_and_clusters(
    cluster: Any, config: dict[str, Any]
) -> None:
    from ladle.data.ray_dedup import dedup_rows_ray
    from ladle.dedup import dedup_rows

    rows, evals = dedup_corpus()
    locs = [f"train.jsonl:{i + 1}" for i in range(len(rows))]
    elocs = [f"eval.jsonl:{i + 1}" for i in range(len(evals))]
    args = dict(locations=locs, against_locations=elocs, sample=10**6)
    local = dedup_rows(rows, config, evals, **args)
    res = dedup_rows_ray(rows, config, evals, block_rows=150, **args)
    assert type(res) is type(local)
    assert res.keep.tolist() == local.keep.tolist()
    # every removed row with the row it was clustered with, and the counters
    assert res.cluster.tolist() == local.cluster.tolist()
    assert res.pairs == local.pairs and res.contaminated == local.contaminated
    assert res.removed() == local.removed() and res.stats == local.stats
    assert res.report == local.report
    local_rep = local.report
    assert local_rep["rows_out"] <= len(rows) - 30 and local_rep["decontaminated"] >= 1
    if config.get("near", True):
        assert local_rep["near_removed"] >= 35


def test_cli_dedup_engine_ray_writes_the_same_file(cluster: Any, tmp_path: Path) -> None:
    from ladle.cli import main

    rows, evals = dedup_corpus(seed=5)
    src, ev = tmp_path / "in.jsonl", tmp_path / "ev.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    ev.write_text("".join(json.dumps(r) + "\n" for r in evals))
    outs = {}
    for engine in ("local", "ray"):
        out, rep = tmp_path / f"{engine}.jsonl", tmp_path / f"{engine}.json"
        code = main(
            [
                "dedup",
                str(src),
                "--against",
                str(ev),
                "--out",
                str(out),
                "--report",
                str(rep),
                "--engine",
                engine,
                "--quiet",
            ]
        )
        assert code == 0
        report = json.loads(rep.read_text())
        # the skipped rows go next to each output file; the rest must be equal
        assert report.pop("rejects_file") == f"{out}.rejects.jsonl"
        outs[engine] = (out.read_bytes(), report)
    assert outs["ray"] == outs["local"]
    skipped = outs["local"][1]["skipped_rows"]
    assert skipped[-1] == {
        "location": f"{src}:{len(rows) + 1}",
        "reason": "malformed_json",
        "error": "invalid JSON: key must be a string at line 1 column 2",
    }


def test_killed_worker_mid_prep_still_gives_identical_output(
    cluster: Any,
    home: Path,
    tmp_path: Path,
    smollm2_dir: Path,
    small_blocks: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGKILL a tokenize actor while it works: Ray restarts it and retries its batch."""
    import psutil

    from ladle.data import ray_engine

    c = corpus(tmp_path)
    recipe = recipe_file(tmp_path, smollm2_dir, [{"path": c["train"]}], dedup={"enabled": False})
    local = snapshot(prep(load_recipe(recipe), force=True))
    # fault injection: slow batches keep the actors busy long enough to be killed
    monkeypatch.setenv(ray_engine.SLOW_BATCH_ENV, "0.3")
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["res"] = prep(load_recipe(recipe, ["data.engine=ray"]), force=True)
        except BaseException as e:  # re-raised below
            box["err"] = e

    t = threading.Thread(target=work)
    t.start()
    killed = None
    deadline = time.time() + 120
    while t.is_alive() and killed is None and time.time() < deadline:
        for p in psutil.process_iter(["pid", "cmdline"]):
            if "Tokenize" in " ".join(p.info["cmdline"] or []):
                time.sleep(0.5)  # let it start a batch
                os.kill(p.info["pid"], signal.SIGKILL)
                killed = p.info["pid"]
                break
        time.sleep(0.05)
    t.join(timeout=300)
    assert killed is not None, "no tokenize actor was seen running"
    if "err" in box:
        raise box["err"]
    assert snapshot(box["res"]) == local


def test_cli_prep_on_a_cluster_address_prints_resources(
    cluster: Any, home: Path, tmp_path: Path, smollm2_dir: Path
) -> None:
    import subprocess
    import sys

    c = corpus(tmp_path)
    recipe = recipe_file(tmp_path, smollm2_dir, [{"path": c["extra"]}], dedup={"enabled": False})
    cmd = [sys.executable, "-m", "ladle.cli", "prep", str(recipe), "--quiet"]
    out = subprocess.run(
        [*cmd, "--address", cluster.address], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ray cluster: 2 nodes, 2 CPUs" in out.stderr
    local = prep(load_recipe(recipe))
    assert local.cache_hit  # the Ray run wrote exactly what the local engine looks up
    bad = subprocess.run(
        [*cmd, "--engine", "local", "--address", "auto"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "--address needs --engine ray" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_strict_bad_row_on_cluster_is_the_local_one_line_error(
    cluster: Any, home: Path, tmp_path: Path, smollm2_dir: Path, small_blocks: None
) -> None:
    """A worker's DataError reaches the caller as itself (file:line), not a Ray error."""
    from ladle.errors import DataError

    c = corpus(tmp_path)
    recipe = recipe_file(tmp_path, smollm2_dir, [{"path": c["train"]}], strict=True)
    messages = []
    for engine in ("local", "ray"):
        with pytest.raises(DataError) as err:
            prep(load_recipe(recipe, [f"data.engine={engine}"]), force=True)
        messages.append(str(err.value))
    assert messages[1] == messages[0]
    assert f"{c['train']}:4" in messages[0] and "\n" not in messages[0]


def test_split_pieces_without_trained_tokens_count_the_same_on_cluster(
    cluster: Any, home: Path, tmp_path: Path, smollm2_dir: Path, small_blocks: None
) -> None:
    """A long prompt split into pieces drops every piece before the reply: one event of
    a row, counted once per piece, by both engines."""
    c = corpus(tmp_path)
    recipe = recipe_file(
        tmp_path,
        smollm2_dir,
        [{"path": c["train"]}],
        max_length=64,
        overlong="split",
        dedup={"enabled": False},
    )
    (lfiles, lman), (rfiles, rman) = both_engines(recipe)
    assert rman == lman and rfiles == lfiles
    pieces = lman["drops"]["split_piece_no_trained_tokens"]
    # more pieces than rows that had any: some rows lost several
    assert pieces["count"] > lman["train"]["overlong"]["split"] > 0


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"threshold": 0.6, "verify": False},
        {"threshold": 0.9, "lsh_weights": [0.3, 0.7]},
        {"bands": [32, 4]},
        {"threshold": 1.0},
        {"near": False},
    ],
)
def test_ray_bands_are_the_rust_pipelines(config: dict[str, Any]) -> None:
    """The cluster's buckets use the (bands, rows) the Rust pipeline chose, explicit
    ``bands`` included."""
    from ladle.data.ray_dedup import _bands
    from ladle.dedup import dedup_rows, dedup_spec

    rows, _ = dedup_corpus()
    res = dedup_rows(rows[:50], config)
    assert _bands(dedup_spec(config)) == (res.stats.bands, res.stats.rows_per_band)


def test_dataset_without_usable_rows_is_the_local_error_on_cluster(
    cluster: Any, home: Path, tmp_path: Path, smollm2_dir: Path
) -> None:
    from ladle.errors import DataError

    c = corpus(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n" * 3)
    recipe = recipe_file(tmp_path, smollm2_dir, [{"path": c["extra"]}, {"path": str(bad)}])
    messages = []
    for engine in ("local", "ray"):
        with pytest.raises(DataError) as err:
            prep(load_recipe(recipe, [f"data.engine={engine}"]), force=True)
        messages.append(str(err.value))
    assert messages[1] == messages[0]
    assert messages[0].startswith(f"dataset {bad}: no usable rows (3 read; drops: malformed_json")
