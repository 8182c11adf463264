"""The training loop: a strategy's loss + the optional TGO term, SGD + cosine schedule."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Protocol

import torch
from torch import Tensor, nn

from ..errors import SpikeguardError
from ..neurons import record_potentials
from ..perf import autocast, fused_optimizer_kw, resolve_precision
from ..tgo import ThresholdGuard, near_threshold_share
from .state import TrainState
from .strategies import BPTT, Strategy


@dataclass
class EpochStats:
    """Averages over one epoch."""

    epoch: int
    loss: float
    task_loss: float
    constraint: float
    lam: float
    accuracy: float
    near_threshold: float
    seconds: float
    images_per_s: float

    #: the sample-weighted averages: what a multi-process run reduces over ranks and a resumed
    #: epoch merges with its first part (``seconds`` adds up, ``images_per_s`` follows)
    REDUCIBLE: ClassVar[tuple[str, ...]] = ("loss", "task_loss", "constraint", "lam", "accuracy", "near_threshold")

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    as_dict = to_dict  # the name before 0.2 (result objects now all use to_dict)

    def merge(self, partial: dict | None, seen: int) -> EpochStats:
        """Combine these stats of a resumed epoch's remainder (``seen`` samples) with ``partial``,
        ``{"stats": as_dict(), "seen": samples}`` of the part before the interruption (None: as is)."""
        if not partial:
            return self
        before, n0 = partial["stats"], int(partial["seen"])
        total = n0 + seen
        for k in self.REDUCIBLE:
            a, b = float(before.get(k, float("nan"))), float(getattr(self, k))
            if math.isnan(a) or n0 == 0:
                continue
            setattr(self, k, a if math.isnan(b) or seen == 0 else (a * n0 + b * seen) / total)
        self.seconds = float(before.get("seconds", 0.0)) + self.seconds
        self.images_per_s = total / self.seconds if self.seconds > 0 else float("nan")
        return self


class EpochLoader(Protocol):
    """One epoch of ``(images, labels)`` batches that may stop early (see
    :class:`spikeguard.distributed.EpochLoader`)."""

    position: int  # batches finished in the epoch (including skipped ones on resume)
    samples: int  # samples of the batches this loader yielded
    stopped: bool  # the epoch ended early
    order_state: Tensor  # the data generator's state the epoch's order was drawn from

    def __iter__(self) -> Any: ...


def make_sgd(
    model: nn.Module,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    epochs: int = 1,
    steps_per_epoch: int = 1,
    fused: bool = False,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with cosine annealing stepped per batch (the paper: SGD, lr 0.1, cosine).

    ``fused``: torch's fused SGD kernel where the parameters' device supports it (same update)."""
    # parameters flagged ``no_weight_decay`` (e.g. StoG keep probabilities, which carry their own
    # prior) are excluded from weight decay
    params = list(model.parameters())
    no_decay = [p for p in params if getattr(p, "no_weight_decay", False)]
    groups: list[dict] = [{"params": [p for p in params if not getattr(p, "no_weight_decay", False)]}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    opt = torch.optim.SGD(
        groups, lr=lr, momentum=momentum, weight_decay=weight_decay, **fused_optimizer_kw(params, fused)
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    return opt, sched


class Trainer:
    """Runs epochs of ``loss = strategy(batch) + tgo(potentials, epoch)``.

    Args:
        model: a :class:`~spikeguard.models.SpikingModel`.
        optimizer, scheduler: scheduler is stepped once per batch.
        strategy: turns a batch into a task loss (default :class:`BPTT`).
        guard: the TGO term, or ``None`` for no constraint.
        delta_stat: margin used for the logged near-threshold share (defaults to the guard's).
        grad_clip: optional max gradient norm.
        precision: ``float32`` (default) or ``bf16``: the forward and the loss run under bf16
            autocast (the LIF state stays float32 inside the fused kernels; weights, gradients
            and the optimizer stay float32).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        strategy: Strategy | None = None,
        guard: ThresholdGuard | None = None,
        delta_stat: float | None = None,
        grad_clip: float | None = None,
        precision: str = "float32",
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.strategy = strategy or BPTT()
        self.guard = guard
        self.delta_stat = delta_stat if delta_stat is not None else (guard.delta if guard else 0.5)
        self.v_threshold = guard.v_threshold if guard else 1.0
        self.grad_clip = grad_clip
        self.precision = resolve_precision(precision)

    def state_dict(self) -> dict:
        """Optimiser, scheduler and TGO schedule states (what :class:`TrainState` saves)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "guard": self.guard.state_dict() if self.guard is not None else None,
        }

    def load_state_dict(self, state: TrainState) -> None:
        """Restore what :meth:`state_dict` saved."""
        if state.optimizer is not None:
            self.optimizer.load_state_dict(state.optimizer)
        if self.scheduler is not None and state.scheduler is not None:
            self.scheduler.load_state_dict(state.scheduler)
        if self.guard is not None and state.guard is not None:
            self.guard.load_state_dict(state.guard)

    def fit(
        self,
        loader: Callable[[int, Tensor | None], EpochLoader],
        state: TrainState,
        epochs: int,
        steps: int | None = None,
        reduce: Callable[[EpochStats, Any], EpochStats] | None = None,
        on_batch: Callable[[int, Any, dict[str, float]], None] | None = None,
        on_epoch: Callable[[TrainState, EpochStats, float], None] | None = None,
        on_epoch_end: Callable[[], None] | None = None,
    ) -> TrainState:
        """Train from ``state`` to ``epochs`` completed epochs; returns (and updates) ``state``.

        Args:
            loader: ``loader(start, order_state)`` gives one epoch's batches, skipping the first
                ``start`` (a mid-epoch resume, whose permutation is drawn from ``order_state``).
            state: where to start; advanced after every epoch.
            epochs: total epochs.
            steps: batches per epoch (lets lambda advance within the epoch).
            reduce: ``reduce(stats, loader)`` applied to each epoch's stats (e.g. over ranks).
            on_batch: ``(epoch, loader, metrics)`` after every batch.
            on_epoch: ``(state, stats, lr at the epoch's start)`` after every completed epoch.
            on_epoch_end: called when an epoch's batches are done (closes a progress bar).

        If the loader stops early, ``state`` is left at that batch (``batch``, ``epoch_order``,
        ``partial``) with ``stopped`` set, unless nothing was done since ``state`` (then only
        ``stopped`` is set) and the method returns; save the state to resume there.
        """
        start = state.epoch
        for epoch in range(start, epochs):
            first = state.batch if epoch == start else 0
            partial = state.partial if first else None
            ld = loader(first, state.epoch_order if first else None)
            lr = self.optimizer.param_groups[0]["lr"]
            try:
                stats = self.train_epoch(
                    ld,
                    epoch,
                    steps,
                    start=first,
                    # the lambda is called within this iteration only
                    on_batch=None if on_batch is None else (lambda m: on_batch(epoch, ld, m)),  # noqa: B023
                )
            finally:
                if on_epoch_end is not None:
                    on_epoch_end()
            if reduce is not None:
                stats = reduce(stats, ld)
            stats = stats.merge(partial, ld.samples)
            state.elapsed += stats.seconds - (float(partial["stats"].get("seconds", 0.0)) if partial else 0.0)
            if ld.stopped:
                state.stopped = True
                if ld.position or epoch > start:  # else the state on disk (if any) is this one
                    seen = ld.samples + (int(partial["seen"]) if partial else 0)
                    state.epoch, state.batch, state.epoch_order = epoch, ld.position, ld.order_state
                    state.partial = {"stats": stats.as_dict(), "seen": seen}
                return state
            state.epoch, state.batch, state.epoch_order, state.partial = epoch + 1, 0, None, None
            if on_epoch is not None:
                on_epoch(state, stats, lr)
        return state

    def train_step(self, images: Tensor, labels: Tensor, epoch: float) -> dict[str, float]:
        """One optimisation step; returns the batch's scalars."""
        self.model.train()
        begin = getattr(self.strategy, "begin_step", None)
        if begin is not None:
            begin(self.model, epoch)
        with record_potentials(self.model) as rec:
            potentials: list[Tensor] = []

            def forward(x: Tensor) -> Tensor:
                # keep only the potentials of the forward the loss is computed on
                rec.clear()
                out = self.model.forward_steps(x)  # type: ignore[operator]  # any model with forward_steps
                potentials[:] = rec.potentials
                return out

            with autocast(self.precision, images.device):
                out = self.strategy(self.model, images, labels, forward)
        loss = out.loss
        constraint = lam = 0.0
        if self.guard is not None and potentials:
            loss = loss + self.guard(potentials, epoch)
            constraint, lam = self.guard.last_constraint, self.guard.last_lambda
        if not torch.isfinite(loss):
            raise SpikeguardError(
                f"training diverged: loss is {float(loss)} at epoch {epoch:.2f} (lower the learning rate)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        after = getattr(self.strategy, "after_step", None)
        extra = (after(self.model) or {}) if after is not None else {}
        if self.scheduler is not None:
            self.scheduler.step()
        near = near_threshold_share(potentials, self.v_threshold, self.delta_stat) if potentials else float("nan")
        acc = float((out.logits.argmax(1) == labels).float().mean())
        return dict(
            loss=float(loss.detach()),
            task_loss=float(out.loss.detach()),
            constraint=constraint,
            lam=lam,
            accuracy=acc,
            near_threshold=near,
            **out.metrics,
            **extra,
        )

    def train_epoch(
        self,
        loader: Iterable[tuple[Tensor, Tensor]],
        epoch: int,
        steps: int | None = None,
        on_batch: Callable[[dict[str, float]], None] | None = None,
        start: int = 0,
    ) -> EpochStats:
        """Train one epoch; ``steps`` (batches per epoch) lets lambda advance within the epoch.

        ``start``: index of the loader's first batch within the epoch (a run resumed mid-epoch
        passes the batches already done, so lambda's epoch fraction continues exactly).
        """
        sums: dict[str, float] = {}
        n = seen = 0
        t0 = time.perf_counter()
        for i, (x, y) in enumerate(loader, start):
            frac = epoch + (i / steps if steps else 0.0)
            m = self.train_step(x, y, frac)
            b = x.shape[0]
            for k, v in m.items():
                if not math.isnan(v):
                    sums[k] = sums.get(k, 0.0) + v * b
            seen += b
            n += 1  # noqa: SIM113 - batches done in this call; i starts at `start`
            if on_batch is not None:
                on_batch(m)
        dt = time.perf_counter() - t0
        avg = {k: v / max(seen, 1) for k, v in sums.items()}
        return EpochStats(
            epoch=epoch,
            loss=avg.get("loss", float("nan")),
            task_loss=avg.get("task_loss", float("nan")),
            constraint=avg.get("constraint", 0.0),
            lam=avg.get("lam", 0.0),
            accuracy=avg.get("accuracy", float("nan")),
            near_threshold=avg.get("near_threshold", float("nan")),
            seconds=dt,
            images_per_s=seen / dt if dt > 0 else float("nan"),
        )
