"""Spiking neurons of other libraries, seen through spikeguard's two neuron hooks.

The surrogate-adaptive attacks swap every neuron's surrogate gradient and the membrane
analyses record every neuron's pre-spike potential. spikeguard's own neurons support
both directly; the adapters here give the same two hooks to

* SpikingJelly ``activation_based`` neurons (anything with a ``surrogate_function`` module
  called on ``v - v_threshold``: ``LIFNode``, ``IFNode``, ``ParametricLIFNode`` ...);
* snnTorch neurons with a ``spike_grad`` and a ``threshold`` (``Leaky``, ``Synaptic``, ...).

Neither package is imported: a neuron is recognised by the module its class comes from,
so the adapters cost nothing unless the user's model is built from those neurons. The
hooks are installed only inside :func:`foreign_surrogate` / :func:`foreign_recording`
and removed on exit.

How each hook works:

* surrogate swap: the neuron's spike function is replaced by one whose forward is the
  Heaviside step ``H(U - V_th)`` (what both libraries compute) and whose backward is the
  requested :class:`~spikeguard.neurons.Surrogate`;
* recording: the potential ``U`` the neuron compares with its threshold, as ``[1, B, ...]``
  per call (these libraries step one time step per call), passed to the recorder.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from torch import Tensor, nn

from .snntorch import SNNTORCH
from .spikingjelly import SPIKINGJELLY
from ..neurons.recording import register_foreign_recording
from .base import NeuronAdapter, SpikeHook

#: Known adapters, tried in order.
ADAPTERS: tuple[NeuronAdapter, ...] = (SPIKINGJELLY, SNNTORCH)


@dataclass(frozen=True)
class ForeignNeuron:
    """One adapted neuron: its qualified name, module and the adapter that handles it."""

    name: str
    module: nn.Module
    adapter: NeuronAdapter


def foreign_neurons(model: nn.Module) -> list[ForeignNeuron]:
    """The SpikingJelly / snnTorch neurons inside ``model``, in definition order."""
    out = []
    for name, m in model.named_modules():
        for adapter in ADAPTERS:
            if adapter.matches(m):
                out.append(ForeignNeuron(name, m, adapter))
                break
    return out


@contextlib.contextmanager
def foreign_surrogate(model: nn.Module, surrogate: Any) -> Iterator[int]:
    """Inside the block every adapted neuron's backward uses ``surrogate``; yields how many."""
    neurons = foreign_neurons(model)
    with contextlib.ExitStack() as stack:
        for n in neurons:
            hook = stack.enter_context(n.adapter.spike_hook(n.module))
            hook.surrogate = surrogate
        yield len(neurons)


@contextlib.contextmanager
def foreign_recording(model: nn.Module, add: Callable[[nn.Module, Tensor], None]) -> Iterator[list[ForeignNeuron]]:
    """Inside the block every adapted neuron reports its pre-spike potential to ``add``."""
    neurons = foreign_neurons(model)
    with contextlib.ExitStack() as stack:
        for n in neurons:
            stack.enter_context(n.adapter.record(n.module, add))
        yield neurons


register_foreign_recording(foreign_recording)


def base_surrogate(module: nn.Module):
    """spikeguard's closest :class:`~spikeguard.neurons.Surrogate` to an adapted neuron's own."""
    for adapter in ADAPTERS:
        if adapter.matches(module):
            return adapter.base_surrogate(module)
    raise ValueError(f"{type(module).__name__} is not an adapted neuron")


__all__ = [
    "ADAPTERS",
    "ForeignNeuron",
    "NeuronAdapter",
    "SpikeHook",
    "base_surrogate",
    "foreign_neurons",
    "foreign_recording",
    "foreign_surrogate",
]
