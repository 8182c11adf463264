"""Input-gradient heatmaps and sparsity (arXiv 2602.20548, Fig. 5 and Appendix F).

The paper argues that TGO makes the gradient of the true-class logit with respect to the
input sparser: fewer threshold-neighbouring neurons means fewer paths through which the
surrogate gradient flows. Gradients here go through the model's surrogate derivatives,
exactly what a white-box attacker sees.

Sparsity metrics (per sample, then averaged; all are scale-invariant):

* ``near_zero``: share of entries with ``|g_i| <= rel_tol * max_j |g_j|`` (higher = sparser);
* ``zero``: share of entries that are exactly 0;
* ``l1_l2``: ``||g||_1 / ||g||_2``, between 1 (one non-zero entry) and ``sqrt(d)`` (all
  equal); ``l1_l2_normalized`` divides it by ``sqrt(d)`` (lower = sparser);
* ``gini``: the Gini index of ``|g|`` (Hurley & Rickard, 2009), 0 for a flat vector, close
  to 1 for a single spike (higher = sparser).

A sample whose gradient is all zeros (a masked gradient) counts in ``all_zero_share`` and is
left out of the ratio metrics, which are undefined for it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import ImageDataset, batches
from ..errors import ConfigError
from ..neurons import noise_seed
from .plotting import color, new_figure, save_figure

TARGETS = ("logit", "loss")


def input_gradients(
    model: nn.Module, images: Tensor, labels: Tensor, target: str = "logit", samples: int = 1
) -> Tensor:
    """Gradient w.r.t. the input of the true-class logit (``target="logit"``) or of the
    per-sample cross-entropy (``"loss"``), ``[B, C, H, W]``.

    ``samples > 1`` averages over that many stochastic forward passes (Noisy-LIF noise);
    with one pass a stochastic model's gradient is that of one noise draw.
    """
    if target not in TARGETS:
        raise ConfigError(f"unknown gradient target {target!r}; choose one of {', '.join(TARGETS)}")
    if samples < 1:
        raise ConfigError(f"samples must be >= 1, got {samples}")
    grad = torch.zeros_like(images, dtype=torch.float32)
    for _ in range(samples):
        x = images.detach().float().requires_grad_(True)
        logits = model(x)
        if target == "logit":
            obj = logits.gather(1, labels.view(-1, 1)).sum()
        else:
            obj = F.cross_entropy(logits, labels, reduction="sum")
        (g,) = torch.autograd.grad(obj, x)
        grad += g.detach() / samples
    return grad


def gini(values: Tensor) -> Tensor:
    """Gini index of ``|values|`` along the last dimension (Hurley & Rickard 2009).

    ``G = 1 - 2 * sum_k (c_(k) / ||c||_1) * (n - k + 1/2) / n`` with ``c`` sorted ascending;
    NaN for an all-zero row.
    """
    c, _ = values.abs().sort(dim=-1)
    n = c.shape[-1]
    k = torch.arange(1, n + 1, dtype=c.dtype, device=c.device)
    l1 = c.sum(-1, keepdim=True)
    return 1.0 - 2.0 * ((c / l1) * ((n - k + 0.5) / n)).sum(-1)


def sparsity_per_sample(grads: Tensor, rel_tol: float = 0.01) -> dict[str, Tensor]:
    """Per-sample sparsity metrics of gradients ``[B, ...]`` (see the module docstring)."""
    if not 0 <= rel_tol < 1:
        raise ConfigError(f"rel_tol must be in [0, 1), got {rel_tol}")
    g = grads.detach().double().flatten(1)
    a = g.abs()
    d = g.shape[1]
    mx = a.amax(1, keepdim=True)
    l1 = a.sum(1)
    l2 = g.norm(dim=1)
    all_zero = mx.squeeze(1) == 0
    nan = torch.full_like(l1, float("nan"))
    ratio = torch.where(all_zero, nan, l1 / l2.clamp_min(1e-300))
    return {
        "near_zero": torch.where(all_zero, torch.ones_like(l1), (a <= rel_tol * mx).double().mean(1)),
        "zero": (a == 0).double().mean(1),
        "l1_l2": ratio,
        "l1_l2_normalized": ratio / d**0.5,
        "gini": torch.where(all_zero, nan, gini(g)),
        "l2": l2,
        "all_zero": all_zero.double(),
    }


def summarize_sparsity(per_sample: Mapping[str, Tensor]) -> dict[str, float]:
    """Means over samples (NaN entries, i.e. all-zero gradients, skipped) + all-zero share."""
    out: dict[str, float] = {}
    for k, v in per_sample.items():
        if k == "all_zero":
            out["all_zero_share"] = float(v.mean())
            continue
        ok = ~torch.isnan(v)
        out[k] = float(v[ok].mean()) if ok.any() else float("nan")
        if k in ("l1_l2_normalized", "gini"):
            out[k + "_std"] = float(v[ok].std()) if ok.sum() > 1 else float("nan")
    out["num_samples"] = int(next(iter(per_sample.values())).numel())
    return out


def gradient_sparsity(
    model: nn.Module,
    ds: ImageDataset,
    target: str = "logit",
    rel_tol: float = 0.01,
    samples: int = 1,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    seed: int | None = None,
) -> dict[str, float]:
    """Sparsity metrics of the input gradient over a whole split, averaged over samples."""
    parts: dict[str, list[Tensor]] = {}
    ctx = noise_seed(model, seed) if seed is not None else contextlib.nullcontext()
    with ctx:
        for x, y in batches(ds, batch_size, device=device):
            for k, v in sparsity_per_sample(input_gradients(model, x, y, target, samples), rel_tol).items():
                parts.setdefault(k, []).append(v.cpu())
    if not parts:
        raise ConfigError("gradient_sparsity got an empty dataset")
    res: dict[str, Any] = summarize_sparsity({k: torch.cat(v) for k, v in parts.items()})
    res.update(target=target, rel_tol=rel_tol, samples=samples)
    return res


def sparsity_ratio(base: Mapping[str, float], other: Mapping[str, float]) -> dict[str, float]:
    """How much sparser ``other`` is than ``base``: ``other / base`` for ``near_zero`` and
    ``gini`` (>1 = sparser), ``base / other`` for ``l1_l2`` (>1 = sparser)."""

    def div(a: float, b: float) -> float:
        return a / b if b else float("nan")

    return {
        "near_zero": div(other["near_zero"], base["near_zero"]),
        "gini": div(other["gini"], base["gini"]),
        "l1_l2": div(base["l1_l2"], other["l1_l2"]),
    }


def _heat(g: Tensor) -> np.ndarray:
    """A ``[C, H, W]`` gradient as one ``[H, W]`` map (signed sum over channels)."""
    return g.detach().float().sum(0).cpu().numpy()


def plot_gradient_heatmaps(
    images: Tensor,
    grads: Mapping[str, Tensor],
    path: str | os.PathLike,
    *,
    labels: Sequence[str] | None = None,
    title: str = "",
    shared_scale: bool = True,
    rel_tol: float = 0.01,
    cell: float = 1.6,
    dpi: int = 150,
    formats: str | Sequence[str] | None = None,
) -> list[Path]:
    """Rows = images; columns = the image, then one signed gradient heatmap per model.

    ``shared_scale``: one symmetric colour range per row (magnitudes comparable across
    models); otherwise each map uses its own range (patterns comparable). Each map is
    annotated with its near-zero share and Gini index.
    """
    names = list(grads)
    if not names:
        raise ConfigError("no gradients to plot")
    n = images.shape[0]
    for k, g in grads.items():
        if g.shape != images.shape:
            raise ConfigError(f"gradients of {k!r} have shape {tuple(g.shape)}, images {tuple(images.shape)}")
    ncols = 1 + len(names)
    fig, axes = new_figure((cell * ncols + 0.9, cell * n + 0.55), dpi, n, ncols)
    stats = {k: sparsity_per_sample(g, rel_tol) for k, g in grads.items()}
    for i in range(n):
        img = images[i].detach().float().cpu()
        ax = axes[i, 0]
        if img.shape[0] == 3:
            ax.imshow(img.permute(1, 2, 0).numpy().clip(0, 1), interpolation="nearest")
        else:
            ax.imshow(img.mean(0).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_ylabel(labels[i] if labels is not None else f"#{i}", fontsize=8)
        maps = {k: _heat(g[i]) for k, g in grads.items()}
        row_max = max(float(np.abs(m).max()) for m in maps.values()) or 1.0
        im = None
        for j, k in enumerate(names):
            ax = axes[i, j + 1]
            m = maps[k]
            lim = row_max if shared_scale else (float(np.abs(m).max()) or 1.0)
            im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
            gi = float(stats[k]["gini"][i])
            nz = float(stats[k]["near_zero"][i])
            ax.set_xlabel(f"Gini {gi:.2f}, {100 * nz:.0f}% ~0", fontsize=6.5, labelpad=1)
        if shared_scale and im is not None:
            cb = fig.colorbar(im, ax=axes[i, -1], fraction=0.08, pad=0.03)
            cb.ax.tick_params(labelsize=6)
            cb.formatter.set_powerlimits((-2, 2))
            cb.ax.yaxis.get_offset_text().set_fontsize(6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_title("input", fontsize=9)
    for j, k in enumerate(names):
        axes[0, j + 1].set_title(k, fontsize=9)
    fig.suptitle(title or "Input gradient of the true-class logit", fontsize=10)
    return save_figure(fig, path, formats)


def plot_sparsity_bars(
    summaries: Mapping[str, Mapping[str, Mapping[str, float]]],
    path: str | os.PathLike,
    *,
    title: str = "",
    figsize: tuple[float, float] = (7.2, 2.8),
    dpi: int = 150,
    formats: str | Sequence[str] | None = None,
) -> list[Path]:
    """Bars of near-zero share, normalised L1/L2 and Gini; ``summaries[target][model] -> metrics``."""
    targets = list(summaries)
    if not targets:
        raise ConfigError("no sparsity summaries to plot")
    models: list[str] = []
    for t in targets:
        models += [m for m in summaries[t] if m not in models]
    metrics = [
        ("near_zero", "near-zero share (higher = sparser)"),
        ("l1_l2_normalized", "L1 / (L2 sqrt(d)) (lower = sparser)"),
        ("gini", "Gini index (higher = sparser)"),
    ]
    fig, axes = new_figure(figsize, dpi, 1, len(metrics))
    width = 0.8 / max(len(models), 1)
    for a, (key, label) in enumerate(metrics):
        ax = axes[0, a]
        for i, m in enumerate(models):
            vals = [summaries[t].get(m, {}).get(key, float("nan")) for t in targets]
            xs = np.arange(len(targets)) + (i - (len(models) - 1) / 2) * width
            bars = ax.bar(xs, vals, width, color=color(i), label=m if a == 0 else None)
            ax.bar_label(bars, fmt="%.3g", fontsize=6.5, padding=1)
        ax.set_xticks(np.arange(len(targets)), [f"d {t}" for t in targets], fontsize=8)
        ax.set_title(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.margins(y=0.18)
    fig.legend(loc="outside right upper", fontsize=7)
    fig.suptitle(title or "Input-gradient sparsity over the test set", fontsize=10)
    return save_figure(fig, path, formats)
