"""Training under ``torchrun`` with torch's own engine: a gloo process group (the trainer runs on the CPU),
DistributedDataParallel, each rank training on its slice of the global batch, rank 0 alone writing.

``--batch-size`` is the global batch: every rank draws the same global batch from the same seeded
generator and keeps its slice, and DDP averages the gradients, so N ranks follow the steps of one
process (up to the order of floating-point sums; dropout draws differ per rank). Without
``WORLD_SIZE`` > 1 in the environment (no torchrun) nothing here does anything.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import Tensor, nn

from edgeformer.errors import CardError

Sampler = Callable[[torch.Generator, int], dict[str, Tensor]]


def world() -> tuple[int, int]:
    """(rank, number of ranks); joins torchrun's process group on first use."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")  # the trainer runs on the CPU; NCCL comes with CUDA placement
    return dist.get_rank(), dist.get_world_size()


def barrier() -> None:
    if world()[1] > 1:
        torch.distributed.barrier()


def shard(sample: Sampler, batch_size: int) -> Sampler:
    """The sampler drawing the global batch and keeping this rank's rows."""
    rank, size = world()
    if size == 1:
        return sample
    if batch_size % size:
        raise CardError(f"the global batch size {batch_size} does not split over {size} ranks; give a multiple")

    def slice_of(gen: torch.Generator, global_batch: int) -> dict[str, Tensor]:
        part = global_batch // size
        return {k: v[rank * part : (rank + 1) * part] for k, v in sample(gen, global_batch).items()}

    return slice_of


def parallel(model: nn.Module) -> nn.Module:
    """The model wrapped in DistributedDataParallel under torchrun, else the model itself."""
    if world()[1] == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model)


def finish() -> None:
    if world()[1] > 1:
        torch.distributed.destroy_process_group()
