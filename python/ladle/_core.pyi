"""Type stubs for the Rust extension ``ladle._core`` (see rust/src/python.rs)."""

from collections.abc import Callable

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
