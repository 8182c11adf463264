"""Multi-step LIF and Noisy-LIF neurons (input and output ``[T, B, ...]``).

Dynamics (arXiv 2602.20548, sections 3.1 and 4.2.2), per time step ``t``::

    U[t] = decay * V[t-1] + I[t]        # pre-spike potential: what TGO and the analyses use
    S[t] = H(U[t] + eta[t] - V_th)      # eta = 0 for LIF, N(0, sigma^2) for Noisy-LIF
    V[t] = U[t] * (1 - S[t])            # hard reset to 0

Neurons hold no state between calls: every forward starts from ``V[-1] = 0``, so there is
nothing to reset. The pre-spike potentials ``U`` are handed to any active
:class:`~spikeguard.neurons.recording.PotentialRecorder` (see ``record_potentials``).

Two interchangeable implementations (``backend``) compute the same numbers:

* ``"fused"`` (default): one autograd node for the whole scan
  (:mod:`spikeguard.neurons.fused`), saving only ``U`` (and the noise);
* ``"loop"``: the reference, a per-step loop of ordinary tensor operations.
"""

from __future__ import annotations

import math
from typing import ClassVar, Protocol

import torch
from torch import Tensor, nn

from .fused import lif_scan, philox_noise_for
from .registry import register_neuron
from .surrogate import Surrogate, spike

NOISY_GRADS = ("surrogate", "expected")
BACKENDS = ("fused", "loop")
_default_backend = "fused"


def set_default_backend(backend: str) -> str:
    """Set the LIF backend used by neurons built with ``backend=None``; returns the old one."""
    global _default_backend
    if backend not in BACKENDS:
        raise ValueError(f"unknown LIF backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    old, _default_backend = _default_backend, backend
    return old


def get_default_backend() -> str:
    """The LIF backend used by neurons built with ``backend=None``."""
    return _default_backend


@register_neuron("lif")
class LIF(nn.Module):
    """Multi-step leaky integrate-and-fire neuron with hard reset.

    Args:
        decay: membrane decay factor beta in ``U[t] = beta * V[t-1] + I[t]`` (paper: 0.5).
        v_threshold: firing threshold V_th (paper: 1.0).
        surrogate: surrogate-gradient name (``triangle``, ``sigmoid``, ``atan``, ``rectangle``,
            ``ste``) or a :class:`Surrogate`.
        width: surrogate width (derivative peak ``1 / width``), ignored if ``surrogate`` is an object.
        detach_reset: stop the gradient through the reset term ``U * (1 - S)``'s ``S``.
        backend: ``"fused"`` (one autograd node for all steps), ``"loop"`` (reference) or
            ``None``: the module default (:func:`set_default_backend`, initially ``"fused"``).
    """

    #: :class:`~spikeguard.config.NeuronConfig` fields this neuron takes (``NeuronConfig.neuron_kw``)
    config_fields: ClassVar[tuple[str, ...]] = ("decay", "v_threshold", "surrogate", "width", "detach_reset")
    #: True for neurons with a ``noise`` switch and a ``generator`` attribute: what
    #: :func:`~spikeguard.neurons.noise_enabled` and :func:`~spikeguard.neurons.noise_seed` act on
    has_noise: ClassVar[bool] = False
    #: the seed :func:`~spikeguard.neurons.noise_seed` gave :attr:`generator` (``None``: the
    #: generator, if any, was set by hand); lets :meth:`noise_generator` re-create it on the
    #: input's device
    generator_seed: int | None = None
    #: the noise generator of neurons with ``has_noise`` (absent on the others)
    generator: torch.Generator | None

    def __init__(
        self,
        decay: float = 0.5,
        v_threshold: float = 1.0,
        surrogate: str | Surrogate = "triangle",
        width: float = 1.0,
        detach_reset: bool = False,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        if not math.isfinite(v_threshold):
            raise ValueError(f"v_threshold must be finite, got {v_threshold}")
        self.decay = float(decay)
        self.v_threshold = float(v_threshold)
        self.surrogate = surrogate if isinstance(surrogate, Surrogate) else Surrogate(surrogate, width)
        self.detach_reset = bool(detach_reset)
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"unknown LIF backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.backend = backend
        # Active recorders; set only inside a `record_potentials` context.
        self._recorders: tuple = ()

    @property
    def stochastic(self) -> bool:
        """True when a forward pass draws random numbers (a plain LIF never does)."""
        return False

    # Hooks for subclasses ---------------------------------------------------------------
    def sample_noise(self, x: Tensor) -> Tensor | None:
        """Membrane noise for all time steps at once (``None``: deterministic neuron)."""
        return None

    def fused_noise(self, x: Tensor):
        """The noise for the fused scan: :meth:`sample_noise`, or a description of noise the
        kernel draws itself (Noisy-LIF on the Triton kernel)."""
        return self.sample_noise(x)

    def grad_surrogate(self) -> tuple[Surrogate, bool]:
        """The surrogate used in backward and whether it is evaluated at the noisy potential."""
        return self.surrogate, True

    def noise_generator(self, x: Tensor) -> torch.Generator | None:
        """The generator to draw ``x``'s noise from: :attr:`generator` (``None``: torch's default).

        A generator seeded by :func:`~spikeguard.neurons.noise_seed` on another device than
        ``x`` (e.g. a parameterless model, whose device the seeding cannot see) is re-created on
        ``x``'s device from the same seed, once; a generator set by hand on the wrong device is
        an error, since its stream cannot be moved.
        """
        gen = getattr(self, "generator", None)
        if gen is None or gen.device == x.device:
            return gen
        if self.generator_seed is None:
            raise RuntimeError(f"{type(self).__name__} generator is on {gen.device} but input is on {x.device}")
        gen = torch.Generator(device=x.device)
        gen.manual_seed(int(self.generator_seed))
        self.generator = gen
        return gen

    # ------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2:
            raise ValueError(f"{type(self).__name__} expects input [T, B, ...], got shape {tuple(x.shape)}")
        surrogate, at_noisy = self.grad_surrogate()
        if (getattr(self, "backend", None) or _default_backend) == "fused":
            noise = self.fused_noise(x)
            spikes, u_all = lif_scan(
                x,
                noise,
                self.decay,
                self.v_threshold,
                surrogate,
                at_noisy,
                self.detach_reset,
                need_potentials=bool(self._recorders),
            )
            for rec in self._recorders:
                rec.add(self, u_all)
            return spikes
        noise = self.sample_noise(x)
        keep = bool(self._recorders)
        v = torch.zeros_like(x[0])
        spikes, potentials = [], []
        for t in range(x.shape[0]):
            u = self.decay * v + x[t] if t else x[t]
            s = spike(u - self.v_threshold, surrogate, None if noise is None else noise[t], at_noisy)
            v = u * (1.0 - (s.detach() if self.detach_reset else s))
            spikes.append(s)
            if keep:
                potentials.append(u)
        if keep:
            u_all = torch.stack(potentials)
            for rec in self._recorders:
                rec.add(self, u_all)
        return torch.stack(spikes)

    def extra_repr(self) -> str:
        return (
            f"decay={self.decay}, v_threshold={self.v_threshold}, surrogate={self.surrogate.name}"
            f"(width={self.surrogate.width}), detach_reset={self.detach_reset}"
            + (f", backend={self.backend}" if self.backend else "")
        )


class _NoiseSettings(Protocol):
    """The attributes :func:`set_noise` sets on a noisy neuron."""

    sigma: float
    noise: bool
    noisy_grad: str
    generator: torch.Generator | None


def set_noise(
    neuron: _NoiseSettings, sigma: float, noise: bool, noisy_grad: str, generator: torch.Generator | None
) -> None:
    """Validate and set a noisy neuron's ``sigma``, ``noise`` switch, ``noisy_grad`` and ``generator``."""
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    if noisy_grad not in NOISY_GRADS:
        raise ValueError(f"noisy_grad must be one of {NOISY_GRADS}, got {noisy_grad!r}")
    neuron.sigma, neuron.noise, neuron.noisy_grad, neuron.generator = float(sigma), bool(noise), noisy_grad, generator


def gaussian_noise(x: Tensor, sigma: float, generator: torch.Generator | None) -> Tensor:
    """``N(0, sigma^2)`` noise shaped like ``x`` (drawn from ``generator`` when given)."""
    if generator is not None and generator.device != x.device:
        raise RuntimeError(f"noise generator is on {generator.device} but input is on {x.device}")
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * sigma


@register_neuron("noisy_lif", "nlif", "noisy")
class NoisyLIF(LIF):
    """LIF with Gaussian membrane noise: ``S[t] = H(U[t] + eta[t] - V_th)``, eta ~ N(0, sigma^2).

    So ``P(S=1 | U) = Phi((U - V_th) / sigma)``. The noise is part of the defence and is on at
    training *and* test time; it is controlled by :attr:`noise` (or
    :func:`spikeguard.neurons.noise_enabled`), never by ``model.train()/eval()``.

    Args:
        sigma: noise standard deviation; default ``sqrt(0.4)`` (paper: variance 0.4).
        noise: whether noise is sampled.
        noisy_grad: ``"surrogate"``: the surrogate evaluated at the noisy potential (default);
            ``"expected"``: the exact derivative of the firing probability,
            ``phi((U - V_th) / sigma) / sigma``.
        generator: optional ``torch.Generator`` for reproducible noise (see ``noise_seed``).
        **kw: the :class:`LIF` arguments.
    """

    config_fields = LIF.config_fields + ("sigma", "noisy_grad")
    has_noise = True
    sigma: float
    noise: bool
    noisy_grad: str

    def __init__(
        self,
        sigma: float = math.sqrt(0.4),
        noise: bool = True,
        noisy_grad: str = "surrogate",
        generator: torch.Generator | None = None,
        **kw,
    ) -> None:
        super().__init__(**kw)
        set_noise(self, sigma, noise, noisy_grad, generator)

    @property
    def stochastic(self) -> bool:
        """True when a forward pass samples noise."""
        return self.noise and self.sigma > 0

    def sample_noise(self, x: Tensor) -> Tensor | None:
        if not self.stochastic:
            return None
        return gaussian_noise(x, self.sigma, self.noise_generator(x))

    def fused_noise(self, x: Tensor):
        # Gaussian noise drawn inside the Triton kernel (Philox seed from this neuron's
        # generator), regenerated in its backward instead of stored; other kernels, and
        # subclasses with their own noise, get the sampled tensor.
        if self.stochastic and type(self).sample_noise is NoisyLIF.sample_noise:
            spec = philox_noise_for(x, self.sigma, self.noise_generator(x))
            if spec is not None:
                return spec
        return self.sample_noise(x)

    def grad_surrogate(self) -> tuple[Surrogate, bool]:
        if self.noisy_grad == "expected" and self.stochastic:
            return Surrogate("gaussian", self.sigma), False
        return self.surrogate, True

    def extra_repr(self) -> str:
        return super().extra_repr() + f", sigma={self.sigma:.4g}, noise={self.noise}, noisy_grad={self.noisy_grad}"


@register_neuron("relu")
class MultiStepReLU(nn.Module):
    """ReLU on ``[T, B, ...]``: the activation of a network's ANN twin (``neuron="relu"``).

    Takes (and ignores) any neuron arguments, so a model's ``neuron_kw`` builds its ANN twin too.
    """

    config_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **_neuron_kw) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)
