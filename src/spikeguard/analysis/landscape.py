"""Loss landscapes (arXiv 2602.20548, Fig. 4, right): in parameter space and along the attack direction.

Parameter space (Li et al., 2018, "Visualizing the Loss Landscape of Neural Nets")::

    L(a, b) = loss(w + a * d1 + b * d2)

* ``d1``: the gradient of the loss w.r.t. the weights (on the data the surface is drawn for);
* ``d2``: a Gaussian random direction, made orthogonal to ``d1``;
* both are *filter-normalised*: every filter (slice along the output dimension of a conv or
  linear weight) of a direction is rescaled to the norm of the matching weight filter, so
  ``a = 1`` means "a step as large as the weights themselves", comparable across models.
  Orthogonalisation is done filter by filter before the rescaling, so the two directions are
  exactly orthogonal *and* exactly filter-normalised. 1-D parameters (biases, BatchNorm
  affine) get a zero direction, as in Li et al.'s default; ``include_bn=True`` moves them too.

BatchNorm running statistics are buffers and stay fixed; the model is evaluated in whatever
mode it is in (call ``model.eval()`` first). Noisy-LIF noise is drawn from the same seed at
every grid point (common random numbers), so the surface is not jittered by the noise. The
weights are restored bit for bit afterwards, even on error.

Input space: the mean loss of ``clip(x + t * s)`` for ``t`` in ``[-span * eps, span * eps]``,
with ``s`` the FGSM direction ``sign(grad_x loss)`` and, as a control, a random sign vector.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..attacks import RFGSM
from ..neurons import noise_seed
from .plotting import color, new_figure, save_figure


# --------------------------------------------------------------------------------------------
# RFGSM (Tramer et al., 2018)
# --------------------------------------------------------------------------------------------
def rfgsm_examples(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    eps: float = 8 / 255,
    alpha: float | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> Tensor:
    """RFGSM adversarial examples (``alpha`` defaults to ``eps / 2``).

    Uses :class:`spikeguard.attacks.RFGSM`, seeded with ``seed`` without disturbing the
    caller's random state.
    """
    if not 0 <= eps <= 1:
        raise ConfigError(f"eps must be in [0, 1], got {eps}")
    alpha = eps / 2 if alpha is None else float(alpha)
    if not 0 <= alpha <= eps:
        raise ConfigError(f"RFGSM alpha must be in [0, eps], got {alpha}")
    attack = RFGSM(model, eps=eps, alpha=alpha)
    out = []
    with torch.random.fork_rng(devices=[]):  # a seeded attack without disturbing the caller's RNG
        torch.manual_seed(seed)
        for i in range(0, len(images), batch_size):
            out.append(attack(images[i : i + batch_size], labels[i : i + batch_size]))
    return torch.cat(out)


# --------------------------------------------------------------------------------------------
# Directions
# --------------------------------------------------------------------------------------------
def _params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _filter_norms(t: Tensor) -> Tensor:
    """Norm of every filter (slice along dim 0), broadcastable to ``t``."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def mean_loss(
    model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 256, seed: int | None = 0
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``images`` (noise from ``seed``)."""
    ctx = noise_seed(model, seed) if seed is not None else contextlib.nullcontext()
    total = correct = 0.0
    with torch.no_grad(), ctx:
        for i in range(0, len(images), batch_size):
            x, y = images[i : i + batch_size], labels[i : i + batch_size]
            logits = model(x)
            total += float(F.cross_entropy(logits.double(), y, reduction="sum"))
            correct += float((logits.argmax(1) == y).sum())
    n = max(len(images), 1)
    return total / n, correct / n


def landscape_directions(
    model: nn.Module, images: Tensor, labels: Tensor, seed: int = 0, include_bn: bool = False, batch_size: int = 256
) -> tuple[list[Tensor], list[Tensor], dict]:
    """The two filter-normalised directions ``(d1 = gradient, d2 = random, orthogonal to d1)``.

    Returns the directions (one tensor per trainable parameter) and a dict with their
    cosine similarity (0 up to rounding) and the raw gradient norm.
    """
    params = _params(model)
    if not params:
        raise ConfigError("the model has no trainable parameters")
    grads = [torch.zeros_like(p) for _, p in params]
    ctx = noise_seed(model, seed)
    n = len(images)
    with ctx:
        for i in range(0, n, batch_size):
            x, y = images[i : i + batch_size], labels[i : i + batch_size]
            loss = F.cross_entropy(model(x), y, reduction="sum") / n
            gs = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
            for acc, g in zip(grads, gs, strict=True):
                if g is not None:
                    acc += g.detach()
    gen = torch.Generator().manual_seed(seed)
    d1, d2 = [], []
    for (_, p), g in zip(params, grads, strict=True):
        w = p.detach()
        r = torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device)
        if w.dim() <= 1:
            if include_bn:
                # one "filter" for the whole vector
                gw, rw = g.flatten(), r.flatten()
                rw = rw - (rw @ gw) / (gw @ gw).clamp_min(1e-30) * gw
                wn = w.norm()
                d1.append((gw / gw.norm().clamp_min(1e-30) * wn).view_as(w))
                d2.append((rw / rw.norm().clamp_min(1e-30) * wn).view_as(w))
            else:
                d1.append(torch.zeros_like(w))
                d2.append(torch.zeros_like(w))
            continue
        wn = _filter_norms(w)
        gf, rf = g.flatten(1), r.flatten(1)
        # per-filter Gram-Schmidt: filter-wise orthogonal => globally orthogonal
        gg = (gf * gf).sum(1, keepdim=True)
        proj = torch.where(gg > 0, (rf * gf).sum(1, keepdim=True) / gg.clamp_min(1e-30), torch.zeros_like(gg))
        rf = rf - proj * gf
        d1.append(g / _filter_norms(g).clamp_min(1e-30) * wn)
        d2.append(rf.view_as(r) / _filter_norms(rf.view_as(r)).clamp_min(1e-30) * wn)
    dot = sum(float((a.double() * b.double()).sum()) for a, b in zip(d1, d2, strict=True))
    n1 = sum(float(a.double().square().sum()) for a in d1) ** 0.5
    n2 = sum(float(b.double().square().sum()) for b in d2) ** 0.5
    info = {
        "cosine_d1_d2": dot / (n1 * n2) if n1 and n2 else float("nan"),
        "grad_norm": sum(float(g.double().square().sum()) for g in grads) ** 0.5,
        "norm_d1": n1,
        "norm_d2": n2,
        "include_bn": include_bn,
        "seed": seed,
    }
    return d1, d2, info


@contextlib.contextmanager
def _weights_saved(model: nn.Module) -> Iterator[list[Tensor]]:
    """Yield copies of the trainable weights; put them back (bit-exact) on exit."""
    params = [p for _, p in _params(model)]
    saved = [p.detach().clone() for p in params]
    try:
        yield saved
    finally:
        with torch.no_grad():
            for p, w in zip(params, saved, strict=True):
                p.copy_(w)


@dataclass
class Landscape:
    """A loss surface on the grid ``alphas x betas`` (``loss[i, j]`` at ``(alphas[i], betas[j])``)."""

    alphas: np.ndarray
    betas: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def center_loss(self) -> float:
        """The loss at ``(0, 0)``: the unperturbed model."""
        return float(self.loss[int(np.argmin(np.abs(self.alphas))), int(np.argmin(np.abs(self.betas)))])

    def sharpness(self, radius: float = 0.25) -> float:
        """Mean loss increase over the grid points within ``radius`` (L-inf) of the centre.

        NaN, with a warning, when no grid point but the centre lies within ``radius`` (a grid
        coarser than the radius would otherwise report a rise of exactly 0).
        """
        a, b = np.meshgrid(self.alphas, self.betas, indexing="ij")
        m = (np.abs(a) <= radius + 1e-12) & (np.abs(b) <= radius + 1e-12)
        if int(m.sum()) <= 1:
            span = float(np.abs(self.alphas).max())
            need = int(math.ceil(2 * span / radius)) + 1
            need += 1 - need % 2
            warnings.warn(
                f"loss landscape: no grid point within {radius:g} of the centre (grid spacing "
                f"{float(np.diff(np.sort(self.alphas)).min()):.3g}); the mean rise within {radius:g} is "
                f"undefined: use --steps {need} or more for --span {span:g}",
                stacklevel=2,
            )
            return float("nan")
        return float(self.loss[m].mean() - self.center_loss)

    def to_dict(self) -> dict:
        return {
            "alphas": self.alphas.tolist(),
            "betas": self.betas.tolist(),
            "loss": self.loss.tolist(),
            "accuracy": self.accuracy.tolist(),
            "center_loss": self.center_loss,
            "sharpness_0.25": self.sharpness(0.25),
            "max_loss": float(self.loss.max()),
            **self.info,
        }

    as_dict = to_dict  # the name before 0.2 (result objects now all use to_dict)


def grid(steps: int, span: float) -> np.ndarray:
    """``steps`` points on ``[-span, span]`` that contain 0 exactly (even ``steps`` is bumped by one)."""
    if steps < 1:
        raise ConfigError(f"grid steps must be >= 1, got {steps}")
    if not span > 0:
        raise ConfigError(f"grid span must be > 0, got {span}")
    if steps % 2 == 0:
        steps += 1
    if steps == 1:
        return np.zeros(1)
    h = (steps - 1) // 2
    return span * np.arange(-h, h + 1, dtype=np.float64) / h


def loss_landscape(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    steps: int = 21,
    span: float = 1.0,
    seed: int = 0,
    include_bn: bool = False,
    batch_size: int = 256,
    directions: tuple[list[Tensor], list[Tensor]] | None = None,
    progress: bool = False,
) -> Landscape:
    """Evaluate ``L(a, b) = loss(w + a d1 + b d2)`` on a ``steps x steps`` grid over ``[-span, span]^2``.

    Args:
        model: the network (its weights are restored exactly afterwards).
        images, labels: the data the loss is averaged over (clean or adversarial).
        steps: grid points per axis (made odd so (0, 0) is on the grid).
        span: half-width of the grid in units of the filter-normalised directions.
        seed: seed of the random direction and of the Noisy-LIF noise.
        include_bn: also move 1-D parameters (biases, BatchNorm affine).
        directions: precomputed ``(d1, d2)``; default: :func:`landscape_directions` on this data.
    """
    alphas = grid(steps, span)
    info: dict = {"steps": len(alphas), "span": span, "num_samples": int(len(images))}
    if directions is None:
        d1, d2, dinfo = landscape_directions(model, images, labels, seed, include_bn, batch_size)
        info.update(dinfo)
    else:
        d1, d2 = directions
    params = [p for _, p in _params(model)]
    if len(d1) != len(params) or len(d2) != len(params):
        raise ConfigError("directions do not match the model's trainable parameters")
    loss = np.zeros((len(alphas), len(alphas)))
    acc = np.zeros_like(loss)
    it = [(i, j) for i in range(len(alphas)) for j in range(len(alphas))]
    if progress:
        it = tqdm(it, desc="landscape", leave=False)
    with _weights_saved(model) as w0:
        for i, j in it:
            a, b = float(alphas[i]), float(alphas[j])
            with torch.no_grad():
                for p, w, u, v in zip(params, w0, d1, d2, strict=True):
                    p.copy_(w + a * u + b * v)  # exactly w at (0, 0)
            loss[i, j], acc[i, j] = mean_loss(model, images, labels, batch_size, seed)
    return Landscape(alphas, alphas.copy(), loss, acc, info)


# --------------------------------------------------------------------------------------------
# Input space: along the attack direction
# --------------------------------------------------------------------------------------------
def input_loss_line(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    eps: float = 8 / 255,
    span: float = 2.0,
    steps: int = 41,
    seed: int = 0,
    batch_size: int = 256,
) -> dict:
    """Mean loss along ``clip(x + t * sign(grad_x loss))`` and along a random sign direction.

    ``t`` runs over ``[-span * eps, span * eps]``; ``t = eps`` on the attack line is FGSM.
    Returns ``{"t": [...], "attack": {"loss", "accuracy"}, "random": {...}}``.
    """
    if not eps > 0:
        raise ConfigError(f"eps must be > 0, got {eps}")
    ts = grid(steps, span * eps)
    with noise_seed(model, seed):
        sgn = []
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size].detach().clone().requires_grad_(True)
            loss = F.cross_entropy(model(x), labels[i : i + batch_size], reduction="sum")
            (g,) = torch.autograd.grad(loss, x)
            sgn.append(g.sign())
    attack_dir = torch.cat(sgn)
    gen = torch.Generator().manual_seed(seed)
    rand_dir = torch.randint(0, 2, images.shape, generator=gen).to(images.device, images.dtype) * 2 - 1
    out: dict = {
        "t": ts.tolist(),
        "eps": eps,
        "zero_grad_share": float((attack_dir == 0).flatten(1).all(1).float().mean()),
    }
    for key, d in (("attack", attack_dir), ("random", rand_dir)):
        ls, accs = [], []
        for t in ts:
            lo, a = mean_loss(model, (images + float(t) * d).clamp(0, 1), labels, batch_size, seed)
            ls.append(lo)
            accs.append(a)
        out[key] = {"loss": ls, "accuracy": accs}
    return out


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
def _row_levels(surfaces: Sequence[Landscape], n: int = 14) -> np.ndarray:
    lo = min(float(s.loss.min()) for s in surfaces)
    hi = max(float(s.loss.max()) for s in surfaces)
    lo = max(lo, 1e-4)
    if hi <= lo * 1.0001:
        hi = lo * 1.01 + 1e-6
    return np.geomspace(lo, hi, n)


def _model_order(surfaces: Mapping[str, Mapping[str, Landscape]]) -> list[str]:
    """Model names in first-seen order over all rows (the columns of a landscape figure)."""
    models: list[str] = []
    for row in surfaces.values():
        models += [m for m in row if m not in models]
    return models


def plot_landscape_contours(
    surfaces: Mapping[str, Mapping[str, Landscape]],
    path: str | os.PathLike,
    *,
    title: str = "",
    cell: tuple[float, float] = (3.3, 2.9),
    dpi: int = 150,
    formats: str | Sequence[str] | None = None,
) -> list[Path]:
    """Filled contours; ``surfaces[data][model]`` (rows = data such as clean / RFGSM, columns = models).

    Levels are log-spaced and shared within a row, so the models in a row are directly
    comparable; the star marks the trained weights (0, 0).
    """
    # lazy: matplotlib is slow to import and needed only for figures
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import MaxNLocator  # lazy: see above

    rows = list(surfaces)
    if not rows:
        raise ConfigError("no loss landscapes to plot")
    models = _model_order(surfaces)
    fig, axes = new_figure((cell[0] * len(models) + 0.8, cell[1] * len(rows) + 0.4), dpi, len(rows), len(models))
    for i, r in enumerate(rows):
        present = [surfaces[r][m] for m in models if m in surfaces[r]]
        levels = _row_levels(present)
        cs = None
        for j, m in enumerate(models):
            ax = axes[i, j]
            if m not in surfaces[r]:
                ax.set_axis_off()
                continue
            s = surfaces[r][m]
            A, B = np.meshgrid(s.alphas, s.betas, indexing="ij")
            z = np.clip(s.loss, levels[0], levels[-1])
            cs = ax.contourf(A, B, z, levels=levels, norm=LogNorm(levels[0], levels[-1]), cmap="viridis")
            ax.contour(A, B, z, levels=levels, colors="white", linewidths=0.4, alpha=0.6)
            ax.plot([0], [0], marker="*", color="red", markersize=8)
            ax.set_title(f"{m}, {r}: loss(0,0) {s.center_loss:.3f}, max {s.loss.max():.2f}", fontsize=7.5)
            ax.set_xlabel("d1 (gradient)", fontsize=8)
            if j == 0:
                ax.set_ylabel("d2 (random, orthogonal)", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.yaxis.set_major_locator(MaxNLocator(5))
            ax.set_aspect("equal")
        if cs is not None:
            # lazy: matplotlib is slow to import and needed only for figures
            from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

            cb = fig.colorbar(cs, ax=axes[i, :].tolist(), shrink=0.9, pad=0.02)
            cb.set_label("cross-entropy (log scale)", fontsize=8)
            cb.ax.yaxis.set_major_locator(FixedLocator(levels[::2]))  # type: ignore[arg-type]  # FixedLocator takes any array-like
            cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.3g}"))
            cb.ax.yaxis.set_minor_locator(NullLocator())
            cb.ax.tick_params(labelsize=6)
    fig.suptitle(title or "Loss landscape in parameter space (filter-normalised directions)", fontsize=10)
    return save_figure(fig, path, formats)


def plot_landscape_surfaces(
    surfaces: Mapping[str, Mapping[str, Landscape]],
    path: str | os.PathLike,
    *,
    title: str = "",
    cell: tuple[float, float] = (3.6, 3.0),
    dpi: int = 150,
    formats: str | Sequence[str] | None = None,
) -> list[Path]:
    """3-D surfaces, same layout as :func:`plot_landscape_contours`; z-range shared within a row."""
    plt_rows = list(surfaces)
    if not plt_rows:
        raise ConfigError("no loss landscapes to plot")
    models = _model_order(surfaces)
    fig, axes = new_figure(
        (cell[0] * len(models), cell[1] * len(plt_rows) + 0.3),
        dpi,
        len(plt_rows),
        len(models),
        subplot_kw={"projection": "3d"},
    )
    for i, r in enumerate(plt_rows):
        present = [surfaces[r][m] for m in models if m in surfaces[r]]
        zmax = max(float(s.loss.max()) for s in present)
        zmin = min(float(s.loss.min()) for s in present)
        for j, m in enumerate(models):
            ax = axes[i, j]
            if m not in surfaces[r]:
                ax.set_axis_off()
                continue
            s = surfaces[r][m]
            A, B = np.meshgrid(s.alphas, s.betas, indexing="ij")
            ax.plot_surface(
                A,
                B,
                s.loss,
                cmap="viridis",
                vmin=zmin,
                vmax=zmax,
                linewidth=0,
                antialiased=True,
                rcount=len(s.alphas),
                ccount=len(s.betas),
            )
            ax.set_zlim(zmin, zmax)
            ax.set_title(f"{m}, {r}", fontsize=8)
            ax.set_xlabel("d1", fontsize=7, labelpad=-6)
            ax.set_ylabel("d2", fontsize=7, labelpad=-6)
            ax.set_zlabel("loss", fontsize=7, labelpad=-4)
            ax.tick_params(labelsize=5.5, pad=-2)
            ax.view_init(elev=28, azim=-55)
            ax.set_box_aspect(None, zoom=0.88)  # keeps the z label inside the panel
    fig.suptitle(title or "Loss surface in parameter space", fontsize=10)
    return save_figure(fig, path, formats)


def plot_input_lines(
    lines: Mapping[str, dict],
    path: str | os.PathLike,
    *,
    title: str = "",
    figsize: tuple[float, float] = (6.4, 3.6),
    dpi: int = 150,
    formats: str | Sequence[str] | None = None,
) -> list[Path]:
    """Mean loss vs step size ``t`` (in units of eps) along the FGSM direction (solid) and a
    random sign direction (dotted), one colour per model."""
    if not lines:
        raise ConfigError("no input-space loss lines to plot")
    fig, axes = new_figure(figsize, dpi)
    ax = axes[0, 0]
    for i, (m, d) in enumerate(lines.items()):
        t = np.asarray(d["t"]) / d["eps"]
        ax.plot(t, d["attack"]["loss"], color=color(i), label=f"{m}: attack direction")
        ax.plot(t, d["random"]["loss"], color=color(i), linestyle=":", label=f"{m}: random direction")
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=0.8)
    ax.axvline(0.0, color="k", linewidth=0.5)
    first = next(iter(lines.values()))
    ax.set_xlabel(f"t / eps   (eps = {255 * first['eps']:.3g}/255; t = eps is FGSM)")
    ax.set_ylabel("mean cross-entropy")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title(title or "Loss along the attack direction in input space", fontsize=10)
    return save_figure(fig, path, formats)
