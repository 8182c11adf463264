"""A training loader whose data never leaves the device.

The decoded uint8 split is copied to the device once (CIFAR-10's training set is 150 MB).
Each epoch draws its permutation, crop offsets and flips on the CPU from one generator (so
the stream does not depend on the device) and copies them over in one transfer; every batch
is then gathered, cropped, flipped and scaled to [0, 1] on the device with a handful of
batched ops and no host round trip. Normalisation stays inside the model, as everywhere in
spikeguard. It runs on a CPU too (the tests use it there).
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DataError
from .base import ImageDataset


class DeviceLoader:
    """Batches ``(images float [b, C, H, W] in [0, 1], labels [b])`` of a split kept on ``device``.

    Args:
        ds: the split (uint8 or float images).
        batch_size: batch size.
        device: where the data lives and batches are made.
        augment: random crop with ``padding`` zero pixels and random horizontal flip.
        shuffle: a new permutation every epoch.
        drop_last: skip a last, smaller batch.
        seed: seed of the permutation and augmentation stream.
        padding: crop padding in pixels.
        dtype: dtype of the yielded images (float32; bfloat16 halves the bytes for bf16 training).
    """

    def __init__(
        self,
        ds: ImageDataset,
        batch_size: int,
        device: torch.device | str = "cpu",
        augment: bool = True,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        padding: int = 4,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        if padding < 0:
            raise DataError(f"padding must be >= 0, got {padding}")
        self.device = torch.device(device)
        self.images = ds.images.to(self.device)
        self.labels = ds.labels.to(self.device)
        self.scale = 255.0 if ds.images.dtype == torch.uint8 else 1.0  # divided, as float_images does
        self.batch_size, self.augment, self.shuffle, self.drop_last = int(batch_size), augment, shuffle, drop_last
        self.padding, self.dtype = int(padding), dtype
        self.generator = torch.Generator().manual_seed(int(seed))
        n = len(self.labels)
        self.steps = n // self.batch_size if drop_last else math.ceil(n / self.batch_size)

    def __len__(self) -> int:
        return self.steps

    def _epoch_plan(self) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
        n, g = len(self.labels), self.generator
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        if not self.augment:
            return order.to(self.device), None, None, None
        span = 2 * self.padding + 1
        dy = torch.randint(0, span, (n,), generator=g)
        dx = torch.randint(0, span, (n,), generator=g)
        flip = torch.rand(n, generator=g) < 0.5
        plan = torch.stack([order, dy, dx, flip.long()]).to(self.device, non_blocking=True)  # one transfer
        return plan[0], plan[1], plan[2], plan[3].bool()

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order, dy, dx, flip = self._epoch_plan()
        _, _, h, w = self.images.shape
        p = self.padding
        ar_h = torch.arange(h, device=self.device)
        ar_w = torch.arange(w, device=self.device)
        for i in range(self.steps):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.images[idx]
            if dy is not None:
                b = idx.shape[0]
                sl = slice(i * self.batch_size, i * self.batch_size + b)
                x = F.pad(x, (p, p, p, p)) if p else x
                rows = (dy[sl].view(b, 1) + ar_h.view(1, h)).view(b, 1, h, 1).expand(b, x.shape[1], h, x.shape[3])
                x = x.gather(2, rows)
                cols = dx[sl].view(b, 1) + ar_w.view(1, w)  # type: ignore[index]  # the plan has all four parts when augmenting
                cols = torch.where(flip[sl].view(b, 1), cols.flip(1), cols)  # type: ignore[index]  # flip = reversed columns
                x = x.gather(3, cols.view(b, 1, 1, w).expand(b, x.shape[1], h, w))
            yield x.to(self.dtype).div_(self.scale), self.labels[idx]
