"""Spike-state flips: the theory (arXiv 2602.20548, Theorem 1) and what trained models actually do.

Theory. With Gaussian membrane noise ``eta ~ N(0, sigma^2)``, a neuron whose pre-spike
potential is ``U`` emits ``H(U + eta - V_th)`` instead of its deterministic state
``H(U - V_th)``; the two differ with probability

    P_flip = Phi(-|U - V_th| / sigma).

:func:`monte_carlo_flip` checks this against real :class:`~spikeguard.neurons.NoisyLIF`
modules (one time step, so ``U`` is the input), and :func:`plot_flip_theory` draws both,
together with the firing-probability sensitivity ``dP/dU = phi((U - V_th)/sigma) / sigma``
(Eq. 16-17), whose peak falls as sigma grows.

Measurement. :func:`measure_flip_rates` perturbs test images a little (FGSM or a random
sign step of size eps), runs the clean and the perturbed batch through the model, and
counts, per spiking layer and per bin of the *clean* distance ``|U - V_th|``, how many
neuron-time-step spike states changed. Spikes are read from the neurons' outputs (so
Noisy-LIF noise is included); with ``noise="fixed"`` both passes use the same noise draws
(common random numbers), so a flip is caused by the perturbation alone; ``noise="off"``
switches the noise off for both passes.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import ImageDataset, batches
from ..errors import ConfigError
from ..neurons import NoisyLIF, noise_enabled, noise_seed, record_potentials, spiking_neurons
from .plotting import color, new_figure, save_figure

NOISE_MODES = ("fixed", "off")
PERTURBATIONS = ("fgsm", "random")


def flip_probability(distance: np.ndarray | float, sigma: float) -> np.ndarray:
    """Closed form ``Phi(-|U - V_th| / sigma)`` for distances ``U - V_th`` (any sign)."""
    if not sigma > 0:
        raise ConfigError(f"sigma must be > 0, got {sigma}")
    d = np.abs(np.asarray(distance, dtype=np.float64))
    return 0.5 * np.vectorize(math.erfc)(d / (sigma * math.sqrt(2.0)))


def monte_carlo_flip(
    distances: np.ndarray, sigma: float, draws: int = 20000, seed: int = 0, v_threshold: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Empirical flip probability of a real ``NoisyLIF`` at ``U = V_th + distance``.

    One time step (so the neuron's pre-spike potential equals its input), ``draws``
    independent noise samples per distance. Returns ``(probability, standard error)``.
    """
    if draws < 1:
        raise ConfigError(f"draws must be >= 1, got {draws}")
    d = torch.as_tensor(np.asarray(distances, dtype=np.float64), dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    neuron = NoisyLIF(sigma=sigma, v_threshold=v_threshold, generator=gen)
    u = (v_threshold + d).view(1, 1, -1).expand(1, draws, d.numel()).contiguous()  # [T=1, B=draws, n]
    with torch.no_grad():
        s = neuron(u)[0]
    deterministic = (d >= 0).to(s.dtype)  # H(U - V_th) without noise (spike at U = V_th)
    p = (s != deterministic).double().mean(0).numpy()
    return p, np.sqrt(p * (1 - p) / draws)


def flip_theory(
    sigmas: Sequence[float] = (0.3, math.sqrt(0.4), 1.0),
    max_distance: float = 2.5,
    points: int = 26,
    draws: int = 20000,
    seed: int = 0,
) -> dict:
    """Closed form vs Monte Carlo for several sigma, on both sides of the threshold.

    Returns ``{"distance": [...], "sigmas": {sigma: {"closed_form", "mc_above", "mc_below",
    "se_above", "se_below", "max_abs_error", "max_z"}}}``; ``mc_above`` is measured at
    ``U = V_th + d`` and ``mc_below`` at ``U = V_th - d``.
    """
    if not max_distance > 0 or points < 2:
        raise ConfigError("need max_distance > 0 and points >= 2")
    dist = np.linspace(0.0, max_distance, points)
    out: dict = {"analysis": "flip_theory", "distance": dist.tolist(), "draws": draws, "sigmas": {}}
    for k, s in enumerate(sigmas):
        cf = flip_probability(dist, s)
        # below the threshold: d = 0 is "at threshold" and belongs to the upper side, so
        # the lower side starts just below it
        below = -np.maximum(dist, 1e-9)
        pa, sa = monte_carlo_flip(dist, s, draws, seed + 2 * k)
        pb, sb = monte_carlo_flip(below, s, draws, seed + 2 * k + 1)
        err = np.maximum(np.abs(pa - cf), np.abs(pb - cf))
        # standard error of a binomial mean, floored at one event's worth so that a single
        # rare event far in the tail does not count as a many-sigma deviation
        se = np.sqrt(np.maximum(cf * (1 - cf), 1.0 / draws) / draws)
        z = err / se
        out["sigmas"][f"{s:.4g}"] = {
            "sigma": s,
            "closed_form": cf.tolist(),
            "mc_above": pa.tolist(),
            "mc_below": pb.tolist(),
            "se_above": sa.tolist(),
            "se_below": sb.tolist(),
            "max_abs_error": float(err.max()),
            "max_z": float(z.max()),
        }
    return out


def plot_flip_theory(
    theory: dict,
    path: str | os.PathLike,
    *,
    title: str = "",
    figsize: tuple[float, float] = (9.6, 3.6),
    dpi: int = 150,
    v_threshold: float = 1.0,
    formats: str | Sequence[str] | None = None,
) -> list[Path]:
    """Left: P_flip vs |U - V_th| (lines: Phi, markers: Monte Carlo above/below V_th).
    Right: firing-probability sensitivity dP/dU vs U for the same sigmas."""
    fig, axes = new_figure(figsize, dpi, 1, 2)
    ax, ax2 = axes[0, 0], axes[0, 1]
    dist = np.asarray(theory["distance"])
    u = np.linspace(v_threshold - 3, v_threshold + 3, 400)
    for i, r in enumerate(theory["sigmas"].values()):
        s = r["sigma"]
        c = color(i)
        ax.plot(dist, r["closed_form"], color=c, label=f"sigma = {s:.3g}: Phi(-|U-V_th|/sigma)")
        ax.plot(
            dist,
            r["mc_above"],
            "o",
            color=c,
            markersize=3.5,
            mfc="none",
            label=f"Monte Carlo, U > V_th (max err {r['max_abs_error']:.4f})",
        )
        ax.plot(dist, r["mc_below"], "x", color=c, markersize=3.5)
        z = (u - v_threshold) / s
        ax2.plot(u, np.exp(-0.5 * z**2) / (s * math.sqrt(2 * math.pi)), color=c, label=f"sigma = {s:.3g}")
    ax.plot([], [], "x", color="grey", label="Monte Carlo, U < V_th")
    ax.set_xlabel("|U - V_th|")
    ax.set_ylabel("P(flip)")
    ax.set_title(f"Flip probability under membrane noise ({theory['draws']} draws / point)", fontsize=9)
    ax.legend(fontsize=6.5)
    ax2.axvline(v_threshold, color="k", linestyle="--", linewidth=0.8)
    ax2.set_xlabel("pre-spike potential U")
    ax2.set_ylabel("dP(spike)/dU = phi((U - V_th)/sigma) / sigma", fontsize=8)
    ax2.set_title("Sensitivity of the firing probability (Eq. 16-17)", fontsize=9)
    ax2.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, formats)


# --------------------------------------------------------------------------------------------
# Measured flip rates of a trained model
# --------------------------------------------------------------------------------------------
@dataclass
class FlipMeasurement:
    """Spike flips under a small perturbation, binned by clean distance ``|U - V_th|``.

    ``edges`` has ``bins + 1`` entries; the counts have ``bins + 1`` entries, the last being
    the open bin ``[edges[-1], inf)``.
    """

    edges: np.ndarray
    neurons: np.ndarray
    flips: np.ndarray
    layer_neurons: dict[str, int] = field(default_factory=dict)
    layer_flips: dict[str, int] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def overall_rate(self) -> float:
        """Flipped neuron-time-steps / all neuron-time-steps."""
        n = int(self.neurons.sum())
        return int(self.flips.sum()) / n if n else float("nan")

    def rates(self) -> np.ndarray:
        """Flip rate per distance bin (NaN for an empty bin)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.neurons > 0, self.flips / np.maximum(self.neurons, 1), np.nan)

    def layer_rates(self) -> dict[str, float]:
        return {k: self.layer_flips[k] / n for k, n in self.layer_neurons.items() if n}

    def to_dict(self) -> dict:
        return {
            "edges": self.edges.tolist(),
            "neurons": self.neurons.tolist(),
            "flips": self.flips.tolist(),
            "rates": [None if math.isnan(r) else r for r in self.rates()],
            "overall_rate": self.overall_rate,
            "layer_rates": self.layer_rates(),
            **self.info,
        }

    as_dict = to_dict  # the name before 0.2 (result objects now all use to_dict)


@contextlib.contextmanager
def _spike_outputs(model: nn.Module) -> Iterator[dict[str, list[Tensor]]]:
    """Collect each spiking layer's output spikes ``[T, B, ...]`` inside the block."""
    store: dict[str, list[Tensor]] = {}
    handles = []
    for name, m in spiking_neurons(model):

        def hook(_mod, _inp, out, name=name):
            store.setdefault(name, []).append(out.detach())

        handles.append(m.register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def _run(model: nn.Module, x: Tensor, noise: str, seed: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Pre-spike potentials and spikes of every layer for one batch."""
    ctx = noise_enabled(model, False) if noise == "off" else noise_seed(model, seed)
    with torch.no_grad(), ctx, record_potentials(model, detach=True) as rec, _spike_outputs(model) as spikes:
        model(x)
    pots = dict(zip(rec.names, rec.potentials, strict=True))
    return pots, {k: v[-1] for k, v in spikes.items()}


def perturb(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    eps: float,
    kind: str = "fgsm",
    noise: str = "fixed",
    seed: int = 0,
) -> Tensor:
    """``clip(x + eps * s)``: ``s`` = sign of the loss gradient (``fgsm``) or a random sign."""
    if kind not in PERTURBATIONS:
        raise ConfigError(f"unknown perturbation {kind!r}; choose one of {', '.join(PERTURBATIONS)}")
    if kind == "random":
        gen = torch.Generator().manual_seed(seed)
        s = torch.randint(0, 2, images.shape, generator=gen).to(images.device, images.dtype) * 2 - 1
    else:
        ctx = noise_enabled(model, False) if noise == "off" else noise_seed(model, seed)
        x = images.detach().clone().requires_grad_(True)
        with ctx:
            loss = F.cross_entropy(model(x), labels)
        (g,) = torch.autograd.grad(loss, x)
        s = g.sign()
    return (images + eps * s).clamp(0, 1).detach()


def measure_flip_rates(
    model: nn.Module,
    ds: ImageDataset,
    eps: float = 2 / 255,
    perturbation: str = "fgsm",
    noise: str = "fixed",
    bins: int = 20,
    max_distance: float = 2.0,
    v_threshold: float = 1.0,
    seed: int = 0,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
) -> FlipMeasurement:
    """Flip rate of every neuron-time-step under a small perturbation, binned by clean ``|U - V_th|``.

    Args:
        model: a spiking model in eval mode.
        ds: test images.
        eps: perturbation size (L-inf, pixel scale).
        perturbation: ``fgsm`` (sign of the loss gradient) or ``random`` (random sign).
        noise: ``fixed`` (same Noisy-LIF noise draws in both passes) or ``off``.
        bins, max_distance: distance bins on ``[0, max_distance]`` plus one open bin beyond.
    """
    if noise not in NOISE_MODES:
        raise ConfigError(f"unknown noise mode {noise!r}; choose one of {', '.join(NOISE_MODES)}")
    if not 0 < eps <= 1:
        raise ConfigError(f"eps must be in (0, 1], got {eps}")
    if bins < 1 or not max_distance > 0:
        raise ConfigError("need bins >= 1 and max_distance > 0")
    edges = np.linspace(0.0, max_distance, bins + 1)
    bounds = torch.tensor(edges[1:], dtype=torch.float32)
    neurons = np.zeros(bins + 1, dtype=np.int64)
    flips = np.zeros(bins + 1, dtype=np.int64)
    res = FlipMeasurement(edges, neurons, flips)
    for b, (x, y) in enumerate(batches(ds, batch_size, device=device)):
        xp = perturb(model, x, y, eps, perturbation, noise, seed + b)
        u0, s0 = _run(model, x, noise, seed + 7919 * (b + 1))
        _, s1 = _run(model, xp, noise, seed + 7919 * (b + 1))
        for name, u in u0.items():
            dist = (u - v_threshold).abs().flatten().float().cpu()
            flip = (s0[name] != s1[name]).flatten().cpu()
            idx = torch.bucketize(dist, bounds, right=True)  # 0..bins, the last = beyond max_distance
            neurons += torch.bincount(idx, minlength=bins + 1).numpy()
            flips += torch.bincount(idx[flip], minlength=bins + 1).numpy()
            res.layer_neurons[name] = res.layer_neurons.get(name, 0) + dist.numel()
            res.layer_flips[name] = res.layer_flips.get(name, 0) + int(flip.sum())
    res.info = {
        "eps": eps,
        "perturbation": perturbation,
        "noise": noise,
        "v_threshold": v_threshold,
        "num_samples": len(ds),
    }
    return res


def plot_flip_rates(
    measured: Mapping[str, FlipMeasurement],
    path: str | os.PathLike,
    *,
    title: str = "",
    figsize: tuple[float, float] = (9.6, 3.6),
    dpi: int = 150,
    formats: str | Sequence[str] | None = None,
) -> list[Path]:
    """Left: flip rate vs clean |U - V_th| per model. Right: share of neuron-time-steps per
    distance bin (where the models keep their potentials)."""
    if not measured:
        raise ConfigError("no flip measurements to plot")
    fig, axes = new_figure(figsize, dpi, 1, 2)
    ax, ax2 = axes[0, 0], axes[0, 1]
    first = next(iter(measured.values()))
    e = first.edges
    width = e[1] - e[0]
    centers = np.append((e[:-1] + e[1:]) / 2, e[-1] + width / 2)
    for i, (m, r) in enumerate(measured.items()):
        rates = r.rates()
        ok = ~np.isnan(rates) & (rates > 0)
        ax.plot(
            centers[ok],
            rates[ok],
            "o-",
            color=color(i),
            markersize=3,
            label=f"{m}: overall {100 * r.overall_rate:.2f}%",
        )
        share = r.neurons / max(int(r.neurons.sum()), 1)
        ax2.bar(
            centers + (i - (len(measured) - 1) / 2) * width / len(measured),
            share,
            width / len(measured),
            color=color(i),
            label=m,
        )
    ax.set_yscale("log")
    ax.set_xlabel(f"clean |U - V_th|  (last point: beyond {e[-1]:.3g})", fontsize=8)
    ax.set_ylabel("flip rate of the spike state")
    info = first.info
    ax.set_title(
        f"Spike flips under {info.get('perturbation', '')} eps = {255 * info.get('eps', 0):.3g}/255 "
        f"(noise {info.get('noise', '')})",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    top = max(r.neurons[-1] / max(int(r.neurons.sum()), 1) for r in measured.values())
    ax2.annotate(
        f"> {e[-1]:g}",
        (centers[-1], top),
        xytext=(0, 2),
        textcoords="offset points",
        ha="center",
        va="bottom",
        fontsize=7,
    )
    ax2.margins(y=0.08)
    ax2.set_xlabel("clean |U - V_th|", fontsize=8)
    ax2.set_ylabel("share of neuron-time-steps")
    ax2.set_title("Distance to threshold", fontsize=9)
    ax2.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, formats)
