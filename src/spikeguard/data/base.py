"""In-memory image datasets and a tensor-only batch loader (no per-image Python work)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from ..errors import DataError


@dataclass
class ImageDataset:
    """A whole split held as tensors.

    Attributes:
        images: ``uint8 [N, C, H, W]`` (0..255) or float ``[N, C, H, W]`` in [0, 1].
        labels: ``int64 [N]``.
        classes: class names, index = label.
        mean, std: per-channel normalisation the model should apply internally.
        name: dataset name (for configs and reports).
    """

    images: Tensor
    labels: Tensor
    classes: list[str]
    mean: Sequence[float] = field(default_factory=lambda: (0.0,))
    std: Sequence[float] = field(default_factory=lambda: (1.0,))
    name: str = "dataset"

    def __post_init__(self) -> None:
        if self.images.dim() != 4:
            raise DataError(f"{self.name}: images must be [N, C, H, W], got shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"{self.name}: {self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}"
            )
        if self.images.is_floating_point() and not torch.isfinite(self.images).all():
            raise DataError(f"{self.name}: images contain NaN or Inf")
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise DataError(f"{self.name}: labels must lie in [0, {len(self.classes) - 1}]")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def to(self, device: torch.device | str) -> ImageDataset:
        """The same split with images and labels on ``device`` (GPU-resident data: CIFAR-10's
        uint8 training set is 150 MB; batches are then gathered and augmented there)."""
        return ImageDataset(
            self.images.to(device), self.labels.to(device), self.classes, self.mean, self.std, self.name
        )

    def float_images(self, index: Tensor | slice | None = None) -> Tensor:
        """Images (optionally a selection) as float32 in [0, 1]."""
        x = self.images if index is None else self.images[index]
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()

    def subset(self, n: int, seed: int = 0) -> ImageDataset:
        """A class-balanced random subset of ``n`` samples (all of them if ``n >= len``)."""
        if n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self), generator=g)
        # round-robin over classes keeps the subset balanced
        by_class = [order[self.labels[order] == c] for c in range(self.num_classes)]
        picked = torch.stack(
            [torch.nn.functional.pad(ix, (0, len(self) - len(ix)), value=-1) for ix in by_class], 1
        ).flatten()
        picked = picked[picked >= 0][:n]
        return ImageDataset(self.images[picked], self.labels[picked], self.classes, self.mean, self.std, self.name)


def batches(
    ds: ImageDataset,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    augment: Callable[[Tensor, torch.Generator | None], Tensor] | None = None,
    drop_last: bool = False,
    device: torch.device | str = "cpu",
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(images float [b, C, H, W] in [0, 1], labels [b])`` batches on ``device``."""
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    n = len(ds)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        idx = order[i : i + batch_size]
        x = ds.float_images(idx).to(device, non_blocking=True)
        y = ds.labels[idx].to(device, non_blocking=True)
        if augment is not None:
            x = augment(x, generator)
        yield x, y
