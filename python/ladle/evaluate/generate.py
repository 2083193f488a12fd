"""Loading contestants and generating their answers, batched.

Performance notes (why the code looks like this):

- Prompts are sorted by token length and cut into batches, so a batch holds prompts of
  similar length and left padding wastes little compute; answers are put back in input
  order afterwards.
- Left padding with an explicit attention mask: ``generate`` derives position ids from
  the mask (``cumsum - 1``), so a padded prompt sees the same positions as when it runs
  alone and greedy output matches the per-example loop (up to float reassociation in the
  batched matmuls; benchmarks/eval.py measures it).
- Generation stops at the chat template's end-of-turn token (``<|im_end|>`` for ChatML),
  not only the tokenizer's eos, so no budget is spent on a next turn; a row that finished
  keeps emitting padding until the whole batch is done, and its token count stops at
  the stop token.
- A LoRA adapter on a full-precision base is merged into the base weights once:
  generation then runs plain matmuls instead of base + low-rank product for every token.
  A QLoRA adapter is NOT merged by default: the candidate is evaluated as it was trained
  and would be served, its 4-bit base (loaded exactly as training loaded it) with the
  adapter applied by peft (``evaluate.candidate.merge`` overrides; the report says which).
- An explicit ``GenerationConfig`` overrides whatever sampling defaults a checkpoint
  ships in ``generation_config.json``: greedy means greedy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ladle.errors import EvalError, ModelError
from ladle.models import check_model_dir
from ladle.recipe.schema import GenerationSpec, Recipe

if TYPE_CHECKING:
    import torch

Messages = list[dict[str, str]]

END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")
"""End-of-turn markers of the common chat templates; those in the vocabulary stop generation."""


# ----------------------------------------------------------------------- rendering


Renderer = Callable[[Messages | dict[str, Any]], str]
"""Renders a conversation: ``{"messages": [...]}`` plus ``tools``/``documents``."""


def prompt_renderer(tokenizer_dir: Path, template: str | None = None) -> Renderer:
    """The function that turns a contestant's messages into its prompt text, with the
    assistant header opened (``add_generation_prompt=True``).

    The one place that chooses the renderer: Ladle's Rust ``ChatTokenizer`` (the same
    renderer ``prep`` trains with, byte-identical to transformers' ``apply_chat_template``)
    with the recipe's ``data.template``, so a candidate is asked in exactly the format it
    was trained on.
    """
    from ladle.data import ChatTokenizer

    chat = ChatTokenizer.from_pretrained(tokenizer_dir, template=template)
    return lambda conversation: chat.render(conversation, add_generation_prompt=True)


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Token ids that end an assistant turn: eos plus known end-of-turn markers."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    ids += [int(vocab[t]) for t in END_OF_TURN if t in vocab]
    return sorted(set(ids))


# ----------------------------------------------------------------------- loading


@dataclass(frozen=True)
class ModelSource:
    """Where a contestant's weights come from, and how they are put together."""

    model_dir: Path
    adapter_dir: Path | None = None
    trained_with: Recipe | None = None
    """The recipe the adapter was trained with (its run folder's), when known."""
    merge: bool | None = None
    """``evaluate.candidate.merge``: None = merge unless the base was trained 4-bit."""

    @property
    def tokenizer_dir(self) -> Path:
        if self.adapter_dir is not None and (self.adapter_dir / "tokenizer.json").is_file():
            return self.adapter_dir
        return self.model_dir

    @property
    def qlora(self) -> bool:
        t = self.trained_with
        return self.adapter_dir is not None and t is not None and t.train.adapter == "qlora"

    @property
    def quantized(self) -> bool:
        """Evaluated on its 4-bit base with the adapter applied (QLoRA, not merged)."""
        return self.qlora and self.merge is not True

    @property
    def merged(self) -> bool:
        default = not self.qlora  # merging a full-precision base changes nothing but speed
        return self.adapter_dir is not None and (default if self.merge is None else self.merge)

    def describe(self) -> str:
        """How the model is evaluated, for the report."""
        if self.adapter_dir is None:
            return "model as saved"
        if self.quantized:
            assert self.trained_with is not None
            how = "Ladle NF4 pre-quantized" if self.trained_with.model.quantize == "nf4" else "NF4"
            return f"4-bit base ({how}, as trained) + adapter applied by peft, not merged"
        if self.merged:
            return "adapter merged into the full-precision base"
        return "full-precision base + adapter applied by peft, not merged"


def trained_recipe(run_dir: Path) -> Recipe | None:
    """The recipe a run folder was trained with (manifest.json, else run.json)."""
    from ladle.recipe.schema import Recipe

    for name in ("manifest.json", "run.json"):
        try:
            data = json.loads((run_dir / name).read_text())
            return Recipe.model_validate(data["recipe"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def candidate_source(
    path: Path, base_dir: Path, recipe: Recipe | None = None, merge: bool | None = None
) -> ModelSource:
    """Interpret a candidate path: a run folder (``adapter/`` or ``model/``), an adapter
    folder, or a plain model folder. ``recipe`` (the evaluating one) stands in for the
    training recipe when the folder does not record its own."""
    path = Path(path)
    if not path.exists():
        raise EvalError(f"candidate {path} does not exist")
    if (path / "adapter" / "adapter_config.json").is_file():
        return ModelSource(base_dir, path / "adapter", trained_recipe(path) or recipe, merge)
    if (path / "model" / "config.json").is_file():
        return ModelSource(check_model_dir(path / "model"))
    if (path / "adapter_config.json").is_file():
        return ModelSource(base_dir, path, trained_recipe(path.parent) or recipe, merge)
    if (path / "config.json").is_file():
        return ModelSource(check_model_dir(path))
    raise EvalError(
        f"candidate {path} is neither a run folder (with adapter/ or model/), an adapter "
        "folder (adapter_config.json) nor a model folder (config.json)"
    )


def resolve_precision(precision: str, device: str) -> str:
    """``auto``: bf16 where the hardware computes it natively (AVX-512 bf16/AMX CPUs and
    modern GPUs), else fp32."""
    from ladle.device import has_bf16

    if precision != "auto":
        return precision
    return "bf16" if has_bf16(device) else "fp32"


def load_model(
    source: ModelSource,
    *,
    dtype: str = "auto",
    device: torch.device | str = "cpu",
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """Load (model, tokenizer) in eval mode; an adapter is merged into its base."""
    import torch

    device = torch.device(device)
    from transformers.utils import logging as hf_logging

    from ladle.models import load_causal_lm, load_tokenizer

    hf_logging.disable_progress_bar()
    torch_dtype = {
        "auto": torch.float32 if device.type == "cpu" else "auto",
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
    }[dtype]
    tok = load_tokenizer(source.tokenizer_dir, trust_remote_code=trust_remote_code)
    if source.quantized:
        from ladle.errors import TrainError
        from ladle.train.model import load_base

        assert source.trained_with is not None
        # The one definition of how a QLoRA base is loaded (same NF4 weights, same
        # compute dtype) is training's; generation wants the KV cache back on.
        try:
            model: Any = load_base(source.trained_with, source.model_dir, device)
        except TrainError as e:
            raise ModelError(str(e)) from e
        model.config.use_cache = True
    else:
        model = load_causal_lm(
            source.model_dir, trust_remote_code=trust_remote_code, dtype=torch_dtype
        )
    if source.adapter_dir is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, source.adapter_dir)
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot load adapter {source.adapter_dir}: {e}") from e
        if source.merged:
            model = model.merge_and_unload()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not source.quantized:
        model.to(device)  # a 4-bit model was placed by device_map when loaded
    model.eval()
    return model, tok


# ----------------------------------------------------------------------- generation


@dataclass
class Generation:
    """What one contestant produced, in input order."""

    outputs: list[list[str]]
    """outputs[i][j]: sample j of example i (one sample when greedy)."""
    prompt_tokens: np.ndarray
    completion_tokens: np.ndarray
    """Mean over samples, counting the stop token (it is generated and billed)."""
    latency_s: np.ndarray
    """Per example: its batch's wall time split evenly over the batch. A share of a batch,
    not a request's latency: with batch size 1 (the latency pass) it is one."""
    total_s: float
    """Wall time of all batches, plus the one prefill of the shared prefix (and the one
    cast of the weights to bf16)."""
    precision: str
    prefix_tokens: int = 0
    """Leading prompt tokens prefilled once for all rows (0: every prompt in full). A
    request's latency then excludes them, as on a server whose prefix cache holds them."""


def left_pad(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as one left-padded ``[len(rows), longest]`` batch and its mask."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids, mask


def _cut(tokens: list[int], stops: set[int]) -> tuple[list[int], int]:
    """Tokens before the first stop token, and the count generated including it."""
    for i, t in enumerate(tokens):
        if t in stops:
            return tokens[:i], i + 1
    return tokens, len(tokens)


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    spec: GenerationSpec,
    *,
    seed: int = 0,
    precision: str = "auto",
) -> Generation:
    """Generate answers for rendered ``prompts`` in length-sorted, left-padded batches,
    with the prompts' shared token prefix prefilled once (``spec.prefix_cache``)."""
    import contextlib

    import torch
    from transformers import GenerationConfig

    from ladle.evaluate.casting import bf16_linear_weights
    from ladle.evaluate.prefix import prefill_prefix

    device = str(next(model.parameters()).device.type)
    precision = resolve_precision(precision, device)
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if any(len(e) == 0 for e in encoded):
        raise EvalError("an eval prompt rendered to zero tokens")
    stops = stop_token_ids(tokenizer)
    pad_id = int(tokenizer.pad_token_id)
    n_ret = spec.num_samples
    config = GenerationConfig(
        max_new_tokens=spec.max_new_tokens,
        do_sample=spec.do_sample,
        temperature=spec.temperature if spec.do_sample else None,
        top_p=spec.top_p if spec.do_sample else None,
        top_k=None,
        num_return_sequences=n_ret,
        eos_token_id=stops,
        pad_token_id=pad_id,
        use_cache=True,
    )
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    outputs: list[list[str]] = [[] for _ in encoded]
    completion = np.zeros(len(encoded))
    latency = np.zeros(len(encoded))
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if precision == "bf16":  # weights cast once, not at every step (casting.py)
            stack.enter_context(bf16_linear_weights(model))
        stack.enter_context(torch.inference_mode())
        if precision == "bf16":
            stack.enter_context(torch.autocast(device_type=device, dtype=torch.bfloat16))
        prefix = prefill_prefix(model, encoded) if spec.prefix_cache else None
        total = time.perf_counter() - t0  # the casts and the shared prefix's one prefill
        skip = prefix.length if prefix is not None else 0
        for start in range(0, len(order), spec.batch_size):
            batch = order[start : start + spec.batch_size]
            ids, mask = left_pad([encoded[i][skip:] for i in batch], pad_id)
            t0 = time.perf_counter()
            ids, mask = ids.to(device), mask.to(device)
            extra: dict[str, Any] = {}
            if prefix is not None:
                ids, mask, extra = prefix.layout(ids, mask, n_ret)
            out = model.generate(
                input_ids=ids, attention_mask=mask, generation_config=config, **extra
            )
            dt = time.perf_counter() - t0
            total += dt
            new = out[:, ids.shape[1] :].tolist()
            for k, i in enumerate(batch):
                counts = []
                for j in range(n_ret):
                    toks, count = _cut(new[k * n_ret + j], set(stops))
                    outputs[i].append(tokenizer.decode(toks, skip_special_tokens=True))
                    counts.append(count)
                completion[i] = float(np.mean(counts))
                latency[i] = dt / len(batch)
    return Generation(
        outputs=outputs,
        prompt_tokens=np.array([len(e) for e in encoded], dtype=np.float64),
        completion_tokens=completion,
        latency_s=latency,
        total_s=total,
        precision=precision,
        prefix_tokens=skip,
    )
