"""SpikingJelly ``activation_based`` neurons (``LIFNode``, ``IFNode``, ``ParametricLIFNode`` ...).

Their spike is ``surrogate_function(v - v_threshold)``, a module whose forward is the
Heaviside step; SpikingJelly falls back to its Python reference path for a surrogate it
does not know, so the hook works in single- and multi-step mode.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import NeuronAdapter
from ..neurons.surrogate import Surrogate


class SpikingJellyAdapter(NeuronAdapter):
    package = "spikingjelly"
    spike_attr = "surrogate_function"

    def threshold(self, module: nn.Module) -> Any:
        return module.v_threshold

    def base_surrogate(self, module: nn.Module):
        """Sigmoid(alpha) -> sigmoid of width 4/alpha, ATan(alpha) -> atan of width 2/alpha
        (the same curves); others: triangle of width 1."""
        sf = getattr(module, self.spike_attr)
        sf = getattr(sf, "original", sf)
        kind, alpha = type(sf).__name__.lower(), getattr(sf, "alpha", None)
        if kind == "sigmoid" and alpha:
            return Surrogate("sigmoid", 4.0 / float(alpha))
        if kind == "atan" and alpha:
            return Surrogate("atan", 2.0 / float(alpha))
        return super().base_surrogate(module)


SPIKINGJELLY = SpikingJellyAdapter()
