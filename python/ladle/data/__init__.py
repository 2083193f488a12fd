"""Ladle's data engine: load and normalise datasets, render chat templates, tokenize with
loss masks, pack, and cache the result (``ladle prep``).

The work runs in the Rust core (``ladle._core``); these modules check arguments and
speak Python. ``prep(recipe)`` runs the whole pipeline into a content-addressed cache
folder; ``load_prepared(path)`` opens one for training and evaluation; ``pack`` and
``ChatTokenizer`` are the primitives on their own, for notebooks and pipelines.
"""

from ladle._core import IGNORE_INDEX  # label without loss; the one definition is in Rust
from ladle.data.chat import ChatTokenizer, EncodedBatch  # chat: rendering/tokenize/masks
from ladle.data.load import LoadedDataset, load_all, load_dataset, resolve_files
from ladle.data.packing import assemble, pack
from ladle.data.prep import PrepResult, prep
from ladle.data.prepared import iter_train_rows, load_prepared

__all__ = [
    "IGNORE_INDEX",
    "ChatTokenizer",
    "EncodedBatch",
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
