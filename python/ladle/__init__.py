"""Ladle: declarative fine-tuning with a before/after gate against the prompted baseline.

The heavy data work (chat rendering, tokenization, packing, dedup, NF4) runs in the
Rust extension ``ladle._core``; this package is the typed Python API over it.
"""

from ladle._core import __version__
from ladle.errors import LadleError

__all__ = ["LadleError", "__version__"]
