"""Neuron registry: ``@register_neuron("noisy_lif", "nlif")`` on the class that defines a neuron.

Adding a neuron is one class in one file::

    @register_neuron("my_lif")
    class MyLIF(LIF):
        config_fields = LIF.config_fields + ("sigma",)   # NeuronConfig fields it takes
        ...

after which ``neuron.kind = "my_lif"`` works in configs, :func:`make_neuron`, the model
factory and ``spikeguard list neurons``. Whether a neuron is random is its own
:attr:`~spikeguard.neurons.LIF.stochastic` property, not a class test, so a stochastic neuron
need not derive from :class:`~spikeguard.neurons.NoisyLIF`.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

from ..registry import Registry

N = TypeVar("N", bound=type)

#: Every neuron class, by kind (``spikeguard list neurons``).
NEURONS: Registry[type[nn.Module]] = Registry("neuron")


def register_neuron(name: str, *aliases: str, description: str | None = None) -> Callable[[N], N]:
    """Class decorator registering a neuron under ``name`` (and optional alias names).

    The class is built as ``cls(**neuron_kw)``; its ``config_fields`` (a tuple of
    :class:`~spikeguard.config.NeuronConfig` field names) say which config values it takes.
    """

    def deco(cls: N) -> N:
        NEURONS.add(name, cls, aliases=aliases, description=description)
        cls.kind = name  # type: ignore[attr-defined]  # every registered neuron class carries its kind
        return cls

    return deco


def list_neurons() -> list[str]:
    """Registered neuron kinds (without aliases), sorted."""
    return NEURONS.names()


def neuron_aliases(kind: str) -> list[str]:
    """The alias names of the registered neuron ``kind``."""
    return list(NEURONS.entry(kind).aliases)


def neuron_class(kind: str) -> type[nn.Module]:
    """The class registered as ``kind`` (or one of its aliases)."""
    return NEURONS.get(kind)


def make_neuron(kind: str, **kw) -> nn.Module:
    """Build a registered neuron by name, e.g. ``make_neuron("noisy_lif", sigma=0.5)``."""
    return neuron_class(kind)(**kw)


__all__ = ["NEURONS", "register_neuron", "list_neurons", "neuron_class", "neuron_aliases", "make_neuron"]
