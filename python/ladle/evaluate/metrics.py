"""Quality metrics, scored per example and aggregated by resampling-friendly functions.

Every metric yields a :class:`Scores`: one float per example (NaN where the example has
nothing to score, e.g. a JSON field its reference lacks) and an ``aggregate`` that maps a
matrix of example indices ``[B, n]`` to ``B`` aggregate values. The paired bootstrap then
resamples both contestants with the same index matrix in one vectorised call, and a
metric that is not a mean of per-example values (macro-F1) still gets an honest interval.

Conventions, chosen so that format compliance counts (the point of fine-tuning a small
model on a structured task):

- JSON is parsed strictly from the whole stripped output: prose or code fences around the
  object make it invalid, and every JSON-based score of that example is 0.
- ``regex`` must match the whole stripped output (``re.fullmatch``, DOTALL); write
  ``.*PATTERN.*`` to accept surrounding text.
- ``macro_f1`` averages F1 over the classes present in the references; a predicted label
  outside them is simply wrong (no class of its own), so invented labels cost recall
  without inventing classes that dilute the mean.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import string
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ladle.errors import EvalError
from ladle.recipe.schema import MetricSpec

Better = Literal["higher", "lower", "none"]
Aggregate = Callable[[np.ndarray], np.ndarray]


@dataclass
class Scores:
    """Per-example values of one metric for one contestant, and how to aggregate them."""

    key: str
    values: np.ndarray
    binary: bool = False
    better: Better = "higher"
    aggregate: Aggregate | None = field(default=None, repr=False)

    def agg(self, idx: np.ndarray) -> np.ndarray:
        """Aggregate over each row of an index matrix ``[B, n]`` -> ``[B]``."""
        if self.aggregate is not None:
            return self.aggregate(idx)
        return nanmean_rows(self.values[idx])

    def value(self) -> float:
        """The aggregate over all examples."""
        return float(self.agg(np.arange(len(self.values))[None, :])[0])


def nanmean_rows(m: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows -> NaN, on purpose
        return np.nanmean(m, axis=-1)


# ----------------------------------------------------------------------- text helpers

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_text(s: str) -> str:
    """SQuAD-style normalisation: lowercase, drop punctuation and articles, squeeze spaces."""
    s = s.lower().translate(_PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def parse_json(s: str) -> tuple[bool, Any]:
    """Strictly parse the whole (stripped) text as JSON."""
    try:
        return True, json.loads(s.strip())
    except (ValueError, RecursionError):
        return False, None


def get_field(obj: Any, path: str) -> tuple[bool, Any]:
    """Look up a dotted field path (``a.b``) in a parsed JSON object."""
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence length, O(len(a) * len(b)) time, O(len(b)) memory."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 over lowercased whitespace tokens (as rouge-score without stemming)."""
    p, r = prediction.lower().split(), reference.lower().split()
    lcs = lcs_length(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


# ----------------------------------------------------------------------- JSON schema

_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
}


def schema_errors(instance: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Validate against the common JSON-Schema subset; returns the problems found.

    Covers type, enum, const, required, properties, additionalProperties, items,
    min/maxItems, min/maxLength, pattern, minimum/maximum. Other keywords are ignored
    (so a schema using them is checked less strictly, never wrongly rejected).
    """
    errs: list[str] = []
    t = schema.get("type")
    if t is not None:
        types = [t] if isinstance(t, str) else list(t)
        if not any(_TYPES.get(x, lambda _v: False)(instance) for x in types):
            return [f"{path}: expected {'/'.join(types)}"]
    if "enum" in schema and instance not in schema["enum"]:
        errs.append(f"{path}: {instance!r} not in enum")
    if "const" in schema and instance != schema["const"]:
        errs.append(f"{path}: expected {schema['const']!r}")
    if isinstance(instance, dict):
        props: dict[str, Any] = schema.get("properties", {})
        errs += [f"{path}: missing {k!r}" for k in schema.get("required", []) if k not in instance]
        extra = schema.get("additionalProperties", True)
        for k, v in instance.items():
            if k in props:
                errs += schema_errors(v, props[k], f"{path}.{k}")
            elif extra is False:
                errs.append(f"{path}: unexpected {k!r}")
            elif isinstance(extra, dict):
                errs += schema_errors(v, extra, f"{path}.{k}")
    if isinstance(instance, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, v in enumerate(instance):
                errs += schema_errors(v, items, f"{path}[{i}]")
        if len(instance) < schema.get("minItems", 0):
            errs.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(instance) > schema["maxItems"]:
            errs.append(f"{path}: more than {schema['maxItems']} items")
    if isinstance(instance, str):
        if len(instance) < schema.get("minLength", 0):
            errs.append(f"{path}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            errs.append(f"{path}: longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            errs.append(f"{path}: does not match {schema['pattern']!r}")
    if _TYPES["number"](instance):
        if "minimum" in schema and instance < schema["minimum"]:
            errs.append(f"{path}: below {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            errs.append(f"{path}: above {schema['maximum']}")
    return errs


# ----------------------------------------------------------------------- labels and F1


def extract_label(text: str, field_path: str | None) -> str | None:
    """The label of an output: a JSON field's value, or the normalised whole text."""
    if field_path is None:
        return text.strip().strip(".").strip().casefold()
    ok, obj = parse_json(text)
    if not ok:
        return None
    found, value = get_field(obj, field_path)
    if not found:
        return None
    return value.strip().casefold() if isinstance(value, str) else json.dumps(value)


def macro_f1_aggregate(pred: Sequence[str | None], ref: Sequence[str | None]) -> Aggregate:
    """Vectorised macro-F1 over index matrices (classes = labels present in the references)."""
    classes = sorted({r for r in ref if r is not None})
    code = {c: i for i, c in enumerate(classes)}
    k = len(classes)
    r = np.array([code.get(x, -1) if x is not None else -1 for x in ref])
    p = np.array([code.get(x, -2) if x is not None else -2 for x in pred])  # -2: never a ref

    def agg(idx: np.ndarray) -> np.ndarray:
        rr, pp = r[idx], p[idx]
        f1 = np.full((idx.shape[0], k), np.nan)
        for c in range(k):
            tp = ((pp == c) & (rr == c)).sum(axis=1)
            fp = ((pp == c) & (rr != c)).sum(axis=1)
            fn = ((pp != c) & (rr == c)).sum(axis=1)
            present = (tp + fn) > 0
            denom = np.maximum(2 * tp + fp + fn, 1)
            f1[:, c] = np.where(present, 2 * tp / denom, np.nan)
        return nanmean_rows(f1) if k else np.full(idx.shape[0], np.nan)

    return agg


# ----------------------------------------------------------------------- scoring


def _custom(spec: MetricSpec, allow_code: bool) -> Callable[[str, str], float]:
    if not allow_code:
        raise EvalError(f"metric {spec.key!r} imports user code: set evaluate.allow_code: true")
    assert spec.function is not None
    mod_name, _, fn_name = spec.function.partition(":")
    if not fn_name:
        raise EvalError(f"custom metric {spec.function!r}: expected module:function")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise EvalError(f"custom metric {spec.function!r} cannot be imported: {e}") from e
    if not callable(fn):
        raise EvalError(f"custom metric {spec.function!r} is not callable")
    return fn


def _json_fields(spec: MetricSpec, refs: Sequence[str]) -> list[str]:
    if spec.fields:
        return list(spec.fields)
    keys: dict[str, None] = {}
    for r in refs:
        ok, obj = parse_json(r)
        if ok and isinstance(obj, dict):
            keys.update(dict.fromkeys(obj))
    return list(keys)


def _field_scores(pred: str, ref: str, fields: list[str]) -> list[float]:
    ok_r, ref_obj = parse_json(ref)
    ok_p, pred_obj = parse_json(pred)
    out = []
    for f in fields:
        has_ref, ref_v = get_field(ref_obj, f) if ok_r else (False, None)
        if not has_ref:
            out.append(math.nan)  # nothing to score against
            continue
        has_pred, pred_v = get_field(pred_obj, f) if ok_p else (False, None)
        out.append(float(has_pred and pred_v == ref_v))
    return out


def score_metric(
    spec: MetricSpec,
    preds: Sequence[str],
    refs: Sequence[str],
    *,
    allow_code: bool = False,
    fields: list[str] | None = None,
) -> list[Scores]:
    """Score one metric for one contestant. ``json_field_accuracy`` returns the mean and
    one :class:`Scores` per field (``KEY.FIELD``); every other metric returns one."""
    key, name = spec.key, spec.name

    def arr(xs: Sequence[float] | Sequence[bool]) -> np.ndarray:
        return np.asarray(xs, dtype=np.float64)

    if name == "exact_match":
        return [
            Scores(
                key, arr([p.strip() == r.strip() for p, r in zip(preds, refs, strict=True)]), True
            )
        ]
    if name == "normalized_match":
        v = [normalize_text(p) == normalize_text(r) for p, r in zip(preds, refs, strict=True)]
        return [Scores(key, arr(v), True)]
    if name == "contains":
        v = [normalize_text(r) in normalize_text(p) for p, r in zip(preds, refs, strict=True)]
        return [Scores(key, arr(v), True)]
    if name == "regex":
        rx = re.compile(spec.pattern or "", re.DOTALL)
        return [Scores(key, arr([rx.fullmatch(p.strip()) is not None for p in preds]), True)]
    if name == "json_valid":
        return [Scores(key, arr([parse_json(p)[0] for p in preds]), True)]
    if name == "json_schema":
        schema = spec.schema_ or {}

        def valid(p: str) -> bool:
            ok, obj = parse_json(p)
            return ok and not schema_errors(obj, schema)

        return [Scores(key, arr([valid(p) for p in preds]), True)]
    if name == "json_field_accuracy":
        fields = fields if fields is not None else _json_fields(spec, refs)
        m = np.array(
            [_field_scores(p, r, fields) for p, r in zip(preds, refs, strict=True)],
            dtype=np.float64,
        )
        m = m.reshape(len(preds), len(fields))
        out = [Scores(key, nanmean_rows(m) if fields else np.full(len(preds), np.nan))]
        out += [Scores(f"{key}.{f}", m[:, i], True) for i, f in enumerate(fields)]
        return out
    if name in ("label_accuracy", "macro_f1"):
        pl = [extract_label(p, spec.field) for p in preds]
        rl = [extract_label(r, spec.field) for r in refs]
        correct = arr([p is not None and p == r for p, r in zip(pl, rl, strict=True)])
        if name == "label_accuracy":
            return [Scores(key, correct, True)]
        return [Scores(key, correct, False, aggregate=macro_f1_aggregate(pl, rl))]
    if name == "rouge_l":
        return [Scores(key, arr([rouge_l(p, r) for p, r in zip(preds, refs, strict=True)]))]
    if name == "length":
        return [Scores(key, arr([len(p.split()) for p in preds]), better="none")]
    if name == "custom":
        fn = _custom(spec, allow_code)
        try:
            custom_v = [float(fn(p, r)) for p, r in zip(preds, refs, strict=True)]
        except Exception as e:  # user code: any failure is the user's to see, in one line
            raise EvalError(
                f"custom metric {spec.function!r} failed: {type(e).__name__}: {e}"
            ) from e
        return [Scores(key, arr(custom_v))]
    raise EvalError(f"unknown metric {name!r}")


def score_samples(
    specs: Sequence[MetricSpec],
    samples: Sequence[Sequence[str]],
    refs: Sequence[str],
    *,
    allow_code: bool = False,
) -> dict[str, Scores]:
    """Score every metric over ``samples[i]`` (one or more outputs per example).

    With several samples a per-example value is the mean over samples (the expected score
    under sampling), so binary metrics stop being binary and McNemar no longer applies;
    macro-F1 uses the first sample, since a class count over a mixture means nothing.
    """
    n_samples = min((len(s) for s in samples), default=1)
    out: dict[str, Scores] = {}
    for spec in specs:
        if spec.name == "judge":
            continue  # needs a model to answer: scored by the runner (evaluate.judge)
        field_list = _json_fields(spec, refs) if spec.name == "json_field_accuracy" else None
        per_sample = [
            score_metric(
                spec, [s[j] for s in samples], refs, allow_code=allow_code, fields=field_list
            )
            for j in range(max(n_samples, 1))
        ]
        for i, first in enumerate(per_sample[0]):
            if first.key in out:
                raise EvalError(f"two metrics report as {first.key!r}: give one a `label`")
            if n_samples > 1 and first.aggregate is None:
                values = nanmean_rows(np.stack([ps[i].values for ps in per_sample], axis=1))
                out[first.key] = Scores(first.key, values, False, first.better)
            else:
                out[first.key] = first
    return out


def consistency(samples: Sequence[Sequence[str]]) -> np.ndarray:
    """Per example: the share of samples equal (after normalisation) to the most common one."""
    out = []
    for s in samples:
        norm = [normalize_text(x) for x in s]
        out.append(max(norm.count(x) for x in set(norm)) / len(norm) if norm else math.nan)
    return np.asarray(out, dtype=np.float64)
