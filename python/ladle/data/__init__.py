"""Ladle's data engine: chat rendering, tokenization with loss masks, packing, prep.

The work runs in the Rust core (``ladle._core``); these modules check arguments and
speak Python.
"""

from ladle.data.chat import ChatTokenizer, EncodedBatch  # chat: rendering/tokenize/masks

__all__ = ["ChatTokenizer", "EncodedBatch"]
