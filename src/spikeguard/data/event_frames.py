"""Event streams to frame sequences and back.

:func:`events_to_frames` integrates an event stream into ``T`` frames of event counts per
(polarity, y, x), shape ``[T, 2, h, w]``:

* ``split_by="number"`` (SpikingJelly's rule): with ``N`` events and ``n = N // T``, frame
  ``i`` takes events ``[i*n, (i+1)*n)`` and the last frame also takes the remainder;
* ``split_by="time"``: the time span ``[t0, t1)`` (default: first event to last event + 1 us)
  is split into ``T`` equal bins, event at ``t`` goes to frame ``(t - t0) * T // (t1 - t0)``.

Every event lands in exactly one frame (counts are conserved); ``size`` resizes the sensor by
nearest-bin mapping ``x' = x * w // W`` (also conserving counts).

:class:`FrameNorm` maps counts into ``[0, 1]`` (so every attack's eps means the same as on
images) and back: ``binary`` (any event), ``clip`` (``min(count, c) / c``) or ``log``
(``log1p(min(count, c)) / log1p(c)``). Its values form a lattice of ``levels + 1`` points per
cell; :meth:`FrameNorm.decode` is the inverse used by the event attacks, and
:func:`frames_to_events` turns (attacked) frames into a valid event stream that integrates
back to exactly those frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError
from .events import EVENT_DTYPE

SPLITS = ("number", "time")
NORMS = ("binary", "clip", "log")


def _frame_index(events: np.ndarray, T: int, split_by: str, t_range: tuple[int, int] | None) -> np.ndarray:
    n = len(events)
    if split_by == "number":
        if t_range is not None:
            raise DataError("t_range is only used with split_by='time'")
        chunk = n // T
        if chunk == 0:  # fewer events than frames: SpikingJelly's rule puts them all in the last frame
            return np.full(n, T - 1, dtype=np.int64)
        return np.minimum(np.arange(n, dtype=np.int64) // chunk, T - 1)
    t = events["t"].astype(np.int64)
    if t_range is None:
        t0, t1 = int(t.min()), int(t.max()) + 1
    else:
        t0, t1 = int(t_range[0]), int(t_range[1])
        if t1 <= t0:
            raise DataError(f"t_range must have t1 > t0, got {t_range}")
        if t.min() < t0 or t.max() >= t1:
            raise DataError(f"events lie outside t_range {t_range}: [{int(t.min())}, {int(t.max())}]")
    return (t - t0) * T // (t1 - t0)


def events_to_frames(
    events: np.ndarray,
    T: int,
    sensor_size: tuple[int, int],
    size: tuple[int, int] | int | None = None,
    split_by: str = "number",
    t_range: tuple[int, int] | None = None,
) -> np.ndarray:
    """Integrate events into ``T`` count frames ``int32 [T, 2, h, w]``.

    Args:
        events: structured array with fields ``t, x, y, p`` (see :mod:`spikeguard.data.events`),
            in time order.
        T: number of frames (the network's time steps).
        sensor_size: ``(H, W)`` of the sensor the coordinates refer to.
        size: output ``(h, w)`` (or one int for square) by nearest-bin mapping; default the sensor size.
        split_by: ``number`` (equal event counts, remainder to the last frame) or ``time`` (equal time bins).
        t_range: ``(t0, t1)`` time span for ``split_by="time"`` (default: the events' own span).
    """
    if int(T) < 1:
        raise DataError(f"T must be >= 1, got {T}")
    if split_by not in SPLITS:
        raise DataError(f"split_by must be one of {', '.join(SPLITS)}, got {split_by!r}")
    H, W = (int(v) for v in sensor_size)
    h, w = (
        (H, W)
        if size is None
        else ((int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(v) for v in size))
    )
    if min(H, W, h, w) < 1:
        raise DataError(f"sensor and frame sizes must be positive, got {sensor_size} -> {size}")
    frames = np.zeros((T, 2, h, w), dtype=np.int32)
    if len(events) == 0:
        return frames
    x, y, p = (events[k].astype(np.int64) for k in "xyp")
    if x.max() >= W or y.max() >= H:
        raise DataError(f"events reach (x={int(x.max())}, y={int(y.max())}) outside the {W}x{H} sensor")
    if p.max() > 1:
        raise DataError(f"polarity must be 0 or 1, got {int(p.max())}")
    f = _frame_index(events, int(T), split_by, t_range)
    flat = ((f * 2 + p) * h + y * h // H) * w + x * w // W
    frames.reshape(-1)[:] = np.bincount(flat, minlength=frames.size)
    return frames


def frames_to_events(frames: np.ndarray | Tensor, duration: int | None = None) -> np.ndarray:
    """An event stream whose time-split integration is exactly ``frames`` (counts ``[T, 2, h, w]``).

    The events of frame ``i`` sit at the middle of time bin ``i`` of ``[0, duration)``
    (default ``T * 1000`` us), so ``events_to_frames(ev, T, (h, w), split_by="time",
    t_range=(0, duration))`` returns ``frames``.
    """
    c = frames.detach().cpu().numpy() if isinstance(frames, Tensor) else np.asarray(frames)
    if c.ndim != 4 or c.shape[1] != 2:
        raise DataError(f"frames must be counts [T, 2, h, w], got shape {c.shape}")
    if (c < 0).any() or (c != np.round(c)).any():
        raise DataError("frames must hold non-negative integer event counts (decode normalised frames first)")
    T = c.shape[0]
    duration = T * 1000 if duration is None else int(duration)
    if duration < 2 * T:  # every bin needs a middle strictly inside it
        raise DataError(f"duration must be at least 2 * T = {2 * T} us")
    idx = np.nonzero(c)
    reps = c[idx].astype(np.int64)
    f, p, y, x = (np.repeat(a, reps) for a in idx)
    # the middle of bin i of [0, duration): i*d//T <= t < (i+1)*d//T with (t*T)//d == i
    t = (f * duration + duration // 2) // T
    order = np.argsort(t, kind="stable")
    ev = np.empty(len(t), dtype=EVENT_DTYPE)
    ev["t"], ev["x"], ev["y"], ev["p"] = t[order], x[order], y[order], p[order]
    return ev


@dataclass(frozen=True)
class FrameNorm:
    """Counts <-> values in [0, 1], on a lattice of ``levels + 1`` values per cell.

    Attributes:
        kind: ``binary`` (1 where any event), ``clip`` (``min(count, clip) / clip``) or
            ``log`` (``log1p(min(count, clip)) / log1p(clip)``).
        clip: the count that maps to 1 (``clip`` and ``log``).
    """

    kind: str = "clip"
    clip: int = 4

    def __post_init__(self) -> None:
        if self.kind not in NORMS:
            raise DataError(f"frame normalisation must be one of {', '.join(NORMS)}, got {self.kind!r}")
        if int(self.clip) < 1 or int(self.clip) > 255:
            raise DataError(f"frame normalisation clip must be in 1..255, got {self.clip}")

    @classmethod
    def parse(cls, spec: str | FrameNorm | None) -> FrameNorm:
        """``"binary"``, ``"clip"``, ``"clip:4"``, ``"log:8"`` (or a FrameNorm) -> FrameNorm."""
        if isinstance(spec, FrameNorm):
            return spec
        if spec in (None, ""):
            return cls()
        kind, _, clip = str(spec).strip().lower().partition(":")
        try:
            return cls(kind, int(clip) if clip else 4) if kind != "binary" else cls("binary", 1)
        except ValueError:
            raise DataError(f"bad frame normalisation {spec!r} (use binary, clip:C or log:C)") from None

    @property
    def spec(self) -> str:
        return "binary" if self.kind == "binary" else f"{self.kind}:{self.clip}"

    @property
    def levels(self) -> int:
        """Highest count level (1 for binary): a cell takes ``levels + 1`` values."""
        return 1 if self.kind == "binary" else int(self.clip)

    def values(self, device: torch.device | str | None = None) -> Tensor:
        """The lattice: the value of count level ``0..levels``, ``float32 [levels + 1]``."""
        k = torch.arange(self.levels + 1, dtype=torch.float64)
        v = k / self.levels if self.kind != "log" else torch.log1p(k) / math.log1p(self.levels)
        return v.float().to(device)

    def encode(self, counts: Tensor) -> Tensor:
        """Counts (any integer dtype or float) -> float32 values in [0, 1]."""
        return self.values(counts.device)[counts.long().clamp(0, self.levels)]

    def decode(self, frames: Tensor) -> Tensor:
        """Values in [0, 1] -> the nearest count level (int64): the inverse of :meth:`encode`."""
        v = self.values(frames.device)
        mids = (v[1:] + v[:-1]) / 2
        return torch.bucketize(frames.float().contiguous(), mids)

    def quantize(self, frames: Tensor) -> Tensor:
        """Round values to the nearest lattice point (what turning them back into events keeps)."""
        return self.encode(self.decode(frames))
