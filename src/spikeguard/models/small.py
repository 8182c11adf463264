"""Small spiking networks for the embedded digits data and for tests."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from .base import MultiStep, NeuronFactory, SpikingModel, conv_bn
from .registry import register_model
import itertools


@register_model("small_conv")
class SmallConvSNN(SpikingModel):
    """Three conv layers (BatchNorm + spiking neuron), two 2x2 average pools, one linear readout.

    For 8x8 digits: 8x8 -> 8x8 -> pool 4x4 -> 4x4 -> pool 2x2 -> linear.
    """

    def __init__(
        self,
        num_classes: int = 10,
        T: int = 4,
        in_channels: int = 1,
        image_size: int = 8,
        channels: Sequence[int] = (16, 32, 64),
        neuron: NeuronFactory | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(T, num_classes, in_channels, mean, std)
        if image_size % 4:
            raise ValueError(f"SmallConvSNN needs an image size divisible by 4, got {image_size}")
        neuron = neuron or NeuronFactory("lif")
        c1, c2, c3 = channels
        self.stem = nn.Sequential(*conv_bn(in_channels, c1))
        self.body = nn.Sequential(
            neuron(),
            MultiStep(*conv_bn(c1, c2), nn.AvgPool2d(2)),
            neuron(),
            MultiStep(*conv_bn(c2, c3), nn.AvgPool2d(2)),
            neuron(),
            MultiStep(nn.Flatten(), nn.Linear(c3 * (image_size // 4) ** 2, num_classes)),
        )


@register_model("mlp")
class SpikingMLP(SpikingModel):
    """Fully connected SNN: Linear + BatchNorm1d + neuron per hidden layer, linear readout."""

    def __init__(
        self,
        num_classes: int = 10,
        T: int = 4,
        in_channels: int = 1,
        image_size: int = 8,
        hidden: Sequence[int] = (128, 64),
        neuron: NeuronFactory | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(T, num_classes, in_channels, mean, std)
        neuron = neuron or NeuronFactory("lif")
        dims = [in_channels * image_size * image_size, *hidden]
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(dims[0], dims[1], bias=False), nn.BatchNorm1d(dims[1]))
        layers: list[nn.Module] = [neuron()]
        for a, b in itertools.pairwise(dims[1:]):
            layers += [MultiStep(nn.Linear(a, b, bias=False), nn.BatchNorm1d(b)), neuron()]
        layers.append(MultiStep(nn.Linear(dims[-1], num_classes)))
        self.body = nn.Sequential(*layers)
