"""Neurons of published baseline defences: DLIF (Ding et al., 2024a) and StoG (Ding et al., 2024b).

Both are thin subclasses of :class:`~spikeguard.neurons.LIF`, registered as ``dlif`` and
``stog_lif``, so potential recording, ``noise_enabled``, ``noise_seed`` and ``is_stochastic``
keep working on them.

* :class:`DLIF` ("Robust Stable Spiking Neural Networks", ICML 2024, reference code
  ``DingJianhao/stable-snn``): an LIF neuron whose input current is scaled by a learnable gain
  per time step, ``U[t] = decay * V[t-1] + p[t] * I[t]`` (``p`` initialised to 1). The
  reference uses ``decay = 0.99``; here the decay is whatever the caller passes (the LIF default
  is the TGO paper's 0.5), so presets set it explicitly.
* :class:`StoGLIF` ("Enhancing the Robustness of SNNs with Stochastic Gating Mechanisms",
  AAAI 2024, reference code ``DingJianhao/StoG-meets-SNN``): an LIF neuron followed by a
  stochastic gate on its output spikes, ``out = S * m`` with ``m ~ Bernoulli(p)`` drawn fresh
  per neuron, sample and time step, and a learnable keep probability ``p`` per neuron
  (``p = clamp(q, p_min, 1)``, ``q`` initialised to 1, ``p_min = 0.1``). The gradient w.r.t.
  ``p`` uses the Concrete (relaxed Bernoulli) relaxation at temperature 0.5. The gate is the
  neuron's stochastic part: it is on at training and test time and is switched off (replaced
  by its expectation ``S * p``) by ``noise_enabled(model, False)``.

The per-step gain and the per-neuron keep probabilities have shapes that depend on ``T`` and on
the layer's feature map, which the neuron factory does not know. They are therefore *lazy*
parameters (``torch.nn.modules.lazy.LazyModuleMixin``), created by the first forward pass. Call
:func:`materialize` (one dummy forward) before counting parameters; optimisers may be built
before (the parameter objects are materialised in place).
"""

from __future__ import annotations

import contextlib
import inspect
import math
from typing import Iterator

import torch
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from .lif import LIF, gaussian_noise, set_noise
from .registry import register_neuron
from .surrogate import Surrogate

# Guards ``1 / (p (1 - p))`` in the relaxed-Bernoulli derivative (the reference uses the
# same 1e-3 in its odds ratio).
_GATE_EPS = 1e-3


@register_neuron("dlif")
class DLIF(LazyModuleMixin, LIF):
    """LIF with a learnable input gain per time step (the DLIF neuron of RSSNN).

    Args:
        **kw: the :class:`LIF` arguments (``decay``, ``v_threshold``, ``surrogate``, ...).

    The gain ``p`` has shape ``[T]`` and is created by the first forward pass.
    """

    cls_to_become = None

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.gain = UninitializedParameter()

    def initialize_parameters(self, x: Tensor) -> None:  # called by LazyModuleMixin
        if self.has_uninitialized_params():
            with torch.no_grad():
                self.gain.materialize((x.shape[0],), device=x.device, dtype=x.dtype)
                self.gain.fill_(1.0)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2:
            raise ValueError(f"DLIF expects input [T, B, ...], got shape {tuple(x.shape)}")
        if x.shape[0] != self.gain.shape[0]:
            raise ValueError(f"DLIF was built for T={self.gain.shape[0]} time steps, got T={x.shape[0]}")
        # U[t] = decay V[t-1] + p[t] I[t] is the LIF recursion driven by p[t] I[t].
        return super().forward(x * self.gain.view(-1, *([1] * (x.dim() - 1))))


class _StochasticGate(torch.autograd.Function):
    """Hard Bernoulli gate forward, Concrete-relaxation gradient for the keep probability."""

    @staticmethod
    def forward(ctx, spikes: Tensor, keep: Tensor, u: Tensor, temperature: float) -> Tensor:
        mask = (u > 1.0 - keep).to(spikes.dtype)  # P(mask = 1) = keep
        ctx.save_for_backward(spikes, keep, u, mask)
        ctx.temperature = temperature
        return spikes * mask

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        spikes, keep, u, mask = ctx.saved_tensors
        t = ctx.temperature
        grad_spikes = grad_out * mask
        grad_keep = None
        if ctx.needs_input_grad[1]:
            k = keep.clamp(_GATE_EPS, 1.0 - _GATE_EPS)
            uu = u.clamp(_GATE_EPS, 1.0 - _GATE_EPS)
            logit = (torch.log(k) - torch.log1p(-k) + torch.log(uu) - torch.log1p(-uu)) / t
            s = torch.sigmoid(logit)  # the relaxed mask
            dmask_dkeep = s * (1.0 - s) / (t * k * (1.0 - k))
            g = grad_out * spikes * dmask_dkeep
            # average over the time and batch dimensions, as the reference implementation does
            grad_keep = g.flatten(0, g.dim() - keep.dim() - 1).mean(0)
        return grad_spikes, grad_keep, None, None


@register_neuron("stog_lif", "stog")
class StoGLIF(LazyModuleMixin, LIF):
    """LIF followed by a stochastic gate on its output spikes (StoG).

    Args:
        p_min: lower clamp of the keep probability (reference: 0.1).
        temperature: Concrete-relaxation temperature for the gradient (reference: 0.5).
        gate: whether the gate samples (its :attr:`noise` switch, which ``noise_enabled`` flips;
            when off the output is the expectation ``S * p``).
        sigma: optional Gaussian membrane noise on top (0 = plain StoG), sampled while the gate is on.
        noisy_grad: backward through that membrane noise, as in :class:`~spikeguard.neurons.NoisyLIF`.
        generator: optional ``torch.Generator`` for the gate and the noise (see ``noise_seed``).
        **kw: the :class:`LIF` arguments.
    """

    cls_to_become = None
    has_noise = True
    sigma: float
    noise: bool
    noisy_grad: str

    def __init__(
        self,
        p_min: float = 0.1,
        temperature: float = 0.5,
        gate: bool = True,
        sigma: float = 0.0,
        noisy_grad: str = "surrogate",
        generator: torch.Generator | None = None,
        **kw,
    ) -> None:
        if not 0.0 <= p_min <= 1.0:
            raise ValueError(f"p_min must be in [0, 1], got {p_min}")
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be > 0, got {temperature}")
        super().__init__(**kw)
        set_noise(self, sigma, gate, noisy_grad, generator)
        self.p_min = float(p_min)
        self.temperature = float(temperature)
        self.keep = UninitializedParameter()
        # the keep logits are regularised by the StoG prior, not by weight decay (see make_sgd)
        self.keep.no_weight_decay = True  # type: ignore[attr-defined]  # a marker make_sgd reads

    def initialize_parameters(self, x: Tensor) -> None:  # called by LazyModuleMixin
        if self.has_uninitialized_params():
            with torch.no_grad():
                self.keep.materialize(tuple(x.shape[2:]), device=x.device, dtype=x.dtype)
                self.keep.fill_(1.0)

    @property
    def stochastic(self) -> bool:
        """True while the gate samples."""
        return bool(self.noise)

    def keep_probability(self) -> Tensor:
        """The per-neuron keep probability ``clamp(q, p_min, 1)``."""
        return nn.functional.hardtanh(self.keep, self.p_min, 1.0)

    def sample_noise(self, x: Tensor) -> Tensor | None:
        if not self.noise or self.sigma <= 0:
            return None
        return gaussian_noise(x, self.sigma, self.noise_generator(x))

    def grad_surrogate(self) -> tuple[Surrogate, bool]:
        if self.noisy_grad == "expected" and self.noise and self.sigma > 0:
            return Surrogate("gaussian", self.sigma), False
        return self.surrogate, True

    def forward(self, x: Tensor) -> Tensor:
        spikes = super().forward(x)
        if tuple(spikes.shape[2:]) != tuple(self.keep.shape):
            raise ValueError(f"StoGLIF was built for features {tuple(self.keep.shape)}, got {tuple(spikes.shape[2:])}")
        keep = self.keep_probability()
        if not self.noise:
            return spikes * keep
        gen = self.noise_generator(spikes)
        u = torch.rand(spikes.shape, generator=gen, device=spikes.device, dtype=spikes.dtype)
        return _StochasticGate.apply(spikes, keep, u, self.temperature)

    def extra_repr(self) -> str:
        return (
            super().extra_repr() + f", sigma={self.sigma:.4g}, noise={self.noise}, noisy_grad={self.noisy_grad}"
            f", p_min={self.p_min}, temperature={self.temperature}"
        )


def stog_neurons(model: nn.Module) -> list[StoGLIF]:
    """All StoG neurons of ``model``."""
    return [m for m in model.modules() if isinstance(m, StoGLIF)]


def gate_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The keep-probability parameters of every StoG neuron."""
    for m in stog_neurons(model):
        yield m.keep  # type: ignore[misc]  # materialised by the first forward: a Parameter


def gate_prior(model: nn.Module, kind: str = "l2") -> Tensor:
    """The StoG sparsity prior on the keep parameters: ``0.5 * sum q^2`` (l2) or ``sum |q|`` (l1)."""
    terms = []
    for q in gate_parameters(model):
        if isinstance(q, UninitializedParameter):
            continue
        terms.append(0.5 * q.square().sum() if kind == "l2" else q.abs().sum())
    if kind not in ("l1", "l2"):
        raise ValueError(f"gate prior must be 'l1' or 'l2', got {kind!r}")
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()


def mean_keep_probability(model: nn.Module) -> float:
    """Mean keep probability over all StoG neurons (nan if there are none)."""
    ps = [
        m.keep_probability().detach().flatten()
        for m in stog_neurons(model)
        if not isinstance(m.keep, UninitializedParameter)
    ]
    return float(torch.cat(ps).mean()) if ps else float("nan")


def has_lazy_parameters(model: nn.Module) -> bool:
    """True while some baseline neuron still waits for its first forward pass."""
    return any(isinstance(p, UninitializedParameter) for p in model.parameters())


@torch.no_grad()
def materialize(model: nn.Module, image_shape: tuple[int, ...], device: torch.device | str | None = None) -> None:
    """Create the lazy parameters of DLIF/StoG neurons with one dummy forward pass.

    Args:
        model: the network (its train/eval mode and BatchNorm statistics are left unchanged).
        image_shape: ``(C, H, W)`` of one input image.
    """
    if not has_lazy_parameters(model):
        return
    if device is None:
        device = next((b.device for b in model.buffers()), torch.device("cpu"))
    modes = {m: m.training for m in model.modules()}
    model.eval()  # eval: the dummy pass must not touch BatchNorm running statistics
    try:
        model(torch.zeros(2, *image_shape, device=device))
    finally:
        for m, mode in modes.items():
            m.training = mode


def materialize_for(model: nn.Module, arch_kw: dict) -> None:
    """:func:`materialize` for a freshly built model, the input shape taken from its arguments.

    ``arch_kw`` are the architecture arguments it was built with (``in_channels``,
    ``image_size``); missing ones fall back to the model class's defaults.
    """
    if not has_lazy_parameters(model):
        return

    defaults = {}
    with contextlib.suppress(TypeError, ValueError):
        defaults = {
            k: p.default
            for k, p in inspect.signature(type(model)).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
    channels = arch_kw.get("in_channels", getattr(model, "in_channels", defaults.get("in_channels")))
    size = arch_kw.get("image_size", defaults.get("image_size"))
    if channels is None or size is None:
        raise ValueError(
            f"cannot size the DLIF/StoG parameters of {type(model).__name__}: pass in_channels and image_size"
        )
    materialize(model, (int(channels), int(size), int(size)))
