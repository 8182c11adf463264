"""Image-folder datasets: ``ROOT/{train,test}/<class>/*.jpg|png``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from ..errors import DataError
from .cifar import CIFAR10_CLASSES

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")


def is_image_folder(root: Path) -> bool:
    """True when ``root/train`` and ``root/test`` both exist and hold class sub-folders."""
    return all((root / s).is_dir() and any(p.is_dir() for p in (root / s).iterdir()) for s in ("train", "test"))


def folder_classes(split_dir: Path) -> list[str]:
    """Class names of a split: CIFAR-10's label order when the names are CIFAR-10's, else sorted."""
    names = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DataError(f"{split_dir} holds no class folders (expected {split_dir}/<class>/*.jpg)")
    if sorted(CIFAR10_CLASSES) == names:
        return list(CIFAR10_CLASSES)
    return names


def list_images(split_dir: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """All image files with their labels, in a fixed order (class, then file name)."""
    files: list[tuple[Path, int]] = []
    for label, cls in enumerate(classes):
        d = split_dir / cls
        if not d.is_dir():
            raise DataError(f"class folder {d} is missing (classes are taken from the train split)")
        names = sorted(n for n in os.listdir(d) if n.lower().endswith(IMAGE_SUFFIXES) and not n.startswith("."))
        files += [(d / n, label) for n in names]
    if not files:
        raise DataError(f"no images (*.jpg, *.png) under {split_dir}")
    return files


def fingerprint_files(files: list[tuple[Path, int]], root: Path) -> list[tuple[str, int, int, int]]:
    """(relative path, size, mtime_ns, label) of every file: what the cache key hashes."""
    out = []
    for p, label in files:
        st = p.stat()
        out.append((str(p.relative_to(root)), st.st_size, st.st_mtime_ns, label))
    return out


def decode_images(files: list[tuple[Path, int]], progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Decode every file to RGB uint8 ``[N, 3, H, W]``; all images must share one size."""
    it = files
    if progress:
        it = tqdm(files, desc="decoding images", unit="img", leave=False)
    x: np.ndarray | None = None
    y = np.empty(len(files), dtype=np.int64)
    for i, (p, label) in enumerate(it):
        try:
            with Image.open(p) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"cannot decode image {p}: {e}") from None
        if x is None:
            h, w = arr.shape[:2]
            x = np.empty((len(files), 3, h, w), dtype=np.uint8)
        elif arr.shape[:2] != x.shape[2:]:
            raise DataError(
                f"image {p} is {arr.shape[1]}x{arr.shape[0]}, the others are "
                f"{x.shape[3]}x{x.shape[2]} (all images must have one size)"
            )
        x[i] = arr.transpose(2, 0, 1)
        y[i] = label
    assert x is not None
    return x, y
