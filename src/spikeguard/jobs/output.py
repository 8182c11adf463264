"""Where a result goes: the output folder, the refusal to replace a result, the atomic write."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ..io import atomic_write_json, ensure_dir, new_dir, refuse_overwrite, stamp
from ..utils import eps_label


def result_dir(
    run_path: str | os.PathLike,
    what: str,
    eps: float,
    result: str,
    *,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    ctx: Any = None,
    journal_name: str | None = None,
) -> tuple[Path, bool]:
    """``(folder, created)``: the output folder of one evaluation or audit, never one holding a result.

    ``out`` is used as given (a ``result`` file already there is a one-line error unless
    ``overwrite``); otherwise a new folder ``RUN/evaluation/<UTC time>-<what>-eps<k>`` is made,
    except that an unfinished run with the same settings (its ``journal_name`` folder is there,
    its result is not) is resumed in its own folder. Rank 0 of ``ctx`` decides; the others follow.
    """
    chosen: tuple[str, bool] | None = None
    if ctx is None or ctx.is_main:
        if out:
            existed = Path(out).exists()
            refuse_overwrite(out, (result,), overwrite)
            chosen = (str(ensure_dir(out)), not existed)
        else:
            parent = Path(run_path) / "evaluation"
            unfinished = [
                j.parent
                for j in sorted(parent.glob(f"*/{journal_name}"))
                if journal_name and not (j.parent / result).exists()
            ]
            if unfinished:
                chosen = (str(unfinished[-1]), False)
            else:
                k = eps_label(eps).replace("/255", "")
                chosen = (str(new_dir(parent, f"{stamp()}-{what}-eps{k}")), True)
    if ctx is not None and ctx.is_distributed:
        chosen = ctx.all_gather_object(chosen)[0]
    return Path(chosen[0]), chosen[1]  # type: ignore[index]  # set on rank 0 and gathered by the others


def write_result(path: str | os.PathLike, doc: Any, journal: str | os.PathLike | None = None) -> Path:
    """Write ``doc`` as JSON atomically, then drop the per-batch ``journal`` (its results are safe now)."""
    atomic_write_json(path, doc)
    if journal is not None:
        shutil.rmtree(journal, ignore_errors=True)
    return Path(path)
