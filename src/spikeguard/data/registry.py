"""``load_dataset(name, split, root, cache_dir, subset, seed)``: one entry point for every dataset.

Sources, detected from ``root``:

* the python-pickle release: ``ROOT/cifar-10-batches-py`` / ``ROOT/cifar-100-python`` (or
  ``root`` pointing at that folder itself), md5-verified against the official checksums;
* an image-folder tree: ``ROOT/{train,test}/<class>/*.jpg|png`` (e.g. the shared
  ``cifar10-jpg``), or ``ROOT/<name>/{train,test}/...``;
* two parquet files in the Hugging Face ``datasets`` layout, ``ROOT/{train,test}.parquet``
  (e.g. the shared ``cifar10-parquet``), or ``ROOT/<name>-parquet/...`` (needs pyarrow). The
  names ``cifar10-parquet``, ``cifar100-parquet`` and ``cifar100-coarse-parquet`` ask for
  this source first.

Facts about a known dataset that do not need its files (classes, image shape, mean/std, label
names) are a :class:`DatasetInfo` in this registry (:func:`dataset_info`), so a model can be
built for ``cifar100`` without loading it.

Decoded splits are cached as uint8 arrays (``.npz``, written atomically) in ``cache_dir``
(default ``$SPIKEGUARD_CACHE`` or ``~/.cache/spikeguard``), keyed by a fingerprint of the
source files (names, sizes, modification times), so changing a file invalidates the cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .base import ImageDataset
from .cifar import (
    CIFAR10_CLASSES,
    CIFAR10_DIR,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_CLASSES,
    CIFAR100_COARSE_CLASSES,
    CIFAR100_DIR,
    CIFAR100_MEAN,
    CIFAR100_STD,
    pickle_files,
    read_cifar_pickle,
)
from .digits import DIGITS_CLASSES, DIGITS_MEAN, DIGITS_STD, load_digits_split
from .folder import decode_images, fingerprint_files, folder_classes, is_image_folder, list_images
from .parquet import _pyarrow, is_parquet_root, parquet_fingerprint, read_parquet_split

from .cache import cache_key, default_cache_dir, default_data_roots, read_cache, write_cache
from .catalog import DATASET_LOADERS, DatasetInfo, DatasetRequest, dataset_names, option_datasets, register_dataset

_CACHE_FORMAT = 1


def register_dataset_info(info: DatasetInfo) -> DatasetInfo:
    """Replace the :class:`DatasetInfo` of the registered dataset ``info.name`` (its loader must exist)."""
    DATASET_LOADERS.entry(info.name).meta["info"] = info
    return info


def dataset_info(name: str) -> DatasetInfo | None:
    """The :class:`DatasetInfo` of ``name`` (aliases accepted), or None for a dataset whose facts
    come from its files (``folder``, the event sets).

    Raises:
        DataError: unknown dataset name.
    """
    return DATASET_LOADERS.entry(_normalise_name(name)).meta.get("info")


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return dataset_names()


def _normalise_name(name: str) -> str:
    return DATASET_LOADERS.canonical(str(name).strip().lower())


def _find_parquet(name: str, root: Path) -> tuple[str, Path] | None:
    base = "cifar10" if name == "cifar10" else "cifar100"
    for cand in (root, root / f"{base}-parquet", root / name):
        if cand.is_dir() and is_parquet_root(cand):
            return "parquet", cand
    return None


def _find_source(name: str, root: Path, prefer_parquet: bool = False) -> tuple[str, Path] | None:
    """``("pickle" | "folder" | "parquet", folder)`` for ``name`` under ``root``, or None."""
    base = "cifar10" if name == "cifar10" else "cifar100"
    pdir = CIFAR10_DIR if base == "cifar10" else CIFAR100_DIR
    if prefer_parquet and (hit := _find_parquet(name, root)) is not None:
        return hit
    if name != "folder":
        meta = pickle_files(root, base)["meta"]
        for cand in (root, root / pdir):
            if (cand / meta).is_file():
                return "pickle", cand
    for cand in (root, root / name, root / base, root / f"{base}-jpg"):
        if cand.is_dir() and is_image_folder(cand):
            return "folder", cand
    return _find_parquet(name, root)


def _has_column(src: Path, column: str) -> bool:
    return column in _pyarrow().read_schema(src / "train.parquet").names


def _missing(name: str, roots: list[Path]) -> DataError:
    where = ", ".join(str(r) for r in roots)
    if name == "folder":
        return DataError(
            f"no image folder found in {where}: expected ROOT/train/<class>/*.jpg and "
            f"ROOT/test/<class>/*.jpg (set data.root)"
        )
    pdir = CIFAR10_DIR if name == "cifar10" else CIFAR100_DIR
    archive = "cifar-10-python.tar.gz" if name == "cifar10" else "cifar-100-python.tar.gz"
    return DataError(
        f"{name} not found in {where}. spikeguard never downloads: extract the official {archive} so that "
        f"ROOT/{pdir}/ exists, or provide an image folder ROOT/{{train,test}}/<class>/*.png, then pass "
        f"data.root=ROOT (CLI: --set data.root=ROOT) or set SPIKEGUARD_DATA=ROOT"
    )


def _load_arrays(
    name: str, split: str, kind: str, src: Path, cache_dir: Path | None, verify: bool, progress: bool
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    label = "coarse" if name == "cifar100-coarse" else "fine"
    base = "cifar10" if name == "cifar10" else "cifar100"
    files: list = []
    if kind == "parquet":
        classes = []
        fp: list = [parquet_fingerprint(src / f"{split}.parquet")]
    elif kind == "pickle":
        table = pickle_files(src, base)
        fp = []
        for fname in [*table[split], table["meta"]]:
            p = src / fname
            if not p.is_file():
                raise DataError(f"{p} is missing: {src} must hold the complete {base} python release")
            st = p.stat()
            fp.append((fname, st.st_size, st.st_mtime_ns))
    else:
        train_dir = src / "train"
        classes = folder_classes(train_dir)
        files = list_images(src / split, classes)
        fp = fingerprint_files(files, src)
    key = cache_key(
        {"format": _CACHE_FORMAT, "kind": kind, "name": name, "split": split, "source": str(src.resolve()), "files": fp}
    )
    cache_file = cache_dir / f"{name}-{split}-{key}.npz" if cache_dir is not None else None
    if cache_file is not None and (hit := read_cache(cache_file)) is not None:
        return hit
    if kind == "pickle":
        x, y, classes = read_cifar_pickle(src, base, split, label=label, verify=verify)
    elif kind == "parquet":
        column = f"{label}_label" if name.startswith("cifar100") else "label"
        x, y, classes = read_parquet_split(src / f"{split}.parquet", label_column=column, progress=progress)
    else:
        x, y = decode_images(files, progress=progress)
    if cache_file is not None:
        write_cache(cache_file, x, y, classes)
    return x, y, classes


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    subset: int = 0,
    seed: int = 0,
    verify: bool = True,
    progress: bool = False,
    **options,
) -> ImageDataset:
    """Load one split of a dataset as an in-memory :class:`ImageDataset`.

    Args:
        name: ``digits`` (embedded, no files), ``cifar10``, ``cifar100`` (fine labels),
            ``cifar100-coarse`` (20 superclasses) or ``folder`` (any image-folder tree).
        split: ``train`` or ``test``.
        root: where the data lives (see the module docstring); default ``$SPIKEGUARD_DATA``
            then ``./data``.
        cache_dir: where decoded arrays are cached; default ``$SPIKEGUARD_CACHE`` or
            ``~/.cache/spikeguard``. Pass ``""`` to disable caching.
        subset: if > 0, a class-balanced random subset of this many samples.
        seed: seed of the subset draw.
        verify: check md5s of the pickle release against the official checksums.
        progress: show a progress bar while decoding image files.
        **options: options of the event data sets (``frames``, ``size``, ``split_by``, ``norm``,
            ...; see :mod:`spikeguard.data.event_sets`); an error for the image sets.

    Returns:
        images ``uint8 [N, 3, 32, 32]`` (digits: float ``[N, 1, 8, 8]``), labels, class names
        and the standard per-channel mean/std; for the event sets an
        :class:`~spikeguard.data.event_sets.EventFrameDataset` of frame sequences.

    Raises:
        DataError: unknown name, missing files (with where to put them), md5 mismatch,
            corrupt or undecodable files (naming the file).
    """
    key = _normalise_name(name)
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    if subset < 0:
        raise DataError(f"subset must be >= 0, got {subset}")
    entry = DATASET_LOADERS.entry(key)
    if options and not entry.meta.get("options"):
        raise DataError(
            f"{key} takes no data options (got {', '.join(sorted(options))}); they are for the event "
            f"data sets {', '.join(option_datasets())}"
        )
    cdir = (
        None
        if cache_dir == ""
        else (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / "datasets"
    )
    req = DatasetRequest(
        key,
        str(name).strip().lower(),
        split,
        Path(root).expanduser() if root not in (None, "") else None,
        cdir,
        verify,
        progress,
        dict(options),
    )
    ds = entry.obj(req)
    return ds.subset(subset, seed) if subset else ds


@register_dataset(
    "digits",
    info=DatasetInfo("digits", tuple(DIGITS_CLASSES), (1, 8, 8), DIGITS_MEAN, DIGITS_STD),
    description=f"{len(DIGITS_CLASSES)} classes, 1x8x8 images",
)
def _load_digits(req: DatasetRequest) -> ImageDataset:
    """The embedded 8x8 digits (scikit-learn's copy of the UCI set)."""
    train, test = load_digits_split()
    return train if req.split == "train" else test


def _load_image_set(req: DatasetRequest) -> ImageDataset:
    """A CIFAR set or an image folder from the pickle release, an image-folder tree or parquet files."""
    key, split = req.name, req.split
    roots = [req.root] if req.root is not None else default_data_roots()
    found = None
    for r in roots:
        if r.is_dir() and (found := _find_source(key, r, req.given.endswith("-parquet"))) is not None:
            break
    if found is None:
        raise _missing(key, roots)
    kind, src = found
    if (
        kind in ("folder", "parquet")
        and key == "cifar100-coarse"
        and not (kind == "parquet" and _has_column(src, "coarse_label"))
    ):
        raise DataError(
            f"{src} has one label set; cifar100-coarse needs the python release or parquet files with coarse_label "
            f"({CIFAR100_DIR})"
        )
    x, y, classes = _load_arrays(key, split, kind, src, req.cache_dir, req.verify, req.progress)

    info = DATASET_LOADERS.entry(key).meta.get("info")
    if info is not None and len(classes) != info.num_classes:
        raise DataError(f"{src} has {len(classes)} classes but {key} has {info.num_classes}")
    if info is not None:
        mean, std = info.mean, info.std
    else:  # a custom folder: statistics of the split itself
        xf = torch.from_numpy(x).float().div_(255.0)
        mean = tuple(float(v) for v in xf.mean((0, 2, 3)))
        std = tuple(max(float(v), 1e-3) for v in xf.std((0, 2, 3)))
    return ImageDataset(
        torch.from_numpy(np.ascontiguousarray(x)),
        torch.from_numpy(y.astype(np.int64)),
        list(classes),
        mean,
        std,
        name=key,
    )


def _info_text(info: DatasetInfo | None) -> str:
    """``10 classes, 3x32x32 images`` (the listing's description of an image data set)."""
    return f"{info.num_classes} classes, {'x'.join(map(str, info.image_shape))} images" if info else ""


for _name, _aliases, _info, _desc in (
    (
        "cifar10",
        ("cifar-10", "cifar10-parquet"),
        DatasetInfo("cifar10", tuple(CIFAR10_CLASSES), (3, 32, 32), CIFAR10_MEAN, CIFAR10_STD),
        None,
    ),
    (
        "cifar100",
        ("cifar-100", "cifar100-fine", "cifar100-parquet"),
        DatasetInfo("cifar100", CIFAR100_CLASSES, (3, 32, 32), CIFAR100_MEAN, CIFAR100_STD),
        None,
    ),
    (
        "cifar100-coarse",
        ("cifar-100-coarse", "cifar100-coarse-parquet"),
        DatasetInfo("cifar100-coarse", CIFAR100_COARSE_CLASSES, (3, 32, 32), CIFAR100_MEAN, CIFAR100_STD),
        None,
    ),
    (
        "folder",
        ("imagefolder", "image-folder"),
        None,
        "an image folder ROOT/{train,test}/<class>/*.png (classes from the sub-folder names)",
    ),
):
    # the three CIFAR sets and the folder share one loader; each is one registration with its facts
    # (a ``-parquet`` alias names the same data set with the parquet source preferred)
    register_dataset(_name, aliases=_aliases, info=_info, description=_desc or _info_text(_info))(_load_image_set)

from . import event_sets as _event_sets  # noqa: E402,F401  (registers the event data sets)
