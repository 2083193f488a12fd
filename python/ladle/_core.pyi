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

def fingerprint_files(paths: list[str]) -> str: ...
def fingerprint_bytes(data: bytes) -> str: ...

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
) -> tuple[list[dict[str, Any]], list[int], dict[str, int], list[tuple[str, int, str, str]]]:
    """Parse JSON rows and normalise a dataset format; returns
    ``(rows, line numbers, bad counts per reason, first bad rows (reason, line, field, message))``."""

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
