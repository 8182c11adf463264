"""Distribution of pre-spike membrane potentials (arXiv 2602.20548, Fig. 4, left).

TGO pushes pre-spike potentials ``U`` away from the threshold; these functions histogram
``U`` per spiking layer and overall, count the share within ``delta`` of ``V_th``
("threshold-neighbouring"), compare models and draw the figures.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..data import ImageDataset, batches
from ..errors import ConfigError
from ..io import atomic_write_text
from ..neurons import noise_seed, record_potentials
from .plotting import color, new_figure, save_figure


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

    @property
    def num_potentials(self) -> int:
        """Number of recorded potentials (neurons x time steps x samples, all layers)."""
        return int(sum(self.total.values()))

    @property
    def layers(self) -> list[str]:
        """Spiking-layer names in forward order."""
        return list(self.layer_counts)

    def layer_near_threshold(self) -> dict[str, float]:
        """Per-layer share of potentials with ``|U - V_th| < delta``."""
        return {k: self.near[k] / self.total[k] for k in self.total if self.total[k]}

    def density(self, layer: str | None = None) -> np.ndarray:
        """Probability density over the in-range bins (overflow bins count in the normaliser).

        Normalising by *all* potentials (not only the in-range ones) keeps the areas of two
        models comparable even if one has more potentials outside ``[lo, hi]``.
        """
        c = self.counts if layer is None else self.layer_counts[layer]
        total = max(int(c.sum()), 1)
        return c[1:-1].astype(float) / total / np.diff(self.edges)

    def to_dict(self) -> dict:
        return {
            "edges": self.edges.tolist(),
            "counts": self.counts.tolist(),
            "layers": {k: v.tolist() for k, v in self.layer_counts.items()},
            "near_threshold": self.near_threshold,
            "layer_near_threshold": self.layer_near_threshold(),
            "total": int(sum(self.total.values())),
            "v_threshold": self.v_threshold,
            "delta": self.delta,
        }

    as_dict = to_dict  # the name before 0.2 (result objects now all use to_dict)


@torch.no_grad()
def potential_histogram(
    model: nn.Module,
    ds: ImageDataset,
    bins: int = 120,
    lo: float = -2.0,
    hi: float = 3.0,
    v_threshold: float = 1.0,
    delta: float = 0.5,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int | None = None,
) -> PotentialHistogram:
    """Histogram the pre-spike potentials of every spiking layer of ``model`` over ``ds``.

    Args:
        model: a spiking model (its mode is left alone: call ``model.eval()`` first).
        ds: images to run.
        bins, lo, hi: histogram bins on ``[lo, hi]``; values outside land in overflow bins.
        v_threshold, delta: threshold and the half-width of the near-threshold band.
        batch_size, device: batching.
        seed: if given, Noisy-LIF noise is drawn from generators seeded with it (reproducible).
    """
    if bins < 1 or not hi > lo:
        raise ConfigError(f"need bins >= 1 and hi > lo, got bins={bins}, lo={lo}, hi={hi}")
    if not delta > 0:
        raise ConfigError(f"delta must be > 0, got {delta}")
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

    ctx = noise_seed(model, seed) if seed is not None else contextlib.nullcontext()
    with ctx, record_potentials(model, detach=True, keep=False, on_record=on_record):
        for x, _ in batches(ds, batch_size, device=device):
            model(x)
    return hist


def near_threshold_reduction(base: PotentialHistogram, other: PotentialHistogram) -> dict:
    """Relative reduction of the near-threshold share from ``base`` to ``other``.

    ``(share_base - share_other) / share_base`` overall and for every layer both have
    (0.4 = "40% fewer threshold-neighbouring potentials", the paper's claim for TGO).
    """

    def rel(a: float, b: float) -> float:
        return (a - b) / a if a > 0 else float("nan")

    lb, lo = base.layer_near_threshold(), other.layer_near_threshold()
    return {
        "overall": rel(base.near_threshold, other.near_threshold),
        "layers": {k: rel(lb[k], lo[k]) for k in lb if k in lo},
    }


def membrane_summary(hists: Mapping[str, PotentialHistogram], baseline: str | None = None) -> dict:
    """Numbers behind the figures: near-threshold shares per model/layer, and reductions.

    Reductions are relative to ``baseline`` (default: the first model).
    """
    names = list(hists)
    if not names:
        raise ConfigError("no histograms to summarise")
    base = baseline or names[0]
    if base not in hists:
        raise ConfigError(f"baseline {base!r} is not one of {', '.join(names)}")
    first = hists[names[0]]
    out: dict = {
        "analysis": "membrane",
        "v_threshold": first.v_threshold,
        "delta": first.delta,
        "baseline": base,
        "models": {
            n: {
                "near_threshold": h.near_threshold,
                "layer_near_threshold": h.layer_near_threshold(),
                "num_potentials": h.num_potentials,
                "histogram": h.to_dict(),
            }
            for n, h in hists.items()
        },
        "reduction_vs_baseline": {n: near_threshold_reduction(hists[base], h) for n, h in hists.items() if n != base},
    }
    return out


def write_membrane_csv(hists: Mapping[str, PotentialHistogram], path: str | os.PathLike) -> None:
    """One row per model and layer (plus ``overall``): near count, total, share."""
    lines = ["model,layer,near,total,near_threshold_share"]
    for name, h in hists.items():
        for layer in h.layers:
            lines.append(f"{name},{layer},{h.near[layer]},{h.total[layer]},{h.near[layer] / h.total[layer]:.6g}")
        lines.append(f"{name},overall,{sum(h.near.values())},{h.num_potentials},{h.near_threshold:.6g}")
    atomic_write_text(path, "\n".join(lines) + "\n")


def _draw_hist(ax, hists: Mapping[str, PotentialHistogram], layer: str | None, log: bool) -> None:
    for i, (label, h) in enumerate(hists.items()):
        if layer is not None and layer not in h.layer_counts:
            continue
        share = h.near_threshold if layer is None else h.layer_near_threshold()[layer]
        ax.stairs(
            h.density(layer),
            h.edges,
            baseline=None,
            label=f"{label} ({100 * share:.1f}% near)",
            linewidth=1.4,
            color=color(i),
        )
    first = next(iter(hists.values()))
    vt, d = first.v_threshold, first.delta
    ax.axvspan(vt - d, vt + d, color="grey", alpha=0.15, lw=0)
    ax.axvline(vt, color="k", linestyle="--", linewidth=1)
    if log:
        ax.set_yscale("log")
    ax.set_xlim(first.edges[0], first.edges[-1])


def plot_potential_histograms(
    hists: dict[str, PotentialHistogram],
    path: str,
    title: str = "",
    *,
    log: bool = True,
    figsize: tuple[float, float] = (6.4, 4.0),
    dpi: int = 150,
    formats: str | Sequence[str] | None = None,
) -> list[Path]:
    """Overlay the overall histograms of several models (densities), with V_th and the delta band.

    The legend gives each model's near-threshold share and, for two or more models, the
    relative reduction from the first model. Returns the written files (PNG first).
    """
    if not hists:
        raise ConfigError("no histograms to plot")
    fig, axes = new_figure(figsize, dpi)
    ax = axes[0, 0]
    _draw_hist(ax, hists, None, log)
    first = next(iter(hists.values()))
    vt, d = first.v_threshold, first.delta
    # proxy artists so the band and the threshold appear once in the legend
    ax.plot([], [], color="grey", alpha=0.4, linewidth=6, label=f"|U - V_th| < {d:g}")
    ax.plot([], [], color="k", linestyle="--", linewidth=1, label=f"V_th = {vt:g}")
    ax.set_xlabel("pre-spike membrane potential U")
    ax.set_ylabel("density" + (" (log scale)" if log else ""))
    names = list(hists)
    sub = ""
    if len(names) >= 2:
        red = near_threshold_reduction(hists[names[0]], hists[names[-1]])["overall"]
        sub = f"\n{names[-1]} vs {names[0]}: {100 * red:.0f}% fewer near-threshold potentials"
    ax.set_title((title or "Pre-spike membrane potentials") + sub, fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    return save_figure(fig, path, formats)


def plot_layer_histograms(
    hists: Mapping[str, PotentialHistogram],
    path: str | os.PathLike,
    title: str = "",
    *,
    log: bool = True,
    panel_size: tuple[float, float] = (3.6, 2.8),
    dpi: int = 150,
    max_cols: int = 4,
    formats: str | Sequence[str] | None = None,
) -> list[Path]:
    """One panel per spiking layer plus an "all layers" panel, models overlaid.

    Layers are matched by name across models (same architecture); a layer a model lacks is
    left out of that panel.
    """
    if not hists:
        raise ConfigError("no histograms to plot")
    layers: list[str] = []
    for h in hists.values():
        layers += [k for k in h.layers if k not in layers]
    panels: list[str | None] = [None, *layers]
    ncols = min(len(panels), max_cols)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = new_figure((panel_size[0] * ncols, panel_size[1] * nrows + 0.4), dpi, nrows, ncols)
    for k, ax in enumerate(axes.flat):
        if k >= len(panels):
            ax.set_axis_off()
            continue
        layer = panels[k]
        _draw_hist(ax, hists, layer, log)
        ax.set_title("all layers" if layer is None else f"layer {k}: {layer}", fontsize=9)
        # "best" places the legend where it hides the fewest curve points (a fixed corner covered
        # the histograms' tails in small panels)
        ax.legend(fontsize=6, loc="best", framealpha=0.8)
        ax.tick_params(labelsize=7)
        if k % ncols == 0:
            ax.set_ylabel("density", fontsize=8)
        if k // ncols == nrows - 1 or k + ncols >= len(panels):
            ax.set_xlabel("U", fontsize=8)
    first = next(iter(hists.values()))
    fig.suptitle(
        (title or "Pre-spike potentials per layer")
        + f"  (dashed: V_th = {first.v_threshold:g}, band: |U - V_th| < {first.delta:g})",
        fontsize=10,
    )
    return save_figure(fig, path, formats)


def plot_near_threshold_bars(
    hists: Mapping[str, PotentialHistogram],
    path: str | os.PathLike,
    title: str = "",
    *,
    figsize: tuple[float, float] = (6.4, 3.6),
    dpi: int = 150,
    formats: str | Sequence[str] | None = None,
) -> list[Path]:
    """Grouped bars: near-threshold share per layer and overall, one bar per model."""
    if not hists:
        raise ConfigError("no histograms to plot")
    layers: list[str] = []
    for h in hists.values():
        layers += [k for k in h.layers if k not in layers]
    groups = [*layers, "overall"]
    fig, axes = new_figure(figsize, dpi)
    ax = axes[0, 0]
    n = len(hists)
    width = 0.8 / n
    for i, (name, h) in enumerate(hists.items()):
        shares = h.layer_near_threshold()
        vals = [100 * shares.get(g, float("nan")) for g in layers] + [100 * h.near_threshold]
        xs = np.arange(len(groups)) + (i - (n - 1) / 2) * width
        bars = ax.bar(xs, vals, width, label=name, color=color(i))
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks(np.arange(len(groups)), groups, fontsize=8)
    first = next(iter(hists.values()))
    ax.set_ylabel(f"% potentials with |U - V_th| < {first.delta:g}", fontsize=8)
    ax.set_title(title or "Threshold-neighbouring potentials", fontsize=10)
    ax.legend(fontsize=8)
    ax.margins(y=0.15)
    return save_figure(fig, path, formats)
