"""Type stubs for the Rust extension ``ladle._core``. Each area keeps its own block."""

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
    def trained_spans(self, conversation: str, train_on: str) -> tuple[str, list[tuple[int, int]]]: ...
    def tokenize(
        self, texts: list[str]
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]: ...
    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str: ...
    def token_to_id(self, token: str) -> int | None: ...


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
