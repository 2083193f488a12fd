"""Dedup: datasketch bit-for-bit signatures, LSH parameters, clusters, keep policies,
decontamination, row identity, bad input and the CLI end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ladle import _core
from ladle.cli import main as cli_main
from ladle.dedup import (
    core_options,
    dedup_rows,
    dedup_spec,
    deduplicate,
    example_text,
    minhash,
)
from ladle.errors import ArgumentError, DataError
from ladle.recipe.schema import DedupSpec, NormalizeSpec

datasketch = pytest.importorskip("datasketch")
from datasketch.lsh import _optimal_param  # noqa: E402

DS_SCHEMES = {"datasketch": None, "datasketch-legacy": "legacy"}


def ds_signature(text: str, num_perm: int, ngram: int, scheme: str, normalize: bool) -> np.ndarray:
    """The reference: datasketch over the shingles the issue defines."""
    if normalize:
        text = _core.dedup_normalize([text])[0]
    words = text.split()
    if not words:
        shingles: list[str] = []
    elif len(words) < ngram:
        shingles = [" ".join(words)]
    else:
        shingles = [" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1)]
    kwargs = {"scheme": DS_SCHEMES[scheme]} if DS_SCHEMES[scheme] else {}
    m = datasketch.MinHash(num_perm=num_perm, seed=1, **kwargs)
    m.update_batch([s.encode("utf-8") for s in shingles])
    return m.hashvalues


# ---------------------------------------------------------------- datasketch compatibility


@pytest.mark.parametrize("scheme", sorted(DS_SCHEMES))
@pytest.mark.parametrize(("num_perm", "seed"), [(16, 1), (128, 1), (200, 7)])
def test_permutations_equal_datasketch(scheme: str, num_perm: int, seed: int) -> None:
    kwargs = {"scheme": DS_SCHEMES[scheme]} if DS_SCHEMES[scheme] else {}
    ref = datasketch.MinHash(num_perm=num_perm, seed=seed, **kwargs).permutations
    a, b = _core.dedup_permutations(num_perm, seed, scheme)
    assert np.array_equal(ref[0], np.array(a, dtype=np.uint64))
    assert np.array_equal(ref[1], np.array(b, dtype=np.uint64))


VARIED = [
    "",
    "   ",
    "one",
    "two words",
    "The quick brown fox jumps over the lazy dog, again and again!",
    "Ünïcödé tëxt wïth àccents — and “quotes” … plus ﬁligatures ＦＵＬＬＷＩＤＴＨ",
    "日本語のテキスト と 中文 文本 混合 한국어 텍스트 도 있다",
    "emoji 🎉 party 🚀 rocket 👩‍👩‍👧 family \u200b zero width",
    "tabs\tand\nnewlines\r\nand\x0bvertical\x1cseparators\x1fhere",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
]


@pytest.mark.parametrize("scheme", sorted(DS_SCHEMES))
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("ngram", [1, 3, 5])
def test_signatures_equal_datasketch_varied(scheme: str, normalize: bool, ngram: int) -> None:
    sig = minhash(VARIED, num_perm=64, ngram=ngram, scheme=scheme, normalize=normalize)  # type: ignore[arg-type]
    assert sig.shape == (len(VARIED), 64)
    for text, row in zip(VARIED, sig, strict=True):
        ref = ds_signature(text, 64, ngram, scheme, normalize)
        assert row.dtype == ref.dtype
        assert np.array_equal(row, ref), text


def test_empty_text_is_empty_minhash() -> None:
    for scheme, ds in DS_SCHEMES.items():
        sig = minhash(["", " \n "], num_perm=32, scheme=scheme)  # type: ignore[arg-type]
        kwargs = {"scheme": ds} if ds else {}
        empty = datasketch.MinHash(num_perm=32, **kwargs).hashvalues
        assert np.array_equal(sig[0], empty) and np.array_equal(sig[1], empty)


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(
        alphabet=st.one_of(
            st.sampled_from(list("abcde ABC,.!?-'\t\n\x1c\x85\u00a0\u3000\u2028")),
            st.characters(codec="utf-8"),
        ),
        max_size=80,
    ),
    ngram=st.integers(1, 6),
    scheme=st.sampled_from(sorted(DS_SCHEMES)),
    normalize=st.booleans(),
)
def test_signatures_equal_datasketch_property(
    text: str, ngram: int, scheme: str, normalize: bool
) -> None:
    sig = minhash([text], num_perm=16, ngram=ngram, scheme=scheme, normalize=normalize)  # type: ignore[arg-type]
    assert np.array_equal(sig[0], ds_signature(text, 16, ngram, scheme, normalize))


@settings(max_examples=40, deadline=None)
@given(
    text=st.text(alphabet=st.characters(codec="utf-8"), max_size=60),
    scheme=st.sampled_from(["fast", *sorted(DS_SCHEMES)]),
)
def test_normalised_text_hashes_like_its_source(text: str, scheme: str) -> None:
    # The single-space fast split used after normalisation agrees with the general one.
    norm = _core.dedup_normalize([text])[0]
    a = minhash([text], num_perm=16, ngram=3, scheme=scheme)  # type: ignore[arg-type]
    b = minhash([norm], num_perm=16, ngram=3, scheme=scheme, normalize=False)  # type: ignore[arg-type]
    assert np.array_equal(a, b)


@pytest.mark.parametrize("num_perm", [16, 64, 128, 256])
@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9, 0.95])
def test_bands_rows_equal_datasketch(num_perm: int, threshold: float) -> None:
    assert _core.dedup_optimal_params(threshold, num_perm) == _optimal_param(
        threshold, num_perm, 0.5, 0.5
    )


def test_bands_rows_with_weights() -> None:
    for w in [(0.2, 0.8), (0.8, 0.2)]:
        assert _core.dedup_optimal_params(0.8, 128, *w) == _optimal_param(0.8, 128, *w)


def test_default_lsh_params() -> None:
    # Without verification: datasketch's own choice. With it (the default), the same
    # optimiser weighing misses 9:1, since a false positive only costs a Jaccard check.
    unverified = deduplicate(["a b c d e"], threshold=0.8, verify=False)
    assert (
        (unverified.stats.bands, unverified.stats.rows_per_band)
        == (9, 13)
        == _optimal_param(0.8, 128, 0.5, 0.5)
    )
    verified = deduplicate(["a b c d e"], threshold=0.8)
    assert (
        (verified.stats.bands, verified.stats.rows_per_band)
        == _optimal_param(0.8, 128, 0.1, 0.9)
        == (14, 9)
    )
    chosen = deduplicate(["a b c d e"], threshold=0.9, lsh_weights=(0.5, 0.5))
    assert (chosen.stats.bands, chosen.stats.rows_per_band) == (5, 25)


# ---------------------------------------------------------------- normalisation, fast scheme


def test_normalisation() -> None:
    got = _core.dedup_normalize(["  Hello,\tWORLD!!  ＡＢＣ ﬁne  ", "v2.10 page 33"])
    assert got == ["hello world abc fine", "v2 10 page 33"]
    assert _core.dedup_normalize(["v2.10 page 33"], digits_to_zero=True) == ["v0 0 page 0"]
    assert _core.dedup_normalize(["A,  B"], strip_punctuation=False, lowercase=False) == ["A, B"]


def test_fast_scheme_estimates_jaccard() -> None:
    rng = random.Random(0)
    words = [f"w{rng.randrange(5000)}" for _ in range(300)]
    other = list(words)
    for i in range(0, 300, 30):
        other[i] = "changed"
    sig = minhash([" ".join(words), " ".join(other), " ".join(words)], num_perm=256, scheme="fast")
    assert sig.dtype == np.uint32
    assert np.array_equal(sig[0], sig[2])
    est = float(np.mean(sig[0] == sig[1]))
    a = {" ".join(words[i : i + 5]) for i in range(296)}
    b = {" ".join(other[i : i + 5]) for i in range(296)}
    true = len(a & b) / len(a | b)
    assert abs(est - true) < 0.1


# ---------------------------------------------------------------- dedup behaviour


def doc(seed: int, n: int = 60) -> list[str]:
    rng = random.Random(seed)
    return [f"tok{rng.randrange(100_000)}" for _ in range(n)]


def test_exact_and_near_found_first_kept() -> None:
    a, b = doc(1), doc(2)
    near = list(a)
    near[30] = "edited"
    texts = [
        " ".join(a),
        " ".join(b),
        " ".join(a).upper().replace(" ", "   "),  # case/whitespace copy
        " ".join(near),  # one word changed
        " ".join(doc(3)),
    ]
    res = deduplicate(texts)
    assert res.keep.tolist() == [True, True, False, False, True]
    assert res.cluster.tolist() == [0, 1, 0, 0, 4]
    assert (
        res.stats.exact_removed == 1
        and res.stats.near_removed == 1
        and res.stats.near_clusters == 1
    )
    pairs = {p.removed: p for p in res.pairs}
    assert pairs[2].kept == 0 and pairs[2].similarity == 1.0
    assert pairs[3].kept == 0 and 0.8 <= pairs[3].similarity < 1.0
    assert res.stats.rows_in == 5 and res.stats.rows_out == 3


def test_keep_longest() -> None:
    a = doc(5)
    longer = [*a, "extra"]
    texts = [" ".join(a), " ".join(doc(6)), " ".join(longer)]
    first = deduplicate(texts, keep="first")
    assert first.keep.tolist() == [True, True, False]
    longest = deduplicate(texts, keep="longest")
    assert longest.keep.tolist() == [False, True, True]
    assert longest.cluster.tolist() == [2, 1, 2]
    assert longest.pairs[0].removed == 0 and longest.pairs[0].kept == 2


def test_union_find_clusters_are_transitive() -> None:
    # A~B and B~C above the threshold, A~C below it: one cluster, by transitivity.
    a = doc(7, 100)
    b = list(a)
    b[20] = "x1"
    c = list(b)
    c[60] = "x2"
    texts = [" ".join(a), " ".join(doc(8)), " ".join(b), " ".join(c)]
    sets = [{" ".join(t.split()[i : i + 5]) for i in range(96)} for t in texts]

    def jac(i: int, j: int) -> float:
        return len(sets[i] & sets[j]) / len(sets[i] | sets[j])

    threshold = 0.85
    assert jac(0, 2) >= threshold and jac(2, 3) >= threshold and jac(0, 3) < threshold
    # One row per band: every pair sharing any min-hash is a candidate, so the
    # outcome rests on verification alone and is deterministic.
    res = deduplicate(texts, threshold=threshold, bands=(128, 1))
    assert res.cluster.tolist() == [0, 1, 0, 0]
    assert res.keep.tolist() == [True, True, False, False]
    assert {p.removed: round(p.similarity, 6) for p in res.pairs} == {
        2: round(jac(0, 2), 6),
        3: round(jac(0, 3), 6),
    }


def test_verify_drops_false_candidates() -> None:
    a = doc(9, 40)
    half = a[:20] + doc(10, 20)
    texts = [" ".join(a), " ".join(half)]
    verified = deduplicate(texts, bands=(128, 1))
    assert (
        verified.keep.all()
        and verified.stats.candidate_pairs == 1
        and verified.stats.verified_pairs == 0
    )
    trusting = deduplicate(texts, bands=(128, 1), verify=False)
    assert trusting.keep.tolist() == [True, False]


def test_empty_rows_are_never_duplicates() -> None:
    res = deduplicate(["", "  ", "...", "real text here"])
    assert res.keep.all() and res.stats.empty_rows == 3


def test_exact_only_and_no_normalize() -> None:
    texts = ["Same text", "same text", "Same text"]
    assert deduplicate(texts, near=False).keep.tolist() == [True, False, False]
    raw = deduplicate(texts, near=False, normalize=False)
    assert raw.keep.tolist() == [True, True, False]
    digits = deduplicate(
        ["page 3 of 9", "page 4 of 9"], near=False, normalize=NormalizeSpec(digits_to_zero=True)
    )
    assert digits.keep.tolist() == [True, False]


def test_datasketch_scheme_pipeline_agrees() -> None:
    a = doc(11)
    near = list(a)
    near[10] = "edited"
    texts = [" ".join(a), " ".join(doc(12)), " ".join(near)]
    for scheme in ("datasketch", "datasketch-legacy", "fast"):
        res = deduplicate(texts, scheme=scheme, bands=(128, 1))  # type: ignore[arg-type]
        assert res.keep.tolist() == [True, True, False], scheme


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(range(6)), min_size=1, max_size=8), st.randoms())
def test_clusters_do_not_depend_on_row_order(picks: list[int], rnd: random.Random) -> None:
    base = [" ".join(doc(100 + k, 40)) for k in range(3)]
    variants = [base[0], base[0].upper(), base[1], base[1] + " tail", base[2], base[2] + " x y"]
    texts = [variants[p] for p in picks]
    order = list(range(len(texts)))
    rnd.shuffle(order)

    def partition(ts: list[str], ids: list[int]) -> set[frozenset[int]]:
        res = deduplicate(ts, bands=(128, 1))
        groups: dict[int, set[int]] = {}
        for pos, c in enumerate(res.cluster.tolist()):
            groups.setdefault(c, set()).add(ids[pos])
        return {frozenset(g) for g in groups.values()}

    assert partition(texts, list(range(len(texts)))) == partition([texts[i] for i in order], order)


# ---------------------------------------------------------------- decontamination


def test_decontamination_removes_leaked_eval_prompts() -> None:
    eval_prompts = [" ".join(doc(20 + k, 150)) for k in range(3)]
    leaked_edit = eval_prompts[1].split()
    leaked_edit[5] = "typo"
    train = [
        " ".join(doc(30)),
        eval_prompts[0].upper(),  # exact leak after normalisation
        " ".join(doc(31)),
        " ".join(leaked_edit),  # near leak
        " ".join(doc(32)),
    ]
    res = deduplicate(train, against=eval_prompts)
    assert res.keep.tolist() == [True, False, True, False, True]
    assert res.stats.decontaminated == 2
    got = {(p.removed, p.kept) for p in res.contaminated}
    assert got == {(1, 0), (3, 1)}
    assert res.cluster[1] == -1 and res.cluster[3] == -1
    assert next(p for p in res.contaminated if p.removed == 1).similarity == 1.0


def conv(user: str, answer: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ]
    }


def pref(prompt: str, chosen: str = "c", rejected: str = "r") -> dict:
    """A preference row in the loader's normalised form."""
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def test_dedup_rows_fields_and_decontaminate() -> None:
    q1, q2, q3 = (" ".join(doc(40 + k, 20)) for k in range(3))
    rows = [conv(q1, "answer one"), conv(q1, "a different answer"), conv(q2, "x"), conv(q3, "y")]
    res = dedup_rows(rows, {"fields": "conversation"})
    assert res.keep.all() and res.report["rows_out"] == 4
    res = dedup_rows(rows, {"fields": "user"})
    assert res.keep.tolist() == [True, False, True, True]
    assert res.removed() == {1: "duplicate"}
    assert res.report["exact_removed"] == 1
    assert res.report["removed_pairs_sample"][0]["similarity"] == 1.0
    res = dedup_rows(rows, DedupSpec(), against_rows=[pref(q3)])
    assert res.keep.tolist() == [True, True, True, False] and res.report["decontaminated"] == 1
    assert res.removed() == {3: "contaminated"}
    assert res.report["contaminated_pairs"][0]["eval_text"] == q3
    res = dedup_rows(rows, {"decontaminate": False}, against_rows=[pref(q3)])
    assert res.keep.all()
    res = dedup_rows(rows, {"enabled": False})
    assert res.keep.all() and res.report["enabled"] is False


def test_dedup_rows_accepts_recipe_spec() -> None:
    spec = DedupSpec(fields="user", normalize={"digits_to_zero": True})
    rows = [conv("question 1 here", "a"), conv("question 2 here", "b")]
    res = dedup_rows(rows, spec)
    assert res.keep.tolist() == [True, False]
    assert res.report["config"]["normalize"]["digits_to_zero"] is True


def test_one_config_builds_the_core_options() -> None:
    """DedupSpec's fields are the core's option names; nothing else defines them."""
    opts = core_options(DedupSpec(normalize=False, bands=(16, 8)))
    assert opts["normalize"] is False and opts["bands"] == (16, 8)
    # The core refuses an option name it does not know, so running with every key the
    # spec builds proves they are the core's names.
    for spec in (DedupSpec(), DedupSpec(normalize=NormalizeSpec(nfkc=False))):
        assert _core.dedup_run(["a b c", "a b c"], core_options(spec)).stats.rows_out == 1
    with pytest.raises(ArgumentError):
        _core.dedup_run(["a b c"], {**core_options(DedupSpec()), "thresold": 0.8})
    assert set(opts) == {
        "threshold",
        "num_perm",
        "ngram",
        "scheme",
        "seed",
        "normalize",
        "exact",
        "near",
        "verify",
        "keep",
        "bands",
        "lsh_weights",
    }
    full = core_options(DedupSpec(normalize=NormalizeSpec(nfkc=False)))
    assert full["nfkc"] is False and set(NormalizeSpec.model_fields) <= set(full)
    # One threshold range, in the schema: 1.0 (identical shingle sets) is allowed.
    assert deduplicate(["a b", "a b"], threshold=1.0).keep.tolist() == [True, False]
    with pytest.raises(DataError, match="dedup option threshold"):
        dedup_spec(threshold=0)


# ---------------------------------------------------------------- identity text and errors


def test_example_text_fields() -> None:
    row = conv("the question", "the answer")
    assert example_text(row) == "You are helpful.\nthe question\nthe answer"
    assert example_text(row, "user") == "the question"
    assert example_text(row, "prompt") == "the question"
    assert example_text(row, "assistant") == "the answer"
    p = pref("p?", "good", "bad")
    assert example_text(p) == "p?\ngood\nbad"
    assert example_text(p, "prompt") == "p?"
    assert example_text(p, "assistant") == "good\nbad"
    # A KTO row (one labelled completion) is a preference row with one reply.
    k = {
        "prompt": [{"role": "user", "content": "p?"}],
        "completion": [{"role": "assistant", "content": "good"}],
        "label": False,
    }
    assert example_text(k) == "p?\ngood"
    assert example_text(k, "prompt") == "p?"
    # Raw text is all content: its identity is the text, whatever `fields` asks for.
    assert example_text({"text": "plain"}) == example_text({"text": "plain"}, "prompt") == "plain"


def test_identity_comes_from_the_loaders_normalised_rows(tmp_path: Path) -> None:
    """Every input format reaches dedup as the loader normalised it, so the same
    conversation in ShareGPT, Alpaca or OpenAI content parts has one identity."""
    from ladle.data.load import read_file

    lines = [
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "q"}]},
                {"role": "assistant", "content": "a"},
            ]
        },
        {"instruction": "q", "output": "a"},
        {"prompt": "q", "completion": "a"},
    ]
    write_jsonl(tmp_path / "mix.jsonl", lines)
    rows = read_file(tmp_path / "mix.jsonl", "auto").rows
    assert {example_text(r) for r in rows} == {"q\na"}
    assert {example_text(r, "user") for r in rows} == {"q"}


def test_bad_input_errors() -> None:
    with pytest.raises(DataError, match=r"texts\[1\] must be text"):
        deduplicate(["a", 3])  # type: ignore[list-item]
    with pytest.raises(DataError, match="threshold"):
        deduplicate(["a"], threshold=1.5)
    with pytest.raises(ValueError, match="scheme"):
        minhash(["a"], scheme="md5")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="treshold"):
        dedup_spec({"treshold": 0.9})
    with pytest.raises(ValueError, match="bands"):
        deduplicate(["a"], bands=(100, 2))


def test_progress_path() -> None:
    texts = [" ".join(doc(k, 30)) for k in range(50)] * 2
    res = deduplicate(texts, progress=True)
    assert res.stats.rows_out == 50 and res.stats.exact_removed == 50


# ---------------------------------------------------------------- CLI


def write_jsonl(path: Path, rows: list, extra_lines: list[str] = ()) -> None:  # type: ignore[assignment]
    with path.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        for line in extra_lines:
            f.write(line + "\n")


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    qs = [" ".join(doc(60 + k, 80)) for k in range(6)]
    rows = [conv(q, f"answer {i}") for i, q in enumerate(qs)]
    rows.append(conv(qs[2], "answer 2"))  # exact copy
    near = qs[4].split()
    near[3] = "zzz"
    rows.append(conv(" ".join(near), "answer 4"))  # near copy
    write_jsonl(tmp_path / "a.jsonl", rows[:4], ["{not json", "[1, 2]"])
    write_jsonl(tmp_path / "b.jsonl", rows[4:])
    write_jsonl(tmp_path / "eval.jsonl", [{"prompt": qs[5], "chosen": "c", "rejected": "r"}])
    code = cli_main(
        [
            "dedup",
            str(tmp_path / "a.jsonl"),
            str(tmp_path / "b.jsonl"),
            "--out",
            str(tmp_path / "out.jsonl"),
            "--against",
            str(tmp_path / "eval.jsonl"),
            "--report",
            str(tmp_path / "report.json"),
            "--quiet",
        ]
    )
    assert code == 0
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert out == [rows[0], rows[1], rows[2], rows[3], rows[4]]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["rows_in"] == 8 and report["rows_out"] == 5
    assert report["exact_removed"] == 1 and report["near_removed"] == 1
    assert report["decontaminated"] == 1
    assert report["contaminated_pairs"][0]["removed"].endswith("b.jsonl:2")
    skipped = [(m["location"].rsplit("/", 1)[-1], m["reason"]) for m in report["skipped_rows"]]
    assert skipped == [("a.jsonl:5", "malformed_json"), ("a.jsonl:6", "wrong_type")]
    rejects = [
        json.loads(x) for x in (tmp_path / "out.jsonl.rejects.jsonl").read_text().splitlines()
    ]
    assert [r["raw"] for r in rejects] == ["{not json", "[1, 2]"]
    sims = {
        p["removed"].rsplit("/", 1)[-1]: p["similarity"] for p in report["removed_pairs_sample"]
    }
    assert sims["b.jsonl:3"] == 1.0 and 0.5 < sims["b.jsonl:4"] < 1.0

    # Parquet in, Parquet out.
    code = cli_main(
        [
            "dedup",
            str(tmp_path / "out.jsonl"),
            "--out",
            str(tmp_path / "o.parquet"),
            "--fields",
            "user",
            "--quiet",
        ]
    )
    assert code == 0
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "o.parquet").num_rows == 5


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    assert (
        cli_main(["dedup", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "o.jsonl")]) == 2
    )
    assert "empty.jsonl: no usable rows" in capsys.readouterr().err
    write_jsonl(
        tmp_path / "bad.jsonl", [{"text": "fine"}, {"messages": [{"role": "user", "content": 5}]}]
    )
    args = ["dedup", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o.jsonl"), "--quiet"]
    assert cli_main([*args, "--strict"]) == 2
    err = capsys.readouterr().err
    assert 'bad.jsonl:2: field "messages[0].content": content must be a string' in err
    assert not (tmp_path / "o.jsonl").exists()
    assert cli_main(args) == 0  # without --strict: a counted skip, kept in the rejects file
    (reject,) = (tmp_path / "o.jsonl.rejects.jsonl").read_text().splitlines()
    assert json.loads(reject)["reason"] == "wrong_type"
    assert (
        cli_main(["dedup", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o2.jsonl")])
        == 2
    )
    assert "no such file" in capsys.readouterr().err
    assert cli_main([*args[:3], str(tmp_path / "o3.jsonl"), "--ngram", "0"]) == 2
    assert "dedup option ngram" in capsys.readouterr().err


def test_cli_refuses_to_overwrite_inputs_and_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.jsonl"
    write_jsonl(src, [conv("q one two three", "a"), conv("q one two three", "a")], ["{bad"])
    before = src.read_bytes()
    assert cli_main(["dedup", str(src), "--out", str(src), "--overwrite", "--quiet"]) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    assert src.read_bytes() == before
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    assert cli_main(["dedup", str(src), "--out", str(out), "--quiet"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_text() == "precious\n"
    assert cli_main(["dedup", str(src), "--out", str(out), "--overwrite", "--quiet"]) == 0
    assert len(out.read_text().splitlines()) == 1


def test_cli_csv_out_with_chat_rows_round_trips(tmp_path: Path) -> None:
    from ladle.data.load import read_file

    rows = [conv(" ".join(doc(70 + k, 30)), f"reply {k}") for k in range(3)]
    rows[1]["messages"][2]["train"] = False
    write_jsonl(tmp_path / "in.jsonl", rows)
    for suffix in (".csv", ".tsv", ".json", ".parquet"):
        out = tmp_path / f"out{suffix}"
        assert cli_main(["dedup", str(tmp_path / "in.jsonl"), "--out", str(out), "--quiet"]) == 0
        assert read_file(out, "messages").rows == read_file(tmp_path / "in.jsonl", "messages").rows


def test_cli_keeps_csv_values_and_skips_deep_lines(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text(
        "prompt,completion,id\nhello there,00123,007\nbye now,1.10,1e5\n"
    )
    out = tmp_path / "out.csv"
    assert cli_main(["dedup", str(tmp_path / "in.csv"), "--out", str(out), "--quiet"]) == 0
    assert out.read_text() == (tmp_path / "in.csv").read_text()
    deep = '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}"
    (tmp_path / "deep.jsonl").write_text(json.dumps({"text": "fine"}) + "\n" + deep + "\n")
    assert (
        cli_main(
            ["dedup", str(tmp_path / "deep.jsonl"), "--out", str(tmp_path / "d.jsonl"), "--quiet"]
        )
        == 0
    )
    (reject,) = (tmp_path / "d.jsonl.rejects.jsonl").read_text().splitlines()
    assert json.loads(reject)["reason"] == "malformed_json"


def test_cli_takes_its_options_from_the_spec() -> None:
    import argparse

    from ladle.commands import dedup as cmd

    parser = argparse.ArgumentParser()
    cmd.register(parser.add_subparsers())
    args = parser.parse_args(["dedup", "x.jsonl", "--out", "y.jsonl"])
    assert cmd.spec_from_args(args) == DedupSpec()
    args = parser.parse_args(
        [
            "dedup",
            "x.jsonl",
            "--out",
            "y.jsonl",
            "--scheme",
            "datasketch-legacy",
            "--no-verify",
            "--digits-to-zero",
            "--no-nfkc",
            "--seed",
            "3",
        ]
    )
    spec = cmd.spec_from_args(args)
    assert (spec.scheme, spec.verify, spec.seed) == ("datasketch-legacy", False, 3)
    assert isinstance(spec.normalize, NormalizeSpec)
    assert spec.normalize.digits_to_zero and not spec.normalize.nfkc
    args = parser.parse_args(["dedup", "x.jsonl", "--out", "y.jsonl", "--no-normalize"])
    assert cmd.spec_from_args(args).normalize is False
