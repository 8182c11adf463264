"""The DDP wrapper a multi-process run trains, the synced TGO schedule and stats reduction."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP

from .context import DistContext, current, seed_rank
from .loader import EpochLoader, ShardWeight
from .syncbn import convert_sync_batchnorm
from ..randomness import capture_rng, restore_rng


class _Steps(nn.Module):
    """``forward = model.forward_steps``, so DDP sees the per-step logits the loss uses."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_steps(x)  # type: ignore[operator]  # any model with forward_steps


def _weighted_sum_hook(state, bucket):  # no annotations: DDP checks them and ours are strings here
    """DDP communication hook ``(ShardWeight, GradBucket) -> Future``: ``sum_r w_r * grad_r``
    (instead of DDP's plain mean over ranks)."""
    buf = bucket.buffer()
    buf.mul_(state.weight)
    fut = dist.all_reduce(buf, async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


class DistributedModel(nn.Module):
    """What the :class:`~spikeguard.training.Trainer` trains in a multi-process run.

    ``forward_steps`` (the forward the loss is computed on) goes through
    ``DistributedDataParallel`` and so synchronises gradients; ``forward`` (what strategies
    use to craft adversarial examples with the bare model) does not. Every other attribute
    is the wrapped model's.
    """

    def __init__(self, model: nn.Module, ddp: nn.Module, shard: ShardWeight) -> None:
        super().__init__()
        self.module = model
        object.__setattr__(self, "ddp", ddp)  # not a submodule: parameters stay listed once
        self.shard = shard

    def forward_steps(self, x: Tensor) -> Tensor:
        return self.ddp(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("module")
            if inner is None:  # not initialised yet (e.g. while unpickling)
                raise
            return getattr(inner, name)


class _SyncedSchedule:
    """A lambda schedule whose feedback update sees the global batch's signal (constraint or share)."""

    def __init__(self, inner: Any, ctx: DistContext, shard: ShardWeight) -> None:
        self._inner, self._ctx, self._shard = inner, ctx, shard

    def update(self, constraint_value: float) -> None:
        (v,) = self._ctx.all_reduce_sum([self._shard.weight * float(constraint_value)])
        self._inner.update(v)

    def __call__(self, epoch: float) -> float:
        return self._inner(epoch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def prepare_model(
    model: nn.Module,
    schedule: Any = None,
    sync_bn: bool = False,
    ctx: DistContext | None = None,
    shard: ShardWeight | None = None,
) -> tuple[nn.Module, Any]:
    """``(model to train, TGO schedule to use)`` for this process group.

    One process: ``(model, schedule)`` unchanged. Several: ``model`` wrapped in a
    :class:`DistributedModel` (BatchNorm converted to :class:`SyncBatchNorm` first when
    ``sync_bn``), and a dual-ascent ``schedule`` wrapped so its update sees the constraint of
    the global batch (pass the returned schedule to the :class:`~spikeguard.tgo.ThresholdGuard`).
    ``model`` must already be on its device.
    """
    ctx = ctx or current()
    if not ctx.is_distributed:
        return model, schedule

    shard = shard or ShardWeight(ctx.world_size)
    if sync_bn:
        convert_sync_batchnorm(model, shard)
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    # DDP notes that a conv with one input channel yields grads strided unlike its buckets: a
    # copy per step, not an error; keep it out of the user's console
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    ddp = DDP(_Steps(model), device_ids=[dev.index] if dev.type == "cuda" else None)
    ddp.register_comm_hook(shard, _weighted_sum_hook)
    if schedule is not None and getattr(schedule, "kind", "") in ("dual", "share"):
        schedule = _SyncedSchedule(schedule, ctx, shard)
    return DistributedModel(model, ddp, shard), schedule


def merge_epoch_stats(stats: Any, seen: int, partial: dict | None) -> Any:
    """``stats.merge(partial, seen)`` (see :meth:`~spikeguard.training.EpochStats.merge`)."""
    return stats.merge(partial, seen)


def reduce_epoch_stats(stats: Any, seen: int, ctx: DistContext | None = None) -> Any:
    """Average an :class:`~spikeguard.training.EpochStats` over all ranks: its ``REDUCIBLE``
    fields sample-weighted (a NaN on one rank is left out), ``seconds`` the slowest rank's."""
    ctx = ctx or current()
    if not ctx.is_distributed:
        return stats
    keys = stats.REDUCIBLE
    vals = [getattr(stats, k) for k in keys]
    ok = [0.0 if math.isnan(v) else 1.0 for v in vals]
    sums = ctx.all_reduce_sum([seen] + [(0.0 if math.isnan(v) else v) * seen for v in vals] + [o * seen for o in ok])
    total = sums[0]
    secs = max(ctx.all_gather_object(float(stats.seconds)))
    for i, k in enumerate(keys):
        denom = sums[1 + len(keys) + i]
        setattr(stats, k, sums[1 + i] / denom if denom else float("nan"))
    stats.seconds = secs
    stats.images_per_s = total / secs if secs > 0 else float("nan")
    return stats


class DistributedTraining:
    """Everything a training run needs from its process group, so the trainer needs none of it.

    Wraps a single-process :class:`~spikeguard.training.Trainer` run the way
    :mod:`spikeguard.evaluation.sharded` wraps the evaluation engine: the model (DDP), the
    schedule (global dual ascent), the batches (one shard of each global batch), the epoch's
    stats (reduced over ranks) and the RNG states of a checkpoint (gathered from every rank).
    With a one-process context every method is the identity.

    Args:
        ctx: the process group (default: :func:`current`).
        sync_bn: convert BatchNorm to :class:`SyncBatchNorm` in :meth:`prepare`.
    """

    def __init__(self, ctx: DistContext | None = None, sync_bn: bool = False) -> None:
        self.ctx = ctx or current()
        self.sync_bn = bool(sync_bn)
        self.shard = ShardWeight(self.ctx.world_size)

    def prepare(self, model: nn.Module, schedule: Any = None) -> tuple[nn.Module, Any]:
        """See :func:`prepare_model`."""
        return prepare_model(model, schedule, sync_bn=self.sync_bn, ctx=self.ctx, shard=self.shard)

    def loader(
        self,
        ds: Any,
        batch_size: int,
        generator: torch.Generator,
        augment: Any = None,
        device: torch.device | str = "cpu",
        stop: Any = None,
    ) -> Any:
        """A factory ``(start, order_state) -> EpochLoader`` of this rank's batches; ``stop()`` is
        agreed by all ranks (any rank stopping stops all at the same batch)."""
        ctx = self.ctx
        agreed = (lambda: ctx.any(stop())) if stop is not None else None

        def make(start: int = 0, order_state: Tensor | None = None) -> EpochLoader:
            return EpochLoader(
                ds,
                batch_size,
                generator,
                augment,
                device,
                ctx,
                start=start,
                order_state=order_state,
                stop=agreed,
                weight=self.shard,
            )

        return make

    def reduce(self, stats: Any, loader: Any) -> Any:
        """The epoch's stats over all ranks (see :func:`reduce_epoch_stats`)."""
        return reduce_epoch_stats(stats, loader.local_samples, self.ctx)

    def seed(self, seed: int) -> None:
        """Give this rank its own random streams (rank 0 keeps the single-process ones)."""
        seed_rank(seed, self.ctx)

    def restore_rng(self, state: Any, generator: torch.Generator, seed: int) -> None:
        """Put this rank's random streams where the :class:`~spikeguard.training.TrainState` left them.

        Resumed with another number of processes, every rank takes rank 0's streams (same data
        order) and ranks 1.. are re-seeded from ``(seed, epoch)``.
        """
        ranks = [state.rng] + list(state.rng_ranks)
        if len(ranks) == self.ctx.world_size:
            restore_rng(ranks[self.ctx.rank], generator)
            return
        restore_rng(state.rng, generator)
        seed_rank(seed + int(state.epoch) + 1, self.ctx)
        if self.ctx.is_main:
            warnings.warn(
                f"resuming a {len(ranks)}-process run with {self.ctx.world_size} processes: the data "
                "order is kept but the per-rank random streams are new",
                stacklevel=3,
            )

    def gather_rng(self, generator: torch.Generator, epoch_order: Tensor | None = None) -> list[dict]:
        """Every rank's random streams, rank 0's first (what a checkpoint saves for an exact resume).

        ``epoch_order``: save it as the data generator's state (a stop before the epoch's first
        batch: the epoch's permutation must be drawn again on resume).
        """
        own = capture_rng(generator)
        if epoch_order is not None:
            own["data"] = epoch_order
        return self.ctx.all_gather_object(own)
