"""The data engine: load and normalise datasets, tokenize with loss masks, pack, cache.

``prep(recipe)`` runs the whole pipeline into a content-addressed cache folder;
``load_prepared(path)`` opens one for training and evaluation. ``pack`` is the packing
primitive on its own, for notebooks and pipelines. The chat tokenizer lives in
``ladle.data.chat`` (the ``chat`` area) and is imported lazily, so loading and packing
work without it.
"""

from __future__ import annotations

from typing import Any

from ladle.data.load import LoadedDataset, load_all, load_dataset, resolve_files
from ladle.data.packing import IGNORE_INDEX, assemble, pack
from ladle.data.prep import PrepResult, prep
from ladle.data.prepared import iter_train_rows, load_prepared

__all__ = [
    "IGNORE_INDEX",
    "ChatTokenizer",
    "LoadedDataset",
    "PrepResult",
    "assemble",
    "iter_train_rows",
    "load_all",
    "load_dataset",
    "load_prepared",
    "pack",
    "prep",
    "resolve_files",
]


def __getattr__(name: str) -> Any:
    if name == "ChatTokenizer":
        from ladle.data.chat import ChatTokenizer  # type: ignore[import-not-found,unused-ignore]

        return ChatTokenizer
    raise AttributeError(name)
