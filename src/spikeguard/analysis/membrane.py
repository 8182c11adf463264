"""Distribution of pre-spike membrane potentials (PAPER.md Fig. 4, left)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..data import ImageDataset, batches
from ..neurons import record_potentials


@dataclass
class PotentialHistogram:
    """Histogram of pre-spike potentials, overall and per layer, accumulated over batches.

    ``counts`` has one bin per ``edges`` interval plus two overflow bins (below/above), so
    every recorded potential is counted exactly once.
    """

    edges: np.ndarray
    counts: np.ndarray
    layer_counts: dict[str, np.ndarray] = field(default_factory=dict)
    near: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    v_threshold: float = 1.0
    delta: float = 0.5

    @property
    def near_threshold(self) -> float:
        """Overall share of potentials with ``|U - V_th| < delta``."""
        t = sum(self.total.values())
        return sum(self.near.values()) / t if t else float("nan")

    def layer_near_threshold(self) -> dict[str, float]:
        return {k: self.near[k] / self.total[k] for k in self.total if self.total[k]}

    def as_dict(self) -> dict:
        return {
            "edges": self.edges.tolist(), "counts": self.counts.tolist(),
            "layers": {k: v.tolist() for k, v in self.layer_counts.items()},
            "near_threshold": self.near_threshold, "layer_near_threshold": self.layer_near_threshold(),
            "total": int(sum(self.total.values())), "v_threshold": self.v_threshold, "delta": self.delta,
        }


@torch.no_grad()
def potential_histogram(model: nn.Module, ds: ImageDataset, bins: int = 120, lo: float = -2.0, hi: float = 3.0,
                        v_threshold: float = 1.0, delta: float = 0.5, batch_size: int = 256,
                        device: torch.device | str = "cpu") -> PotentialHistogram:
    """Histogram the pre-spike potentials of every spiking layer of ``model`` over ``ds``."""
    edges = np.linspace(lo, hi, bins + 1)
    hist = PotentialHistogram(edges, np.zeros(bins + 2, dtype=np.int64), v_threshold=v_threshold, delta=delta)
    bounds = torch.tensor(edges, dtype=torch.float32)

    def on_record(name: str, u: Tensor) -> None:
        flat = u.float().flatten().cpu()
        # bucketize: 0 = below lo, bins + 1 = at/above hi
        idx = torch.bucketize(flat, bounds, right=True)
        c = torch.bincount(idx, minlength=bins + 2).numpy()
        hist.counts += c
        hist.layer_counts[name] = hist.layer_counts.get(name, 0) + c
        hist.near[name] = hist.near.get(name, 0) + int(((flat - v_threshold).abs() < delta).sum())
        hist.total[name] = hist.total.get(name, 0) + flat.numel()

    with record_potentials(model, detach=True, keep=False, on_record=on_record):
        for x, _ in batches(ds, batch_size, device=device):
            model(x)
    return hist


def plot_potential_histograms(hists: dict[str, PotentialHistogram], path: str, title: str = "") -> None:
    """Overlay the overall histograms of several models (densities), with V_th and the delta band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_savefig

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=150)
    first = next(iter(hists.values()))
    for label, h in hists.items():
        inner = h.counts[1:-1].astype(float)
        width = np.diff(h.edges)
        dens = inner / max(inner.sum(), 1) / width
        ax.stairs(dens, h.edges, label=f"{label} (near-threshold {100 * h.near_threshold:.1f}%)", linewidth=1.4)
    vt, d = first.v_threshold, first.delta
    ax.axvspan(vt - d, vt + d, color="grey", alpha=0.15, label=f"|U - V_th| < {d:g}")
    ax.axvline(vt, color="k", linestyle="--", linewidth=1, label="V_th")
    ax.set_xlabel("pre-spike membrane potential U")
    ax.set_ylabel("density")
    ax.set_yscale("log")
    ax.set_title(title or "Pre-spike membrane potentials")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)
