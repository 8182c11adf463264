"""Model registry: ``create_model("small_conv", num_classes=10, T=4, neuron="noisy_lif")``."""

from __future__ import annotations

from typing import Callable

from torch import nn

from .base import NeuronFactory, SpikingModel

_REGISTRY: dict[str, Callable[..., SpikingModel]] = {}


def register_model(name: str) -> Callable[[Callable[..., SpikingModel]], Callable[..., SpikingModel]]:
    """Decorator: register a builder ``fn(num_classes, T, neuron: NeuronFactory, **kw)``."""

    def deco(fn: Callable[..., SpikingModel]) -> Callable[..., SpikingModel]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int = 10, T: int = 4, neuron: str = "lif",
                 neuron_kw: dict | None = None, **kw) -> SpikingModel:
    """Build a registered network.

    Args:
        name: registered model name (see :func:`list_models`).
        num_classes: output classes.
        T: time steps; forced to 1 when ``neuron == "relu"`` (the ANN twin).
        neuron: ``lif``, ``noisy_lif`` or ``relu``.
        neuron_kw: neuron arguments (decay, v_threshold, surrogate, width, sigma, ...).
        **kw: architecture arguments (in_channels, image_size, mean, std, ...); ``frames=T``
            (and ``frame_norm``) make the model take frame sequences of event data
            (:meth:`SpikingModel.use_frame_input`).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    frames, frame_norm = int(kw.pop("frames", 0) or 0), str(kw.pop("frame_norm", "") or "")
    factory = NeuronFactory(neuron, **(neuron_kw or {}))
    if neuron == "relu":
        T = 1
    model = _REGISTRY[name](num_classes=num_classes, T=T, neuron=factory, **kw)
    # baseline neurons (DLIF, StoG) size their parameters on the first forward: do it now, so the
    # model can be counted, optimised and loaded like any other
    from ..neurons.baselines import materialize_for

    materialize_for(model, kw)
    if frames:
        model.use_frame_input(frames, frame_norm)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _register_builtin() -> None:
    from .small import SmallConvSNN, SpikingMLP

    register_model("small_conv")(lambda **kw: SmallConvSNN(**kw))
    register_model("mlp")(lambda **kw: SpikingMLP(**kw))

    from .vgg import vgg11, vgg_small
    from .wrn import wrn16_4

    register_model("vgg11")(vgg11)
    register_model("vgg_small")(vgg_small)
    register_model("wrn16_4")(wrn16_4)


_register_builtin()
