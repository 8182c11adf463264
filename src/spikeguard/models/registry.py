"""Model registry: ``create_model("small_conv", num_classes=10, T=4, neuron="noisy_lif")``.

A model registers itself where it is defined, timm-style, with ``@register_model("name")`` on
its class or builder function ``fn(num_classes, T, neuron: NeuronFactory, **kw)``; the
package imports its modules (:mod:`spikeguard.models`), so nothing else needs editing.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..registry import Registry
from .base import NeuronFactory, SpikingModel
from ..neurons.baselines import materialize_for

#: Every model builder, by name (``spikeguard list models``).
MODELS: Registry[Callable[..., SpikingModel]] = Registry("model")


def register_model(
    name: str, *, description: str | None = None
) -> Callable[[Callable[..., SpikingModel]], Callable[..., SpikingModel]]:
    """Decorator: register a builder ``fn(num_classes, T, neuron: NeuronFactory, **kw)``."""
    return MODELS.register(name, description=description)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return MODELS.names()


def model_builder(name: str) -> Callable[..., SpikingModel]:
    """The class or function registered as ``name``."""
    return MODELS.get(name)


def create_model(
    name: str, num_classes: int = 10, T: int = 4, neuron: str = "lif", neuron_kw: dict | None = None, **kw
) -> SpikingModel:
    """Build a registered network.

    Args:
        name: registered model name (see :func:`list_models`).
        num_classes: output classes.
        T: time steps; forced to 1 when ``neuron == "relu"`` (the ANN twin).
        neuron: a registered neuron kind (``lif``, ``noisy_lif``, ``relu``, ...).
        neuron_kw: neuron arguments (decay, v_threshold, surrogate, width, sigma, ...).
        **kw: architecture arguments (in_channels, image_size, mean, std, ...); ``frames=T``
            (and ``frame_norm``) make the model take frame sequences of event data
            (:meth:`SpikingModel.use_frame_input`).
    """
    builder = model_builder(name)
    frames, frame_norm = int(kw.pop("frames", 0) or 0), str(kw.pop("frame_norm", "") or "")
    factory = NeuronFactory(neuron, **(neuron_kw or {}))
    if neuron == "relu":
        T = 1
    model = builder(num_classes=num_classes, T=T, neuron=factory, **kw)
    # baseline neurons (DLIF, StoG) size their parameters on the first forward: do it now, so the
    # model can be counted, optimised and loaded like any other

    materialize_for(model, kw)
    if frames:
        model.use_frame_input(frames, frame_norm)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
