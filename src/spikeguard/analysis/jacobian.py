"""Input-Jacobian norms and the first-order bound (arXiv 2602.20548, section 4.1, Eq. 7-11).

For logits ``f(x)`` (``K`` classes, averaged over time) and ``d = x_adv - x``::

    ||f(x + d) - f(x)|| <= ||J_x|| ||d|| + O(||d||^2)

``J_x`` is the Jacobian *through the surrogate gradients* (the true derivative of a spiking
net is zero almost everywhere): exactly what a gradient attacker uses. Threshold-neighbouring
neurons sit where the surrogate peaks, so the paper predicts TGO lowers ``||J_x||``.

Estimators (per sample, batched; the model must be in eval mode so that samples do not
interact through BatchNorm):

* ``spectral_norm``: power iteration on ``J J^T`` with vector-Jacobian products
  (``J^T u``) and Jacobian-vector products (``J v``, by the double-backward trick, which
  works through custom autograd functions such as the spike function);
* ``frobenius_norm``: exact from ``K`` vector-Jacobian products, or the random-projection
  estimate ``E_u ||J^T u||^2 = ||J||_F^2`` with Gaussian ``u`` when ``projections`` is given;
* ``exact_jacobian``: the full ``[B, K, D]`` Jacobian for checks on small inputs.

A stochastic model is linearised at one noise draw (seeded), and the same draw is used for
``f(x)`` and ``f(x + d)``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..neurons import noise_seed, spiking_neurons
from .plotting import color, new_figure, save_figure, tidy_log_axis


def _noise(model: nn.Module, seed: int | None) -> contextlib.AbstractContextManager:
    return noise_seed(model, seed) if seed is not None else contextlib.nullcontext()


@contextlib.contextmanager
def _loop_backend(model: nn.Module) -> Iterator[None]:
    """Run the neurons on their reference ``"loop"`` backend inside the block.

    The fused LIF scan computes its backward in place and cannot be differentiated again;
    the loop backend is made of ordinary operations, so the double-backward JVP works.
    The two backends compute the same numbers.
    """
    mods = [m for _, m in spiking_neurons(model) if hasattr(m, "backend")]
    old = [m.backend for m in mods]
    for m in mods:
        m.backend = "loop"
    try:
        yield
    finally:
        for m, b in zip(mods, old, strict=True):
            m.backend = b


class Linearization:
    """``f`` at ``x`` with one forward pass kept, offering ``J^T u`` and ``J v`` per sample.

    Args:
        model: maps ``x`` to logits ``[B, K]``.
        x: the point of linearisation.
        seed: Noisy-LIF noise seed of the kept forward pass (``None``: unseeded).
        jvp: build the graph so that :meth:`jvp` works (reference neuron backend).
    """

    def __init__(self, model: nn.Module, x: Tensor, seed: int | None = 0, jvp: bool = False) -> None:
        self.x = x.detach().clone().requires_grad_(True)
        with _noise(model, seed), _loop_backend(model) if jvp else contextlib.nullcontext():
            self.out = model(self.x)
        if self.out.dim() != 2:
            raise ConfigError(f"expected logits [B, K], got shape {tuple(self.out.shape)}")
        self._u: Tensor | None = None
        self._g: Tensor | None = None

    def vjp(self, u: Tensor) -> Tensor:
        """``J^T u`` for ``u`` of shape ``[B, K]``; returns ``[B, ...]`` like ``x``."""
        (g,) = torch.autograd.grad(self.out, self.x, u, retain_graph=True)
        return g

    def jvp(self, v: Tensor) -> Tensor:
        """``J v`` for ``v`` shaped like ``x``; returns ``[B, K]``.

        ``g(u) = J^T u`` is linear in ``u``, so ``d<g(u), v>/du = J v`` (double backward).
        The graph of ``g`` is built once and reused.
        """
        if self._g is None:
            self._u = torch.zeros_like(self.out, requires_grad=True)
            (self._g,) = torch.autograd.grad(self.out, self.x, self._u, retain_graph=True, create_graph=True)
        (jv,) = torch.autograd.grad(self._g, self._u, v, retain_graph=True)  # type: ignore[arg-type]  # _u is set with _g above
        return jv


def _per_sample_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1)


SPECTRAL_METHODS = ("auto", "power", "gram")


def _gram_spectral(lin: Linearization) -> Tensor:
    """Exact ``||J||_2`` from the ``K x K`` Gram matrix ``J J^T`` (``K`` VJPs)."""
    rows = []
    for c in range(lin.out.shape[1]):
        u = torch.zeros_like(lin.out)
        u[:, c] = 1.0
        rows.append(lin.vjp(u).flatten(1).double())
    jac = torch.stack(rows, 1)  # [B, K, D]
    gram = jac @ jac.transpose(1, 2)
    return torch.linalg.eigvalsh(gram)[:, -1].clamp_min(0).sqrt().float()


def spectral_norm(
    model: nn.Module, x: Tensor, iters: int = 20, seed: int | None = 0, tol: float = 1e-4, method: str = "power"
) -> Tensor:
    """Per-sample spectral norm ``||J_x||_2`` ``[B]``.

    Args:
        method: ``power``: power iteration on ``J^T J`` (one JVP + one VJP per iteration,
            stops early once every sample changed by less than ``tol`` relatively);
            ``gram``: exact, from the ``K x K`` Gram matrix built with ``K`` VJPs (cheaper
            than power iteration when the number of classes ``K`` is small);
            ``auto``: ``gram`` for ``K <= 2 * iters``, else ``power``.
    """
    if iters < 1:
        raise ConfigError(f"iters must be >= 1, got {iters}")
    if method not in SPECTRAL_METHODS:
        raise ConfigError(f"unknown spectral-norm method {method!r}; choose one of {', '.join(SPECTRAL_METHODS)}")
    lin = Linearization(model, x, seed, jvp=method == "power")
    if method == "auto":
        if lin.out.shape[1] <= 2 * iters:
            return _gram_spectral(lin)
        lin = Linearization(model, x, seed, jvp=True)
    elif method == "gram":
        return _gram_spectral(lin)
    gen = torch.Generator().manual_seed(0 if seed is None else seed)
    shape = (-1, *[1] * (x.dim() - 1))
    v = torch.randn(x.shape, generator=gen, dtype=lin.x.dtype).to(x.device)
    v = v / _per_sample_norm(v).clamp_min(1e-30).view(shape)
    sigma = torch.zeros(x.shape[0], device=x.device)
    for _ in range(iters):
        jv = lin.jvp(v)
        new = jv.norm(dim=1)
        w = lin.vjp(jv)
        wn = _per_sample_norm(w)
        v = torch.where(wn.view(shape) > 0, w / wn.clamp_min(1e-30).view(shape), v)
        done = bool(((new - sigma).abs() <= tol * new.clamp_min(1e-12)).all())
        sigma = new.detach()
        if done:
            break
    return sigma


def frobenius_norm(model: nn.Module, x: Tensor, projections: int | None = None, seed: int | None = 0) -> Tensor:
    """Per-sample Frobenius norm ``||J_x||_F`` ``[B]``.

    ``projections=None``: exact, one VJP per class. Otherwise the unbiased random-projection
    estimate ``sqrt(mean_m ||J^T u_m||^2)`` over ``projections`` Gaussian vectors ``u_m``.
    """
    lin = Linearization(model, x, seed)
    b, k = lin.out.shape
    total = torch.zeros(b, dtype=torch.float64, device=x.device)
    if projections is None:
        for c in range(k):
            u = torch.zeros_like(lin.out)
            u[:, c] = 1.0
            total += _per_sample_norm(lin.vjp(u)).double().square()
        return total.sqrt().float()
    if projections < 1:
        raise ConfigError(f"projections must be >= 1, got {projections}")
    gen = torch.Generator().manual_seed(0 if seed is None else seed)
    for _ in range(projections):
        u = torch.randn(lin.out.shape, generator=gen, dtype=lin.out.dtype).to(x.device)
        total += _per_sample_norm(lin.vjp(u)).double().square()
    return (total / projections).sqrt().float()


def exact_jacobian(model: nn.Module, x: Tensor, seed: int | None = 0) -> Tensor:
    """The full Jacobian ``[B, K, D]`` (``K`` VJPs); for checks on small inputs."""
    lin = Linearization(model, x, seed)
    rows = []
    for c in range(lin.out.shape[1]):
        u = torch.zeros_like(lin.out)
        u[:, c] = 1.0
        rows.append(lin.vjp(u).flatten(1))
    return torch.stack(rows, 1)


def jacobian_norms(
    model: nn.Module,
    images: Tensor,
    iters: int = 20,
    projections: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    method: str = "auto",
) -> dict[str, np.ndarray]:
    """Spectral and Frobenius norms of the input Jacobian for every image (``[N]`` arrays)."""
    spec, frob = [], []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size]
        spec.append(spectral_norm(model, x, iters, seed + i, method=method).cpu())
        frob.append(frobenius_norm(model, x, projections, seed + i).cpu())
    return {"spectral": torch.cat(spec).numpy(), "frobenius": torch.cat(frob).numpy()}


def bound_check(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attack: Callable[[Tensor, Tensor], Tensor],
    iters: int = 20,
    seed: int = 0,
    batch_size: int = 64,
    method: str = "auto",
) -> dict[str, np.ndarray]:
    """Output change under an attack against the first-order prediction and bound, per sample.

    Returns arrays ``actual = ||f(x+d) - f(x)||_2``, ``linear = ||J_x d||_2``,
    ``bound = ||J_x||_2 ||d||_2``, ``spectral = ||J_x||_2`` and ``delta_l2``, ``delta_linf``.
    ``f(x)`` and ``f(x + d)`` use the same noise draw.
    """
    keys = ("actual", "linear", "bound", "spectral", "delta_l2", "delta_linf")
    parts: dict[str, list[Tensor]] = {k: [] for k in keys}
    for i in range(0, len(images), batch_size):
        x, y = images[i : i + batch_size], labels[i : i + batch_size]
        d = (attack(x, y) - x).detach()
        s = seed + i
        with torch.no_grad():
            with _noise(model, s):
                f0 = model(x)
            with _noise(model, s):
                f1 = model(x + d)
        lin = Linearization(model, x, s, jvp=True)
        sig = spectral_norm(model, x, iters, s, method=method)
        parts["actual"].append((f1 - f0).norm(dim=1))
        parts["linear"].append(lin.jvp(d).norm(dim=1).detach())
        parts["spectral"].append(sig)
        parts["delta_l2"].append(_per_sample_norm(d))
        parts["delta_linf"].append(d.flatten(1).abs().amax(1))
        parts["bound"].append(sig * _per_sample_norm(d))
    return {k: torch.cat(v).detach().cpu().numpy() for k, v in parts.items()}


def summarize_bound(check: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Medians and the share of samples whose actual change exceeds the first-order bound."""
    a, b, lin = check["actual"], check["bound"], check["linear"]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(b > 0, a / b, np.nan)
    return {
        "median_actual": float(np.median(a)),
        "median_linear": float(np.median(lin)),
        "median_bound": float(np.median(b)),
        "median_spectral": float(np.median(check["spectral"])),
        "median_actual_over_bound": float(np.nanmedian(ratio)) if np.isfinite(ratio).any() else float("nan"),
        "share_exceeding_bound": float(np.mean(a > b)),
        "mean_delta_l2": float(np.mean(check["delta_l2"])),
        "max_delta_linf": float(np.max(check["delta_linf"])),
        "num_samples": int(len(a)),
    }


def plot_jacobian(
    norms: Mapping[str, Mapping[str, np.ndarray]],
    checks: Mapping[str, Mapping[str, np.ndarray]],
    path: str | os.PathLike,
    *,
    title: str = "",
    attack_label: str = "attack",
    figsize: tuple[float, float] = (9.6, 3.8),
    dpi: int = 150,
    formats: str | Sequence[str] | None = None,
) -> list[Path]:
    """Left: per-sample ``||J_x||_2`` distribution per model (log-x histogram).
    Right: actual output change vs the first-order bound ``||J|| ||d||`` (log-log; the line is y = x)."""
    if not norms:
        raise ConfigError("no Jacobian norms to plot")
    fig, axes = new_figure(figsize, dpi, 1, 2 if checks else 1)
    ax = axes[0, 0]
    allv = np.concatenate([np.asarray(n["spectral"]) for n in norms.values()])
    pos = allv[allv > 0]
    lo, hi = (pos.min(), pos.max()) if len(pos) else (1e-3, 1.0)
    edges = np.geomspace(lo / 1.2, hi * 1.2, 40)
    for i, (m, n) in enumerate(norms.items()):
        s = np.asarray(n["spectral"])
        zero = float(np.mean(s <= 0))
        lab = f"{m}: median {np.median(s):.3g}" + (f", {100 * zero:.0f}% zero" if zero else "")
        ax.hist(s[s > 0], bins=edges, histtype="step", linewidth=1.5, color=color(i), label=lab)
    ax.set_xscale("log")
    tidy_log_axis(ax, "x")
    ax.set_xlabel("||J_x||_2 (logits w.r.t. input, through the surrogate)")
    ax.set_ylabel("samples")
    ax.set_title("Input-Jacobian spectral norm per sample", fontsize=9)
    ax.legend(fontsize=7)
    if checks:
        ax2 = axes[0, 1]
        lo_all, hi_all = np.inf, 0.0
        for i, (m, c) in enumerate(checks.items()):
            a, b = np.asarray(c["actual"]), np.asarray(c["bound"])
            ok = (a > 0) & (b > 0)
            share = float(np.mean(a > b))
            ax2.scatter(b[ok], a[ok], s=6, alpha=0.5, color=color(i), label=f"{m}: {100 * share:.0f}% above bound")
            if ok.any():
                lo_all, hi_all = min(lo_all, a[ok].min(), b[ok].min()), max(hi_all, a[ok].max(), b[ok].max())
        if np.isfinite(lo_all):
            ax2.plot([lo_all, hi_all], [lo_all, hi_all], "k--", linewidth=0.8, label="actual = bound")
            ax2.set_xscale("log")
            ax2.set_yscale("log")
            tidy_log_axis(ax2, "x")
            tidy_log_axis(ax2, "y")
        else:  # every change or bound is 0 (e.g. a model whose spikes never move): nothing to log-scale
            ax2.text(
                0.5,
                0.5,
                "no sample with a nonzero change and bound",
                ha="center",
                va="center",
                transform=ax2.transAxes,
                fontsize=8,
            )
        ax2.set_xlabel("first-order bound ||J_x||_2 ||d||_2")
        ax2.set_ylabel("||f(x+d) - f(x)||_2")
        ax2.set_title(f"Output change under {attack_label} vs the bound", fontsize=9)
        ax2.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, formats)
