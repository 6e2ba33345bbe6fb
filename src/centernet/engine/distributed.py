"""Single-process or torchrun/DistributedDataParallel execution, behind one small object."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from centernet.config import ConfigError
from centernet.models.predictor import resolve_device

logger = logging.getLogger("centernet.distributed")


def process_rank() -> int:
    """This process's rank under ``torchrun`` (``RANK``), 0 without a launcher."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def check_device(device: str) -> torch.device:
    """``train.device`` resolved as ``val`` and ``predict`` resolve ``--device`` (``models.predictor.resolve_device``):
    a CUDA device asked for without a GPU (or an unknown name) is one ``ConfigError`` line, not a CUDA traceback."""
    try:
        return resolve_device(str(device), fallback="train.device=cpu (or auto)")
    except ValueError as err:
        raise ConfigError(f"train.device: {err}") from None


def quiet_other_ranks() -> None:
    """One voice per job: on every rank but 0 the ``centernet`` loggers keep only warnings and errors
    (epoch lines, data summaries and progress are rank 0's alone)."""
    if process_rank() != 0:
        logging.getLogger("centernet").setLevel(logging.WARNING)


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
        use_cuda = check_device(device).type == "cuda"
        if use_cuda:
            # One GPU per process under torchrun; otherwise the one the user named (default 0).
            index = local_rank if world_size > 1 else (torch.device(device).index or 0 if device != "auto" else 0)
            torch.cuda.set_device(index)
            resolved = torch.device("cuda", index)
        else:
            resolved = torch.device("cpu")
        if (world_size > 1 or launched) and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        quiet_other_ranks()
        ctx = cls(rank, world_size, local_rank, resolved, process_group=dist.is_initialized())
        ctx.log_setup()
        return ctx

    def log_setup(self) -> None:
        """Rank 0 logs the backend, the world size and every rank's device (all ranks take part)."""
        if not self.enabled:
            logger.info("device: %s (one process; torchrun --nproc_per_node=N runs N)", self.device)
            return
        devices = self.gather(str(self.device))
        logger.info(
            "distributed: backend %s, world size %d, devices %s",
            dist.get_backend(),
            self.world_size,
            ", ".join(f"rank {rank} {device}" for rank, device in enumerate(devices)),
        )

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
