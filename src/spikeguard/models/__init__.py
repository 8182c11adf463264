"""Spiking network architectures and the model registry."""

from .base import MultiStep, NeuronFactory, SpikingModel, conv_bn
from .registry import count_parameters, create_model, list_models, model_builder, register_model

# importing a module registers the models it defines (@register_model)
from .small import SmallConvSNN, SpikingMLP
from .vgg import SpikingVGG
from .wrn import SpikingWideResNet, WideBlock

__all__ = [
    "SpikingModel",
    "MultiStep",
    "NeuronFactory",
    "conv_bn",
    "create_model",
    "list_models",
    "model_builder",
    "register_model",
    "count_parameters",
    "SmallConvSNN",
    "SpikingMLP",
    "SpikingVGG",
    "SpikingWideResNet",
    "WideBlock",
]
