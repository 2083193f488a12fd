"""A real llama.cpp for the GGUF tests and benchmark: llama-cpp-python built once from
its PyPI source and cached.

The first call runs ``pip wheel`` on the pinned sdist (it compiles the llama.cpp it
vendors with cmake: CPU only, no examples, tools, server or multimodal parts) plus the
one pure-Python dependency the package imports and this venv lacks (diskcache), then
unpacks the wheels into ``$LADLE_HOME/llama-cpp/<version>/`` (built in a sibling
folder and moved into place, so a killed build leaves nothing half-written). Later
calls only put that folder on ``sys.path``. The build takes ~15-25 min on 2 busy cores
(measured in the README); CI keeps the folder in its cache (``.github/workflows/ci.yml``).

When the build cannot run (no C++ compiler, no package index, a compile error) the
caller gets ``LlamaCppUnavailable`` with the reason, and the tests skip with it.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from types import ModuleType

VERSION = "0.3.36"
DISKCACHE = "5.6.3"
# CPU only and small: no native -march (portable cache), no OpenMP, no BLAS, no curl,
# and none of the binaries; the Python package needs only the shared libraries.
CMAKE_ARGS = " ".join(
    [
        "-DGGML_NATIVE=OFF",
        "-DGGML_OPENMP=OFF",
        "-DGGML_BLAS=OFF",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_SERVER=OFF",
        "-DLLAMA_BUILD_TOOLS=OFF",
        "-DLLAVA_BUILD=OFF",
    ]
)


class LlamaCppUnavailable(RuntimeError):
    """llama-cpp-python could not be built or imported here (the message says why)."""


def site_dir() -> Path:
    from ladle.paths import ladle_home

    return ladle_home() / "llama-cpp" / VERSION


def _build(dest: Path) -> None:
    if not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        raise LlamaCppUnavailable("no C++ compiler on PATH to build llama.cpp")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".build-") as tmp:
        wheels = Path(tmp) / "wheels"
        env = {**os.environ, "CMAKE_ARGS": CMAKE_ARGS}
        env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-w",
            str(wheels),
            f"llama-cpp-python=={VERSION}",
            f"diskcache=={DISKCACHE}",
        ]
        log = Path(tmp) / "build.log"
        with log.open("w") as out:
            rc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            tail = log.read_text(errors="replace").splitlines()[-5:]
            raise LlamaCppUnavailable(
                f"`pip wheel llama-cpp-python=={VERSION}` failed: " + " | ".join(tail)
            )
        staged = Path(tmp) / "site"
        for whl in wheels.glob("*.whl"):
            with zipfile.ZipFile(whl) as z:
                z.extractall(staged)
        for lib in (staged / "llama_cpp" / "lib").glob("*.so*"):
            lib.chmod(0o755)  # zipfile drops the mode bits
        os.replace(staged, dest)


def load() -> ModuleType:
    """``llama_cpp`` from the cached build, building it first if needed."""
    dest = site_dir()
    if not (dest / "llama_cpp" / "__init__.py").is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        # One build at a time (pytest-xdist workers, a benchmark started alongside).
        with (dest.parent / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (dest / "llama_cpp" / "__init__.py").is_file():
                _build(dest)
    if str(dest) not in sys.path:
        sys.path.insert(0, str(dest))
    try:
        import llama_cpp
    except (ImportError, OSError) as e:
        raise LlamaCppUnavailable(f"the llama_cpp build in {dest} does not import: {e}") from e
    return llama_cpp


def ggml_base() -> ctypes.CDLL:
    """ggml's base library from the build, for ``ggml_quantize_chunk``."""
    lib = ctypes.CDLL(str(site_dir() / "llama_cpp" / "lib" / "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_void_p,
    ]
    return lib


def quantize_file(llama_cpp: ModuleType, src: Path, dst: Path, threads: int = 0) -> None:
    """``llama_model_quantize(src, dst)`` with ftype Q4_K_M and default parameters (what
    ``llama-quantize src dst Q4_K_M`` does); ``threads`` 0 means all cores."""
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src}) returned {rc}")
