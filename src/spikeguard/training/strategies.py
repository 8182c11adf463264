"""Training strategies: each turns a batch into a task loss.

A strategy gets ``forward(x) -> per-step logits [T, B, K]``, a forward that records the
pre-spike potentials for TGO, and may craft adversarial inputs with the bare model (whose
forward passes are not recorded). TGO and Noisy-LIF are orthogonal: the trainer adds the
constraint term to whatever a strategy returns, and the neurons carry the noise.

Adding a strategy is one small class registered with :func:`register_strategy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Registry

Forward = Callable[[Tensor], Tensor]


@dataclass
class StepOutput:
    """What a strategy returns for one batch.

    Attributes:
        loss: task loss (scalar, before the TGO term).
        logits: T-averaged logits ``[B, K]`` of the inputs the loss was computed on.
        metrics: extra scalars to log (e.g. a regulariser's value).
    """

    loss: Tensor
    logits: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


class Strategy:
    """Base class. Subclasses implement :meth:`__call__`.

    Two optional hooks let a strategy act outside the loss; the :class:`Trainer` calls them
    around every optimisation step (both default to doing nothing):

    * :meth:`begin_step` ``(model, epoch)`` before the batch (e.g. a schedule over epochs);
    * :meth:`after_step` ``(model)`` after ``optimizer.step()`` (e.g. a weight retraction);
      it may return extra scalars to log.
    """

    name = "strategy"

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor, forward: Forward) -> StepOutput:
        raise NotImplementedError

    def begin_step(self, model: nn.Module, epoch: float) -> None:
        """Called before each batch with the (fractional) epoch."""

    def after_step(self, model: nn.Module) -> dict[str, float]:
        """Called after each optimiser step; returns scalars to log."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


#: Every training strategy, by name (``spikeguard list strategies``).
STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


def register_strategy(name: str, *, description: str | None = None) -> Callable[[type[Strategy]], type[Strategy]]:
    """Class decorator registering a strategy under ``name`` (a name registered twice raises)."""

    def deco(cls: type[Strategy]) -> type[Strategy]:
        STRATEGIES.add(name, cls, description=description)
        cls.name = name
        return cls

    return deco


def list_strategies() -> list[str]:
    """Names accepted by :func:`create_strategy`."""
    return STRATEGIES.names()


def strategy_class(name: str) -> type[Strategy]:
    """The class registered as ``name``."""
    return STRATEGIES.get(name)


def create_strategy(name: str, **kw) -> Strategy:
    """Build a registered strategy by name with keyword arguments."""
    return strategy_class(name)(**kw)


@register_strategy("bptt")
class BPTT(Strategy):
    """Plain BPTT: cross-entropy on the T-averaged logits."""

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor, forward: Forward) -> StepOutput:
        logits = forward(images).mean(0)
        return StepOutput(F.cross_entropy(logits, labels), logits)


def tet_loss(step_logits: Tensor, labels: Tensor, mse_weight: float = 0.0, mse_target: float = 1.0) -> Tensor:
    """TET (Deng et al., 2022): cross-entropy at every time step, averaged over T, plus an
    optional MSE pull of the per-step logits towards ``mse_target`` (TET's lambda-term)."""
    t = step_logits.shape[0]
    ce = F.cross_entropy(step_logits.flatten(0, 1), labels.repeat(t))
    if mse_weight:
        mse = (step_logits - mse_target).square().mean()
        return (1.0 - mse_weight) * ce + mse_weight * mse
    return ce


@register_strategy("tet")
class TET(Strategy):
    """TET: the loss applied to the output of every time step (the paper's "vanilla" row).

    Args:
        mse_weight: weight of TET's MSE regulariser (0 = pure per-step cross-entropy).
        mse_target: its target value.
    """

    def __init__(self, mse_weight: float = 0.0, mse_target: float = 1.0) -> None:
        self.mse_weight = float(mse_weight)
        self.mse_target = float(mse_target)

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor, forward: Forward) -> StepOutput:
        steps = forward(images)
        return StepOutput(tet_loss(steps, labels, self.mse_weight, self.mse_target), steps.mean(0))
