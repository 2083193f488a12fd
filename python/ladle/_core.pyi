"""Type stubs for the Rust extension ``ladle._core``. Each area keeps its own block."""

from typing import Any

import numpy as np

__version__: str

class LadleCoreError(Exception): ...
class DataError(LadleCoreError): ...
class TemplateError(LadleCoreError): ...
class TokenizerError(LadleCoreError): ...
class QuantError(LadleCoreError): ...

# ---- hashing

def fingerprint_files(paths: list[str]) -> str: ...
def fingerprint_bytes(data: bytes) -> str: ...

# ---- dedup

class DedupProgress:
    """Live counters of a running ``dedup_run`` (poll from another thread)."""

    def __init__(self) -> None: ...
    def snapshot(self) -> tuple[str, int, int]:
        """``(stage, done, total)``."""

def dedup_normalize(
    texts: list[str],
    *,
    nfkc: bool = True,
    lowercase: bool = True,
    strip_punctuation: bool = True,
    collapse_whitespace: bool = True,
    digits_to_zero: bool = False,
) -> list[str]: ...
def dedup_permutations(
    num_perm: int = 128, seed: int = 1, scheme: str = "datasketch"
) -> tuple[list[int], list[int]]: ...
def dedup_minhash(
    texts: list[str],
    *,
    num_perm: int = 128,
    ngram: int = 5,
    scheme: str = "datasketch",
    seed: int = 1,
    normalize: bool = True,
    nfkc: bool = True,
    lowercase: bool = True,
    strip_punctuation: bool = True,
    collapse_whitespace: bool = True,
    digits_to_zero: bool = False,
) -> np.ndarray: ...
def dedup_optimal_params(
    threshold: float, num_perm: int = 128, fp_weight: float = 0.5, fn_weight: float = 0.5
) -> tuple[int, int]: ...
def dedup_run(
    texts: list[str],
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    ngram: int = 5,
    scheme: str = "fast",
    seed: int = 1,
    normalize: bool = True,
    nfkc: bool = True,
    lowercase: bool = True,
    strip_punctuation: bool = True,
    collapse_whitespace: bool = True,
    digits_to_zero: bool = False,
    exact: bool = True,
    near: bool = True,
    verify: bool = True,
    keep: str = "first",
    bands: tuple[int, int] | None = None,
    lsh_weights: tuple[float, float] | None = None,
    against: list[str] | None = None,
    against_keys: list[str] | None = None,
    lengths: list[int] | None = None,
    progress: DedupProgress | None = None,
) -> dict[str, Any]:
    """Keys: keep (bool[n]), cluster (int64[n]), pairs and contaminated (dicts of
    removed/kept int64 arrays and similarity float64), stats (dict of counters)."""

# ---- end dedup
