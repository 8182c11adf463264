"""Spiking VGG-11 (and a reduced, width-scaled variant for CPU runs).

Layout (``layout="cifar"``, the default): VGG configuration "A" adapted to 32x32 inputs,
eight 3x3 conv layers, each followed by BatchNorm and a spiking neuron, five 2x2 average
pools (spiking nets pool spikes by averaging, as in SNN-RAT / Ding et al.), then the
classifier::

    64, A, 128, A, 256, 256, A, 512, 512, A, 512, 512, A  ->  classifier

``classifier="linear"``: one linear layer on the 512-d feature (9.23M parameters for 10
classes); ``classifier="mlp"``: two hidden spiking linear layers of ``hidden`` units
(512 by default: 9.76M parameters), as in the "9.2M-9.8M depending on the classifier" range.

``layout="snn_rat"`` reproduces the deeper-pooled variant of the SNN-RAT code base
(``64, A, 128, 256, A, 512, 512, 512, A, 512, 512`` with a 4x4x512 -> 4096 -> 4096 -> K
spiking MLP head, about 61M parameters); it is offered for comparison with that code.

Every activation comes from the :class:`~spikeguard.models.NeuronFactory`, so the TGO
constraint and the analyses see every spiking layer. The first conv + BN run once (direct
encoding), everything else on ``[T, B, ...]``.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from .base import MultiStep, NeuronFactory, SpikingModel, conv_bn
from .registry import register_model

Item = int | str

LAYOUTS: dict[str, tuple[Item, ...]] = {
    "cifar": (64, "A", 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A"),
    "snn_rat": (64, "A", 128, 256, "A", 512, 512, 512, "A", 512, 512),
}
CLASSIFIERS = ("linear", "mlp")


def _scaled(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


class SpikingVGG(SpikingModel):
    """Spiking VGG with BatchNorm, average pooling and a linear or spiking-MLP classifier.

    Args:
        num_classes: output classes.
        T: time steps (1 for the ANN twin).
        in_channels, image_size: input shape (square images).
        layout: ``cifar`` (VGG-11 "A", default), ``snn_rat``, or an explicit sequence of
            channel counts and ``"A"`` (2x2 average pool).
        width: channel multiplier (0.25 gives the CPU-sized ``vgg_small``).
        classifier: ``linear`` or ``mlp`` (two spiking hidden layers).
        hidden: hidden units of the ``mlp`` classifier (default 512, or 4096 for ``snn_rat``).
        neuron: the factory that builds every activation.
        mean, std: input normalisation applied inside the model.
    """

    def __init__(
        self,
        num_classes: int = 10,
        T: int = 8,
        in_channels: int = 3,
        image_size: int = 32,
        layout: str | Sequence[Item] = "cifar",
        width: float = 1.0,
        classifier: str | None = None,
        hidden: int | None = None,
        neuron: NeuronFactory | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(T, num_classes, in_channels, mean, std)
        neuron = neuron or NeuronFactory("lif")
        if isinstance(layout, str):
            if layout not in LAYOUTS:
                raise ValueError(f"unknown VGG layout {layout!r}; choose one of {', '.join(LAYOUTS)} or give a list")
            name = layout
            items = LAYOUTS[layout]
        else:
            name = "custom"
            items = tuple(layout)
        if not items or not isinstance(items[0], int):
            raise ValueError("a VGG layout must start with a channel count")
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width}")
        if classifier is None:
            classifier = "mlp" if name == "snn_rat" else "linear"
        if classifier not in CLASSIFIERS:
            raise ValueError(f"unknown VGG classifier {classifier!r}; choose one of {', '.join(CLASSIFIERS)}")
        if hidden is None:
            hidden = 4096 if name == "snn_rat" else 512
        n_pool = sum(1 for it in items if it == "A")
        if image_size < 2**n_pool:
            raise ValueError(
                f"image_size {image_size} is smaller than 2^{n_pool} = {2**n_pool}, the layout's pools "
                f"(a size not divisible by {2**n_pool} is floored by them, e.g. 48 -> 1)"
            )
        final = image_size
        for _ in range(n_pool):  # 2x2 average pools floor odd sizes (48 px: 24, 12, 6, 3, 1)
            final //= 2
        self.layout = name
        self.width = float(width)
        self.classifier_kind = classifier

        c = _scaled(items[0], width)
        self.stem = nn.Sequential(*conv_bn(in_channels, c))
        body: list[nn.Module] = [neuron()]
        pending: list[nn.Module] = []  # stateless layers merged into the next MultiStep
        for it in items[1:]:
            if it == "A":
                pending.append(nn.AvgPool2d(2))
                continue
            if not isinstance(it, int) or it < 1:
                raise ValueError(f"bad VGG layout entry {it!r} (use positive ints and 'A')")
            cout = _scaled(it, width)
            body += [MultiStep(*pending, *conv_bn(c, cout)), neuron()]
            pending = []
            c = cout
        feat = c * final**2
        pending.append(nn.Flatten())
        if classifier == "linear":
            body.append(MultiStep(*pending, nn.Linear(feat, num_classes)))
        else:
            h = _scaled(hidden, width)
            body += [
                MultiStep(*pending, nn.Linear(feat, h)),
                neuron(),
                MultiStep(nn.Linear(h, h)),
                neuron(),
                MultiStep(nn.Linear(h, num_classes)),
            ]
        self.body = nn.Sequential(*body)
        _init_weights(self)


def _init_weights(model: nn.Module) -> None:
    """He init (fan-out) for convs, zero biases: the usual recipe of this line of work."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


@register_model("vgg11")
def vgg11(**kw) -> SpikingVGG:
    """VGG-11 (layout ``cifar``, linear classifier unless overridden)."""
    return SpikingVGG(**kw)


@register_model("vgg_small")
def vgg_small(**kw) -> SpikingVGG:
    """VGG-11 layout at a quarter of the width (16..128 channels): for CPU runs."""
    kw.setdefault("width", 0.25)
    return SpikingVGG(**kw)
