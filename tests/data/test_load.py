"""Loading: every file type and row format into the internal form, bad rows counted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ladle.data.load import load_dataset, resolve_files
from ladle.errors import DataError
from ladle.recipe.schema import DatasetSpec


def _jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def _load(path: Path | list[str], **kw: Any) -> Any:
    strict = kw.pop("strict", False)
    p = [str(x) for x in path] if isinstance(path, list) else str(path)
    return load_dataset(DatasetSpec(path=p, **kw), strict=strict)


CHAT = {
    "messages": [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a", "train": False},
        {"role": "user", "content": "u2"},
        {"role": "assistant", "content": "a2"},
    ]
}


def test_messages_keep_train_flag(tmp_path: Path) -> None:
    d = _load(_jsonl(tmp_path / "d.jsonl", [CHAT]))
    assert d.rows == [CHAT]
    assert d.rows_read == 1
    assert d.locations == [f"{tmp_path / 'd.jsonl'}:1"]


def test_tool_messages_and_content_parts(tmp_path: Path) -> None:
    row = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "weather "},
                    {"type": "text", "text": "in Paris?"},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"type": "function", "function": {"name": "w", "arguments": {}}}],
            },
            {"role": "tool", "content": "sunny"},
            {"role": "assistant", "content": "Sunny."},
        ],
        "tools": json.dumps([{"type": "function", "function": {"name": "w"}}]),
    }
    d = _load(_jsonl(tmp_path / "d.jsonl", [row]))
    (out,) = d.rows
    assert out["messages"][0]["content"] == "weather in Paris?"
    assert out["messages"][1]["content"] == "" and out["messages"][1]["tool_calls"]
    assert out["tools"][0]["function"]["name"] == "w"  # JSON text decoded


def test_sharegpt_roles_and_columns(tmp_path: Path) -> None:
    rows = [{"conv": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]}]
    d = _load(
        _jsonl(tmp_path / "s.jsonl", rows),
        format="sharegpt",
        columns={"conversations": "conv"},
        roles={"bot": "assistant"},
    )
    assert d.rows == [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    ]


def test_alpaca_prompt_completion_text(tmp_path: Path) -> None:
    a = _load(
        _jsonl(
            tmp_path / "a.jsonl",
            [
                {"instruction": "Translate", "input": "hi", "output": "salut", "system": "S"},
                {"instruction": "Say hi", "output": "hi"},
            ],
        ),
        format="alpaca",
    )
    assert [m["role"] for m in a.rows[0]["messages"]] == ["system", "user", "assistant"]
    assert a.rows[0]["messages"][1]["content"] == "Translate\n\nhi"
    assert a.rows[1]["messages"][0]["content"] == "Say hi"
    pc = _load(
        _jsonl(tmp_path / "p.jsonl", [{"question": "q", "completion": "c"}]),
        format="prompt_completion",
        columns={"prompt": "question"},
        system="Be nice.",
    )
    assert pc.rows[0]["messages"] == [
        {"role": "system", "content": "Be nice."},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "c"},
    ]
    t = _load(
        _jsonl(tmp_path / "t.jsonl", [{"body": "raw text"}]),
        format="text",
        columns={"text": "body"},
    )
    assert t.rows == [{"text": "raw text"}]


def test_preference_strings_lists_and_implicit_prompt(tmp_path: Path) -> None:
    user = {"role": "user", "content": "q"}
    rows = [
        {"prompt": "q", "chosen": "good", "rejected": "bad"},
        {"prompt": [user], "chosen": [{"role": "assistant", "content": "good"}], "rejected": "bad"},
        {
            "chosen": [user, {"role": "assistant", "content": "good"}],
            "rejected": [user, {"role": "assistant", "content": "bad"}],
        },
    ]
    d = _load(_jsonl(tmp_path / "p.jsonl", rows), format="preference")
    assert len(d.rows) == 3
    for r in d.rows:
        assert r["prompt"] == [user]
        assert r["chosen"] == [{"role": "assistant", "content": "good"}]
        assert r["rejected"] == [{"role": "assistant", "content": "bad"}]


def test_bad_rows_counted_with_line_numbers(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "bad.jsonl",
        [
            CHAT,
            "{not json",
            {"messages": [{"role": "robot", "content": "x"}]},
            {"messages": [{"role": "user", "content": ""}]},
            {"nothing": 1},
            CHAT,
            "[1, 2",
        ],
    )
    d = _load(path)
    assert len(d.rows) == 2
    assert d.rows_read == 7
    assert d.drops.counts == {
        "malformed_json": 2,
        "unknown_role": 1,
        "empty_content": 1,
        "missing_field": 1,
    }
    assert d.drops.first["malformed_json"][0].startswith(f"{path}:2:")
    assert d.drops.first["malformed_json"][1].startswith(f"{path}:7:")
    assert d.drops.first["unknown_role"][0].startswith(f"{path}:3: messages[0].role")
    assert d.drops.first["missing_field"][0].startswith(f"{path}:5: messages")


def test_strict_mode_names_file_line_and_field(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "bad.jsonl", [CHAT, {"messages": [{"role": "user"}]}])
    with pytest.raises(
        DataError, match=r"bad\.jsonl:2: field \"messages\[0\]\.content\": missing content"
    ):
        _load(path, strict=True)


def test_parquet_csv_json_and_shards(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        CHAT,
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    pq_rows = _load(tmp_path / "d.parquet").rows
    assert [m["content"] for m in pq_rows[0]["messages"]] == ["s", "u", "a", "u2", "a2"]
    assert pq_rows[0]["messages"][2]["train"] is False
    assert "train" not in pq_rows[1]["messages"][0]  # nulls from the struct are dropped

    (tmp_path / "d.csv").write_text('instruction,input,output\nq,,"a, with comma"\n"",x,y\n')
    csv = _load(tmp_path / "d.csv", format="alpaca")
    assert csv.rows[0]["messages"][1]["content"] == "a, with comma"
    assert csv.drops.first["empty_content"][0].startswith(f"{tmp_path / 'd.csv'}[row 2]")

    (tmp_path / "d.json").write_text(json.dumps([CHAT, CHAT]))
    assert len(_load(tmp_path / "d.json").rows) == 2

    for i in range(3):
        _jsonl(tmp_path / f"shard-{i}.jsonl", [CHAT] * 2)
    assert len(_load(tmp_path / "shard-*.jsonl").rows) == 6
    both = _load([str(tmp_path / "shard-0.jsonl"), str(tmp_path / "d.json")], limit=3)
    assert len(both.rows) == 3
    assert len(resolve_files(DatasetSpec(path=str(tmp_path / "shard-*.jsonl")))) == 3


def test_messages_as_json_text_in_csv(tmp_path: Path) -> None:
    import csv

    with open(tmp_path / "m.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["messages"])
        w.writerow([json.dumps(CHAT["messages"])])
    assert _load(tmp_path / "m.csv").rows == [CHAT]


def test_datasets_save_to_disk_folder(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([CHAT] * 3).save_to_disk(str(tmp_path / "ds"))
    d = _load(tmp_path / "ds")
    assert len(d.rows) == 3
    assert d.rows[0]["messages"][4]["content"] == "a2"


def test_missing_paths_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        _load(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="matches no files"):
        _load(tmp_path / "*.parquet")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported file type"):
        _load(tmp_path / "x.txt")


def test_jsonl_read_in_blocks_keeps_line_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ladle.data.io as io_mod

    monkeypatch.setattr(io_mod, "BLOCK_BYTES", 100)  # many blocks, lines cut mid-way
    rows: list[Any] = [CHAT] * 7
    rows[4] = "{bad"
    path = _jsonl(tmp_path / "d.jsonl", rows)
    path.write_text(path.read_text().rstrip("\n"))  # last line without newline
    d = _load(path)
    assert len(d.rows) == 6
    assert d.locations[-1] == f"{path}:7"
    assert d.drops.first["malformed_json"][0].startswith(f"{path}:5:")
