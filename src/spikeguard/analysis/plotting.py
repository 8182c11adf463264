"""Shared figure helpers: a headless backend, a fixed pixel size, atomic multi-format saving.

Every analysis figure is created with :func:`new_figure` and written with :func:`save_figure`,
so a figure of ``figsize=(w, h)`` inches at ``dpi`` is exactly ``round(w * dpi) x round(h * dpi)``
pixels as PNG (no ``bbox_inches="tight"``, which would change the size from figure to figure).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import ConfigError
from ..io import atomic_savefig

FORMATS = ("png", "svg", "pdf")
"""File formats a figure can be written in; PNG is always written."""

# Colour-blind-safe (Okabe-Ito) colours, assigned to models in the order they are given,
# so "vanilla" and "tgo" keep their colours across every figure of a report.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (works without a display)."""
    # lazy: matplotlib is slow to import and needed only for figures
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after the backend is chosen

    return plt


def color(i: int) -> str:
    """The i-th model colour."""
    return PALETTE[i % len(PALETTE)]


def parse_formats(formats: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"png,svg"`` or ``["pdf"]`` -> ``("png", "svg")`` / ``("png", "pdf")``; PNG always included."""
    if formats is None:
        items: list[str] = []
    elif isinstance(formats, str):
        items = [f.strip().lower().lstrip(".") for f in formats.split(",") if f.strip()]
    else:
        items = [str(f).strip().lower().lstrip(".") for f in formats]
    bad = [f for f in items if f not in FORMATS]
    if bad:
        raise ConfigError(f"unknown figure format {bad[0]!r}; choose from {', '.join(FORMATS)}")
    return tuple(["png"] + [f for f in FORMATS[1:] if f in items])


def new_figure(
    figsize: tuple[float, float], dpi: int = 150, nrows: int = 1, ncols: int = 1, **kw: Any
) -> tuple[Any, Any]:
    """``plt.subplots`` with constrained layout (labels never clipped, pixel size fixed)."""
    plt = pyplot()
    kw.setdefault("layout", "constrained")
    return plt.subplots(nrows, ncols, figsize=figsize, dpi=dpi, squeeze=False, **kw)


def save_figure(fig: Any, path: str | os.PathLike, formats: str | Sequence[str] | None = None) -> list[Path]:
    """Write ``fig`` as ``path`` (a ``.png``) plus the same stem in each extra format; close it.

    Returns the written paths, PNG first. Each file is written atomically.
    """
    plt = pyplot()
    target = Path(path)
    if target.suffix.lower() != ".png":
        target = target.with_suffix(".png")
    written = []
    try:
        for fmt in parse_formats(formats):
            p = target.with_suffix(f".{fmt}")
            # metadata=None keeps SVG/PDF free of creation dates, so reruns are byte-identical
            meta = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt)
            atomic_savefig(fig, p, dpi=fig.dpi, metadata=meta)
            written.append(p)
    finally:
        plt.close(fig)
    return written


def tidy_log_axis(ax: Any, axis: str = "x") -> None:
    """Readable ticks on a log axis that spans few decades: 1-2-5 steps printed as plain numbers.

    Matplotlib's default labels minor ticks as ``3 x 10^0`` on short log ranges, which
    overlap; this keeps only 1, 2 and 5 times powers of ten, printed with ``%g``.
    """
    # lazy: matplotlib is slow to import and needed only for figures
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())
