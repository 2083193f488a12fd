"""GGUF export: one file llama.cpp, Ollama and transformers' GGUF loader can run.

``write_gguf`` turns a merged Hugging Face folder (safetensors + tokenizer) into GGUF
with the ``gguf`` package's ``GGUFWriter``: the architecture metadata, the tokenizer
(vocab, merges, token types, special tokens, ``add_bos``) and the chat template the
run was trained with. Tensors stream one at a time (header and tensor index first,
then each tensor read, converted and written), so peak memory stays near the largest
tensor. Block types (Q8_0, Q4_0, and Q4_K_M's Q4_K / Q6_K / Q5_0 mix) come from the
Rust core (``_core.gguf_quantize``, all cores, byte-identical to llama.cpp's reference
quantizers); which tensor gets which type is ``ladle.gguf_types``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from ladle.errors import ModelError
from ladle.gguf_types import FILE_TYPES, QUANTS, Q, tensor_type
from ladle.paths import created_mode

SUPPORTED = {"LlamaForCausalLM": gguf.MODEL_ARCH.LLAMA}
# Pre-tokenizer of SmolLM/StarCoder tokenizers (digits split one by one, then GPT-2's
# byte-level split): llama.cpp calls it "smollm" and needs the name to split the same way.
_SMOLLM_PRE = [
    {"type": "Digits", "individual_digits": True},
    {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: not readable JSON ({e})") from e
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def _config(folder: Path) -> tuple[dict[str, Any], gguf.MODEL_ARCH]:
    cfg = _read_json(folder / "config.json")
    arch = (cfg.get("architectures") or ["?"])[0]
    if arch not in SUPPORTED:
        raise ModelError(
            f"{folder / 'config.json'}: architecture {arch!r} cannot be exported to GGUF yet "
            f"(supported: {', '.join(SUPPORTED)}); use `ladle export RUN --merge OUT` instead"
        )
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if rope.get("rope_type", "default") not in ("default", None):
        raise ModelError(
            f"{folder / 'config.json'}: rope_type {rope.get('rope_type')!r} is not exported "
            "to GGUF yet (only default RoPE)"
        )
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise ModelError(f"{folder / 'config.json'}: Llama with biases is not exported to GGUF")
    return cfg, SUPPORTED[arch]


def _shards(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(_read_json(index).get("weight_map", {}).values()))
        return [folder / n for n in names]
    single = folder / "model.safetensors"
    if not single.is_file():
        raise ModelError(f"{folder}: no model.safetensors (GGUF export reads safetensors)")
    return [single]


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # HF stores Q/K rows as [first halves of all rotary pairs | second halves] per head;
    # llama.cpp's RoPE rotates adjacent pairs, so each head's rows are interleaved.
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def encode_tensor(data: np.ndarray, qtype: Any) -> np.ndarray:
    """``data`` (float32) in ``qtype``'s bytes (uint8 for block and bf16 types)."""
    from ladle._core import gguf_quantize

    if qtype == Q.F32:
        return data.astype(np.float32)
    if qtype == Q.F16:
        return data.astype(np.float16)
    if qtype == Q.BF16:
        return np.asarray(gguf.quants.quantize(data, Q.BF16))
    flat = np.ascontiguousarray(data, dtype=np.float32).reshape(-1)
    return gguf_quantize(flat, qtype.name.lower()).reshape(
        gguf.quant_shape_to_byte_shape(data.shape, qtype)
    )


def _tensors(folder: Path, cfg: dict[str, Any], arch: Any) -> Iterator[tuple[str, str, Path]]:
    """(HF name, GGUF name, shard) for every tensor that goes into the file."""
    from safetensors import safe_open

    names = gguf.get_tensor_name_map(arch, int(cfg["num_hidden_layers"]))
    tied = cfg.get("tie_word_embeddings", False)
    for shard in _shards(folder):
        with safe_open(shard, framework="pt") as f:
            keys = list(f.keys())
        for key in keys:
            if key.endswith("rotary_emb.inv_freq") or (tied and key == "lm_head.weight"):
                continue  # recomputed by every runtime / the tied embedding
            new = names.get_name(key, try_suffixes=(".weight", ".bias"))
            if new is None:
                raise ModelError(f"{shard}: tensor {key!r} has no GGUF name for Llama")
            yield key, new, shard


def _load(shard: Path, key: str, gname: str, cfg: dict[str, Any]) -> np.ndarray:
    from safetensors import safe_open

    with safe_open(shard, framework="pt") as f:
        t = f.get_tensor(key).float().numpy()
    if not np.isfinite(t).all():
        raise ModelError(f"{shard}: tensor {key!r} holds NaN or inf; the checkpoint is damaged")
    heads = int(cfg["num_attention_heads"])
    if gname.endswith("attn_q.weight"):
        t = _permute(t, heads)
    elif gname.endswith("attn_k.weight"):
        t = _permute(t, int(cfg.get("num_key_value_heads") or heads))
    return t


def _pre_tokenizer(tok_json: dict[str, Any]) -> str:
    """llama.cpp's name for how this tokenizer splits text before BPE."""
    pre = tok_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]

    def same(step: dict[str, Any], want: dict[str, Any]) -> bool:
        return {k: step.get(k) for k in want} == want

    if len(steps) == 2 and all(map(same, steps, _SMOLLM_PRE)):
        return "smollm"
    if len(steps) == 1 and same(steps[0], _SMOLLM_PRE[1]):
        return "gpt-2"
    raise ModelError(
        "tokenizer.json: this byte-level BPE pre-tokenizer has no llama.cpp name Ladle knows "
        "(known: SmolLM/StarCoder, GPT-2); GGUF export would split text differently"
    )


def _add_tokenizer(w: gguf.GGUFWriter, folder: Path, cfg: dict[str, Any]) -> None:
    from ladle.data import ChatTokenizer
    from ladle.models import load_tokenizer

    tok_json = _read_json(folder / "tokenizer.json")
    model = tok_json.get("model") or {}
    if model.get("type") != "BPE":
        raise ModelError(
            f"{folder / 'tokenizer.json'}: only byte-level BPE tokenizers are exported to "
            f"GGUF yet (this one is {model.get('type')!r})"
        )
    tok = load_tokenizer(folder)
    n_vocab = int(cfg["vocab_size"])
    by_id = {i: t for t, i in tok.get_vocab().items()}
    added = tok.added_tokens_decoder
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            special = added[i].special
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(_pre_tokenizer(tok_json))
    w.add_token_list(tokens)
    w.add_token_types(types)
    vocab = gguf.SpecialVocab(folder, load_merges=True, n_vocab=n_vocab)
    # The template training rendered with (Ladle's resolution), not whatever file is first.
    vocab.chat_template = ChatTokenizer.from_pretrained(folder).template
    ids = tok("a")["input_ids"]
    vocab.add_special_token["bos"] = bool(ids) and ids[0] == tok.bos_token_id
    vocab.add_to_gguf(w, quiet=True)


def _check_out(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not overwrite:
        raise ModelError(f"{out} already exists; pass --overwrite to replace it")
    with suppress(OSError), out.open("rb") as f:
        if out.is_file() and f.read(4) == b"GGUF":
            return
    raise ModelError(f"{out} is not a GGUF file, so --overwrite does not replace it")


def write_gguf(
    folder: str | Path,
    out: str | Path,
    *,
    quant: str = "f16",
    overwrite: bool = False,
    name: str | None = None,
) -> Path:
    """Write the model in ``folder`` (merged HF safetensors + tokenizer) to ``out``."""
    folder, out = Path(folder), Path(out)
    if quant not in QUANTS:
        raise ModelError(f"--quant {quant!r}: choose one of {', '.join(QUANTS)}")
    _check_out(out, overwrite)
    cfg, arch = _config(folder)
    heads = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    rope = cfg.get("rope_parameters") or {}
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{out.name}-", dir=out.parent)
    os.fchmod(fd, created_mode(directory=False))
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        w = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
        w.add_type(gguf.GGUFType.MODEL)
        w.add_name(name or folder.name)
        w.add_context_length(int(cfg.get("max_position_embeddings", 2048)))
        w.add_embedding_length(hidden)
        w.add_block_count(int(cfg["num_hidden_layers"]))
        w.add_feed_forward_length(int(cfg["intermediate_size"]))
        w.add_head_count(heads)
        w.add_head_count_kv(int(cfg.get("num_key_value_heads") or heads))
        w.add_rope_freq_base(float(cfg.get("rope_theta") or rope.get("rope_theta", 10000.0)))
        w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
        w.add_vocab_size(int(cfg["vocab_size"]))
        w.add_rope_dimension_count(int(cfg.get("head_dim") or hidden // heads))
        w.add_file_type(FILE_TYPES[quant])
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_tokenizer(w, folder, cfg)
        plan = []
        from safetensors import safe_open

        tensors = list(_tensors(folder, cfg, arch))
        tied = "output.weight" not in {gname for _, gname, _ in tensors}
        n_layer = int(cfg["num_hidden_layers"])
        for key, gname, shard in tensors:
            with safe_open(shard, framework="pt") as f:
                shape = tuple(f.get_slice(key).get_shape())
            qtype = tensor_type(gname, shape, quant, n_layer=n_layer, tied=tied)
            size, bytes_per_block = gguf.GGML_QUANT_SIZES[qtype]
            nbytes = int(np.prod(shape)) // size * bytes_per_block
            np_dtype = {Q.F32: np.float32, Q.F16: np.float16}.get(qtype, np.uint8)
            byte_shape = (
                shape if np_dtype != np.uint8 else gguf.quant_shape_to_byte_shape(shape, qtype)
            )
            w.add_tensor_info(gname, byte_shape, np.dtype(np_dtype), nbytes, raw_dtype=qtype)
            plan.append((key, gname, shard, qtype))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for key, gname, shard, qtype in plan:  # one tensor in memory at a time
            w.write_tensor_data(encode_tensor(_load(shard, key, gname, cfg), qtype))
        w.close()
        os.replace(tmp, out)
    except BaseException:
        with suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return out


# Sentinels rendered through the real template to recover how it wraps each role.
_S, _U, _A, _U2 = "\x01SYS\x01", "\x01USR\x01", "\x01AST\x01", "\x01US2\x01"


def ollama_template(folder: Path) -> tuple[str, str | None, list[str]]:
    """(Go TEMPLATE, default SYSTEM or None, stop strings) for Ollama, derived by rendering
    probe conversations through the model's own chat template with Ladle's renderer.

    Works for templates that wrap each message the same way wherever it stands (ChatML,
    Llama 3, ...). The result is checked against the Jinja rendering of multi-turn
    chats with and without a system message; a template it cannot reproduce is an error
    rather than a Modelfile that formats chats differently from training.
    """
    from ladle.data import ChatTokenizer

    ct = ChatTokenizer.from_pretrained(folder)

    def render(msgs: list[tuple[str, str]], gen: bool) -> str:
        return ct.render([{"role": r, "content": c} for r, c in msgs], add_generation_prompt=gen)

    def cut(text: str, prefix: str, what: str) -> str:
        if not text.startswith(prefix):
            raise ValueError(f"the {what} is not the same in every turn")
        return text[len(prefix) :]

    turns = [("user", _U), ("assistant", _A), ("user", _U2)]
    try:
        full = render([("system", _S), *turns], True)
        sys_pre, p1 = full.split(_S)[0], full.split(_S)[1].split(_U)[0]
        p2, p3, p4 = (
            full.split(_U)[1].split(_A)[0],
            full.split(_A)[1].split(_U2)[0],
            full.split(_U2)[1],
        )
        head, user_suf = render([("user", _U)], False).split(_U)
        asst_pre = cut(p2, user_suf, "user suffix")
        gen_prompt = cut(p4, user_suf, "user suffix")
        asst_suf = render([("user", _U), ("assistant", _A)], False).split(_A)[1]
        user_pre = cut(p3, asst_suf, "assistant suffix")
        if not (p1.endswith(user_pre) and head.endswith(user_pre)):
            raise ValueError("the user prefix is not the same in every turn")
        sys_suf = p1[: len(p1) - len(user_pre)]
        default = head[: len(head) - len(user_pre)]
        system = (
            cut(default, sys_pre, "system prefix")[: -len(sys_suf) or None] if default else None
        )
    except ValueError as e:  # also a sentinel missing from the rendering (split unpacking)
        raise ModelError(
            f"{folder}: cannot derive an Ollama TEMPLATE from this chat template ({e}); "
            "export without --ollama and write the Modelfile's TEMPLATE by hand"
        ) from e

    def emulate(system: str | None, msgs: list[tuple[str, str]]) -> str:
        text = sys_pre + system + sys_suf if system else ""
        for r, c in msgs:
            text += (user_pre + c + user_suf) if r == "user" else (asst_pre + c + asst_suf)
        return text + gen_prompt

    if emulate(_S, turns) != full or emulate(system, turns) != render(turns, True):
        raise ModelError(
            f"{folder}: the Ollama TEMPLATE derived from this chat template does not render "
            "chats as the template does; export without --ollama and write it by hand"
        )
    # Plain {{ }} actions only: {{- would trim the newlines the template's text carries.
    go = (
        "{{ if .System }}" + sys_pre + "{{ .System }}" + sys_suf + "{{ end }}"
        "{{ range .Messages }}"
        '{{ if eq .Role "user" }}'
        + user_pre
        + "{{ .Content }}"
        + user_suf
        + '{{ else if eq .Role "assistant" }}'
        + asst_pre
        + "{{ .Content }}"
        + asst_suf
        + "{{ end }}{{ end }}"
        + gen_prompt
    )
    stops = sorted({s for s in (asst_suf.strip(), ct.eos_token or "") if s})
    return go, system, stops


def write_modelfile(folder: Path, gguf_path: Path) -> Path:
    """``Modelfile`` next to ``gguf_path`` for ``ollama create NAME -f Modelfile``."""
    from ladle.paths import atomic_write_text

    go, system, stops = ollama_template(folder)
    lines = [f"FROM ./{gguf_path.name}", f'TEMPLATE """{go}"""']
    if system is not None:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in stops]
    # Greedy, like Ladle's evaluation, so `ollama run` answers as the report measured.
    lines.append("PARAMETER temperature 0")
    path = gguf_path.with_name("Modelfile")
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def export_gguf(
    run_dir: str | Path,
    out: str | Path,
    *,
    quant: str = "f16",
    ollama: bool = False,
    overwrite: bool = False,
) -> Path:
    """Merge a finished run (``ladle.train.export_run``) and write it as GGUF ``out``;
    with ``ollama``, also a ``Modelfile`` next to it."""
    from ladle.train import export_run

    out = Path(out)
    if quant not in QUANTS:
        raise ModelError(f"--quant {quant!r}: choose one of {', '.join(QUANTS)}")
    _check_out(out, overwrite)  # before the merge, which takes a while
    out.parent.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=out.parent)))
        merged = export_run(run_dir, tmp / "merged", dtype="float32")
        write_gguf(merged, out, quant=quant, overwrite=overwrite, name=Path(run_dir).name)
        if ollama:
            write_modelfile(merged, out)
    return out
