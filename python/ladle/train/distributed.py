"""Several processes: the same ``ladle train`` under ``torchrun`` or ``accelerate launch``.

Both launchers export ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR/PORT``;
Ladle reads them, joins the process group (NCCL on GPUs, gloo on CPU) and either wraps
the model in DistributedDataParallel (every rank holds all weights) or, with
``train.fsdp: true`` (or an accelerate config with ``distributed_type: FSDP``), shards
weights, gradients and optimizer state with FSDP2 (``fully_shard``: one unit per decoder
layer plus the root). Data is not split by a sampler: every rank computes the same step
plan and takes its own micro-batches from it (disjoint by construction), and only rank 0
writes the run folder.

Under FSDP, checkpoints and the final adapter/model hold full (unsharded) tensors
gathered from all ranks, so a run's output does not depend on how it was sharded; a
resume still needs the same number of processes (the step plan deals micro-batches per
rank). QLoRA with FSDP is refused: it needs bitsandbytes' ``bnb_4bit_quant_storage``
equal to the compute dtype (bf16) on GPUs, a setting peft documents but that this
project cannot test without GPUs. DeepSpeed launches are refused.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ladle.errors import TrainError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    owns_group: bool = False  # we called init_process_group, so we tear it down
    fsdp: bool = False  # weights sharded with FSDP2 (else DDP replicas)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum over ranks (float64, so the logged loss is rank-order exact)."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` on every rank (small objects: RNG states, errors)."""
        if self.world == 1:
            return [obj]
        # Tensors inside are sent as torch.save bytes: all_gather_object's own pickling of
        # tensors fails on gloo (torch 2.15: UntypedStorage has no dtype).
        buf = io.BytesIO()
        torch.save(obj, buf)
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, buf.getvalue())
        return [torch.load(io.BytesIO(b), weights_only=True) for b in out]

    def broadcast(self, obj: Any) -> Any:
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def init(device: torch.device, fsdp: bool = False) -> Dist:
    """Join the launcher's process group, if there is one. ``fsdp``: the recipe's
    ``train.fsdp`` (an accelerate FSDP launch turns it on too)."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        raise TrainError(
            "DeepSpeed launches are not supported: Ladle shards with FSDP2 instead; set "
            "train.fsdp: true and launch with torchrun or accelerate launch --multi_gpu"
        )
    fsdp = fsdp or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        owns = True
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), owns_group=owns, fsdp=fsdp)


T = TypeVar("T")


def main_first(d: Dist, work: Callable[[], T]) -> T:
    """Run ``work`` on rank 0, then on the other ranks.

    For cached preparation (``ladle prep``): rank 0 builds the cache entry while the others
    wait, then they find it complete. Run at once, each rank would build its own copy and
    the later one would rename the earlier one's finished entry away while another rank
    reads it. When rank 0 fails, the others stop with an error instead of waiting forever.
    """
    if d.world == 1:
        return work()
    if d.main:
        try:
            result = work()
        except BaseException as e:
            d.broadcast(f"{type(e).__name__}: {e}")
            raise
        d.broadcast(None)
        return result
    failed = d.broadcast(None)
    if failed is not None:
        raise TrainError(f"rank 0 failed while preparing the data ({failed}); see its output")
    return work()


def shard(core: Any, d: Dist) -> Any:
    """FSDP2 in place: each decoder layer is one unit (its weights gathered just for its
    forward and backward), the root holds the embeddings, final norm and output layer.
    Must run before the optimizer is built: parameters become sharded DTensors."""
    if not d.fsdp or d.world == 1:
        return core
    from torch.distributed.fsdp import fully_shard

    lm = core.get_base_model() if hasattr(core, "get_base_model") else core
    layer_types = set(getattr(lm, "_no_split_modules", None) or ())
    layers = [m for m in core.modules() if type(m).__name__ in layer_types]
    if not layers:
        raise TrainError(f"train.fsdp: cannot find the decoder layers of {type(lm).__name__}")
    for layer in layers:
        fully_shard(layer)
    fully_shard(core)
    return core


def is_sharded(t: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor on every rank (a collective for sharded ones: call on all ranks)."""
    return t.full_tensor() if is_sharded(t) else t  # type: ignore[attr-defined]


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """Full CPU copies of the trainable weights (all ranks must call it under FSDP)."""
    return {
        n: full_tensor(p.detach()).to("cpu", copy=True)
        for n, p in model.named_parameters()
        if p.requires_grad
    }


def load_trainable(model: Any, weights: dict[str, torch.Tensor]) -> None:
    """Copy full weights into a live model, sharding them where its parameters are."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            p = params[name]
            if is_sharded(p):
                from torch.distributed.tensor import distribute_tensor

                value = distribute_tensor(value.to(p.dtype), p.device_mesh, p.placements)
            p.copy_(value)


def optimizer_state(model: Any, optimizer: Any, d: Dist) -> dict[str, Any]:
    """The optimizer state to checkpoint: full tensors under FSDP (rank 0 holds them)."""
    if not d.fsdp or d.world == 1:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer, options=options)


def load_optimizer_state(model: Any, optimizer: Any, state: dict[str, Any], d: Dist) -> None:
    if not d.fsdp or d.world == 1:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True)
    set_optimizer_state_dict(model, optimizer, optim_state_dict=state, options=options)


@contextlib.contextmanager
def no_sync(model: Any, skip: bool) -> Iterator[None]:
    """Accumulate gradients locally (no all-reduce / reduce-scatter) while ``skip``."""
    if not skip:
        yield
    elif hasattr(model, "no_sync"):  # DDP
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def wrap(model: Any, d: Dist, device: torch.device) -> Any:
    """DistributedDataParallel around the model when there are several processes (FSDP:
    the model was sharded in place by ``shard``)."""
    if d.world == 1 or d.fsdp:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
