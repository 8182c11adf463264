"""Parquet image datasets in the Hugging Face ``datasets`` layout (``ROOT/{train,test}.parquet``).

Each row holds an encoded image (column ``img`` or ``image``: ``struct<bytes, path>``) and an
integer label column (``label``; CIFAR-100: ``fine_label`` and ``coarse_label``). Class names
come from the schema metadata under ``huggingface`` (``info.features.<label>.names``), as
``datasets`` writes them. The whole CIFAR-10 set is two files of 57 MB, which is what makes
it easy to take to a GPU machine. Needs ``pyarrow`` (``pip install spikeguard[parquet]``).
"""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from ..errors import DataError

IMAGE_COLUMNS = ("img", "image")
SPLITS = ("train", "test")


def is_parquet_root(root: Path) -> bool:
    """True when ``root/train.parquet`` and ``root/test.parquet`` both exist."""
    return all((root / f"{s}.parquet").is_file() for s in SPLITS)


def _pyarrow():
    try:
        import pyarrow.parquet as pq  # lazy: optional (parquet extra)
    except ImportError:
        raise DataError("reading parquet data sets needs pyarrow: pip install 'spikeguard[parquet]'") from None
    return pq


def parquet_fingerprint(path: Path) -> list:
    """What the decoded-array cache is keyed on (name, size, modification time)."""
    st = path.stat()
    return [path.name, st.st_size, st.st_mtime_ns]


def _class_names(schema, label_column: str, labels: np.ndarray) -> list[str]:
    meta = (schema.metadata or {}).get(b"huggingface")
    if meta:
        try:
            names = json.loads(meta)["info"]["features"][label_column]["names"]
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                return names
        except (ValueError, KeyError, TypeError):
            pass
    # no names recorded: the labels themselves, as strings
    return [str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0)]


def _decode(blob: bytes, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(blob)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"cannot decode image {where}: {e}") from None


def read_parquet_split(
    path: str | os.PathLike, label_column: str = "label", threads: int = 0, progress: bool = False
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode one parquet split to ``(images uint8 [N, 3, H, W], labels int64 [N], class names)``.

    Args:
        path: the ``.parquet`` file.
        label_column: which integer column holds the labels (``label``, ``fine_label``, ``coarse_label``).
        threads: decoding threads (0 = up to 8, by the CPU count); Pillow releases the GIL.
        progress: show a progress bar while decoding.
    """
    pq = _pyarrow()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - any pyarrow failure is a bad file
        raise DataError(f"cannot read {path} as parquet: {e}") from None
    names = table.schema.names
    img_col = next((c for c in IMAGE_COLUMNS if c in names), None)
    if img_col is None or label_column not in names:
        raise DataError(
            f"{path} has columns {names}; expected an image column ({' or '.join(IMAGE_COLUMNS)}) and {label_column!r}"
        )
    labels = np.asarray(table.column(label_column).to_numpy(zero_copy_only=False), dtype=np.int64)
    col = table.column(img_col).combine_chunks()
    try:
        blobs = col.field("bytes").to_pylist() if hasattr(col, "field") else col.to_pylist()
    except KeyError:
        raise DataError(f"{path}: column {img_col!r} has no 'bytes' field") from None
    classes = _class_names(table.schema, label_column, labels)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DataError(f"{path}: labels must lie in [0, {len(classes) - 1}]")
    n = len(blobs)
    if n == 0:
        raise DataError(f"{path} holds no rows")
    first = _decode(blobs[0], f"0 of {path}")
    h, w = first.shape[:2]
    x = np.empty((n, 3, h, w), dtype=np.uint8)
    workers = threads or min(8, os.cpu_count() or 1)

    def work(i: int) -> None:
        arr = first if i == 0 else _decode(blobs[i], f"{i} of {path}")
        if arr.shape[:2] != (h, w):
            raise DataError(f"image {i} of {path} is {arr.shape[1]}x{arr.shape[0]}, the others {w}x{h}")
        x[i] = arr.transpose(2, 0, 1)

    it = range(n)
    bar = None
    if progress:
        bar = tqdm(total=n, desc=f"decoding {path.name}", unit="img", leave=False)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, n, 4096):  # chunks: errors surface early, the bar moves
            list(pool.map(work, it[start : start + 4096]))
            if bar is not None:
                bar.update(min(4096, n - start))
    if bar is not None:
        bar.close()
    return x, labels, classes
