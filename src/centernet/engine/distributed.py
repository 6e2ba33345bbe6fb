"""Single-process or torchrun/DistributedDataParallel execution, behind one small object."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistributedContext:
    """Rank, world size and device of this process.

    Under ``torchrun`` (``WORLD_SIZE`` and ``MASTER_ADDR`` in the environment, one process
    included) the process group is created with NCCL on CUDA and gloo on CPU, and training wraps
    the model in DistributedDataParallel; without a launcher everything is a no-op for one process.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    process_group: bool = False  # a process group is initialised (always with world size > 1)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or self.process_group

    @classmethod
    def from_env(cls, device: str = "auto") -> DistributedContext:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        launched = "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
        if use_cuda:
            # One GPU per process under torchrun; otherwise the one the user named (default 0).
            index = local_rank if world_size > 1 else (torch.device(device).index or 0 if device != "auto" else 0)
            torch.cuda.set_device(index)
            resolved = torch.device("cuda", index)
        else:
            resolved = torch.device("cpu")
        if (world_size > 1 or launched) and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        return cls(rank, world_size, local_rank, resolved, process_group=dist.is_initialized())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (on every rank)."""
        if not self.enabled:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world_size

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
