"""Surrogate gradients for the Heaviside spike function.

Every surrogate is parametrised by one ``width``: the derivative peaks at ``1 / width`` at
the threshold and integrates to one, so ``width=1`` gives the common defaults
(triangle g=1 as in SNN-RAT, sigmoid k=4, atan alpha=2, rectangle of width 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor


def _triangle(x: Tensor, w: float) -> Tensor:
    return (1.0 / w - x.abs() / (w * w)).clamp_min(0.0)


def _sigmoid(x: Tensor, w: float) -> Tensor:
    k = 4.0 / w
    s = torch.sigmoid(k * x)
    return k * s * (1.0 - s)


def _atan(x: Tensor, w: float) -> Tensor:
    a = 2.0 / w
    return (a / 2.0) / (1.0 + (math.pi / 2.0 * a * x) ** 2)


def _rectangle(x: Tensor, w: float) -> Tensor:
    return (x.abs() < w / 2.0).to(x.dtype) / w


def _gaussian(x: Tensor, w: float) -> Tensor:
    # w is the standard deviation; this is the exact derivative of P(spike) under
    # Gaussian membrane noise (Noisy-LIF's "expected" gradient).
    return torch.exp(-0.5 * (x / w) ** 2) / (w * math.sqrt(2.0 * math.pi))


def _straight_through(x: Tensor, w: float) -> Tensor:
    return torch.full_like(x, 1.0 / w)


_DERIVATIVES: dict[str, Callable[[Tensor, float], Tensor]] = {
    "triangle": _triangle,
    "sigmoid": _sigmoid,
    "atan": _atan,
    "rectangle": _rectangle,
    "gaussian": _gaussian,
    "ste": _straight_through,
}
_ALIASES = {"rectangular": "rectangle", "rect": "rectangle", "straight_through": "ste", "tri": "triangle"}

SURROGATES: tuple[str, ...] = tuple(_DERIVATIVES)


@dataclass(frozen=True)
class Surrogate:
    """A surrogate derivative ``d spike / d x`` with ``x = U - V_th``.

    Args:
        name: one of ``triangle``, ``sigmoid``, ``atan``, ``rectangle``, ``gaussian``, ``ste``.
        width: shape parameter; the derivative peaks at ``1 / width``.
    """

    name: str = "triangle"
    width: float = 1.0

    def __post_init__(self) -> None:
        name = _ALIASES.get(self.name, self.name)
        if name not in _DERIVATIVES:
            raise ValueError(f"unknown surrogate {self.name!r}; choose one of {', '.join(SURROGATES)}")
        if not (self.width > 0 and math.isfinite(self.width)):
            raise ValueError(f"surrogate width must be a positive number, got {self.width}")
        object.__setattr__(self, "name", name)

    def derivative(self, x: Tensor) -> Tensor:
        """The surrogate derivative evaluated at ``x = U - V_th``."""
        return _DERIVATIVES[self.name](x, float(self.width))


class SpikeFunction(torch.autograd.Function):
    """Heaviside forward ``H(x + offset)``, surrogate backward.

    ``offset`` is the membrane noise of Noisy-LIF (zeros or ``None`` for plain LIF).
    ``grad_at_offset`` chooses where the surrogate is evaluated: at the noisy potential
    ``x + offset`` (True) or at the clean one ``x`` (False).
    """

    @staticmethod
    def forward(ctx, x: Tensor, offset: Tensor | None, surrogate: Surrogate, grad_at_offset: bool) -> Tensor:  # type: ignore[override]
        z = x if offset is None else x + offset
        ctx.surrogate = surrogate
        ctx.save_for_backward(z if grad_at_offset else x)
        return (z >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (point,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.derivative(point), None, None, None


def spike(x: Tensor, surrogate: Surrogate, offset: Tensor | None = None, grad_at_offset: bool = True) -> Tensor:
    """Emit spikes ``H(x + offset)`` with the given surrogate gradient (``x = U - V_th``)."""
    return SpikeFunction.apply(x, offset, surrogate, grad_at_offset)
