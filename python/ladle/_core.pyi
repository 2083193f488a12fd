"""Type stubs for the Rust extension ``ladle._core`` (rust/src/python.rs).

Each area keeps its own block."""

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

__version__: str

class LadleCoreError(Exception): ...
class DataError(LadleCoreError): ...
class TemplateError(LadleCoreError): ...
class TokenizerError(LadleCoreError): ...
class QuantError(LadleCoreError): ...

# ---- hashing
def fingerprint_files(paths: list[str]) -> str: ...
def fingerprint_bytes(data: bytes) -> str: ...

# ---- chat / tokenize
class ChatEncoder:
    def __init__(
        self,
        tokenizer_path: str,
        template: str,
        special_tokens: list[tuple[str, str]],
        fast: bool = True,
    ) -> None: ...
    @property
    def is_fast(self) -> bool: ...
    @property
    def has_generation_markers(self) -> bool: ...
    @property
    def vocab_size(self) -> int: ...
    def render(
        self, conversations: list[str], add_generation_prompt: bool
    ) -> tuple[list[str | None], list[BaseException | None]]: ...
    def encode(
        self, conversations: list[str], train_on: str
    ) -> tuple[
        npt.NDArray[np.int32],
        npt.NDArray[np.int32],
        npt.NDArray[np.int64],
        npt.NDArray[np.int64],
        list[BaseException | None],
    ]: ...
    def trained_spans(
        self, conversation: str, train_on: str
    ) -> tuple[str, list[tuple[int, int]]]: ...
    def tokenize(self, texts: list[str]) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]: ...
    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str: ...
    def token_to_id(self, token: str) -> int | None: ...

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
# ---- nf4
def nf4_quantize(
    data: npt.NDArray[np.uint8],
    dtype: str,
    blocksize: int = 64,
    quant_type: str = "nf4",
    double_quant: bool = False,
    lanes: int = 16,
    threads: int = 1,
) -> tuple[
    npt.NDArray[np.uint8],
    npt.NDArray[np.float32],
    tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32], float] | None,
]: ...
def nf4_torch_sum(xs: npt.NDArray[np.float32], lanes: int, threads: int) -> float: ...
def nf4_tables() -> dict[str, list[float]]: ...
def nf4_quant_state_json(
    quant_type: str,
    blocksize: int,
    dtype: str,
    shape: list[int],
    nested_offset: float | None = None,
) -> bytes: ...
def nf4_convert_checkpoint(
    jobs: list[tuple[str, str]],
    quantize: list[str],
    transpose: list[str] = ...,
    blocksize: int = 64,
    quant_type: str = "nf4",
    double_quant: bool = True,
    dtype: str | None = None,
    lanes: int = 16,
    threads: int = 1,
    progress: Callable[[int, int], object] | None = None,
) -> list[tuple[str, list[str], int]]: ...

# ---- load + pack (data prep)

def normalize_rows(
    data: bytes,
    format: str,
    *,
    columns: dict[str, str] | None = None,
    roles: dict[str, str] | None = None,
    system: str | None = None,
    strict: bool = False,
    limit: int | None = None,
    source: str = "<data>",
    unit: str = "line",
    offset: int = 0,
    json_array: bool = False,
    as_json: bool = False,
) -> tuple[list[Any], list[int], dict[str, int], list[tuple[str, int, str, str]]]:
    """Parse JSON rows and normalise a dataset format; returns ``(rows (dicts, or JSON
    text with as_json), line numbers, bad counts per reason, first bad rows (reason,
    line, field, message))``."""

def pack(
    lengths: npt.NDArray[np.int64], capacity: int, strategy: str = "bfd", seed: int = 0
) -> list[list[int]]: ...
def assemble_packed(
    ids: npt.NDArray[np.int32],
    labels: npt.NDArray[np.int32],
    offsets: npt.NDArray[np.int64],
    bins: list[list[int]],
) -> tuple[
    npt.NDArray[np.int32],
    npt.NDArray[np.int32],
    npt.NDArray[np.int32],
    npt.NDArray[np.int64],
    npt.NDArray[np.int32],
    npt.NDArray[np.int64],
]: ...

# ---- gguf
def gguf_quantize(data: npt.NDArray[np.float32], qtype: str) -> npt.NDArray[np.uint8]:
    """ggml ``qtype`` (``q8_0`` / ``q4_0``) blocks of a contiguous float32 vector whose
    length is a multiple of 32; the bytes ``gguf.quants.quantize`` returns. GIL released."""
    ...

# ---- end gguf
