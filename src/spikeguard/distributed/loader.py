"""Sharded training batches: every rank draws the global batch and keeps its contiguous share."""

from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
from torch import Tensor

from ..errors import ConfigError
from .context import DistContext, current


class ShardWeight:
    """This rank's share ``w_r = b_r / B`` of the current global batch (read by the DDP hook and SyncBN)."""

    def __init__(self, world_size: int = 1) -> None:
        self.weight = 1.0 / max(1, world_size)
        self.world_size = world_size


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous share of ``n`` items (sizes differ by at most 1)."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class EpochLoader:
    """One epoch of training batches for this rank (the distributed twin of :func:`spikeguard.data.batches`).

    With one process it yields exactly what ``batches(ds, B, shuffle=True, generator, augment)``
    yields. With ``W`` processes every rank draws the same permutation and augmentation for
    the global batch and keeps its contiguous shard.

    Args:
        ds: the training split.
        batch_size: the *global* batch size.
        generator: data generator shared (in state) by all ranks.
        augment: ``augment(x, generator)`` applied to the global batch.
        device: where batches go.
        ctx: distributed context.
        start: skip the first ``start`` batches (resume inside an epoch); ``generator`` must
            then hold the state it had after those batches.
        order_state: ``generator`` state at the start of the epoch (resume inside an epoch:
            the permutation is drawn from it; ``generator`` itself is left as it is).
        stop: called before each batch; returning True ends the epoch early (agreed by all ranks).
        weight: receives ``b_r / B`` for each batch.

    Attributes:
        position: global batches finished in this epoch; ``samples``: their samples;
        ``stopped``: the epoch ended early on ``stop``; ``order_state``: see above.
    """

    def __init__(
        self,
        ds,
        batch_size: int,
        generator: torch.Generator,
        augment: Callable | None = None,
        device: torch.device | str = "cpu",
        ctx: DistContext | None = None,
        shuffle: bool = True,
        start: int = 0,
        order_state: Tensor | None = None,
        stop: Callable[[], bool] | None = None,
        weight: ShardWeight | None = None,
    ) -> None:
        self.ctx = ctx or current()
        if batch_size < self.ctx.world_size:
            raise ConfigError(f"optim.batch_size {batch_size} is smaller than the {self.ctx.world_size} processes")
        self.ds, self.batch_size, self.generator = ds, int(batch_size), generator
        self.augment, self.device, self.stop, self.weight = augment, device, stop, weight
        now = generator.get_state()
        if order_state is not None:
            generator.set_state(order_state)
        self.order_state = generator.get_state()  # saved in mid-epoch checkpoints
        n = len(ds)
        self.order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        if order_state is not None:
            generator.set_state(now)
        self.position = int(start)  # global batches finished
        self.samples = 0  # global samples of the finished batches
        self.local_samples = 0  # this rank's share of them
        self.last_size = 0
        self.stopped = False
        stop_at = n
        if self.ctx.is_distributed and n % self.batch_size and n % self.batch_size < self.ctx.world_size:
            # a last batch with fewer samples than ranks would leave a rank without data;
            # drop it (all ranks alike)
            stop_at = n - n % self.batch_size
        self.stop_at = stop_at
        self.steps = math.ceil(stop_at / self.batch_size)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        ctx, B = self.ctx, self.batch_size
        for i in range(self.position * B, self.stop_at, B):
            if self.stop is not None and self.stop():
                self.stopped = True
                return
            idx = self.order[i : min(i + B, self.stop_at)]
            if ctx.is_distributed:
                x = self.ds.float_images(idx)
                if self.augment is not None:
                    x = self.augment(x, self.generator)
                s, e = shard_bounds(len(idx), ctx.rank, ctx.world_size)
                x, y = x[s:e].to(self.device, non_blocking=True), self.ds.labels[idx[s:e]].to(self.device)
                if self.weight is not None:
                    self.weight.weight = (e - s) / len(idx)
            else:
                x = self.ds.float_images(idx).to(self.device, non_blocking=True)
                y = self.ds.labels[idx].to(self.device, non_blocking=True)
                if self.augment is not None:
                    x = self.augment(x, self.generator)
            self.last_size = len(idx)
            yield x, y
            self.position += 1
            self.samples += len(idx)
            self.local_samples += int(y.shape[0])
