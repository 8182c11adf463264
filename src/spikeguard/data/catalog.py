"""The dataset registry: every dataset is one loader decorated with :func:`register_dataset`.

A loader takes a :class:`DatasetRequest` and returns one split as an
:class:`~spikeguard.data.ImageDataset`; the decorator carries what is known without reading
the files (:class:`DatasetInfo`: classes, image shape, mean/std) and whether the set takes
data options (the event sets). :func:`~spikeguard.data.load_dataset` normalises the name,
checks the split and options, calls the loader and draws the subset::

    @register_dataset("my-set", info=DatasetInfo("my-set", ("a", "b"), (1, 8, 8), (0.5,), (0.5,)))
    def load_my_set(req: DatasetRequest) -> ImageDataset:
        \"\"\"Two classes of 8x8 test images.\"\"\"
        ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import DataError
from ..registry import Registry
from .base import ImageDataset


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a dataset without reading it.

    Attributes:
        name: registry name.
        classes: label names, index = label.
        image_shape: ``(C, H, W)`` of one image.
        mean, std: per-channel normalisation (pixel scale [0, 1]) the model applies.
    """

    name: str
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def model_kw(self) -> dict:
        """The architecture arguments a model built for this data takes (``create_model(**kw)``)."""
        c, h, _ = self.image_shape
        return dict(in_channels=c, image_size=h, mean=[float(v) for v in self.mean], std=[float(v) for v in self.std])


@dataclass(frozen=True)
class DatasetRequest:
    """What :func:`~spikeguard.data.load_dataset` asks a loader for.

    Attributes:
        name: the registered (canonical) name.
        given: the name as the user wrote it (lower case; e.g. ``cifar10-parquet`` prefers parquet files).
        split: ``train`` or ``test``.
        root: the data root given, or None (the loader then looks in the default roots).
        cache_dir: folder for decoded-array caches, or None (no caching).
        verify: check checksums where the source has them.
        progress: show progress bars while decoding.
        options: data options (only for loaders registered with ``options=True``).
    """

    name: str
    given: str
    split: str
    root: Path | None
    cache_dir: Path | None
    verify: bool = True
    progress: bool = False
    options: dict[str, Any] = field(default_factory=dict)


Loader = Callable[[DatasetRequest], ImageDataset]

#: Every dataset loader, by name (``spikeguard list datasets``); an entry's ``meta`` holds its
#: ``info`` (:class:`DatasetInfo` or None) and ``options`` (whether it takes data options).
DATASET_LOADERS: Registry[Loader] = Registry("dataset", error=DataError)


def register_dataset(
    name: str,
    *,
    aliases: tuple[str, ...] = (),
    info: DatasetInfo | None = None,
    options: bool = False,
    description: str | None = None,
) -> Callable[[Loader], Loader]:
    """Decorator: make ``loader(req: DatasetRequest) -> ImageDataset`` loadable as ``name``.

    Args:
        name: registry name (lower case).
        aliases: other names accepted by ``load_dataset`` and configs.
        info: facts known without reading the files (None: they come from the files).
        options: the loader takes data options (``load_dataset(..., frames=8)``); others refuse them.
        description: one line for ``spikeguard list datasets`` (default: the docstring's first sentence).
    """
    if info is not None and info.name != name:
        raise ValueError(f"dataset {name!r}: its DatasetInfo is named {info.name!r}")
    return DATASET_LOADERS.register(name, aliases=aliases, description=description, info=info, options=options)


def dataset_names() -> list[str]:
    """Names accepted by ``load_dataset``, sorted."""
    return DATASET_LOADERS.names()


def takes_options(name: str) -> bool:
    """Whether the dataset ``name`` (or alias) takes data options (the event sets)."""
    return bool(DATASET_LOADERS.entry(name).meta.get("options"))


def option_datasets() -> list[str]:
    """The datasets that take data options."""
    return [e.name for e in DATASET_LOADERS.entries() if e.meta.get("options")]


__all__ = [
    "DatasetInfo",
    "DatasetRequest",
    "DATASET_LOADERS",
    "register_dataset",
    "dataset_names",
    "takes_options",
    "option_datasets",
]
