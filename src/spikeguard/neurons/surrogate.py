"""Surrogate gradients for the Heaviside spike function.

Every surrogate is parametrised by one ``width``: the derivative peaks at ``1 / width`` at
the threshold and integrates to one, so ``width=1`` gives the common defaults
(triangle g=1 as in SNN-RAT, sigmoid k=4, atan alpha=2, rectangle of width 1).

Two objects, kept apart on purpose:

* a :class:`SurrogateKind` subclass *defines* a surrogate family, in one place: its torch
  derivative (out of place and in place), its C kernel statement (the fused CPU scan,
  :mod:`spikeguard.neurons.native`) and its Triton expression (the fused GPU scan,
  :mod:`spikeguard.neurons.triton_scan`). ``@register_surrogate`` registers it where it is
  defined; every table of names (``SURROGATES``, the config check, the kernels' dispatch)
  is read from that registry. Adding a surrogate is one class;
* :class:`Surrogate` ``(name, width)`` is the small immutable value a neuron holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from torch import Tensor

from ..registry import Registry

# ``triton.language``, bound by :mod:`spikeguard.neurons.triton_scan` when it is imported: the
# Triton expressions below are only compiled then, and importing spikeguard never imports
# Triton (optional, the ``gpu`` extra). A surrogate defined elsewhere imports it itself.
tl: Any = None

__all__ = [
    "SURROGATE_KINDS",
    "surrogate_members",
    "Surrogate",
    "SurrogateKind",
    "register_surrogate",
    "unregister_surrogate",
    "surrogate_kind",
    "surrogate_names",
    "surrogate_aliases",
    "resolve_surrogate",
    "SURROGATES",
    "SpikeFunction",
    "spike",
]


class SurrogateKind:
    """Definition of one surrogate family ``g(p; w)`` with ``p = U - V_th`` and ``w`` the width.

    Subclass it, set ``name`` (and ``aliases``), and define:

    * :meth:`derivative` ``(x, w) -> Tensor``: the reference (used by ``backend="loop"``);
    * :meth:`derivative_` ``(x, w) -> Tensor``: the same in place in ``x`` (optional; the
      default copies the out-of-place result back);
    * ``c_code``: a C statement that sets ``g`` from ``p`` and ``w``; the type is ``R``
      (``float``/``double``), ``E``/``F`` are ``exp``/``fabs`` of that type (optional: without
      it the fused CPU scan uses the torch ops for this surrogate);
    * :meth:`triton` ``(p, w)``: the same as a Triton expression, written with ``tl.*`` in
      float32 (optional: without it the GPU scan falls back to torch ops).
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    c_code: ClassVar[str | None] = None
    triton: ClassVar[Callable | None] = None
    #: widths surrogate sweeps use for this kind instead of the sweep's own (None: the sweep's)
    sweep_widths: ClassVar[tuple[float, ...] | None] = None

    @staticmethod
    def derivative(x: Tensor, w: float) -> Tensor:
        raise NotImplementedError

    @classmethod
    def derivative_(cls, x: Tensor, w: float) -> Tensor:
        return x.copy_(cls.derivative(x, w))


#: Every surrogate family, by name (``spikeguard list surrogates``).
SURROGATE_KINDS: Registry[type[SurrogateKind]] = Registry("surrogate", normalize=lambda s: str(s).strip())


def register_surrogate(cls: type[SurrogateKind]) -> type[SurrogateKind]:
    """Class decorator: make ``cls`` available by its ``name`` and ``aliases``."""
    if not (isinstance(cls, type) and issubclass(cls, SurrogateKind)) or not cls.name:
        raise TypeError("register_surrogate expects a SurrogateKind subclass with a name")
    return SURROGATE_KINDS.add(cls.name, cls, aliases=cls.aliases)


def unregister_surrogate(name: str) -> None:
    """Remove a registered surrogate (tests that define one clean up with this)."""
    if name in SURROGATE_KINDS:
        SURROGATE_KINDS.unregister(name)


def resolve_surrogate(name: str) -> str:
    """The canonical name for ``name`` (an alias or a name); a ``ValueError`` (and
    :class:`~spikeguard.errors.ConfigError`) if unknown."""
    return SURROGATE_KINDS.canonical(name)


def surrogate_kind(name: str) -> type[SurrogateKind]:
    """The registered definition of surrogate ``name`` (or alias)."""
    return SURROGATE_KINDS.get(name)


def surrogate_names() -> tuple[str, ...]:
    """Names of every registered surrogate, sorted."""
    return tuple(SURROGATE_KINDS.names())


def surrogate_aliases() -> dict[str, str]:
    """``alias -> name`` for every registered alias."""
    return SURROGATE_KINDS.aliases()


def surrogate_members(
    widths: Sequence[float], per_kind: Mapping[str, Sequence[float]] | None = None
) -> tuple[tuple[str, float], ...]:
    """``(surrogate, width)`` pairs of a surrogate sweep: every registered kind at ``widths``.

    A kind's widths are ``per_kind[name]`` if given, else its own :attr:`SurrogateKind.sweep_widths`
    (e.g. the straight-through estimator's ``(1.0,)``: a width only rescales its gradient), else
    ``widths``. Kinds are in name order, so a kind registered later joins every sweep.
    """
    per_kind = per_kind or {}
    out: list[tuple[str, float]] = []
    for name, kind in SURROGATE_KINDS.items():
        ws = per_kind.get(name, kind.sweep_widths if kind.sweep_widths is not None else widths)
        out += [(name, float(w)) for w in ws]
    return tuple(out)


# --- the built-in surrogates -----------------------------------------------------------------


@register_surrogate
class Triangle(SurrogateKind):
    """``max(0, 1/w - |p| / w^2)`` (SNN-RAT's triangle with g=1 at w=1)."""

    name, aliases = "triangle", ("tri",)
    c_code = "g = (R)1 / w - F(p) / (w * w); g = g > (R)0 ? g : (R)0;"

    @staticmethod
    def derivative(x: Tensor, w: float) -> Tensor:
        return (1.0 / w - x.abs() / (w * w)).clamp_min(0.0)

    @staticmethod
    def derivative_(x: Tensor, w: float) -> Tensor:
        return x.abs_().mul_(-1.0 / (w * w)).add_(1.0 / w).clamp_min_(0.0)

    @staticmethod
    def triton(p, w):
        return tl.maximum(1.0 / w - tl.abs(p) / (w * w), 0.0)


@register_surrogate
class Sigmoid(SurrogateKind):
    """Derivative of ``sigmoid(k p)`` with ``k = 4 / w``."""

    name = "sigmoid"
    c_code = "R k = (R)4 / w; R s = (R)1 / ((R)1 + E(-k * p)); g = k * s * ((R)1 - s);"

    @staticmethod
    def derivative(x: Tensor, w: float) -> Tensor:
        k = 4.0 / w
        s = torch.sigmoid(k * x)
        return k * s * (1.0 - s)

    @staticmethod
    def derivative_(x: Tensor, w: float) -> Tensor:
        k = 4.0 / w
        s = x.mul_(k).sigmoid_()
        return s.mul_(s.neg().add_(1.0)).mul_(k)

    @staticmethod
    def triton(p, w):
        k = 4.0 / w
        s = 1.0 / (1.0 + tl.exp(-k * p))
        return k * s * (1.0 - s)


@register_surrogate
class Atan(SurrogateKind):
    """Derivative of ``atan(pi/2 a p) / pi`` with ``a = 2 / w``."""

    name = "atan"
    c_code = "R a2 = (R)2 / w; R q = (R)(PI_ / 2.0) * a2 * p; g = (a2 / (R)2) / ((R)1 + q * q);"

    @staticmethod
    def derivative(x: Tensor, w: float) -> Tensor:
        a = 2.0 / w
        return (a / 2.0) / (1.0 + (math.pi / 2.0 * a * x) ** 2)

    @staticmethod
    def derivative_(x: Tensor, w: float) -> Tensor:
        a = 2.0 / w
        return x.mul_(math.pi / 2.0 * a).square_().add_(1.0).reciprocal_().mul_(a / 2.0)

    @staticmethod
    def triton(p, w):
        a = 2.0 / w
        q = 1.5707963267948966 * a * p
        return (a / 2.0) / (1.0 + q * q)


@register_surrogate
class Rectangle(SurrogateKind):
    """``1/w`` on ``|p| < w/2``, else 0."""

    name, aliases = "rectangle", ("rectangular", "rect")
    c_code = "g = F(p) < w / (R)2 ? (R)1 / w : (R)0;"

    @staticmethod
    def derivative(x: Tensor, w: float) -> Tensor:
        return (x.abs() < w / 2.0).to(x.dtype) / w

    @staticmethod
    def derivative_(x: Tensor, w: float) -> Tensor:
        return x.abs_().lt_(w / 2.0).mul_(1.0 / w)

    @staticmethod
    def triton(p, w):
        return tl.where(tl.abs(p) < w / 2.0, 1.0 / w, 0.0)


@register_surrogate
class Gaussian(SurrogateKind):
    """Normal density with standard deviation ``w``: the exact derivative of P(spike) under
    Gaussian membrane noise (Noisy-LIF's "expected" gradient)."""

    name = "gaussian"
    c_code = "R q = p / w; g = E((R)(-0.5) * q * q) / (w * (R)2.5066282746310002);"

    @staticmethod
    def derivative(x: Tensor, w: float) -> Tensor:
        return torch.exp(-0.5 * (x / w) ** 2) / (w * math.sqrt(2.0 * math.pi))

    @staticmethod
    def derivative_(x: Tensor, w: float) -> Tensor:
        return x.mul_(1.0 / w).square_().mul_(-0.5).exp_().mul_(1.0 / (w * math.sqrt(2.0 * math.pi)))

    @staticmethod
    def triton(p, w):
        q = p / w
        return tl.exp(-0.5 * q * q) / (w * 2.5066282746310002)


@register_surrogate
class StraightThrough(SurrogateKind):
    """The constant ``1/w`` (straight-through estimator)."""

    name, aliases = "ste", ("straight_through",)
    sweep_widths = (1.0,)  # a width only rescales this gradient, which a sign step ignores
    c_code = "g = (R)1 / w;"

    @staticmethod
    def derivative(x: Tensor, w: float) -> Tensor:
        return torch.full_like(x, 1.0 / w)

    @staticmethod
    def derivative_(x: Tensor, w: float) -> Tensor:
        return x.fill_(1.0 / w)

    @staticmethod
    def triton(p, w):
        return p * 0.0 + 1.0 / w


#: The built-in surrogates (``surrogate_names()`` also lists ones registered later).
SURROGATES: tuple[str, ...] = surrogate_names()


@dataclass(frozen=True)
class Surrogate:
    """A surrogate derivative ``d spike / d x`` with ``x = U - V_th``.

    Args:
        name: a registered surrogate (``triangle``, ``sigmoid``, ``atan``, ``rectangle``,
            ``gaussian``, ``ste``, or one added with ``@register_surrogate``) or an alias.
        width: shape parameter; the derivative peaks at ``1 / width``.
    """

    name: str = "triangle"
    width: float = 1.0

    def __post_init__(self) -> None:
        name = resolve_surrogate(self.name)
        if not (self.width > 0 and math.isfinite(self.width)):
            raise ValueError(f"surrogate width must be a positive number, got {self.width}")
        object.__setattr__(self, "name", name)

    @property
    def kind(self) -> type[SurrogateKind]:
        """The registered definition of this surrogate."""
        return surrogate_kind(self.name)

    def derivative(self, x: Tensor) -> Tensor:
        """The surrogate derivative evaluated at ``x = U - V_th``."""
        return self.kind.derivative(x, float(self.width))

    def derivative_(self, x: Tensor) -> Tensor:
        """:meth:`derivative` computed in place in ``x`` (overwritten and returned)."""
        return self.kind.derivative_(x, float(self.width))


class SpikeFunction(torch.autograd.Function):
    """Heaviside forward ``H(x + offset)``, surrogate backward.

    ``offset`` is the membrane noise of Noisy-LIF (zeros or ``None`` for plain LIF).
    ``grad_at_offset`` chooses where the surrogate is evaluated: at the noisy potential
    ``x + offset`` (True) or at the clean one ``x`` (False).
    """

    @staticmethod
    def forward(ctx, x: Tensor, offset: Tensor | None, surrogate: Surrogate, grad_at_offset: bool) -> Tensor:
        z = x if offset is None else x + offset
        ctx.surrogate = surrogate
        ctx.save_for_backward(z if grad_at_offset else x)
        return (z >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (point,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.derivative(point), None, None, None


def spike(x: Tensor, surrogate: Surrogate, offset: Tensor | None = None, grad_at_offset: bool = True) -> Tensor:
    """Emit spikes ``H(x + offset)`` with the given surrogate gradient (``x = U - V_th``)."""
    return SpikeFunction.apply(x, offset, surrogate, grad_at_offset)
