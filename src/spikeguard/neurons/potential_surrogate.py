"""Attack-time surrogate gradients whose shape follows the membrane potentials.

A :class:`~spikeguard.neurons.Surrogate` has one width for every neuron and time step. Two
published attacks on SNNs instead set the surrogate's shape *per neuron and time step* from
the potentials the forward pass produced:

* ASSG (Wang et al., arXiv 2512.22522): an atan surrogate whose sharpness follows running
  statistics of ``|U - V_th|`` over the attack's iterations (:class:`AssgRule`);
* PDSG (Lun et al., CVPR 2025): a Gaussian surrogate whose spread is the standard deviation of
  the layer's potentials (:class:`PdsgRule`).

:func:`potential_surrogate` installs such a rule on every spiking neuron of a model from the
outside, for the duration of a ``with`` block, and restores everything on exit (also on an
exception). It works on spikeguard's neurons (LIF, Noisy-LIF and their subclasses) and on
SpikingJelly / snnTorch neurons through :mod:`spikeguard.adapters`:

* the potentials are observed with :func:`~spikeguard.neurons.record_potentials` (whole
  ``[T, B, ...]`` scans for spikeguard's neurons, one ``[1, B, ...]`` step per call for the
  adapted ones, whose time step is counted from the start of each model forward);
* the rule turns them into a parameter tensor (sharpness or spread) shaped like the potentials;
* the backward of that very call uses a :class:`FieldSurrogate` holding that tensor. Inside the
  block spikeguard's neurons run the fused scan on the tensor-op kernel (the C and Triton
  kernels take one scalar width), which computes the same forward; Noisy-LIF neurons built
  with ``noisy_grad="expected"`` use the rule too, like ``attack_surrogate`` makes them.

The forward pass is never changed: spikes are the Heaviside step of the model's own potential.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from .fused import set_kernel
from .recording import record_potentials, spiking_neurons
from ..adapters import foreign_neurons

__all__ = [
    "FieldSurrogate",
    "AssgRule",
    "PdsgRule",
    "PotentialRule",
    "atan_derivative",
    "pdsg_derivative",
    "assg_scale",
    "potential_surrogate",
]


def atan_derivative(x: Tensor, alpha: Tensor | float) -> Tensor:
    """The atan surrogate of sharpness ``alpha``: ``alpha / 2 / (1 + (pi/2 * alpha * x)^2)``.

    The derivative of ``atan(pi/2 * alpha * x) / pi + 1/2`` (SpikingJelly's ``ATan``; spikeguard's
    ``atan`` of width ``w`` is ``alpha = 2 / w``). ``alpha`` may be a tensor broadcastable to ``x``.
    """
    return (alpha / 2.0) / (1.0 + (math.pi / 2.0 * alpha * x) ** 2)


def pdsg_derivative(x: Tensor, sigma: Tensor | float, shift: float = 0.5) -> Tensor:
    """PDSG's surrogate: the normal density of mean ``shift * sigma`` and deviation ``sigma`` at ``x``.

    ``x = U - V_th``; ``sigma`` may be a tensor broadcastable to ``x``.
    """
    return torch.exp(-0.5 * ((x - shift * sigma) / sigma) ** 2) / (sigma * math.sqrt(2.0 * math.pi))


def assg_scale(vanishing: float) -> float:
    """ASSG's numerator ``a`` for a gradient-vanishing bound ``A`` in (0, 1): ``a = 2/pi * tan(pi*A/2)``.

    With sharpness ``alpha = a / d`` the atan surrogate holds the share
    ``(2/pi) * atan(pi/2 * alpha * d) = A`` of its mass within ``|x| < d``: a neuron at the
    typical distance ``d`` from threshold sits where a share ``A`` of the gradient mass is closer
    to the threshold than it (larger ``A``: sharper, closer to the true step).
    """
    if not 0.0 < vanishing < 1.0:
        raise ValueError(f"the vanishing-degree bound A must be in (0, 1), got {vanishing}")
    return 2.0 / math.pi * math.tan(math.pi * vanishing / 2.0)


class FieldSurrogate:
    """A surrogate derivative with a parameter per element (stands in for a ``Surrogate``).

    Args:
        name: shown where a surrogate's name is read (not a registered surrogate: the fused
            scan's C / Triton kernels do not run it).
        fn: ``fn(x, param) -> derivative``.
        param: tensor broadcastable to the point the backward evaluates (set by the rule).
    """

    def __init__(self, name: str, fn: Callable[[Tensor, Tensor], Tensor], param: Tensor | None = None) -> None:
        self.name = name
        self.fn = fn
        self.param = param

    @property
    def width(self) -> float:
        """The mean parameter (for display only)."""
        return float(self.param.float().mean()) if self.param is not None else float("nan")

    def derivative(self, x: Tensor) -> Tensor:
        """The surrogate derivative at ``x = U - V_th`` with this call's parameters."""
        if self.param is None:
            raise RuntimeError(f"the {self.name} surrogate was used before its potentials were observed")
        return self.fn(x, self.param.to(x.dtype))

    def derivative_(self, x: Tensor) -> Tensor:
        """:meth:`derivative` written into ``x``."""
        return x.copy_(self.derivative(x))


class PotentialRule:
    """How a surrogate's parameter follows the potentials (subclass: :meth:`observe`, :meth:`derivative`)."""

    name = "potential"

    def derivative(self, x: Tensor, param: Tensor) -> Tensor:
        raise NotImplementedError

    def observe(self, key: tuple, point: Tensor, step: int | None) -> Tensor:
        """The parameter for one neuron call from its ``point = U - V_th`` (``[T', R, ...]``).

        ``key`` names the neuron (and, for adapted neurons, the time step ``step``, which is
        ``None`` for a whole scan). Returns a tensor broadcastable to ``point``.
        """
        raise NotImplementedError

    def start_pass(self) -> None:
        """A model forward begins (rules that accumulate over its time steps reset here)."""


def _tile_rows(x: Tensor, rows: int | None) -> tuple[Tensor, int]:
    """``(the first `rows` rows of dim 1, repeats)`` when dim 1 holds whole copies of ``rows``."""
    r = x.shape[1] if x.dim() > 1 else 1
    if rows and x.dim() > 1 and r > rows and r % rows == 0:
        return x[:, :rows], r // rows
    return x, 1


class AssgRule(PotentialRule):
    """ASSG's sharpness: ``alpha = a / (M + relax * D + tiny)`` per neuron and time step.

    ``M`` and ``D`` are running averages over the attack's iterations of the distance to
    threshold ``|x| = |U - V_th|`` and of its deviation from ``M``::

        M <- beta_m * M + (1 - beta_m) * |x|
        D <- beta_d * D + (1 - beta_d) * | |x| - M |      (with the updated M)

    starting from ``M = 1``, ``D = 0``; ``a = assg_scale(vanishing)``.

    The statistics move at most once per neuron and step inside :meth:`observing` (one attack
    iteration); forwards outside it (clean or final logits) and further EoT passes of the same
    iteration reuse them. With ``rows`` set to the attack's batch size and a batched EoT
    forward of ``K * rows`` rows, the statistics come from the first pass (the first ``rows``
    rows) and serve all ``K``, as the authors' EoT does.

    Args:
        vanishing: the bound ``A`` in (0, 1) (default 0.85; the authors tune it in 0.7..0.98).
        relax: weight of the deviation ``D`` (1.5).
        beta_m, beta_d: running-average coefficients (0.9, 0.9).
        tiny: added to the denominator against division by zero (1e-4).
    """

    name = "assg"

    def __init__(
        self, vanishing: float = 0.85, relax: float = 1.5, beta_m: float = 0.9, beta_d: float = 0.9, tiny: float = 1e-4
    ) -> None:
        self.a = assg_scale(vanishing)
        if relax < 0 or not 0.0 <= beta_m < 1.0 or not 0.0 <= beta_d < 1.0 or tiny <= 0:
            raise ValueError("ASSG needs relax >= 0, running-average coefficients in [0, 1) and tiny > 0")
        self.vanishing, self.relax, self.beta_m, self.beta_d, self.tiny = vanishing, relax, beta_m, beta_d, tiny
        self.state: dict[tuple, tuple[Tensor, Tensor]] = {}
        self.rows: int | None = None
        self._updating = False
        self._updated: set[tuple] = set()

    def reset(self) -> None:
        """Forget the statistics (a new attack run)."""
        self.state.clear()

    @contextlib.contextmanager
    def observing(self, rows: int | None = None) -> Iterator[None]:
        """One attack iteration: the forwards inside update the statistics (once per neuron and step)."""
        self._updating, self._updated, self.rows = True, set(), rows
        try:
            yield
        finally:
            self._updating = False

    def derivative(self, x: Tensor, param: Tensor) -> Tensor:
        return atan_derivative(x, param)

    def update(self, key: tuple, dist: Tensor) -> tuple[Tensor, Tensor]:
        """One running-average step of ``(M, D)`` for ``key`` with the distances ``dist = |x|``."""
        m, d = self.stats(key, dist)
        m = self.beta_m * m + (1.0 - self.beta_m) * dist
        d = self.beta_d * d + (1.0 - self.beta_d) * (dist - m).abs()
        self.state[key] = (m, d)
        return m, d

    def stats(self, key: tuple, like: Tensor) -> tuple[Tensor, Tensor]:
        """The current ``(M, D)`` of ``key`` (fresh ``(1, 0)`` if none, or if the shape changed)."""
        got = self.state.get(key)
        if got is None or got[0].shape != like.shape:
            got = (torch.ones_like(like), torch.zeros_like(like))
        return got

    def sharpness(self, m: Tensor, d: Tensor) -> Tensor:
        """``alpha = a / (M + relax * D + tiny)``."""
        return self.a / (m + self.relax * d + self.tiny)

    def observe(self, key: tuple, point: Tensor, step: int | None) -> Tensor:
        dist, reps = _tile_rows(point.detach().abs().float(), self.rows)
        if self._updating and key not in self._updated:
            m, d = self.update(key, dist)
            self._updated.add(key)
        else:
            m, d = self.stats(key, dist)
        alpha = self.sharpness(m, d)
        return alpha.repeat(1, reps, *([1] * (alpha.dim() - 2))) if reps > 1 else alpha


class PdsgRule(PotentialRule):
    """PDSG's spread: ``sigma`` = the standard deviation of the layer's potentials so far.

    At time step ``t`` the deviation is taken over the potentials of steps ``0..t`` and over
    the batch and space, per channel for conv layers (``[T, B, C, H, W]``), over everything
    for other layers; a zero deviation becomes 1. The surrogate is
    :func:`pdsg_derivative` with that ``sigma`` (a normal density centred ``shift * sigma``
    above threshold). Nothing carries over between forwards: the shape follows the current
    input's potentials.

    Args:
        shift: centre of the Gaussian in units of ``sigma`` above threshold (0.5).
    """

    name = "pdsg"

    def __init__(self, shift: float = 0.5) -> None:
        self.shift = float(shift)
        self._seen: dict[str, list[Tensor]] = {}

    def start_pass(self) -> None:
        self._seen.clear()

    def derivative(self, x: Tensor, param: Tensor) -> Tensor:
        return pdsg_derivative(x, param, self.shift)

    @staticmethod
    def spread(u: Tensor) -> Tensor:
        """The deviation of all of ``u`` (``[t, B, ...]``): per channel for ``[t, B, C, H, W]``,
        else one number; shaped to broadcast against one step; 0 becomes 1."""
        if u.dim() == 5:
            s = u.transpose(0, 2).reshape(u.shape[2], -1).std(1).view(1, -1, 1, 1)
        else:
            s = (u.reshape(-1).std() if u.numel() > 1 else u.new_zeros(())).view(*([1] * (u.dim() - 1)))
        return torch.where(s == 0, torch.ones_like(s), s)

    def cumulative_std(self, u: Tensor) -> Tensor:
        """``sigma[t]`` from ``u[0..t]`` for every step of ``u`` (``[T, B, ...]``), broadcastable to ``u``."""
        return torch.stack([self.spread(u[: t + 1]) for t in range(u.shape[0])])

    def observe(self, key: tuple, point: Tensor, step: int | None) -> Tensor:
        u = point.detach().float()
        if step is None:
            return self.cumulative_std(u)
        seen = self._seen.setdefault(key[0], [])
        seen.append(u)
        return self.spread(torch.cat(seen)).unsqueeze(0)


@contextlib.contextmanager
def potential_surrogate(model: nn.Module, rule: PotentialRule) -> Iterator[int]:
    """Inside the block every spiking neuron of ``model`` back-propagates through ``rule``'s
    surrogate, with parameters from its own potentials; yields the number of neurons reached.

    The neurons' surrogates, ``noisy_grad`` and ``backend`` settings, the fused scan's kernel
    choice and the adapted neurons' spike functions are restored on exit, also on an exception.
    Raises ``ValueError`` for a model without spiking neurons.
    """
    own = spiking_neurons(model)
    foreign = foreign_neurons(model)
    if not own and not foreign:
        raise ValueError(
            "potential-dependent surrogates need a model with spiking neurons (spikeguard, SpikingJelly or snnTorch)"
        )
    mods = {name: m for name, m in own}
    saved = [(m, m.surrogate, m.backend, getattr(m, "noisy_grad", None)) for m in mods.values()]
    fresh = lambda: FieldSurrogate(rule.name, rule.derivative)  # noqa: E731 - one object per neuron call
    steps: dict[str, int] = {}
    hooks: dict[str, Any] = {}
    thresholds = {n.name: (lambda n=n: n.adapter.threshold(n.module)) for n in foreign}

    def on_record(name: str, u: Tensor) -> None:
        if name in mods:  # a whole [T, B, ...] scan: its surrogate object gets its parameters now
            m = mods[name]
            m.surrogate.param = rule.observe((name, None), u - m.v_threshold, None)  # type: ignore[attr-defined]  # m.surrogate is a FieldSurrogate here
            m.surrogate = fresh()  # type: ignore[assignment]  # the next call (if any) must not overwrite this call's parameters
        elif name in hooks:  # one step of an adapted neuron, recorded before its spike is computed
            t = steps.get(name, 0)
            steps[name] = t + 1
            sg = fresh()
            sg.param = rule.observe((name, t), u - thresholds[name](), t)[0]  # [1, B, ...] -> one step
            hooks[name].surrogate = sg

    def on_forward(*_: object) -> None:
        steps.clear()
        rule.start_pass()

    old_kernel = set_kernel("torch")  # the C / Triton kernels take one scalar width
    handle = model.register_forward_pre_hook(on_forward)
    try:
        for m in mods.values():
            m.surrogate, m.backend = fresh(), "fused"  # type: ignore[assignment]  # the loop backend evaluates one step at a time
            if hasattr(m, "noisy_grad"):
                m.noisy_grad = "surrogate"  # type: ignore[assignment]  # noisy neurons only (hasattr above)
        with contextlib.ExitStack() as stack:
            for n in foreign:
                hooks[n.name] = stack.enter_context(n.adapter.spike_hook(n.module))
            stack.enter_context(record_potentials(model, detach=True, keep=False, on_record=on_record))
            yield len(mods) + len(foreign)
    finally:
        handle.remove()
        set_kernel(old_kernel)
        for m, s, backend, noisy_grad in saved:
            m.surrogate, m.backend = s, backend
            if noisy_grad is not None:
                m.noisy_grad = noisy_grad
