"""Type stubs for the Rust extension ``ladle._core`` (rust/src/python/, one file per
area). ``make lint`` checks them against the built module with ``mypy.stubtest``.

Each area keeps its own block."""

import os
from collections.abc import Callable
from typing import Any, Final, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "IGNORE_INDEX",
    "ArgumentError",
    "ChatEncoder",
    "DataError",
    "DedupOutput",
    "DedupPairs",
    "DedupProgress",
    "DedupStats",
    "FileError",
    "LadleError",
    "QuantError",
    "TemplateError",
    "TokenizerError",
    "__version__",
    "assemble_packed",
    "assemble_packed_files",
    "dedup_minhash",
    "dedup_normalize",
    "dedup_optimal_params",
    "dedup_permutations",
    "dedup_run",
    "fingerprint_bytes",
    "fingerprint_files",
    "gguf_quantize",
    "nf4_convert_checkpoint",
    "nf4_quant_state_json",
    "nf4_quantize",
    "nf4_tables",
    "nf4_torch_sum",
    "normalize_rows",
    "normalize_rows_flat",
    "pack",
]
__version__: str
IGNORE_INDEX: Final[int]
"""Label of a token that carries no loss (PyTorch's ``ignore_index``)."""

# ---- errors
class LadleError(Exception): ...
class DataError(LadleError): ...
class TemplateError(LadleError): ...
class TokenizerError(LadleError): ...
class QuantError(LadleError): ...
class ArgumentError(LadleError, ValueError): ...
class FileError(LadleError, OSError): ...

# ---- hashing
def fingerprint_files(paths: list[str]) -> str: ...
def fingerprint_bytes(data: bytes) -> str: ...

# ---- chat / tokenize
@final
class ChatEncoder:
    def __new__(
        cls,
        tokenizer_path: str,
        template: str,
        special_tokens: list[tuple[str, str]],
        fast: bool = True,
    ) -> ChatEncoder: ...
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
        list[str],
    ]: ...
    def trained_spans(
        self, conversation: str, train_on: str
    ) -> tuple[str, list[tuple[int, int]]]: ...
    def tokenize(self, texts: list[str]) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]: ...
    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str: ...
    def token_to_id(self, token: str) -> int | None: ...

# ---- dedup

@final
class DedupProgress:
    """Live counters of a running ``dedup_run`` (poll from another thread)."""

    def __new__(cls) -> DedupProgress: ...
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

@final
class DedupStats:
    """Counters of one ``dedup_run``."""

    def __new__(
        cls,
        *,
        rows_in: int = 0,
        rows_out: int | None = None,
        empty_rows: int = 0,
        exact_removed: int = 0,
        near_clusters: int = 0,
        near_removed: int = 0,
        decontaminated: int = 0,
        candidate_pairs: int = 0,
        verified_pairs: int = 0,
        bands: int = 0,
        rows_per_band: int = 0,
    ) -> DedupStats: ...
    @property
    def rows_in(self) -> int: ...
    @property
    def rows_out(self) -> int: ...
    @property
    def empty_rows(self) -> int: ...
    @property
    def exact_removed(self) -> int: ...
    @property
    def near_clusters(self) -> int: ...
    @property
    def near_removed(self) -> int: ...
    @property
    def decontaminated(self) -> int: ...
    @property
    def candidate_pairs(self) -> int: ...
    @property
    def verified_pairs(self) -> int: ...
    @property
    def bands(self) -> int: ...
    @property
    def rows_per_band(self) -> int: ...
    def to_dict(self) -> dict[str, int]: ...

@final
class DedupPairs:
    """Removed rows and the rows that explain them, as parallel arrays."""

    @property
    def removed(self) -> npt.NDArray[np.int64]: ...
    @property
    def kept(self) -> npt.NDArray[np.int64]: ...
    @property
    def similarity(self) -> npt.NDArray[np.float64]: ...

@final
class DedupOutput:
    """The result of ``dedup_run``."""

    @property
    def keep(self) -> npt.NDArray[np.bool_]: ...
    @property
    def cluster(self) -> npt.NDArray[np.int64]: ...
    @property
    def pairs(self) -> DedupPairs: ...
    @property
    def contaminated(self) -> DedupPairs: ...
    @property
    def stats(self) -> DedupStats: ...

def dedup_run(
    texts: list[str],
    options: dict[str, Any],
    *,
    against: list[str] | None = None,
    against_keys: list[str] | None = None,
    lengths: list[int] | None = None,
    progress: DedupProgress | None = None,
) -> DedupOutput:
    """``options`` keys (all optional; unknown keys are an ``ArgumentError``):
    threshold (0.8), num_perm (128), ngram (5), scheme ("fast"), seed (1), normalize,
    nfkc, lowercase, strip_punctuation, collapse_whitespace (True), digits_to_zero
    (False), exact, near, verify (True), keep ("first"), bands, lsh_weights (None)."""

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

def normalize_rows_flat(
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
) -> tuple[
    npt.NDArray[np.uint8],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    dict[str, int],
    list[tuple[str, int, str, str]],
]:
    """``normalize_rows`` with the kept rows as one buffer of JSON lines (compact JSON,
    each ended by a newline) and no Python object per row: ``(buffer, line ends,
    line numbers, bad counts, first bad rows)``."""

def pack(
    lengths: npt.NDArray[np.int64], capacity: int, strategy: str = "bfd", seed: int = 0
) -> list[list[int]]: ...

# Flat (input_ids, labels, position_ids, row_offsets, seq_lengths, seq_offsets).
_PackedRows = tuple[
    npt.NDArray[np.int32],
    npt.NDArray[np.int32],
    npt.NDArray[np.int32],
    npt.NDArray[np.int64],
    npt.NDArray[np.int32],
    npt.NDArray[np.int64],
]

def assemble_packed(
    ids: npt.NDArray[np.int32],
    labels: npt.NDArray[np.int32],
    offsets: npt.NDArray[np.int64],
    bins: list[list[int]],
) -> _PackedRows: ...
def assemble_packed_files(
    ids_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    offsets: npt.NDArray[np.int64],
    bins: list[list[int]],
) -> _PackedRows: ...

# ---- gguf
def gguf_quantize(data: npt.NDArray[np.float32], qtype: str) -> npt.NDArray[np.uint8]:
    """ggml ``qtype`` (``q8_0`` / ``q4_0`` / ``q5_0``: blocks of 32; ``q4_k`` / ``q6_k``:
    blocks of 256) blocks of a contiguous float32 vector whose length is a multiple of
    the block; the bytes llama.cpp's ``quantize_row_*_ref`` write. GIL released."""
    ...

# ---- end gguf
