"""One function per ``spikeguard analyze`` sub-command: compute, write figures + JSON/CSV.

Each ``run_*`` function takes already-loaded models (``{name: model}``, in eval mode) and
data, writes its files into ``out`` (atomically) and returns the JSON-ready summary it
wrote to ``out/<what>.json``. The analysis job (:mod:`spikeguard.jobs.analyze`) loads checkpoints
and data and calls these through the registered analyses.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from ..data import ImageDataset
from ..errors import ConfigError
from ..io import atomic_write_json, atomic_write_text, ensure_dir
from ..neurons import noise_seed
from ..utils import eps_label
from . import flip as _flip
from . import gradients as _grad
from . import jacobian as _jac
from . import landscape as _land
from . import membrane as _mem
from . import sweep as _sweep
from ..attacks import FGSM, PGD

Models = Mapping[str, nn.Module]


def _paths(files: Sequence[Path]) -> list[str]:
    return [str(p) for p in files]


def _check(models: Models) -> None:
    if not models:
        raise ConfigError("give at least one model (--checkpoint)")


def _tensors(ds: ImageDataset, n: int = 0, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    sub = ds.subset(n) if n and n < len(ds) else ds
    return sub.float_images().to(device), sub.labels.to(device)


def run_membrane(
    models: Models,
    ds: ImageDataset,
    out: str | os.PathLike,
    *,
    delta: float = 0.5,
    v_threshold: float = 1.0,
    bins: int = 120,
    lo: float = -2.0,
    hi: float = 3.0,
    baseline: str | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    formats: str | Sequence[str] | None = None,
    title: str = "",
) -> dict:
    """Histograms (overall + per layer), near-threshold bars, shares and reductions."""
    _check(models)
    out = ensure_dir(out)
    hists = {
        n: _mem.potential_histogram(m, ds, bins, lo, hi, v_threshold, delta, device=device, seed=seed)
        for n, m in models.items()
    }
    summary = _mem.membrane_summary(hists, baseline)
    files = _mem.plot_potential_histograms(hists, str(out / "membrane.png"), title, formats=formats)
    files += _mem.plot_layer_histograms(hists, out / "membrane_layers.png", title, formats=formats)
    files += _mem.plot_near_threshold_bars(hists, out / "membrane_near_threshold.png", title, formats=formats)
    _mem.write_membrane_csv(hists, out / "membrane.csv")
    summary.update(
        dataset=ds.name,
        num_samples=len(ds),
        seed=seed,
        files=_paths(files) + [str(out / "membrane.csv"), str(out / "membrane.json")],
    )
    atomic_write_json(out / "membrane.json", summary)
    return summary


def run_gradients(
    models: Models,
    ds: ImageDataset,
    out: str | os.PathLike,
    *,
    images: int = 6,
    indices: Sequence[int] | None = None,
    n: int = 0,
    rel_tol: float = 0.01,
    samples: int = 1,
    shared_scale: bool = True,
    seed: int = 0,
    device: torch.device | str = "cpu",
    formats: str | Sequence[str] | None = None,
    title: str = "",
) -> dict:
    """Heatmaps of the input gradient (true-class logit and loss) and sparsity over ``n`` images."""
    _check(models)
    out = ensure_dir(out)
    idx = _heatmap_indices(ds, indices, images)
    x = ds.float_images(idx).to(device)
    y = ds.labels[idx].to(device)
    names = [f"{ds.classes[int(c)]}" for c in y.cpu()]
    files: list[Path] = []
    for target in _grad.TARGETS:
        grads = {}
        for name, m in models.items():
            with noise_seed(m, seed):
                grads[name] = _grad.input_gradients(m, x, y, target, samples)
        what = "true-class logit" if target == "logit" else "cross-entropy loss"
        files += _grad.plot_gradient_heatmaps(
            x,
            grads,
            out / f"gradients_{target}.png",
            labels=[f"class {c}" for c in names],
            title=title or f"Input gradient of the {what}",
            shared_scale=shared_scale,
            rel_tol=rel_tol,
            formats=formats,
        )
    sub = ds.subset(n, seed) if n and n < len(ds) else ds
    metrics = {
        t: {
            name: _grad.gradient_sparsity(m, sub, t, rel_tol, samples, device=device, seed=seed)
            for name, m in models.items()
        }
        for t in _grad.TARGETS
    }
    files += _grad.plot_sparsity_bars(metrics, out / "gradient_sparsity.png", formats=formats)
    names_list = list(models)
    ratios = _sparsity_ratios(metrics, names_list)
    atomic_write_text(out / "gradients.csv", _gradients_csv(metrics))
    summary = {
        "analysis": "gradients",
        "dataset": ds.name,
        "num_samples": len(sub),
        "rel_tol": rel_tol,
        "samples": samples,
        "heatmap_indices": idx.tolist(),
        "metrics": metrics,
        "sparsity_ratio_vs_first": ratios,
        "baseline": names_list[0],
        "files": _paths(files) + [str(out / "gradients.csv"), str(out / "gradients.json")],
    }
    atomic_write_json(out / "gradients.json", summary)
    return summary


def _heatmap_indices(ds: ImageDataset, indices: Sequence[int] | None, images: int) -> torch.Tensor:
    """The test images of the heatmaps: ``indices`` (checked), else the first ``images`` of one per class."""
    if indices:
        bad = [i for i in indices if not 0 <= i < len(ds)]
        if bad:
            raise ConfigError(f"image index {bad[0]} is out of range (the split has {len(ds)} images)")
        return torch.tensor(list(indices))
    # the first image of each class, then the next ones: a varied, reproducible pick
    return torch.cat([torch.nonzero(ds.labels == c).flatten()[:1] for c in range(ds.num_classes)])[:images]


def _sparsity_ratios(metrics: dict, names_list: list[str]) -> dict:
    """Per target, each model's sparsity against the first model's (empty with one model)."""
    ratios = {}
    if len(names_list) >= 2:
        ratios = {
            t: {o: _grad.sparsity_ratio(metrics[t][names_list[0]], metrics[t][o]) for o in names_list[1:]}
            for t in _grad.TARGETS
        }
    return ratios


def _gradients_csv(metrics: dict) -> str:
    """``gradients.csv``: one row per target and model."""
    lines = ["target,model,near_zero,zero,l1_l2,l1_l2_normalized,gini,all_zero_share,num_samples"]
    for t, per in metrics.items():
        for name, s in per.items():
            lines.append(
                f"{t},{name},{s['near_zero']:.6g},{s['zero']:.6g},{s['l1_l2']:.6g},"
                f"{s['l1_l2_normalized']:.6g},{s['gini']:.6g},{s['all_zero_share']:.6g},{s['num_samples']}"
            )
    return "\n".join(lines) + "\n"


def run_landscape(
    models: Models,
    ds: ImageDataset,
    out: str | os.PathLike,
    *,
    n: int = 256,
    steps: int = 21,
    span: float = 1.0,
    eps: float = 8 / 255,
    alpha: float | None = None,
    include_bn: bool = False,
    line_span: float = 2.0,
    line_steps: int = 41,
    seed: int = 0,
    device: torch.device | str = "cpu",
    formats: str | Sequence[str] | None = None,
    progress: bool = False,
    title: str = "",
) -> dict:
    """Parameter-space landscapes on clean and RFGSM data (contour + 3-D) and the input-space line."""
    _check(models)
    out = ensure_dir(out)
    x, y = _tensors(ds.subset(n, seed) if n and n < len(ds) else ds, 0, device)
    surfaces: dict[str, dict[str, _land.Landscape]] = {"clean": {}, f"RFGSM {eps_label(eps)}": {}}
    lines = {}
    for name, m in models.items():
        adv = _land.rfgsm_examples(m, x, y, eps, alpha, seed)
        for data, xx in zip(surfaces, (x, adv), strict=True):
            surfaces[data][name] = _land.loss_landscape(m, xx, y, steps, span, seed, include_bn, progress=progress)
        lines[name] = _land.input_loss_line(m, x, y, eps, line_span, line_steps, seed)
    files = _land.plot_landscape_contours(surfaces, out / "landscape_contour.png", title=title, formats=formats)
    files += _land.plot_landscape_surfaces(surfaces, out / "landscape_surface.png", title=title, formats=formats)
    files += _land.plot_input_lines(lines, out / "landscape_input.png", formats=formats)
    summary = {
        "analysis": "landscape",
        "dataset": ds.name,
        "num_samples": int(len(x)),
        "eps": eps,
        "eps_label": eps_label(eps),
        "steps": steps,
        "span": span,
        "include_bn": include_bn,
        "surfaces": {d: {k: s.to_dict() for k, s in per.items()} for d, per in surfaces.items()},
        "input_line": lines,
        "files": _paths(files) + [str(out / "landscape.json")],
    }
    atomic_write_json(out / "landscape.json", summary)
    return summary


def run_flip(
    models: Models,
    ds: ImageDataset | None,
    out: str | os.PathLike,
    *,
    sigmas: Sequence[float] = (0.3, math.sqrt(0.4), 1.0),
    draws: int = 20000,
    max_distance: float = 2.5,
    eps: float = 2 / 255,
    perturbation: str = "fgsm",
    noise: str = "fixed",
    n: int = 0,
    bins: int = 20,
    v_threshold: float = 1.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    formats: str | Sequence[str] | None = None,
    title: str = "",
) -> dict:
    """Closed form vs Monte Carlo (always) and measured flip rates of ``models`` (if any)."""
    out = ensure_dir(out)
    theory = _flip.flip_theory(sigmas, max_distance, 26, draws, seed)
    files = _flip.plot_flip_theory(
        theory, out / "flip_theory.png", title=title, v_threshold=v_threshold, formats=formats
    )
    summary: dict = {"analysis": "flip", "theory": theory}
    if models:
        if ds is None:
            raise ConfigError("measuring flip rates needs test data")
        sub = ds.subset(n, seed) if n and n < len(ds) else ds
        measured = {
            name: _flip.measure_flip_rates(
                m, sub, eps, perturbation, noise, bins, 2.0, v_threshold, seed, device=device
            )
            for name, m in models.items()
        }
        files += _flip.plot_flip_rates(measured, out / "flip_rates.png", title=title, formats=formats)
        names = list(measured)
        summary["measured"] = {k: v.to_dict() for k, v in measured.items()}
        summary["dataset"] = ds.name
        summary["num_samples"] = len(sub)
        if len(names) >= 2:
            b = measured[names[0]].overall_rate
            summary["flip_rate_reduction_vs_first"] = {
                o: (b - measured[o].overall_rate) / b if b else float("nan") for o in names[1:]
            }
        lines = ["model,bin_lo,bin_hi,neurons,flips,rate"]
        for name, r in measured.items():
            e = list(r.edges) + [math.inf]
            for k, (nn_, ff) in enumerate(zip(r.neurons, r.flips, strict=True)):
                rate = ff / nn_ if nn_ else float("nan")
                lines.append(f"{name},{e[k]:.4g},{e[k + 1]:.4g},{nn_},{ff},{rate:.6g}")
        atomic_write_text(out / "flip.csv", "\n".join(lines) + "\n")
        files.append(out / "flip.csv")
    summary["files"] = _paths(files) + [str(out / "flip.json")]
    atomic_write_json(out / "flip.json", summary)
    return summary


def run_jacobian(
    models: Models,
    ds: ImageDataset,
    out: str | os.PathLike,
    *,
    n: int = 128,
    iters: int = 20,
    method: str = "auto",
    projections: int | None = None,
    attack: str = "fgsm",
    eps: float = 8 / 255,
    steps: int = 10,
    seed: int = 0,
    device: torch.device | str = "cpu",
    formats: str | Sequence[str] | None = None,
    title: str = "",
) -> dict:
    """Per-sample Jacobian norms and the first-order bound under ``attack`` at ``eps``."""
    _check(models)
    out = ensure_dir(out)
    x, y = _tensors(ds.subset(n, seed) if n and n < len(ds) else ds, 0, device)
    norms, checks, summ = {}, {}, {}
    for name, m in models.items():
        norms[name] = _jac.jacobian_norms(m, x, iters, projections, seed, method=method)
        if attack == "fgsm":
            atk: FGSM | PGD = FGSM(m, eps=eps)
        elif attack == "pgd":
            atk = PGD(m, eps=eps, alpha=2.5 * eps / steps, steps=steps)
        else:
            raise ConfigError(f"unknown attack {attack!r} for the bound check; choose fgsm or pgd")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            checks[name] = _jac.bound_check(m, x, y, atk, iters, seed, method=method)
        summ[name] = _jac.summarize_bound(checks[name]) | {
            "median_frobenius": float(torch.tensor(norms[name]["frobenius"]).median()),
            "mean_spectral": float(norms[name]["spectral"].mean()),
        }
    label = f"{attack.upper()} eps = {eps_label(eps)}"
    files = _jac.plot_jacobian(norms, checks, out / "jacobian.png", title=title, attack_label=label, formats=formats)
    lines = ["model,sample,spectral,frobenius,actual,linear,bound"]
    for name in models:
        for i in range(len(x)):
            c = checks[name]
            lines.append(
                f"{name},{i},{norms[name]['spectral'][i]:.6g},{norms[name]['frobenius'][i]:.6g},"
                f"{c['actual'][i]:.6g},{c['linear'][i]:.6g},{c['bound'][i]:.6g}"
            )
    atomic_write_text(out / "jacobian.csv", "\n".join(lines) + "\n")
    summary = {
        "analysis": "jacobian",
        "dataset": ds.name,
        "num_samples": int(len(x)),
        "attack": label,
        "method": method,
        "iters": iters,
        "projections": projections,
        "summary": summ,
        "files": _paths(files) + [str(out / "jacobian.csv"), str(out / "jacobian.json")],
    }
    atomic_write_json(out / "jacobian.json", summary)
    return summary


def run_sweep(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    attack: str | None = None,
    lambda_eps: float | None = None,
    formats: str | Sequence[str] | None = None,
    title: str = "",
    reference: str | None = None,
    merge: bool = False,
) -> dict:
    """Robust accuracy vs eps and vs lambda_max from result files, plus a Markdown table of every
    (eps, attack) per model with its sample count (``sweep_table.md``; deltas to ``reference`` when
    given). Results of different provenance get rows of their own unless ``merge`` (then
    ``summary["merged"]`` says, per model, which groups share its row)."""
    records, merged = _sweep.split_rows(_sweep.load_sweep_records(paths), merge)
    out = ensure_dir(out)
    files = _sweep.plot_sweep(
        records, out / "sweep.png", attack=attack, lambda_eps=lambda_eps, title=title, formats=formats
    )
    _sweep.write_records_csv(records, out / "sweep.csv")
    summary = _sweep.sweep_summary(records, attack)
    summary["table"] = _sweep.accuracy_table(records, reference)
    summary["merged"] = merged
    note = "".join(f"\nrow {m!r} merges results of different provenance: " + "; ".join(g) for m, g in merged.items())
    atomic_write_text(out / "sweep_table.md", summary["table"] + note + ("\n" if note else ""))
    summary["files"] = _paths(files) + [str(out / "sweep.csv"), str(out / "sweep_table.md"), str(out / "sweep.json")]
    atomic_write_json(out / "sweep.json", summary)
    return summary
