"""Argument types shared by the sub-commands (they turn bad input into one-line errors)."""

from __future__ import annotations

import argparse
import math

from ..utils import parse_eps


def eps_list(text: str) -> list[float]:
    """``8,16,32`` (units of 1/255), ``8/255,0.05`` -> floats in [0, 1]."""
    try:
        vals = [parse_eps(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot parse eps list {text!r} (use e.g. 8,16,32 or 8/255)") from None
    if not vals:
        raise argparse.ArgumentTypeError("eps list is empty")
    for v in vals:
        if not math.isfinite(v) or v < 0 or v > 1:
            raise argparse.ArgumentTypeError(f"eps {v:.4g} is outside [0, 1] on the pixel scale (i.e. 0..255 /255)")
    return vals


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v
