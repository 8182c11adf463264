"""Run observability: JSON-lines step logs, memory and throughput, optional TensorBoard.

:class:`RunLogger` is what :func:`spikeguard.jobs.train.run_experiment` reports to:

* ``steps.jsonl`` in the run folder: one JSON object per ``log_every`` optimisation steps
  (``step``, ``epoch``, ``loss``, ``task_loss``, ``constraint``, ``lam``, ``accuracy``,
  ``near_threshold``, ``lr``, ``images_per_s`` over the logged window, ``rss_mb``,
  ``max_rss_mb`` and on GPU ``cuda_max_allocated_mb``). Each line is appended with one
  ``write`` of a complete line, so a crash leaves at most one torn last line, which readers
  skip; a resumed run first drops the lines past its checkpoint;
* the per-epoch rows of ``log.jsonl`` gain ``step`` and the memory fields (:func:`memory_stats`);
* with ``tensorboard=True`` the same scalars go to ``OUT/tensorboard`` (needs the
  ``tensorboard`` package; ``pip install tensorboard``);
* console verbosity: 0 = quiet (errors only), 1 = normal (progress bar and one line per
  epoch), 2 = verbose (also one line per logged step and setup details), on stderr.

Only rank 0 of a distributed run logs (construct with ``enabled=False`` elsewhere).
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .errors import SpikeguardError
from .io import _json_safe, atomic_write_text

STEPS_FILE = "steps.jsonl"
QUIET, NORMAL, VERBOSE = 0, 1, 2


def memory_stats(device: Any = None) -> dict[str, float]:
    """Resident memory now and at peak (MiB), plus CUDA's peak allocation on a CUDA ``device``."""
    out: dict[str, float] = {}
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        out["rss_mb"] = round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):  # not Linux
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["max_rss_mb"] = round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)
    try:
        dev = torch.device(device) if device is not None else None
        if dev is not None and dev.type == "cuda" and torch.cuda.is_available():
            out["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    except RuntimeError:
        pass
    return out


def read_jsonl(path: str | os.PathLike, keep: Any = None) -> list[dict]:
    """The complete JSON lines of ``path`` (a torn or corrupt line ends the read); ``keep(row)`` filters."""
    rows: list[dict] = []
    p = Path(path)
    if not p.is_file():
        return rows
    for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if isinstance(row, dict) and (keep is None or keep(row)):
            rows.append(row)
    return rows


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one JSON line with a single ``write`` (no torn line unless the process dies inside it)."""
    data = (json.dumps(_json_safe(row), allow_nan=False) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    except OSError as e:
        raise SpikeguardError(f"could not write {path}: {e.strerror or e}") from None


class RunLogger:
    """Step logs, console lines and TensorBoard scalars of one run.

    Args:
        out_dir: run folder (``None``: console only).
        verbosity: 0 quiet, 1 normal, 2 verbose.
        log_every: append a ``steps.jsonl`` line every N steps (0: never; verbose defaults to 10).
        tensorboard: also write TensorBoard scalars to ``out_dir/tensorboard``.
        enabled: False on non-zero ranks (no output at all).
        device: device whose CUDA memory is reported.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike | None = None,
        verbosity: int = NORMAL,
        log_every: int = 0,
        tensorboard: bool = False,
        enabled: bool = True,
        device: Any = None,
    ) -> None:
        self.out = Path(out_dir) if out_dir is not None else None
        self.verbosity = int(verbosity)
        self.log_every = int(log_every) or (10 if self.verbosity >= VERBOSE else 0)
        self.enabled = enabled
        self.device = device
        self._window: dict[str, float] = {}
        self._window_n = 0
        self._window_images = 0
        self._t0 = time.perf_counter()
        self.tb = None
        if tensorboard and enabled and self.out is not None:
            self.tb = _summary_writer(self.out / "tensorboard")

    # -- console ---------------------------------------------------------------------
    def info(self, msg: str) -> None:
        """A line at normal verbosity (stderr)."""
        if self.enabled and self.verbosity >= NORMAL:
            print(msg, file=sys.stderr, flush=True)

    def debug(self, msg: str) -> None:
        """A line at verbose verbosity (stderr)."""
        if self.enabled and self.verbosity >= VERBOSE:
            print(msg, file=sys.stderr, flush=True)

    # -- steps -----------------------------------------------------------------------
    def resume(self, step: int) -> None:
        """Drop ``steps.jsonl`` lines after ``step`` (written by a run that died after its checkpoint)."""
        if not self.enabled or self.out is None:
            return
        path = self.out / STEPS_FILE
        if path.exists():
            rows = read_jsonl(path, keep=lambda r: int(r.get("step", 0)) <= step)
            atomic_write_text(path, "".join(json.dumps(_json_safe(r), allow_nan=False) + "\n" for r in rows))
        self._t0 = time.perf_counter()

    def step(self, step: int, epoch: float, metrics: dict[str, float], images: int, lr: float | None = None) -> None:
        """Record one optimisation step (``step`` counts from 1); logs every ``log_every`` steps."""
        if not self.enabled or not self.log_every:
            return
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not math.isnan(v):
                self._window[k] = self._window.get(k, 0.0) + float(v)
        self._window_n += 1
        self._window_images += int(images)
        if step % self.log_every:
            return
        dt = time.perf_counter() - self._t0
        row: dict[str, Any] = {"step": int(step), "epoch": round(float(epoch), 6)}
        row.update({k: v / self._window_n for k, v in self._window.items()})
        if lr is not None:
            row["lr"] = lr
        row["images_per_s"] = self._window_images / dt if dt > 0 else float("nan")
        row.update(memory_stats(self.device))
        if self.out is not None:
            append_jsonl(self.out / STEPS_FILE, row)
        self.scalars(row, step, prefix="step/")
        self.debug(
            "step {step}: loss {l:.4f} acc {a:.3f} lambda {lam:.3f} near {n:.4f} {ips:.0f} img/s rss {rss} MiB".format(
                step=step,
                l=row.get("loss", float("nan")),
                a=row.get("accuracy", float("nan")),
                lam=row.get("lam", 0.0),
                n=row.get("near_threshold", float("nan")),
                ips=row["images_per_s"],
                rss=row.get("rss_mb", "?"),
            )
        )
        self._window, self._window_n, self._window_images = {}, 0, 0
        self._t0 = time.perf_counter()

    def scalars(self, row: dict, step: int, prefix: str = "") -> None:
        """Numeric entries of ``row`` to TensorBoard (if enabled)."""
        if self.tb is None:
            return
        for k, v in row.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step",) and math.isfinite(v):
                self.tb.add_scalar(prefix + k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
            self.tb = None


def _summary_writer(path: Path) -> Any:
    try:
        # lazy: tensorboard is optional (only for --tensorboard)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SpikeguardError("--tensorboard needs the tensorboard package (pip install tensorboard)") from None
    return SummaryWriter(str(path))


def verbosity_from_args(args: Any) -> int:
    """0/1/2 from ``--quiet`` / ``--verbose`` (and the older ``--no-progress``)."""
    if getattr(args, "quiet", False) and getattr(args, "verbose", False):
        raise SpikeguardError("--quiet and --verbose exclude each other")
    if getattr(args, "quiet", False):
        return QUIET
    if getattr(args, "verbose", False):
        return VERBOSE
    return NORMAL


__all__ = [
    "RunLogger",
    "memory_stats",
    "read_jsonl",
    "append_jsonl",
    "verbosity_from_args",
    "STEPS_FILE",
    "QUIET",
    "NORMAL",
    "VERBOSE",
]
