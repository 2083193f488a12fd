"""A real llama.cpp for the GGUF tests and benchmarks, from llama-cpp-python's pinned PyPI
source, everything cached under ``$LADLE_HOME/llama-cpp/`` (CI keeps that folder in its
cache, ``.github/workflows/ci.yml``). Three levels, each built on first use:

- ``source()``: the sdist (from PyPI's JSON API, checked against its pinned SHA-256; it
  vendors llama.cpp), ~75 MB, seconds.
- ``ggml_quants()``: llama.cpp's reference quantizers alone, ``ggml/src/ggml-quants.c``
  compiled with the flags of a Release build into a small shared library (~10 s): what
  the block-level byte-identity tests call.
- ``load()``: the whole package, ``pip wheel`` on the sdist (cmake compiles llama.cpp:
  CPU only, no examples, tools, server or multimodal parts) plus the one pure-Python
  dependency this venv lacks (diskcache), unpacked into a folder put on ``sys.path``;
  ``llama_model_quantize`` (what ``llama-quantize`` runs) and inference. The build costs
  ~15 CPU-minutes (measured figures in the README).

The full build is opt-in: ``load()`` uses an existing build, and builds one only with
``LADLE_LLAMA_CPP_BUILD=1`` (CI's workflow sets it and caches the result), so a plain
``make test`` on a clean clone never spends ~15 CPU-minutes compiling inside the test
run; the tests that need it skip with that reason. The quick levels always run.

Every step builds in a sibling temporary folder and moves into place, under a file lock,
so a killed or concurrent build leaves nothing half-written. When a step cannot run (no
compiler, no package index, a compile error) the caller gets ``LlamaCppUnavailable``
with the reason, and the tests skip with it.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

VERSION = "0.3.36"
SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
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
# ggml-quants.c calls these only on paths the reference rows never take (IQ types,
# asserts); the stubs let it link alone.
_STUBS = """
#include <stddef.h>
#include <stdlib.h>
void ggml_abort(const char * f, int l, const char * fmt, ...) { abort(); }
size_t ggml_row_size(int t, long n) { abort(); }
const char * ggml_type_name(int t) { return "?"; }
size_t ggml_type_size(int t) { abort(); }
"""


class LlamaCppUnavailable(RuntimeError):
    """llama.cpp could not be fetched, built or imported here (the message says why)."""


def cache_dir() -> Path:
    from ladle.paths import ladle_home

    return ladle_home() / "llama-cpp"


def _once(dest: Path, build: Callable[[Path], None]) -> Path:
    """``dest``, made by ``build(staging_path)`` unless it exists; one builder at a time."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    # One lock per artifact: a build takes the locks of what it needs (nested calls).
    with (dest.parent / f".{dest.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not dest.exists():
            with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".build-") as tmp:
                staged = Path(tmp) / dest.name
                build(staged)
                os.replace(staged, dest)
    return dest


def _run(cmd: list[str], log: Path, what: str, env: dict[str, str] | None = None) -> None:
    with log.open("w") as out:
        rc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = " | ".join(log.read_text(errors="replace").splitlines()[-4:])
        raise LlamaCppUnavailable(f"{what} failed (exit {rc}): {tail}")


def _sdist_path() -> Path:
    # Straight from the package index (its PEP 691 JSON listing, the index pip itself
    # uses), not `pip download`: pip prepares the sdist's metadata, and with
    # `--no-binary :all:` that means compiling the build backend's dependencies (cmake)
    # from source, which ran for over an hour on a fresh CI machine. Every read has a
    # timeout, so an unreachable index skips instead of hanging.
    def fetch(staged: Path) -> None:
        index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
        name = f"llama_cpp_python-{VERSION}.tar.gz"
        listing = urllib.request.Request(
            f"{index}/llama-cpp-python/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
        try:
            with urllib.request.urlopen(listing, timeout=60) as r:
                (url,) = [f["url"] for f in json.load(r)["files"] if f["filename"] == name]
            digest = hashlib.sha256()
            with urllib.request.urlopen(url, timeout=60) as r, staged.open("wb") as out:
                while chunk := r.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except (OSError, ValueError, KeyError) as e:  # URLError and timeouts are OSError
            raise LlamaCppUnavailable(f"downloading llama-cpp-python {VERSION}: {e}") from e
        if digest.hexdigest() != SHA256:
            raise LlamaCppUnavailable(f"{url} does not match its pinned SHA-256")

    return _once(cache_dir() / f"llama_cpp_python-{VERSION}.tar.gz", fetch)


def source() -> Path:
    """The vendored llama.cpp source tree of the pinned sdist."""

    def unpack(staged: Path) -> None:
        with tarfile.open(_sdist_path()) as tar:
            tar.extractall(staged, filter="data")

    root = _once(cache_dir() / f"{VERSION}-src", unpack)
    return root / f"llama_cpp_python-{VERSION}" / "vendor" / "llama.cpp"


def ggml_quants() -> ctypes.CDLL:
    """llama.cpp's ``quantize_row_*_ref`` functions, compiled from the pinned source."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise LlamaCppUnavailable("no C compiler on PATH")

    def compile_(staged: Path) -> None:
        ggml = source() / "ggml"
        stubs = staged.parent / "stubs.c"
        stubs.write_text(_STUBS)
        # ggml-base's Release flags: -O3 -DNDEBUG, C11 with GNU extensions, no -march
        # (so no fused multiply-add contraction on x86-64).
        cmd = [cc, "-O3", "-DNDEBUG", "-std=gnu11", "-fPIC", "-shared"]
        cmd += ["-I", str(ggml / "include"), "-I", str(ggml / "src")]
        cmd += [str(ggml / "src" / "ggml-quants.c"), str(stubs), "-lm", "-o", str(staged)]
        _run(cmd, staged.parent / "cc.log", "compiling ggml-quants.c")

    return ctypes.CDLL(str(_once(cache_dir() / f"{VERSION}-ggml-quants.so", compile_)))


def site_dir() -> Path:
    return cache_dir() / f"{VERSION}-site"


def load() -> ModuleType:
    """``llama_cpp`` from the cached build, building it first if needed."""
    if not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        raise LlamaCppUnavailable("no C++ compiler on PATH to build llama.cpp")

    def build(staged: Path) -> None:
        if os.environ.get("LADLE_LLAMA_CPP_BUILD") != "1":
            raise LlamaCppUnavailable(
                f"llama.cpp is not built in {site_dir()}; build it once (~15 CPU-minutes) "
                "with LADLE_LLAMA_CPP_BUILD=1"
            )
        wheels = staged.parent / "wheels"
        env = {**os.environ, "CMAKE_ARGS": CMAKE_ARGS}
        env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels)]
        cmd += [str(_sdist_path()), f"diskcache=={DISKCACHE}"]
        _run(cmd, staged.parent / "build.log", f"pip wheel llama-cpp-python=={VERSION}", env)
        for whl in wheels.glob("*.whl"):
            with zipfile.ZipFile(whl) as z:
                z.extractall(staged)
        for lib in (staged / "llama_cpp" / "lib").glob("*.so*"):
            lib.chmod(0o755)  # zipfile drops the mode bits

    dest = _once(site_dir(), build)
    if str(dest) not in sys.path:
        sys.path.insert(0, str(dest))
    try:
        import llama_cpp
    except (ImportError, OSError) as e:
        raise LlamaCppUnavailable(f"the llama_cpp build in {dest} does not import: {e}") from e
    return llama_cpp


def quantize_file(llama_cpp: ModuleType, src: Path, dst: Path, threads: int = 0) -> None:
    """``llama_model_quantize(src, dst)`` with ftype Q4_K_M and default parameters (what
    ``llama-quantize src dst Q4_K_M`` does); ``threads`` 0 means all cores."""
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src}) returned {rc}")
