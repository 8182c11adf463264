"""Batched tensor augmentation (runs on whatever device the batch is on)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _rand(n: int, generator: torch.Generator | None, high: int | None = None) -> Tensor:
    if high is None:
        return torch.rand(n, generator=generator)
    return torch.randint(0, high, (n,), generator=generator)


def random_crop_flip(
    x: Tensor, generator: torch.Generator | None = None, padding: int = 4, flip: bool = True
) -> Tensor:
    """Random crop with zero padding and random horizontal flip, per sample, in one batched op.

    Randomness is drawn on the CPU from ``generator`` so results do not depend on the device.
    """
    b, _, h, w = x.shape
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        dy = _rand(b, generator, 2 * padding + 1).to(x.device)
        dx = _rand(b, generator, 2 * padding + 1).to(x.device)
        rows = dy.view(b, 1) + torch.arange(h, device=x.device).view(1, h)  # [b, h]
        cols = dx.view(b, 1) + torch.arange(w, device=x.device).view(1, w)  # [b, w]
        bi = torch.arange(b, device=x.device).view(b, 1, 1)
        x = padded.permute(0, 2, 3, 1)[bi, rows.view(b, h, 1), cols.view(b, 1, w)].permute(0, 3, 1, 2)
    if flip:
        do = (_rand(b, generator) < 0.5).to(x.device).view(b, 1, 1, 1)
        x = torch.where(do, x.flip(3), x)
    return x.contiguous()
