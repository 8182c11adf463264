"""Small helpers: seeding, devices, formatting."""

from __future__ import annotations

import random

import numpy as np
import torch

from .errors import SpikeguardError


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a CPU generator for data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; anything else must exist on this machine.

    Raises:
        SpikeguardError: a one-line error for a malformed or unavailable device (e.g. ``cuda``
            with a CPU-only torch build, or ``cuda:3`` on a 2-GPU machine).
    """
    name = str(name).strip() or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise SpikeguardError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                "this torch build has no CUDA (torch " + torch.__version__ + ")"
                if torch.version.cuda is None
                else "no CUDA GPU is visible"
            )
            raise SpikeguardError(f"device {name!r} is not available: {why}; use --device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SpikeguardError(
                f"device {name!r} is not available: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise SpikeguardError(f"device {name!r} is not available on this machine; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise SpikeguardError(f"device type {dev.type!r} is not supported; use auto, cpu or cuda[:N]")
    return dev


def eps_label(eps: float) -> str:
    """``8/255`` style label for an eps on the [0, 1] scale (falls back to a decimal)."""
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


EPS_HELP = (
    "8/255 or 0.0314 (a fraction of the [0, 1] pixel range; 1.0 = all of it) or 8 (a whole number "
    "counts pixel levels: 8 = 8/255)"
)


def parse_eps(text: str) -> float:
    """Parse an L-inf budget into a float on the [0, 1] pixel scale, unambiguously.

    ``8/255`` is a ratio, ``0.0314`` or ``1.0`` (anything with a decimal point or exponent) is a
    fraction of the pixel range, and a whole number ``8`` counts pixel levels (8/255). The
    range is not checked here (see :func:`spikeguard.attacks.check_eps`): ``1.5`` stays 1.5
    and ``300`` becomes 300/255, both rejected there. Raises ``ValueError`` on text that is
    not a number.
    """
    text = text.strip()
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den)
    if text.lstrip("+-").isdigit():
        return int(text) / 255.0
    return float(text)


def parse_budget(value: object) -> float:
    """One budget from a config file: text through :func:`parse_eps` (``"8/255"``), a number as given
    (a fraction of the pixel range). Raises ``TypeError``/``ValueError`` on anything else."""
    return parse_eps(value) if isinstance(value, str) else float(value)  # type: ignore[arg-type]
