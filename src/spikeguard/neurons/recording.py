"""Scoped access to pre-spike membrane potentials and to neuron settings.

Everything here is a context manager: state is attached to the neurons on entry and
removed on exit, so nothing lingers that a user must remember to reset.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from .lif import LIF
from .surrogate import Surrogate


def spiking_neurons(model: nn.Module) -> list[tuple[str, LIF]]:
    """All spiking neurons in ``model`` as ``(qualified name, module)``, in forward-definition order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LIF)]


def noisy_neurons(model: nn.Module) -> list[LIF]:
    """The spiking neurons with a ``noise`` switch (``has_noise``), whether it is on or off."""
    return [m for _, m in spiking_neurons(model) if m.has_noise]


def is_stochastic(model: nn.Module) -> bool:
    """True if a forward pass of ``model`` draws random numbers (some neuron is ``stochastic``)."""
    return any(m.stochastic for _, m in spiking_neurons(model))


class PotentialRecorder:
    """Collects the pre-spike potentials ``U`` (``[T, B, ...]``) of every spiking layer.

    Args:
        detach: store detached tensors (analysis) instead of graph-connected ones (loss).
        keep: store the tensors in :attr:`potentials`; set False together with ``on_record``
            to stream statistics without holding every tensor.
        on_record: optional callback ``(layer_name, U)`` called on every record.
    """

    def __init__(
        self, detach: bool = False, keep: bool = True, on_record: Callable[[str, Tensor], None] | None = None
    ) -> None:
        self.detach = detach
        self.keep = keep
        self.on_record = on_record
        self.potentials: list[Tensor] = []
        self.names: list[str] = []
        self._names: dict[int, str] = {}

    def add(self, neuron: nn.Module, u: Tensor) -> None:
        if self.detach:
            u = u.detach()
        name = self._names.get(id(neuron), type(neuron).__name__)
        if self.keep:
            self.potentials.append(u)
            self.names.append(name)
        if self.on_record is not None:
            self.on_record(name, u)

    def clear(self) -> None:
        """Drop what was recorded (e.g. between batches)."""
        self.potentials.clear()
        self.names.clear()


#: Context managers ``hook(model, add)`` that make the model's foreign (non-spikeguard) neurons
#: report their potentials to ``add`` inside the block and yield them (objects with ``module`` and
#: ``name``). :mod:`spikeguard.adapters` registers its SpikingJelly / snnTorch hook here on import
#: (``import spikeguard`` imports it); the hook lives above this module, so it is handed down.
_FOREIGN_RECORDING: list[Callable[[nn.Module, Callable[[nn.Module, Tensor], None]], Any]] = []


def register_foreign_recording(hook: Callable[[nn.Module, Callable[[nn.Module, Tensor], None]], Any]) -> None:
    """Add a foreign-neuron recording hook used by :func:`record_potentials` (idempotent)."""
    if hook not in _FOREIGN_RECORDING:
        _FOREIGN_RECORDING.append(hook)


@contextlib.contextmanager
def record_potentials(
    model: nn.Module, detach: bool = False, keep: bool = True, on_record: Callable[[str, Tensor], None] | None = None
) -> Iterator[PotentialRecorder]:
    """Record the pre-spike potentials of every spiking layer of ``model`` inside the block.

    SpikingJelly and snnTorch neurons are recorded too (see :mod:`spikeguard.adapters`),
    one ``[1, B, ...]`` tensor per call, as those libraries step one time step per call.

    Example::

        with record_potentials(model) as rec:
            logits = model(x)
        loss = ce(logits, y) + tgo(rec.potentials, epoch)
    """
    rec = PotentialRecorder(detach=detach, keep=keep, on_record=on_record)
    neurons = spiking_neurons(model)
    rec._names = {id(m): name for name, m in neurons}
    for _, m in neurons:
        m._recorders = m._recorders + (rec,)
    try:
        with contextlib.ExitStack() as stack:
            for hook in _FOREIGN_RECORDING:  # SpikingJelly / snnTorch neurons, if the model has any
                foreign = stack.enter_context(hook(model, rec.add))
                rec._names.update({id(n.module): n.name for n in foreign})
            yield rec
    finally:
        for _, m in neurons:
            m._recorders = tuple(r for r in m._recorders if r is not rec)


@contextlib.contextmanager
def _setting(modules: Sequence[nn.Module], attr: str, values: list) -> Iterator[None]:
    old = [getattr(m, attr) for m in modules]
    for m, v in zip(modules, values, strict=True):
        setattr(m, attr, v)
    try:
        yield
    finally:
        for m, v in zip(modules, old, strict=True):
            setattr(m, attr, v)


def noise_enabled(model: nn.Module, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Switch Noisy-LIF noise on or off inside the block (e.g. a noise-free twin as attack source)."""
    mods = noisy_neurons(model)
    return _setting(mods, "noise", [bool(enabled)] * len(mods))


def noise_seed(model: nn.Module, seed: int) -> contextlib.AbstractContextManager:
    """Make every Noisy-LIF draw reproducible inside the block.

    Each noisy layer gets its own generator seeded with ``seed + index``; entering the block
    twice with the same seed reproduces the same noise samples (the fixed-noise attack). The
    generators are made on the model's parameter device; a model without parameters gets them
    on the CPU, and each neuron re-creates its generator on its input's device (same seed) at
    the first draw (:meth:`~spikeguard.neurons.LIF.noise_generator`).
    """
    mods = noisy_neurons(model)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    seeds = [int(seed) + i for i in range(len(mods))]
    gens = [torch.Generator(device=device) for _ in mods]
    for g, s in zip(gens, seeds, strict=True):
        g.manual_seed(s)
    return _settings(mods, {"generator": gens, "generator_seed": seeds})


@contextlib.contextmanager
def _settings(modules: Sequence[nn.Module], values: dict[str, list]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for attr, vals in values.items():
            stack.enter_context(_setting(modules, attr, vals))
        yield


def use_surrogate(
    model: nn.Module, surrogate: str | Surrogate, width: float = 1.0
) -> contextlib.AbstractContextManager:
    """Swap every neuron's surrogate gradient inside the block (attack-time surrogate ensembles)."""
    sg = surrogate if isinstance(surrogate, Surrogate) else Surrogate(surrogate, width)
    mods = [m for _, m in spiking_neurons(model)]
    return _setting(mods, "surrogate", [sg] * len(mods))
