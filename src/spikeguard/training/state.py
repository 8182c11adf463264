"""Where a training run stands: :class:`TrainState`, saved with every checkpoint.

The state is what an exact resume needs: completed epochs, the batch reached inside the
next one (a checkpoint taken on SIGTERM/SIGINT), every random stream the loop draws from,
the epoch's data order and the averages of its finished part, and the optimiser, scheduler
and TGO schedule states. Its :meth:`TrainState.to_dict` layout is the ``state.json`` /
``state.safetensors`` layout of :mod:`spikeguard.checkpoint`, which saves and loads it
(:func:`~spikeguard.checkpoint.save_train_state`, :func:`~spikeguard.checkpoint.load_train_state`) (unchanged since format 1, so
runs written before keep resuming).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from ..randomness import capture_rng, restore_rng


@dataclass
class TrainState:
    """Progress of a training run.

    Attributes:
        epoch: completed epochs.
        batch: batches finished of epoch ``epoch`` (0 at an epoch boundary).
        elapsed: training seconds so far.
        rng: this process's random streams (:func:`capture_rng`); ``rng_ranks``: those of
            ranks 1.. of a multi-process run.
        epoch_order: the data generator's state at the start of epoch ``epoch`` (its
            permutation is drawn from it on resume).
        partial: ``{"stats": EpochStats.as_dict(), "seen": samples}`` of the finished part
            of epoch ``epoch``.
        optimizer, scheduler, guard: their ``state_dict`` (see :meth:`Trainer.state_dict`).
        stopped: set by :meth:`Trainer.fit` when the loader stopped early (not saved).
    """

    epoch: int = 0
    batch: int = 0
    elapsed: float = 0.0
    rng: dict | None = None
    rng_ranks: list = field(default_factory=list)
    epoch_order: Tensor | None = None
    partial: dict | None = None
    optimizer: dict | None = None
    scheduler: dict | None = None
    guard: dict | None = None
    stopped: bool = False

    def to_dict(self) -> dict:
        """The checkpoint layout (``state.json``)."""
        d: dict[str, Any] = {
            "epoch": self.epoch,
            "elapsed": self.elapsed,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "guard": self.guard,
            "rng": self.rng,
        }
        if self.rng_ranks:
            d["rng_ranks"] = list(self.rng_ranks)
        if self.batch:
            d.update(batch=self.batch, epoch_order=self.epoch_order, partial=self.partial)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        """Read the checkpoint layout (keys written by older versions, e.g. ``strategy``, are ignored)."""
        return cls(
            epoch=int(d["epoch"]),
            batch=int(d.get("batch", 0)),
            elapsed=float(d.get("elapsed", 0.0)),
            rng=d.get("rng"),
            rng_ranks=list(d.get("rng_ranks") or []),
            epoch_order=d.get("epoch_order"),
            partial=d.get("partial"),
            optimizer=d.get("optimizer"),
            scheduler=d.get("scheduler"),
            guard=d.get("guard"),
        )


__all__ = ["TrainState", "capture_rng", "restore_rng"]
