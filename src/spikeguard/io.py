"""Atomic file output: write to a temporary file in the same folder, then rename.

A crash or a full disk never leaves a half-written result behind, and an existing file
stays intact until the new one is complete.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import SpikeguardError


def _umask() -> int:
    """The process umask (read by setting and restoring it; there is no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _readable(fd: int) -> None:
    """Give a ``mkstemp`` file (always 0600) the mode a plain ``open`` would: 0666 minus the umask,
    so results and checkpoints are shared as the user's umask says."""
    os.fchmod(fd, 0o666 & ~_umask())


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


def stamp() -> str:
    """A sortable UTC time stamp for output folder names: ``20261128-211003``."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


def new_dir(parent: str | os.PathLike, name: str) -> Path:
    """Create ``parent/name`` (or ``name-2``, ``name-3``, ... if taken) and return it; never reuses a folder."""
    base = ensure_dir(parent)
    for i in range(1, 10_000):
        p = base / (name if i == 1 else f"{name}-{i}")
        try:
            p.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            raise SpikeguardError(f"cannot create output folder {p}: {e.strerror or e}") from None
        return p
    raise SpikeguardError(f"no free folder name {name}-N in {base}")  # pragma: no cover


def refuse_overwrite(
    folder: str | os.PathLike, names: tuple[str, ...] | list[str], overwrite: bool, flag: str = "--out"
) -> None:
    """A one-line error if ``folder`` already holds one of ``names`` and ``overwrite`` is off."""
    taken = [n for n in names if (Path(folder) / n).exists()]
    if taken and not overwrite:
        raise SpikeguardError(
            f"{Path(folder) / taken[0]} already exists; choose another {flag} (or leave it out "
            "for a new folder of its own), or pass --overwrite to replace it"
        )


def _holds_files(path: Path) -> bool:
    return any(p.is_file() for p in path.rglob("*"))


@contextlib.contextmanager
def removed_on_failure(path: str | os.PathLike, keep: Any = None, created: bool | None = None) -> Iterator[Path]:
    """Remove ``path`` again if the block fails and it was created by this call (or, with
    ``created=True``, by the caller just before), unless ``keep(path)`` says it holds something worth keeping (default: any file).

    So a failed command (bad device, missing data, Ctrl-C before anything was saved) leaves no
    empty output folder behind.
    """
    p = Path(path)
    existed = p.exists() if created is None else not created
    try:
        yield p
    except BaseException:
        if not existed and p.is_dir() and not (keep(p) if keep is not None else _holds_files(p)):
            shutil.rmtree(p, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``."""
    target = Path(path)
    ensure_dir(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        _readable(fd)
    finally:
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
            fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            temps.append((Path(tmp_name), target))
            _readable(fd)
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
