"""The adapter interface and the spike-function hook shared by all adapters."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from torch import Tensor, nn

from ..neurons.surrogate import Surrogate, spike

Recorder = Callable[[nn.Module, Tensor], None]


class SpikeHook(nn.Module):
    """Stands in for a neuron's spike function ``x -> H(x)`` with ``x = U - V_th``.

    Forward is the original function's (so the model computes exactly what it computes
    without the hook); with :attr:`surrogate` set, the spike is spikeguard's Heaviside with
    that surrogate's backward instead. Every recorder gets ``U = x + V_th`` as ``[1, B, ...]``.
    """

    original: Callable[[Tensor], Tensor]
    neuron: nn.Module
    threshold: Callable[[], Any]

    def __init__(self, original: Callable[[Tensor], Tensor], neuron: nn.Module, threshold: Callable[[], Any]) -> None:
        super().__init__()
        # plain attributes, not child modules: the model's module tree stays as it was
        object.__setattr__(self, "original", original)
        object.__setattr__(self, "neuron", neuron)
        object.__setattr__(self, "threshold", threshold)
        self.surrogate: Any = None
        self.recorders: list[Recorder] = []

    def forward(self, x: Tensor) -> Tensor:
        for add in self.recorders:
            add(self.neuron, (x + self.threshold()).unsqueeze(0))
        if self.surrogate is None:
            return self.original(x)

        return spike(x, self.surrogate)


class NeuronAdapter:
    """How spikeguard reaches into one library's neurons.

    Subclasses set ``package`` (the neurons' top-level module name) and ``spike_attr`` (the
    attribute holding the spike function) and implement :meth:`threshold`.
    """

    package = ""
    spike_attr = ""

    def matches(self, module: nn.Module) -> bool:
        return type(module).__module__.split(".")[0] == self.package and hasattr(module, self.spike_attr)

    def threshold(self, module: nn.Module) -> Any:
        raise NotImplementedError

    def base_surrogate(self, module: nn.Module):
        """spikeguard's closest surrogate to the neuron's own (default: triangle, width 1)."""
        return Surrogate("triangle", 1.0)

    @contextlib.contextmanager
    def spike_hook(self, module: nn.Module) -> Iterator[SpikeHook]:
        """A :class:`SpikeHook` in place of the neuron's spike function inside the block (nestable)."""
        current = getattr(module, self.spike_attr)
        if isinstance(current, SpikeHook):  # already hooked by an enclosing block: share it
            saved = (current.surrogate, list(current.recorders))
            try:
                yield current
            finally:
                current.surrogate, current.recorders = saved
            return
        hook = SpikeHook(current, module, lambda: self.threshold(module))
        with _instance_attr(module, self.spike_attr, hook):
            yield hook

    @contextlib.contextmanager
    def record(self, module: nn.Module, add: Recorder) -> Iterator[None]:
        """Report the neuron's pre-spike potential to ``add`` inside the block."""
        with self.spike_hook(module) as hook:
            hook.recorders.append(add)
            yield


@contextlib.contextmanager
def _instance_attr(module: nn.Module, attr: str, value: Any) -> Iterator[None]:
    """Shadow ``module.attr`` with ``value`` in the instance's ``__dict__`` (found before
    ``nn.Module``'s parameters/modules/buffers), restored on exit; the module tree is unchanged."""
    had = attr in module.__dict__
    old = module.__dict__.get(attr)
    module.__dict__[attr] = value
    try:
        yield
    finally:
        if had:
            module.__dict__[attr] = old
        else:
            del module.__dict__[attr]
