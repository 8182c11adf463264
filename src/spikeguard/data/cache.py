"""Where datasets are looked for and cached, and the ``.npz`` cache of decoded splits.

Shared by :mod:`spikeguard.data.registry` (image datasets) and
:mod:`spikeguard.data.event_sets` (event-camera datasets), which both sit above it.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import SpikeguardError
from ..io import atomic_path


def default_cache_dir() -> Path:
    """``$SPIKEGUARD_CACHE`` or ``~/.cache/spikeguard``."""
    env = os.environ.get("SPIKEGUARD_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spikeguard"


def default_data_roots() -> list[Path]:
    """Where datasets are looked for when no root is given: ``$SPIKEGUARD_DATA``, then ``./data``."""
    roots = []
    env = os.environ.get("SPIKEGUARD_DATA")
    if env:
        roots.append(Path(env).expanduser())
    roots.append(Path("data"))
    return roots


def cache_key(payload: dict) -> str:
    """A short, stable hash of a JSON-able ``payload`` (the cache file's name)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def read_cache(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """``(images uint8 NxHxWxC-like, labels int64, classes)`` from a cache file; None if absent or damaged."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            x, y, classes = z["images"], z["labels"], [str(c) for c in z["classes"]]
        if x.dtype != np.uint8 or x.ndim != 4 or y.shape != (x.shape[0],):
            raise ValueError("bad shapes")
        return x, y.astype(np.int64), classes
    except Exception as e:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
        warnings.warn(f"ignoring unreadable dataset cache {path} ({e}); decoding again", stacklevel=3)
        return None


def write_cache(path: Path, x: np.ndarray, y: np.ndarray, classes: list[str]) -> None:
    """Write a cache file atomically; a failure only warns (caching is an optimisation)."""
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, images=x, labels=y, classes=np.array(classes, dtype=str))
    except SpikeguardError as e:  # caching is an optimisation: never fail the load for it
        warnings.warn(f"could not write dataset cache {path}: {e}", stacklevel=3)


__all__ = ["cache_key", "default_cache_dir", "default_data_roots", "read_cache", "write_cache"]
