"""CIFAR-10 / CIFAR-100 from the official python-pickle release, with md5 verification.

The release files are Python pickles. They are only read after their md5 matches the
official checksum (unless the caller turns verification off), and even then through a
restricted unpickler that accepts nothing but the dicts, lists, bytes and NumPy arrays
those files contain, so a tampered file cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path

import numpy as np

from ..errors import DataError

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# CIFAR-100 label names in label order (alphabetical, as in the release's meta file)
CIFAR100_CLASSES = (
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
)
CIFAR100_COARSE_CLASSES = (
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
)

# Official checksums of the files inside the two archives (from the CIFAR release).
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
CIFAR100_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffe481b9b3d2f3",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}

CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"], "meta": "batches.meta"}
CIFAR100_FILES = {"train": ["train"], "test": ["test"], "meta": "meta"}

# Per-channel statistics of the training splits (pixel scale [0, 1]).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class _SafeUnpickler(pickle.Unpickler):
    """Only the globals needed to rebuild the NumPy arrays in the CIFAR pickles."""

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("builtins", "set"),
            ("builtins", "frozenset"),
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def _unpickle(path: Path) -> dict:
    try:
        obj = _SafeUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any parse failure is a corrupt file, not a crash
        raise DataError(f"{path} is not a readable CIFAR pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR pickle (expected a dict, got {type(obj).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _names(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def pickle_files(folder: Path, dataset: str) -> dict:
    """File table (``train``/``test``/``meta``) of ``cifar10`` or ``cifar100``."""
    return CIFAR10_FILES if dataset == "cifar10" else CIFAR100_FILES


def verify_md5(folder: Path, dataset: str, split: str, checksums: dict[str, str] | None = None) -> None:
    """Check the files a split needs against the official (or given) md5 table."""
    table = checksums if checksums is not None else (CIFAR10_MD5 if dataset == "cifar10" else CIFAR100_MD5)
    files = pickle_files(folder, dataset)
    for fname in [*files[split], files["meta"]]:
        path = folder / fname
        if not path.is_file():
            raise DataError(f"{path} is missing: the folder {folder} must hold the complete {dataset} python release")
        want = table.get(fname)
        if want is None:
            continue
        got = md5sum(path)
        if got != want:
            raise DataError(
                f"md5 mismatch for {path}: expected {want}, got {got} (corrupt or modified file; "
                f"re-extract the official archive)"
            )


def read_cifar_pickle(
    folder: str | Path,
    dataset: str,
    split: str,
    label: str = "fine",
    verify: bool = True,
    checksums: dict[str, str] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read one split of a python-pickle CIFAR folder.

    Args:
        folder: the ``cifar-10-batches-py`` or ``cifar-100-python`` folder itself.
        dataset: ``cifar10`` or ``cifar100``.
        split: ``train`` or ``test``.
        label: for CIFAR-100, ``fine`` (100 classes) or ``coarse`` (20 superclasses).
        verify: check md5s first (against ``checksums`` or the official ones).

    Returns:
        ``(images uint8 [N, 3, 32, 32], labels int64 [N], class names)``.
    """
    folder = Path(folder)
    if dataset not in ("cifar10", "cifar100"):
        raise DataError(f"not a CIFAR dataset: {dataset!r}")
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    if verify:
        verify_md5(folder, dataset, split, checksums)
    files = pickle_files(folder, dataset)
    meta_path = folder / files["meta"]
    if not meta_path.is_file():
        raise DataError(f"{meta_path} is missing")
    meta = _unpickle(meta_path)
    if dataset == "cifar10":
        key, name_key = "labels", "label_names"
    else:
        if label not in ("fine", "coarse"):
            raise DataError(f"CIFAR-100 labels are 'fine' or 'coarse', got {label!r}")
        key, name_key = f"{label}_labels", f"{label}_label_names"
    if name_key not in meta:
        raise DataError(f"{meta_path} has no {name_key!r} entry")
    classes = _names(meta[name_key])
    xs, ys = [], []
    for fname in files[split]:
        path = folder / fname
        if not path.is_file():
            raise DataError(f"{path} is missing")
        d = _unpickle(path)
        if "data" not in d or key not in d:
            raise DataError(f"{path} lacks the 'data' or {key!r} entries of a {dataset} batch")
        data = np.asarray(d["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{path}: 'data' must be uint8 [N, 3072], got {data.dtype} {data.shape}")
        labels = np.asarray(d[key], dtype=np.int64)
        if labels.shape != (data.shape[0],):
            raise DataError(f"{path}: {data.shape[0]} images but {labels.shape} labels")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    x, y = np.concatenate(xs), np.concatenate(ys)
    if len(y) and (y.min() < 0 or y.max() >= len(classes)):
        raise DataError(f"{folder}: labels outside [0, {len(classes) - 1}]")
    return np.ascontiguousarray(x), y, classes
