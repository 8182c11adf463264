"""The analysis job: ``spikeguard analyze WHAT`` without the argument parsing.

:func:`run_analysis` loads the checkpoints and the test split, picks and guards the output
folder, runs each analysis through the registry (:data:`~spikeguard.analysis.registry.ANALYSES`)
and rewrites its JSON with the provenance. The built-in analyses are registered here: each turns
the request into one :mod:`spikeguard.analysis.commands` ``run_*`` call.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..analysis import commands as C
from ..analysis.plotting import parse_formats
from ..analysis.registry import ANALYSES, AnalysisContext, register_analysis
from ..checkpoint import load_run
from ..data import load_dataset
from ..errors import ConfigError
from ..evaluation.results import checkpoint_id, command_line, now_utc, software
from ..io import atomic_write_json, ensure_dir, new_dir, refuse_overwrite, removed_on_failure, stamp
from ..utils import resolve_device

Say = Callable[[str], None]

#: The analyses ``analyze all`` runs first, in this order (then any other registered ``in_all``).
REPORT_ORDER = ("membrane", "gradients", "landscape", "flip", "jacobian")


@dataclass
class AnalysisRequest:
    """Everything ``spikeguard analyze`` takes (see its ``--help``), by the option's name.

    ``what`` is a registered analysis or ``all``; ``files`` the result files of a file analysis
    (``sweep``); ``checkpoint`` the ``[NAME=]RUN`` specs (the first is the baseline); ``n`` None
    for each analysis' own default; ``out`` None for a new folder ``runs/analysis/<UTC time>-<what>``;
    ``argv`` the command line recorded in the provenance (without the program name). The other
    fields are the per-analysis options, read by the registered analyses as ``ctx.args.<name>``.
    """

    what: str
    files: list[str] = field(default_factory=list)
    checkpoint: list[str] = field(default_factory=list)
    dataset: str | None = None
    data_root: str | None = None
    n: int | None = None
    device: str = "auto"
    seed: int = 0
    out: str | None = None
    overwrite: bool = False
    format: str = "png"
    title: str = ""
    no_progress: bool = False
    delta: float | None = None
    bins: int = 120
    hist_range: tuple[float, float] = (-2.0, 3.0)
    images: int = 6
    index: list[int] | None = None
    rel_tol: float = 0.01
    grad_samples: int = 1
    cell_scale: bool = False
    steps: int = 21
    span: float = 1.0
    eps: float = 8 / 255
    rfgsm_alpha: float | None = None
    include_bn: bool = False
    sigmas: list[float] = field(default_factory=lambda: [0.3, math.sqrt(0.4), 1.0])
    draws: int = 20000
    flip_eps: float = 2 / 255
    perturbation: str = "fgsm"
    noise: str = "fixed"
    iters: int = 20
    method: str = "auto"
    projections: int | None = None
    attack: str = "fgsm"
    sweep_attack: str | None = None
    lambda_eps: float | None = None
    reference: str | None = None
    merge: bool = False
    argv: list[str] = field(default_factory=list)


@dataclass
class AnalysisResult:
    """What :func:`run_analysis` wrote: the output folder and each analysis' result (with provenance)."""

    out: Path
    results: dict[str, dict] = field(default_factory=dict)


def load_models(specs: list[str], device: str = "cpu") -> tuple[dict[str, nn.Module], list]:
    """``[NAME=]PATH`` specs -> ``({name: model}, [Run])`` via ``spikeguard.checkpoint.load_run``."""
    models: dict[str, nn.Module] = {}
    runs = []
    for spec in specs:
        name, path = None, spec
        if "=" in spec and not Path(spec).exists():
            name, path = spec.split("=", 1)
        run = load_run(path, device)
        name = name or Path(run.path).resolve().name
        if name in models:
            raise ConfigError(f"two checkpoints are named {name!r}; name them: -k NAME=PATH")
        models[name] = run.model.eval()
        runs.append(run)
    return models, runs


def _load_data(req: AnalysisRequest, runs: list) -> Any:
    """The test split: ``req.dataset`` / ``req.data_root``, else the first run's; checked against every model."""
    cfg = runs[0].config if runs else None
    name = req.dataset or (cfg.data.name if cfg is not None else "digits")
    root = req.data_root or (cfg.data.root if cfg is not None and cfg.data.root else None)
    ds = load_dataset(name, "test", root=root)
    for run in runs:
        m = run.model
        c = getattr(m, "in_channels", ds.image_shape[0])
        if c != ds.image_shape[0]:
            raise ConfigError(f"{run.path}: the model takes {c}-channel images but {name} has {ds.image_shape[0]}")
    return ds


def analyses_to_run(what: str) -> list[str]:
    """The analyses ``what`` names (``all``: every one registered with ``in_all``, in report order)."""
    if what != "all":
        return [ANALYSES.canonical(what)]
    extra = [e.name for e in ANALYSES.entries() if e.meta["in_all"] and e.name not in REPORT_ORDER]
    return [n for n in REPORT_ORDER if n in ANALYSES and ANALYSES.entry(n).meta["in_all"]] + extra


@contextlib.contextmanager
def _output(req: AnalysisRequest, todo: list[str]) -> Iterator[Path]:
    """The output folder: ``req.out`` (refusing to replace a result there unless ``req.overwrite``) or a new
    ``runs/analysis/<UTC time>-<what>``; removed again if the analysis fails before writing anything."""
    if req.out:
        created = not Path(req.out).exists()
        refuse_overwrite(req.out, [f"{w}.json" for w in todo], req.overwrite)
        out = ensure_dir(req.out)
    else:
        out, created = new_dir(Path("runs") / "analysis", f"{stamp()}-{req.what}"), True
    with removed_on_failure(out, created=created):
        yield out


def analysis_provenance(req: AnalysisRequest, res: dict, runs: list, ds: Any) -> dict:
    """The provenance of one analysis result: checkpoints and their weight hashes, command, inputs,
    dataset, sample count, seed, versions, date.

    Not :func:`~spikeguard.evaluation.results.evaluation_provenance`: an analysis compares several
    checkpoints (a ``{path: hash}`` map, or result files as ``inputs`` for ``sweep``) and runs no
    attack suite, so the evaluation record's single checkpoint, attacks, eps, passes and protocol
    fields have nothing to hold; the shape here is the one ``analyze`` has always written.
    """
    return {
        "command": command_line(req.argv),
        "checkpoints": {str(r.path): checkpoint_id(r.path) for r in runs},
        "inputs": [str(f) for f in req.files],
        "dataset": getattr(ds, "name", None),
        "n_samples": res.get("num_samples", req.n),
        "seed": req.seed,
        "software": software(),
        "date": now_utc(),
    }


def _run_one(what: str, ctx: AnalysisContext, req: AnalysisRequest, runs: list, ds: Any) -> dict:
    """Run one registered analysis and rewrite its JSON with the provenance."""
    res = ANALYSES.get(what)(ctx)
    res["provenance"] = analysis_provenance(req, res, runs, ds)
    atomic_write_json(ctx.out / f"{what}.json", res)
    return res


def _quiet(_text: str) -> None:
    """A sink for what a quiet job would say."""


def run_analysis(req: AnalysisRequest, *, log: Say | None = None) -> AnalysisResult:
    """Run ``req.what`` (one analysis or ``all``) and write ``OUT/<name>.json`` per analysis.

    ``log`` gets each analysis' key numbers, the files written and the elapsed time (None: say
    nothing). Bad input (no checkpoint for a model analysis, no files for ``sweep``, an unknown
    figure format, an unavailable device) is a one-line :class:`~spikeguard.errors.ConfigError`.
    """
    say = log or _quiet
    formats = parse_formats(req.format)
    t0 = time.perf_counter()
    todo = analyses_to_run(req.what)
    if req.what != "all" and ANALYSES.entry(req.what).meta["files"]:
        if not req.files:
            raise ConfigError(f"analyze {req.what} needs result files (or folders) as arguments")
        with _output(req, todo) as out:
            ctx = AnalysisContext(req, {}, [], None, out, None, formats, files=list(req.files))
            res = _run_one(todo[0], ctx, req, [], None)
        report_analysis(res, t0, say)
        return AnalysisResult(out, {todo[0]: res})
    if req.files:
        raise ConfigError(f"unexpected arguments {' '.join(req.files)!r} (only 'analyze sweep' takes files)")
    device = resolve_device(req.device)
    models, runs = load_models(req.checkpoint, str(device)) if req.checkpoint else ({}, [])
    if not models and any(ANALYSES.entry(w).meta["models"] for w in todo):
        raise ConfigError(f"analyze {req.what} needs at least one checkpoint: -k RUN_FOLDER")
    with _output(req, todo) as out:
        results = _analyses(req, todo, models, runs, out, device, formats, t0, say)
    return AnalysisResult(out, results)


def _analyses(
    req: AnalysisRequest,
    todo: list[str],
    models: dict,
    runs: list,
    out: Path,
    device: Any,
    formats: tuple[str, ...],
    t0: float,
    say: Say,
) -> dict[str, dict]:
    """The model analyses of ``todo`` in order, under ``req.seed`` (the global generator restored after)."""
    ds = _load_data(req, runs) if models else None
    cfg = runs[0].config if runs else None
    delta = req.delta if req.delta is not None else (cfg.tgo.delta if cfg is not None else 0.5)
    vth = cfg.neuron.v_threshold if cfg is not None else 1.0
    ctx = AnalysisContext(req, models, runs, ds, out, device, formats, delta=delta, v_threshold=vth)
    results: dict[str, dict] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(req.seed)
        for what in todo:
            results[what] = _run_one(what, ctx, req, runs, ds)
            report_analysis(results[what], t0, say)
    return results


# -- the built-in analyses: each turns the request into one ``analysis.commands.run_*`` call --


@register_analysis("membrane", in_all=True)
def _membrane(ctx: AnalysisContext) -> dict:
    """Histograms (overall + per layer), near-threshold bars, shares and reductions."""
    a = ctx.args
    sub = ctx.data.subset(ctx.n_or(0), a.seed) if ctx.n_or(0) else ctx.data
    return C.run_membrane(
        ctx.models,
        sub,
        ctx.out,
        delta=ctx.delta,
        v_threshold=ctx.v_threshold,
        bins=a.bins,
        lo=a.hist_range[0],
        hi=a.hist_range[1],
        device=ctx.device,
        **ctx.common,
    )


@register_analysis("gradients", in_all=True)
def _gradients(ctx: AnalysisContext) -> dict:
    """Heatmaps of the input gradient (true-class logit and loss) and sparsity over n images."""
    a = ctx.args
    return C.run_gradients(
        ctx.models,
        ctx.data,
        ctx.out,
        images=a.images,
        indices=a.index,
        n=ctx.n_or(1000),
        rel_tol=a.rel_tol,
        samples=a.grad_samples,
        shared_scale=not a.cell_scale,
        device=ctx.device,
        **ctx.common,
    )


@register_analysis("landscape", in_all=True)
def _landscape(ctx: AnalysisContext) -> dict:
    """Parameter-space landscapes on clean and RFGSM data (contour + 3-D) and the input-space line."""
    a = ctx.args
    return C.run_landscape(
        ctx.models,
        ctx.data,
        ctx.out,
        n=ctx.n_or(256),
        steps=a.steps,
        span=a.span,
        eps=a.eps,
        alpha=a.rfgsm_alpha,
        include_bn=a.include_bn,
        device=ctx.device,
        progress=not a.no_progress,
        **ctx.common,
    )


@register_analysis("flip", models=False, in_all=True)
def _flip(ctx: AnalysisContext) -> dict:
    """Closed form vs Monte Carlo (always) and measured flip rates of models (if any)."""
    a = ctx.args
    return C.run_flip(
        ctx.models,
        ctx.data,
        ctx.out,
        sigmas=a.sigmas,
        draws=a.draws,
        eps=a.flip_eps,
        perturbation=a.perturbation,
        noise=a.noise,
        n=ctx.n_or(1000),
        v_threshold=ctx.v_threshold,
        device=ctx.device,
        **ctx.common,
    )


@register_analysis("jacobian", in_all=True)
def _jacobian(ctx: AnalysisContext) -> dict:
    """Per-sample Jacobian norms and the first-order bound under attack at eps."""
    a = ctx.args
    return C.run_jacobian(
        ctx.models,
        ctx.data,
        ctx.out,
        n=ctx.n_or(128),
        iters=a.iters,
        method=a.method,
        projections=a.projections,
        attack=a.attack,
        eps=a.eps,
        device=ctx.device,
        **ctx.common,
    )


@register_analysis("sweep", models=False, files=True)
def _sweep(ctx: AnalysisContext) -> dict:
    """Robust accuracy vs eps and vs lambda_max from result files, plus a Markdown table of every
    (eps, attack) per model with its sample count (sweep_table.md; deltas to reference when given)."""
    a = ctx.args
    return C.run_sweep(
        ctx.files,
        ctx.out,
        attack=a.sweep_attack,
        lambda_eps=a.lambda_eps,
        formats=ctx.formats,
        title=a.title,
        reference=a.reference,
        merge=a.merge,
    )


def _key_numbers(res: dict) -> list[str]:
    """The lines that sum up one analysis result (its kind's key numbers)."""
    kind, lines = res.get("analysis"), []
    if kind == "membrane":
        for n, m in res["models"].items():
            lines.append(f"{n}: near-threshold share {100 * m['near_threshold']:.2f}% (|U - V_th| < {res['delta']:g})")
        for n, r in res["reduction_vs_baseline"].items():
            lines.append(f"{n} vs {res['baseline']}: {100 * r['overall']:.1f}% fewer near-threshold potentials")
    elif kind == "gradients":
        for n, s in res["metrics"]["logit"].items():
            lines.append(
                f"{n}: d logit: near-zero {100 * s['near_zero']:.1f}%, L1/L2 {s['l1_l2']:.3g}, Gini {s['gini']:.3f}"
            )
    elif kind == "landscape":
        for d, per in res["surfaces"].items():
            for n, s in per.items():
                lines.append(
                    f"{n} [{d}]: loss(0,0) {s['center_loss']:.4f}, max {s['max_loss']:.3g}, "
                    f"mean rise within 0.25: {s['sharpness_0.25']:.4g}"
                )
    elif kind == "flip":
        for s, r in res["theory"]["sigmas"].items():
            lines.append(f"sigma {s}: Monte Carlo vs Phi, max |error| {r['max_abs_error']:.4f} ({r['max_z']:.1f} s.e.)")
        for n, r in res.get("measured", {}).items():
            lines.append(
                f"{n}: flip rate {100 * r['overall_rate']:.3f}% under {r['perturbation']} "
                f"eps={255 * r['eps']:.3g}/255 (noise {r['noise']})"
            )
    elif kind == "jacobian":
        for n, s in res["summary"].items():
            lines.append(
                f"{n}: median ||J||_2 {s['median_spectral']:.4g}, median change {s['median_actual']:.4g} vs bound "
                f"{s['median_bound']:.4g}; {100 * s['share_exceeding_bound']:.0f}% of samples above the bound"
            )
    elif kind == "sweep":
        for m, pts in res["curves"].items():
            lines.append(f"{m}: " + ", ".join(f"{p['eps_label']}: {100 * p['accuracy']:.1f}%" for p in pts))
        lines += ["", res["table"]]
        for m, groups in res.get("merged", {}).items():
            lines.append(f"row {m!r} merges results of different provenance: " + "; ".join(groups))
    return lines


def report_analysis(res: dict, t0: float, say: Say) -> None:
    """Say the key numbers of ``res``, the files it wrote and the time since ``t0``."""
    for line in _key_numbers(res):
        say(line)
    for f in res.get("files", []):
        say(f"  wrote {f}")
    say(f"  ({time.perf_counter() - t0:.0f} s)")
