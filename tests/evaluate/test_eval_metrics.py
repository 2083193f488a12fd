"""Each evaluation metric on hand-made cases (values worked out by hand in the comments)."""

from __future__ import annotations

import json
import math
import sys
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ladle.errors import EvalError
from ladle.evaluate.metrics import (
    consistency,
    extract_label,
    lcs_length,
    macro_f1_aggregate,
    normalize_text,
    rouge_l,
    schema_errors,
    score_metric,
    score_samples,
)
from ladle.recipe.schema import MetricSpec


def one(spec: dict | str, preds: list[str], refs: list[str], **kw) -> list[float]:
    scores = score_metric(MetricSpec.model_validate(spec), preds, refs, **kw)
    return scores[0].values.tolist()


def test_exact_match_strips_only_outer_whitespace():
    assert one("exact_match", [" Paris\n", "paris", "Paris."], ["Paris"] * 3) == [1.0, 0.0, 0.0]


def test_normalized_match_ignores_case_punctuation_articles():
    assert normalize_text("The  Eiffel-Tower!") == "eiffeltower"
    preds = ["the Paris.", "PARIS", "Lyon"]
    assert one("normalized_match", preds, ["Paris"] * 3) == [1.0, 1.0, 0.0]


def test_contains():
    preds = ["The answer is Paris, France.", "It is Lyon", ""]
    assert one("contains", preds, ["paris"] * 3) == [1.0, 0.0, 0.0]


def test_regex_must_match_the_whole_output():
    spec = {"name": "regex", "pattern": r"\d{3}-\d{4}"}
    preds = ["555-1234", "call 555-1234", " 555-1234 \n"]
    assert one(spec, preds, [""] * 3) == [1.0, 0.0, 1.0]
    loose = {"name": "regex", "pattern": r".*\d{3}-\d{4}.*"}
    assert one(loose, preds, [""] * 3) == [1.0, 1.0, 1.0]


def test_json_valid_is_strict_about_surrounding_text():
    preds = ['{"a": 1}', " [1, 2] ", 'Sure! {"a": 1}', '```json\n{"a": 1}\n```', "{'a': 1}"]
    assert one("json_valid", preds, [""] * 5) == [1.0, 1.0, 0.0, 0.0, 0.0]


SCHEMA = {
    "type": "object",
    "required": ["label", "score"],
    "properties": {
        "label": {"type": "string", "enum": ["pos", "neg"]},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
    },
    "additionalProperties": False,
}


def test_schema_validator_subset():
    assert schema_errors({"label": "pos", "score": 0.5}, SCHEMA) == []
    assert schema_errors({"label": "pos", "score": 1, "tags": ["a"]}, SCHEMA) == []
    assert schema_errors({"label": "meh", "score": 0.5}, SCHEMA)  # enum
    assert schema_errors({"label": "pos"}, SCHEMA)  # required
    assert schema_errors({"label": "pos", "score": 2}, SCHEMA)  # maximum
    assert schema_errors({"label": "pos", "score": True}, SCHEMA)  # bool is not a number
    assert schema_errors({"label": "pos", "score": 0.5, "x": 1}, SCHEMA)  # additional
    assert schema_errors({"label": "pos", "score": 0.5, "tags": [1]}, SCHEMA)  # items
    assert schema_errors({"label": "pos", "score": 0.5, "tags": ["a", "b", "c"]}, SCHEMA)
    assert schema_errors([1], SCHEMA) == ["$: expected object"]
    assert schema_errors(3.0, {"type": "integer"}) == []
    assert schema_errors(3.5, {"type": ["integer", "null"]})


def test_json_schema_metric():
    spec = {"name": "json_schema", "schema": SCHEMA}
    preds = ['{"label": "pos", "score": 0.9}', '{"label": "pos"}', "not json"]
    assert one(spec, preds, [""] * 3) == [1.0, 0.0, 0.0]


def test_json_field_accuracy_per_field_and_mean():
    ref = json.dumps({"category": "billing", "priority": "high", "product": "router"})
    preds = [
        ref,  # 3/3
        json.dumps({"category": "billing", "priority": "low"}),  # 1/3 (product missing)
        "category: billing",  # invalid JSON scores 0
        json.dumps(["billing"]),  # not an object: 0
    ]
    spec = MetricSpec.model_validate({"name": "json_field_accuracy"})
    scores = {s.key: s for s in score_metric(spec, preds, [ref] * 4)}
    assert scores["json_field_accuracy"].values.tolist() == pytest.approx([1, 1 / 3, 0, 0])
    assert scores["json_field_accuracy.category"].values.tolist() == [1, 1, 0, 0]
    assert scores["json_field_accuracy.priority"].values.tolist() == [1, 0, 0, 0]
    assert scores["json_field_accuracy"].value() == pytest.approx((1 + 1 / 3) / 4)


def test_json_field_accuracy_named_fields_skip_fields_the_reference_lacks():
    spec = MetricSpec.model_validate({"name": "json_field_accuracy", "fields": ["a", "b.c"]})
    refs = [json.dumps({"a": 1, "b": {"c": [1, 2]}}), json.dumps({"a": 2})]
    preds = [json.dumps({"a": 1, "b": {"c": [1, 2]}}), json.dumps({"a": 3, "b": {"c": 1}})]
    scores = {s.key: s for s in score_metric(spec, preds, refs)}
    assert scores["json_field_accuracy"].values.tolist() == [1.0, 0.0]
    b = scores["json_field_accuracy.b.c"].values
    assert b[0] == 1.0 and math.isnan(b[1])  # row 2's reference has no b.c: not scored
    assert scores["json_field_accuracy.b.c"].value() == 1.0


def test_label_accuracy_from_field_and_from_text():
    spec = {"name": "label_accuracy", "field": "sentiment"}
    refs = ['{"sentiment": "positive"}'] * 3
    preds = ['{"sentiment": "Positive"}', '{"sentiment": "negative"}', "positive"]
    assert one(spec, preds, refs) == [1.0, 0.0, 0.0]
    assert one("label_accuracy", ["Positive.", " neg"], ["positive", "positive"]) == [1.0, 0.0]
    assert extract_label('{"x": 3}', "x") == "3"


def test_macro_f1_by_hand():
    # refs a a b b c; preds a b b b x.
    # a: tp1 fp0 fn1 -> F1 2/3; b: tp2 fp1 fn0 -> 4/5; c: tp0 fp0 fn1 -> 0 ("x" is no class)
    refs, preds = list("aabbc"), ["a", "b", "b", "b", "x"]
    (s,) = score_metric(MetricSpec(name="macro_f1"), preds, refs)
    assert s.value() == pytest.approx((2 / 3 + 4 / 5 + 0) / 3)
    assert s.values.tolist() == [1, 0, 1, 1, 0]  # per example: label correct


def _macro_f1_loop(pred: list[str], ref: list[str]) -> float:
    f1s = []
    for c in sorted(set(ref)):
        tp = sum(p == c and r == c for p, r in zip(pred, ref, strict=True))
        fp = sum(p == c and r != c for p, r in zip(pred, ref, strict=True))
        fn = sum(p != c and r == c for p, r in zip(pred, ref, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / len(f1s)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from("abcx")), min_size=1, max_size=30)
)
def test_macro_f1_vectorised_equals_loop_on_resamples(pairs):
    pred, ref = [p for p, _ in pairs], [r for _, r in pairs]
    agg = macro_f1_aggregate(pred, ref)
    idx = np.random.default_rng(0).integers(0, len(pairs), size=(5, len(pairs)))
    got = agg(idx)
    for row, value in zip(idx, got, strict=True):
        assert value == pytest.approx(_macro_f1_loop([pred[i] for i in row], [ref[i] for i in row]))


def test_rouge_l_by_hand():
    # LCS("the cat sat on the mat", "the cat lay on the mat") = 5 of 6 and 6: F = 5/6
    assert rouge_l("the cat sat on the mat", "The cat lay on the mat") == pytest.approx(5 / 6)
    # LCS = 2 ("a c"); P = 2/2, R = 2/4 -> F = 2/3
    assert rouge_l("a c", "a b c d") == pytest.approx(2 / 3)
    assert rouge_l("", "a") == 0.0
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4  # textbook CLRS example


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=12),
    st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=12),
)
def test_rouge_l_bounds_and_symmetry(x, y):
    a, b = " ".join(x), " ".join(y)
    assert 0.0 <= rouge_l(a, b) <= 1.0
    assert rouge_l(a, b) == pytest.approx(rouge_l(b, a))
    assert rouge_l(a, a) == 1.0


def test_length_counts_words():
    assert one("length", ["one two  three", ""], ["", ""]) == [3.0, 0.0]


def test_custom_metric_needs_allow_code(monkeypatch):
    mod = types.ModuleType("ladle_test_custom_metric")
    mod.starts = lambda p, r: float(p.startswith(r))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    spec = {"name": "custom", "function": "ladle_test_custom_metric:starts", "label": "starts"}
    with pytest.raises(EvalError, match="allow_code"):
        one(spec, ["ab"], ["a"])
    assert one(spec, ["ab", "b"], ["a", "a"], allow_code=True) == [1.0, 0.0]
    with pytest.raises(EvalError, match="cannot be imported"):
        one({"name": "custom", "function": "ladle_no_such_mod:f"}, ["a"], ["a"], allow_code=True)


def test_several_samples_average_and_consistency():
    specs = [MetricSpec(name="exact_match")]
    samples = [["a", "a", "b", "a"], ["x", "y", "z", "x"]]
    scores = score_samples(specs, samples, ["a", "x"])
    assert scores["exact_match"].values.tolist() == [0.75, 0.5]
    assert not scores["exact_match"].binary  # a mean over samples is not a coin
    assert consistency(samples).tolist() == [0.75, 0.5]


def test_duplicate_metric_keys_are_refused():
    specs = [MetricSpec(name="exact_match"), MetricSpec(name="exact_match")]
    with pytest.raises(EvalError, match="label"):
        score_samples(specs, [["a"]], ["a"])
