"""The row loader under bad and odd input: every file ends in rows plus counted skips
or one DataError naming the file, never a traceback, a panic, a hang or a changed value."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ladle.data.load import load_dataset, read_file
from ladle.errors import DataError, LadleError
from ladle.recipe.schema import DatasetSpec

CHAT = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


def _load(path: Path, **kw: Any) -> Any:
    return load_dataset(DatasetSpec(path=str(path), **kw))


def test_bom_keeps_row_one(tmp_path: Path) -> None:
    body = "\n".join(json.dumps(CHAT) for _ in range(3)) + "\n"
    (tmp_path / "d.jsonl").write_bytes(b"\xef\xbb\xbf" + body.encode())
    d = _load(tmp_path / "d.jsonl")
    assert len(d.rows) == 3 and d.drops.total() == 0
    assert d.locations[0] == f"{tmp_path / 'd.jsonl'}:1"
    (tmp_path / "a.json").write_bytes(b"\xef\xbb\xbf" + json.dumps([CHAT, CHAT]).encode())
    assert len(_load(tmp_path / "a.json").rows) == 2


def test_json_array_items_are_located_as_items(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps([CHAT, {"messages": []}, CHAT]))
    d = _load(path)
    assert d.locations == [f"{path}[item 1]", f"{path}[item 3]"]
    assert d.drops.first["empty_content"][0].startswith(f"{path}[item 2]: ")
    with pytest.raises(DataError, match=r"a\.json\[item 2\]:"):
        load_dataset(DatasetSpec(path=str(path)), strict=True)


def test_csv_values_stay_verbatim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ladle.data.io as io_mod

    path = tmp_path / "d.csv"
    path.write_text("prompt,completion\nq,00123\nq,1.10\nq,1e5\nq,NA\n")
    d = _load(path, format="prompt_completion")
    assert [r["messages"][1]["content"] for r in d.rows] == ["00123", "1.10", "1e5", "NA"]
    # Numbers in the first blocks, text later: a reader that infers types from the first
    # block refuses the file (or rewrites the numbers).
    monkeypatch.setattr(io_mod, "CSV_BLOCK_BYTES", 64)
    lines = ["prompt,completion"] + [f"q{i},{i:05d}" for i in range(40)] + ["q,plain text"]
    path.write_text("\n".join(lines) + "\n")
    replies = [r["messages"][1]["content"] for r in _load(path, format="prompt_completion").rows]
    assert replies[:2] == ["00000", "00001"] and replies[-1] == "plain text"
    assert len(replies) == 41


def test_json_list_replies_are_content(tmp_path: Path) -> None:
    rows = [
        {"prompt": "labels?", "completion": '["a", "b"]'},
        {"prompt": "ids?", "completion": "[1, 2, 3]"},
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = _load(path, format="prompt_completion")
    assert [r["messages"][1]["content"] for r in d.rows] == ['["a", "b"]', "[1, 2, 3]"]
    pref = tmp_path / "p.jsonl"
    pref.write_text(json.dumps({"prompt": "p", "chosen": "[1]", "rejected": "[2]"}) + "\n")
    (row,) = _load(pref, format="preference").rows
    assert row["chosen"] == [{"role": "assistant", "content": "[1]"}]


def _dataset_dict(root: Path, splits: list[str]) -> Path:
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({s: datasets.Dataset.from_list([CHAT] * 2) for s in splits})
    dd.save_to_disk(str(root))
    return root


def test_dataset_dict_without_eval_split_is_refused(tmp_path: Path) -> None:
    root = _dataset_dict(tmp_path / "dd", ["train"])
    assert len(_load(root).rows) == 2
    with pytest.raises(DataError, match=r"splits \['train'\], none of them eval"):
        _load(root, split="eval")
    root2 = _dataset_dict(tmp_path / "dd2", ["train", "validation"])
    assert len(_load(root2, split="eval").rows) == 2


def test_bad_dataset_dict_and_state_json(tmp_path: Path) -> None:
    root = _dataset_dict(tmp_path / "dd", ["train"])
    (root / "dataset_dict.json").write_text("{not json")
    with pytest.raises(DataError, match=r"dataset_dict\.json: cannot read"):
        _load(root)
    (root / "dataset_dict.json").write_text('{"splits": "train"}')
    with pytest.raises(DataError, match="`splits` must be a list"):
        _load(root)
    (root / "dataset_dict.json").write_text('{"splits": ["../../etc"]}')
    with pytest.raises(DataError, match="none of them train"):
        _load(root)
    (root / "dataset_dict.json").write_text('{"splits": ["train"]}')
    state = root / "train" / "state.json"
    state.write_text('{"_data_files": [{"name": 1}]}')
    with pytest.raises(DataError, match="`_data_files` must list"):
        _load(root)
    state.write_text('{"_data_files": [{"filename": "../../x.arrow"}]}')
    with pytest.raises(DataError, match="is not in"):
        _load(root)
    state.write_text("[" * 100_000)
    with pytest.raises(DataError, match=r"state\.json: cannot read"):
        _load(root)


def test_parquet_binary_column(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "text": pa.array([b"hello", b"world"], pa.binary()),
            "blob": pa.array([b"\xff\xfe", b"\x00"], pa.binary()),
        }
    )
    pq.write_table(table, tmp_path / "b.parquet")
    d = _load(tmp_path / "b.parquet", format="text")
    assert [r["text"] for r in d.rows] == ["hello", "world"]


def test_read_file_keeps_records_and_rejects(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    deep = '{"text": ' + "[" * 50_000 + "]" * 50_000 + "}"
    path.write_text(
        "\n".join([json.dumps({"text": "a", "id": 7}), "{bad", "", deep, '{"text": ""}']) + "\n"
    )
    out = read_file(path, "auto", keep_records=True)
    assert out.records == [{"text": "a", "id": 7}]
    assert [(r.location, r.reason) for r in out.rejected] == [
        (f"{path}:2", "malformed_json"),
        (f"{path}:4", "malformed_json"),
        (f"{path}:5", "empty_content"),
    ]
    assert out.rejected[0].raw == "{bad"


# ------------------------------------------------------------------------ fuzzing

SUFFIX = st.sampled_from([".jsonl", ".json", ".csv", ".tsv", ".parquet"])
FORMAT = st.sampled_from(
    ["messages", "sharegpt", "alpaca", "prompt_completion", "text", "preference"]
)
KEYS = st.sampled_from(
    ["messages", "role", "content", "text", "prompt", "chosen", "rejected", "completion"]
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.sampled_from(["user"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_csv_header_not_utf8_is_a_data_error(tmp_path: Path, suffix: str) -> None:
    # Found by the fuzz test below: pyarrow decodes CSV column names itself and raised a
    # bare UnicodeDecodeError.
    path = tmp_path / f"f{suffix}"
    path.write_bytes(b"\x80\r")
    with pytest.raises(DataError, match="not UTF-8"):
        _load(path, format="messages")


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(suffix=SUFFIX, fmt=FORMAT, payload=st.binary(max_size=300), rows=st.lists(JSON, max_size=5))
def test_fuzz_loader_ends_in_rows_or_a_ladle_error(
    tmp_path: Path, suffix: str, fmt: str, payload: bytes, rows: list[Any]
) -> None:
    """Random bytes, random JSON and Parquet-ish bytes: rows plus counted skips, or a
    LadleError; never another exception, a panic or a hang (each case is time-bounded)."""
    path = tmp_path / f"f{suffix}"
    for data in (payload, "\n".join(json.dumps(r) for r in rows).encode(), b"PAR1" + payload):
        path.write_bytes(data)
        t0 = time.monotonic()
        try:
            d = _load(path, format=fmt)
            assert d.rows_read == len(d.rows) + d.drops.total()
        except LadleError:
            pass
        assert time.monotonic() - t0 < 5
