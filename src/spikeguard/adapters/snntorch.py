"""snnTorch neurons (``Leaky``, ``Synaptic`` and the others with ``spike_grad`` and ``threshold``).

Their spike is ``spike_grad(mem - threshold)`` inside ``fire(mem)``; ``spike_grad`` also
computes the (detached) reset, so the potential is recorded in ``fire`` rather than in
the spike function, once per step.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from torch import Tensor, nn

from .base import NeuronAdapter, Recorder, _instance_attr
from ..neurons.surrogate import Surrogate


class SnnTorchAdapter(NeuronAdapter):
    package = "snntorch"
    spike_attr = "spike_grad"

    def matches(self, module: nn.Module) -> bool:
        return super().matches(module) and hasattr(module, "threshold") and hasattr(module, "fire")

    def threshold(self, module: nn.Module) -> Any:
        return module.threshold

    def base_surrogate(self, module: nn.Module):
        """snnTorch's default ``atan`` (alpha 2) is spikeguard's atan of width 1."""
        fn = getattr(module, self.spike_attr)
        fn = getattr(fn, "original", fn)
        if "atan" in getattr(fn, "__qualname__", "").lower():
            return Surrogate("atan", 1.0)
        return super().base_surrogate(module)

    @contextlib.contextmanager
    def record(self, module: nn.Module, add: Recorder) -> Iterator[None]:
        fire = module.fire

        def recording_fire(mem: Tensor) -> Tensor:
            add(module, mem.unsqueeze(0))
            return fire(mem)  # type: ignore[operator]  # module.fire is snnTorch's method

        with _instance_attr(module, "fire", recording_fire):
            yield


SNNTORCH = SnnTorchAdapter()
