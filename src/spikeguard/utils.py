"""Small helpers: seeding, devices, formatting."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a CPU generator for data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def eps_label(eps: float) -> str:
    """``8/255`` style label for an eps on the [0, 1] scale (falls back to a decimal)."""
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


def parse_eps(text: str) -> float:
    """Parse ``8/255``, ``8`` (meaning 8/255) or ``0.03`` into a float on the [0, 1] scale."""
    text = text.strip()
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den)
    v = float(text)
    return v / 255.0 if v >= 1 else v
