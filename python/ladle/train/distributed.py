"""Several processes: the same ``ladle train`` under ``torchrun`` or ``accelerate launch``.

Both launchers export ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR/PORT``;
Ladle reads them, joins the process group (NCCL on GPUs, gloo on CPU) and wraps the
model in DistributedDataParallel. Data is not split by a sampler: every rank computes
the same step plan and takes its own micro-batches from it (disjoint by construction),
and only rank 0 writes the run folder.

Multi-GPU with FSDP (sharded weights, for models that do not fit one GPU): Ladle's loop
is DDP-only today. For FSDP, train through ``accelerate`` with an FSDP config, e.g.::

    # fsdp.yaml
    compute_environment: LOCAL_MACHINE
    distributed_type: FSDP
    num_processes: 8
    mixed_precision: bf16
    fsdp_config:
      fsdp_version: 2
      fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
      fsdp_state_dict_type: SHARDED_STATE_DICT
      fsdp_cpu_ram_efficient_loading: true
      fsdp_activation_checkpointing: true

    accelerate launch --config_file fsdp.yaml -m ladle train recipe.yaml

with ``train.adapter: lora`` (peft documents FSDP + LoRA; QLoRA needs
``bnb_4bit_quant_storage`` equal to the compute dtype, e.g. bf16). Ladle refuses
``distributed_type: FSDP`` until that path is tested, rather than run it half-supported.
"""

from __future__ import annotations

import os
from collections.abc import Callable
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
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def init(device: torch.device) -> Dist:
    """Join the launcher's process group, if there is one."""
    if any(
        os.environ.get(k, "").lower() == "true"
        for k in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED")
    ):
        raise TrainError(
            "Ladle's loop runs DDP; FSDP/DeepSpeed launches are documented in "
            "ladle.train.distributed but not supported yet"
        )
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
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), owns_group=owns)


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


def wrap(model: Any, d: Dist, device: torch.device) -> Any:
    """DistributedDataParallel around the model when there are several processes."""
    if d.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
