"""Atomic file output: write to a temporary file in the same folder, then rename.

A crash or a full disk never leaves a half-written result behind, and an existing file
stays intact until the new one is complete.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import SpikeguardError


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents); a one-line error if that is impossible."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SpikeguardError(f"cannot create output folder {p}: {e.strerror or e}") from None
    if not os.access(p, os.W_OK):
        raise SpikeguardError(f"output folder {p} is not writable")
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``."""
    target = Path(path)
    ensure_dir(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        raise SpikeguardError(f"could not write {target}: {e.strerror or e}") from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_many(files: dict[str | os.PathLike, bytes]) -> None:
    """Write several files as one unit: all temporary files are written and synced first,
    then renamed back to back.

    A full disk or any other write error leaves every existing file untouched (nothing is
    renamed before all data is on disk), so files that must match (a checkpoint's weights
    and training state) are never mixed from two saves by a failed write.
    """
    temps: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            target = Path(path)
            ensure_dir(target.parent)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            temps.append((Path(tmp), target))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for tmp, target in temps:
            os.replace(tmp, target)
    except OSError as e:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        failed = temps[-1][1] if temps else next(iter(files), "")
        raise SpikeguardError(f"could not write {failed}: {e.strerror or e}") from None
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # strict JSON has no NaN/Inf
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Strict JSON (NaN/Inf become null), indented, written atomically."""
    atomic_write_text(path, json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n")


def atomic_savefig(fig: Any, path: str | os.PathLike, **kw: Any) -> None:
    """``fig.savefig`` through a temporary file (format taken from ``path``'s suffix)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, **kw)
