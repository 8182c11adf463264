"""Building blocks shared by every spikeguard network.

Conventions (the attack and training code relies on them):

* input ``[B, C, H, W]`` in ``[0, 1]``; per-channel normalisation happens inside the model;
* direct encoding: the image drives the first layer at every time step. The first conv +
  BatchNorm see the same input at every step, so they run once on ``[B, ...]`` and are
  broadcast to ``[T, B, ...]`` (same numbers as running them T times, T times cheaper);
* ``forward_steps`` returns per-time-step logits ``[T, B, K]`` (for the TET loss) and
  ``forward`` their mean over T.

Frame sequences (event-camera data, :meth:`SpikingModel.use_frame_input`): the input is one
frame per time step, ``[T, B, C, H, W]`` or packed ``[B, T * C, H, W]`` (what data sets,
batches and attacks carry, so every L-inf attack works on it unchanged); the stem then runs
at every step (no stem-once shortcut) and ``model.T`` must equal the number of frames.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..neurons import make_neuron


class MultiStep(nn.Sequential):
    """Apply stateless layers to ``[T, B, ...]`` by merging T into the batch (one call, not T)."""

    def forward(self, x: Tensor) -> Tensor:
        t, b = x.shape[:2]
        y = super().forward(x.flatten(0, 1))
        return y.unflatten(0, (t, b))


class NeuronFactory:
    """Builds the activation of every spiking layer from one description.

    Args:
        kind: a registered neuron kind (``lif``, ``noisy_lif``, ``relu`` (ANN twin), ...).
        **kw: neuron arguments (decay, v_threshold, surrogate, width, sigma, noisy_grad, ...).
    """

    def __init__(self, kind: str = "lif", **kw) -> None:
        self.kind = kind
        self.kw = dict(kw)
        make_neuron(kind, **self.kw)  # validate early, with a clear message

    def __call__(self) -> nn.Module:
        return make_neuron(self.kind, **self.kw)


class SpikingModel(nn.Module):
    """Base class: normalisation, direct encoding over ``T`` steps, logits averaged over T.

    Subclasses define ``self.stem`` (applied once to ``[B, C, H, W]``) and ``self.body``
    (applied to ``[T, B, ...]``, returning ``[T, B, K]``).

    Args:
        T: number of time steps (1 for an ANN twin).
        num_classes: number of output classes.
        mean, std: per-channel input normalisation (applied inside the model).
    """

    stem: nn.Module
    body: nn.Module
    mean: Tensor  # buffers, shaped [1, C, 1, 1]
    std: Tensor
    #: frames per sample when the input is a frame sequence (0: a static image, direct encoding)
    frames: int = 0
    #: how frame values encode event counts (a FrameNorm spec such as ``"clip:4"``), for event attacks
    frame_norm: str = ""

    def __init__(
        self,
        T: int,
        num_classes: int,
        in_channels: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if int(T) < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        self.T = int(T)
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        mean = [0.0] * in_channels if mean is None else list(mean)
        std = [1.0] * in_channels if std is None else list(std)
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError("mean/std must have one entry per input channel")
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def use_frame_input(self, frames: int, frame_norm: str = "") -> None:
        """Take frame sequences of ``frames`` frames (one per time step) instead of static images.

        Raises:
            ValueError: ``frames != self.T`` (each time step consumes one frame).
        """
        frames = int(frames)
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        if frames != self.T:
            raise ValueError(
                f"the data has {frames} frames per sample but the model has T = {self.T} time steps; "
                f"set model.T = {frames} (event data feeds one frame per step)"
            )
        self.frames = frames
        self.frame_norm = str(frame_norm)

    def check_input(self, x: Tensor) -> None:
        if self.frames:
            ok = (x.dim() == 4 and x.shape[1] == self.frames * self.in_channels) or (
                x.dim() == 5 and x.shape[0] == self.frames and x.shape[2] == self.in_channels
            )
            if not ok:
                raise ValueError(
                    f"{type(self).__name__} expects {self.frames} frames of {self.in_channels} channels: "
                    f"[T={self.frames}, B, {self.in_channels}, H, W] or packed [B, {self.frames * self.in_channels}, "
                    f"H, W], got shape {tuple(x.shape)}"
                )
            return
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects images [B, {self.in_channels}, H, W], got shape {tuple(x.shape)}"
            )

    def frame_sequence(self, x: Tensor) -> Tensor:
        """Packed ``[B, T * C, H, W]`` (or already ``[T, B, C, H, W]``) -> ``[T, B, C, H, W]``."""
        if x.dim() == 5:
            return x
        return x.unflatten(1, (self.frames, self.in_channels)).transpose(0, 1)

    def forward_steps(self, x: Tensor) -> Tensor:
        """Per-time-step logits ``[T, B, num_classes]`` for images ``x`` in [0, 1]."""
        self.check_input(x)
        if self.frames:
            seq = self.frame_sequence(x)
            h = self.stem((seq.flatten(0, 1) - self.mean) / self.std)  # the stem runs at every step
            return self.body(h.unflatten(0, tuple(seq.shape[:2])))
        h = self.stem((x - self.mean) / self.std)
        h = h.unsqueeze(0).expand(self.T, *h.shape)
        return self.body(h)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]``: the mean of :meth:`forward_steps` over time."""
        return self.forward_steps(x).mean(0)


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, padding: int | None = None) -> list[nn.Module]:
    """Conv (no bias, BatchNorm follows) + BatchNorm2d."""
    p = k // 2 if padding is None else padding
    return [nn.Conv2d(cin, cout, k, stride=stride, padding=p, bias=False), nn.BatchNorm2d(cout)]
