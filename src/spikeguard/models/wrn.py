"""Spiking Wide ResNet (WRN-16-4 by default), as used by SNN-RAT / Ding et al.

Pre-activation basic blocks (BN -> spike -> conv -> BN -> spike -> conv), widths
16 -> 16k -> 32k -> 64k for widen factor k, (depth - 4) / 6 blocks per group, a 1x1 conv
shortcut where the shape changes, and the residual sum as a learnable two-term
combination ``a * shortcut + b * residual`` (a = b = 0.5 at init, as in SNN-RAT's code).
Head: BN -> spike -> global average pool -> linear.

Direct encoding: the first conv and the BatchNorm that opens the first block see the same
input at every time step, so they form the ``stem`` and run once.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .base import MultiStep, NeuronFactory, SpikingModel
from .registry import register_model
from .vgg import _init_weights


def _conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class WideBlock(nn.Module):
    """Pre-activation wide basic block on ``[T, B, C, H, W]``.

    Args:
        cin, cout, stride: shape change of the block.
        neuron: activation factory.
        pre_bn: apply the block's opening BatchNorm (False for the first block, whose
            BatchNorm lives in the model's stem).
        dropout: dropout between the two convs (0 = none, the paper's setting is unknown).
        learnable_mix: learnable residual weights (SNN-RAT) instead of a plain sum.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        neuron: NeuronFactory,
        pre_bn: bool = True,
        dropout: float = 0.0,
        learnable_mix: bool = True,
    ) -> None:
        super().__init__()
        self.pre = MultiStep(nn.BatchNorm2d(cin)) if pre_bn else None
        self.act1 = neuron()
        self.conv1 = MultiStep(_conv3(cin, cout, stride), nn.BatchNorm2d(cout))
        self.act2 = neuron()
        layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
        self.conv2 = MultiStep(*layers, _conv3(cout, cout))
        self.shortcut = (
            MultiStep(nn.Conv2d(cin, cout, 1, stride=stride, bias=False)) if cin != cout or stride != 1 else None
        )
        if learnable_mix:
            self.mix = nn.Parameter(torch.full((2,), 0.5))
        else:
            self.register_buffer("mix", torch.ones(2))

    def forward(self, x: Tensor) -> Tensor:
        a = self.act1(self.pre(x) if self.pre is not None else x)
        out = self.conv2(self.act2(self.conv1(a)))
        # identity blocks add the raw (pre-activation) input, projecting ones the spikes
        skip = x if self.shortcut is None else self.shortcut(a)
        return self.mix[0] * skip + self.mix[1] * out


class SpikingWideResNet(SpikingModel):
    """Spiking WRN-depth-k.

    Args:
        num_classes: output classes.
        T: time steps (1 for the ANN twin).
        depth: 6n + 4 (16 for WRN-16).
        widen: widen factor k (4 for WRN-16-4).
        in_channels, image_size: input shape.
        dropout: dropout inside blocks.
        learnable_mix: SNN-RAT's learnable residual combination (2 parameters per block).
        neuron: the factory that builds every activation.
        mean, std: input normalisation applied inside the model.
    """

    def __init__(
        self,
        num_classes: int = 10,
        T: int = 4,
        depth: int = 16,
        widen: int = 4,
        in_channels: int = 3,
        image_size: int = 32,
        dropout: float = 0.0,
        learnable_mix: bool = True,
        neuron: NeuronFactory | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(T, num_classes, in_channels, mean, std)
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4 with n >= 1, got {depth}")
        if widen < 1:
            raise ValueError(f"widen factor must be >= 1, got {widen}")
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")
        neuron = neuron or NeuronFactory("lif")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.depth, self.widen = depth, widen
        self.stem = nn.Sequential(_conv3(in_channels, widths[0]), nn.BatchNorm2d(widths[0]))
        blocks: list[nn.Module] = []
        cin = widths[0]
        for g, (cout, stride) in enumerate(zip(widths[1:], (1, 2, 2), strict=True)):
            for i in range(n):
                blocks.append(
                    WideBlock(
                        cin,
                        cout,
                        stride if i == 0 else 1,
                        neuron,
                        pre_bn=not (g == 0 and i == 0),
                        dropout=dropout,
                        learnable_mix=learnable_mix,
                    )
                )
                cin = cout
        self.body = nn.Sequential(
            *blocks,
            MultiStep(nn.BatchNorm2d(cin)),
            neuron(),
            MultiStep(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)),
        )
        _init_weights(self)


@register_model("wrn16_4")
def wrn16_4(**kw) -> SpikingWideResNet:
    """WRN-16-4 (depth 16, widen 4)."""
    kw.setdefault("depth", 16)
    kw.setdefault("widen", 4)
    return SpikingWideResNet(**kw)
