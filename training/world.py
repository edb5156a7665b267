"""The processes of a torch.distributed run, as the trainer sees them (one process when not initialised)."""
from __future__ import annotations

import torch


class World:
    """Rank and size of a torch.distributed run (1 process when not initialised)."""

    def __init__(self):
        dist = torch.distributed
        self.active = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.active else 0
        self.size = dist.get_world_size() if self.active else 1

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """Concatenate equally sized [b, …] tensors of all ranks in rank order."""
        if not self.active:
            return local
        parts = [torch.empty_like(local) for _ in range(self.size)]
        torch.distributed.all_gather(parts, local.contiguous())
        return torch.cat(parts)

    def total(self, count: int) -> int:
        """The sum of an integer over all ranks (every rank calls it: a collective)."""
        if not self.active:
            return int(count)
        value = torch.tensor([int(count)], dtype=torch.int64)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.SUM)
        return int(value)

    def mean(self, value: float) -> float:
        """The mean of a float over all ranks (every rank calls it: a collective)."""
        if not self.active:
            return float(value)
        tensor = torch.tensor([float(value)], dtype=torch.float64)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return float(tensor) / self.size

    def average_gradients(self, parameters) -> None:
        if not self.active:
            return
        for p in parameters:
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.SUM)
                p.grad /= self.size


__all__ = ["World"]
