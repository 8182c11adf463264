"""``spikeguard analyze WHAT``: the paper's analyses for your own checkpoints.

Figures as PNG (plus SVG/PDF with --format), the numbers behind them as JSON and CSV,
everything written atomically into --out.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from pathlib import Path

from ..analysis.registry import ANALYSES, AnalysisContext, register_analysis
from .common import eps_list, nonneg_int, positive_int

EPILOG = """\
examples:
  spikeguard analyze membrane  -k vanilla=runs/demo/vanilla -k tgo=runs/demo/tgo --out runs/analysis
  spikeguard analyze gradients -k runs/demo/vanilla -k runs/demo/tgo --images 6 --format png,pdf
  spikeguard analyze landscape -k runs/demo/vanilla -k runs/demo/tgo --steps 21 --span 1 --eps 8/255
  spikeguard analyze flip      -k runs/demo/vanilla -k runs/demo/tgo --flip-eps 2/255   # theory + measured
  spikeguard analyze flip                                                        # theory only
  spikeguard analyze jacobian  -k runs/demo/vanilla -k runs/demo/tgo --attack fgsm --eps 8/255
  spikeguard analyze sweep runs/demo/results.json runs/demo/tgo/evaluation --sweep-attack pgd10
  spikeguard analyze all       -k runs/demo/vanilla -k runs/demo/tgo --out runs/analysis

-k/--checkpoint takes a run folder written by 'spikeguard train' (or the demo), optionally
named: NAME=PATH (default name: the folder's name). The first model is the baseline that
reductions and ratios are computed against. The dataset is the first run's (override with
--dataset/--data-root); analyses use the test split.

sweep reads result files (or folders of them, two levels deep): robustness.json of 'spikeguard
evaluate', of training (eval.attacks) and of the ablation, and the demo's results.json, in the
result schema of docs/evaluation.md or the earlier layout of spikeguard 0.1.0. Its table shows
each row's sample count; results of different provenance (command, attacks run, sample count,
passes, seed, weights) get rows of their own unless --merge, which says what it merged and keeps
one worst-case column per evaluation (a worst case always comes from one evaluation's samples).

Each analysis writes into a new folder runs/analysis/<UTC time>-<what>/ unless --out DIR is
given; a result already in DIR is never replaced without --overwrite."""


def _eps(text: str) -> float:
    vals = eps_list(text)
    if len(vals) != 1:
        raise argparse.ArgumentTypeError(f"expected one eps, got {text!r}")
    return vals[0]


def _pos_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _floats(text: str) -> list[float]:
    try:
        vals = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not vals or any(not (v > 0 and math.isfinite(v)) for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return vals


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``spikeguard analyze``: its positional arguments, then the option groups of _OPTION_GROUPS."""
    p = sub.add_parser(
        "analyze",
        help="figures + numbers: membrane potentials, gradient sparsity, loss landscapes, flips, "
        "Jacobian bound, accuracy sweeps",
        description="Produce the paper's analyses for your own checkpoints: pre-spike potential histograms and "
        "near-threshold shares (membrane), input-gradient heatmaps and sparsity (gradients), loss "
        "landscapes on clean and RFGSM data (landscape), spike-flip theory and measured flip rates "
        "(flip), input-Jacobian norms vs the first-order bound (jacobian), robust accuracy vs eps and "
        "lambda_max from evaluation JSONs (sweep), or everything but sweep (all).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("what", choices=[*ANALYSES.names(), "all"], help="which analysis")
    p.add_argument("files", nargs="*", metavar="JSON", help="sweep only: evaluation JSON files or folders")
    for title, options in _OPTION_GROUPS:
        g = p.add_argument_group(title)
        for flags, kw in options:
            g.add_argument(*flags, **kw)
    p.set_defaults(func=run)


def _floats_signed(text: str) -> tuple[float, float]:
    try:
        vals = [float(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI, got {text!r}") from None
    if len(vals) != 2 or not vals[1] > vals[0] or not all(math.isfinite(v) for v in vals):
        raise argparse.ArgumentTypeError(f"expected LO,HI with LO < HI, got {text!r}")
    return vals[0], vals[1]


_Option = tuple[tuple[str, ...], dict]


def _opt(*flags: str, **kw) -> _Option:
    """One option of a group: its flags and its ``add_argument`` keywords."""
    return flags, kw


# The option groups of ``spikeguard analyze`` in help order: (title, options).
_OPTION_GROUPS: list[tuple[str, list[_Option]]] = [
    (
        "models and data",
        [
            _opt(
                "-k",
                "--checkpoint",
                action="append",
                default=[],
                metavar="[NAME=]RUN",
                help="a run folder to analyse (repeatable; the first is the baseline)",
            ),
            _opt("--dataset", help="dataset name (default: the first run's)"),
            _opt("--data-root", help="dataset root (default: the first run's, then $SPIKEGUARD_DATA, ./data)"),
            _opt(
                "--n",
                type=nonneg_int,
                default=None,
                help="test images to use, 0 = all (defaults: membrane/flip/gradients 0 up to 1000, "
                "landscape 256, jacobian 128)",
            ),
            _opt(
                "--device",
                default="auto",
                metavar="DEVICE",
                help="auto, cpu, cuda, cuda:1 ... (default auto); an unavailable device is a one-line error",
            ),
            _opt("--seed", type=int, default=0, help="seed for subsets, noise draws, random directions (default 0)"),
        ],
    ),
    (
        "output",
        [
            _opt(
                "--out",
                "-o",
                default=None,
                metavar="DIR",
                help="output folder (default: a new folder runs/analysis/<UTC time>-<what>)",
            ),
            _opt("--overwrite", action="store_true", help="replace results already in --out"),
            _opt("--format", default="png", help="figure formats: png plus any of svg,pdf (default png)"),
            _opt("--title", default="", help="figure title prefix"),
            _opt("--no-progress", action="store_true", help="hide progress bars"),
        ],
    ),
    (
        "membrane",
        [
            _opt(
                "--delta",
                type=_pos_float,
                default=None,
                help="near-threshold band half-width (default: the first run's tgo.delta, else 0.5)",
            ),
            _opt("--bins", type=positive_int, default=120, help="histogram bins (default 120)"),
            _opt(
                "--range",
                dest="hist_range",
                type=_floats_signed,
                default=(-2.0, 3.0),
                metavar="LO,HI",
                help="histogram range (default -2,3)",
            ),
        ],
    ),
    (
        "gradients",
        [
            _opt("--images", type=positive_int, default=6, help="heatmap rows (default 6: one per class)"),
            _opt("--index", type=_ints, default=None, help="explicit test-image indices for the heatmaps"),
            _opt("--rel-tol", type=float, default=0.01, help="near-zero: |g| <= rel_tol * max|g| (default 0.01)"),
            _opt(
                "--grad-samples",
                type=positive_int,
                default=1,
                help="average the gradient over this many noise draws (default 1)",
            ),
            _opt("--cell-scale", action="store_true", help="one colour range per heatmap instead of per row"),
        ],
    ),
    (
        "landscape",
        [
            _opt("--steps", type=positive_int, default=21, help="grid points per axis (odd; default 21)"),
            _opt("--span", type=_pos_float, default=1.0, help="grid half-width in filter-normalised units (default 1)"),
            _opt("--eps", type=_eps, default=8 / 255, help="RFGSM / attack budget (default 8/255)"),
            _opt("--rfgsm-alpha", type=_eps, default=None, help="RFGSM random step (default eps/2)"),
            _opt("--include-bn", action="store_true", help="also move biases and BatchNorm affine parameters"),
        ],
    ),
    (
        "flip",
        [
            _opt("--sigmas", type=_floats, default=[0.3, math.sqrt(0.4), 1.0], help="noise stds (default 0.3,0.632,1)"),
            _opt("--draws", type=positive_int, default=20000, help="Monte-Carlo draws per point (default 20000)"),
            _opt("--flip-eps", type=_eps, default=2 / 255, help="perturbation for measured flips (default 2/255)"),
            _opt("--perturbation", choices=("fgsm", "random"), default="fgsm", help="measured-flip perturbation"),
            _opt(
                "--noise",
                choices=("fixed", "off"),
                default="fixed",
                help="Noisy-LIF noise in the measured-flip passes: same draws in both (fixed) or off",
            ),
        ],
    ),
    (
        "jacobian",
        [
            _opt("--iters", type=positive_int, default=20, help="power-iteration steps (default 20)"),
            _opt(
                "--method",
                choices=("auto", "power", "gram"),
                default="auto",
                help="spectral norm: power iteration, exact Gram matrix, or auto (default)",
            ),
            _opt(
                "--projections",
                type=positive_int,
                default=None,
                help="estimate the Frobenius norm from this many random projections (default: exact)",
            ),
            _opt("--attack", choices=("fgsm", "pgd"), default="fgsm", help="attack for the bound check (default fgsm)"),
        ],
    ),
    (
        "sweep",
        [
            _opt(
                "--sweep-attack",
                default=None,
                metavar="NAME",
                help="attack to plot (default: each evaluation's per-sample worst case where it has one, else the "
                "lowest per-attack accuracy of one evaluation)",
            ),
            _opt("--lambda-eps", type=_eps, default=None, help="budget of the lambda_max panel (default ~8/255)"),
            _opt(
                "--reference",
                default=None,
                metavar="MODEL",
                help="model name the table's deltas are taken against (default: no deltas)",
            ),
            _opt(
                "--merge",
                action="store_true",
                help="put results of different provenance for one model into one row (the table then lists "
                "what each merged row combines)",
            ),
        ],
    ),
]


def load_models(specs: list[str], device: str = "cpu") -> tuple[dict, list]:
    """``[NAME=]PATH`` specs -> ``({name: model}, [Run])`` via ``spikeguard.checkpoint.load_run``."""
    from ..errors import ConfigError

    from ..checkpoint import load_run

    models, runs = {}, []
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


def _load_data(args: argparse.Namespace, runs: list):
    from ..data import load_dataset
    from ..errors import ConfigError

    cfg = runs[0].config if runs else None
    name = args.dataset or (cfg.data.name if cfg is not None else "digits")
    root = args.data_root or (cfg.data.root if cfg is not None and cfg.data.root else None)
    ds = load_dataset(name, "test", root=root)
    for run in runs:
        m = run.model
        c = getattr(m, "in_channels", ds.image_shape[0])
        if c != ds.image_shape[0]:
            raise ConfigError(f"{run.path}: the model takes {c}-channel images but {name} has {ds.image_shape[0]}")
    return ds


def _todo(what: str) -> list[str]:
    """The analyses ``what`` names (``all``: every one registered with ``in_all``, in report order)."""
    if what != "all":
        return [ANALYSES.canonical(what)]
    order = ["membrane", "gradients", "landscape", "flip", "jacobian"]
    extra = [e.name for e in ANALYSES.entries() if e.meta["in_all"] and e.name not in order]
    return [n for n in order if n in ANALYSES and ANALYSES.entry(n).meta["in_all"]] + extra


def run(args: argparse.Namespace) -> int:
    from ..analysis.plotting import parse_formats
    from ..errors import ConfigError
    from ..utils import resolve_device

    formats = parse_formats(args.format)
    t0 = time.perf_counter()
    todo = _todo(args.what)
    if args.what != "all" and ANALYSES.entry(args.what).meta["files"]:
        if not args.files:
            raise ConfigError(f"analyze {args.what} needs result files (or folders) as arguments")
        with _output(args, todo) as out:
            ctx = AnalysisContext(args, {}, [], None, out, None, formats, files=list(args.files))
            res = ANALYSES.get(args.what)(ctx)
            _add_provenance(out / f"{todo[0]}.json", res, args, [], None)
        _report(res, t0)
        return 0
    if args.files:
        raise ConfigError(f"unexpected arguments {' '.join(args.files)!r} (only 'analyze sweep' takes files)")
    device = resolve_device(args.device)
    models, runs = load_models(args.checkpoint, str(device)) if args.checkpoint else ({}, [])
    if not models and any(ANALYSES.entry(w).meta["models"] for w in todo):
        raise ConfigError(f"analyze {args.what} needs at least one checkpoint: -k RUN_FOLDER")
    with _output(args, todo) as out:
        _analyses(args, todo, models, runs, out, device, formats, t0)
    return 0


@contextlib.contextmanager
def _output(args: argparse.Namespace, todo: list[str]):
    """The output folder: ``--out`` (refusing to replace a result there unless ``--overwrite``) or a new
    ``runs/analysis/<UTC time>-<what>``; removed again if the analysis fails before writing anything."""
    from ..io import ensure_dir, new_dir, refuse_overwrite, removed_on_failure, stamp

    if args.out:
        created = not Path(args.out).exists()
        refuse_overwrite(args.out, [f"{w}.json" for w in todo], args.overwrite)
        out = ensure_dir(args.out)
    else:
        out, created = new_dir(Path("runs") / "analysis", f"{stamp()}-{args.what}"), True
    with removed_on_failure(out, created=created):
        yield out


def _add_provenance(path: Path, res: dict, args: argparse.Namespace, runs: list, ds) -> None:
    """Rewrite an analysis' JSON with its provenance (checkpoints and their weight hashes, command,
    sample count, seed, versions, date)."""
    from ..evaluation.results import checkpoint_id, command_line, now_utc, software
    from ..io import atomic_write_json

    res["provenance"] = {
        "command": command_line(args.argv),
        "checkpoints": {str(r.path): checkpoint_id(r.path) for r in runs},
        "inputs": [str(f) for f in args.files],
        "dataset": getattr(ds, "name", None),
        "n_samples": res.get("num_samples", args.n),
        "seed": args.seed,
        "software": software(),
        "date": now_utc(),
    }
    atomic_write_json(path, res)


def _analyses(
    args: argparse.Namespace, todo: list[str], models: dict, runs: list, out: Path, device, formats, t0: float
) -> None:
    import torch

    ds = _load_data(args, runs) if models else None
    cfg = runs[0].config if runs else None
    delta = args.delta if args.delta is not None else (cfg.tgo.delta if cfg is not None else 0.5)
    vth = cfg.neuron.v_threshold if cfg is not None else 1.0
    ctx = AnalysisContext(args, models, runs, ds, out, device, formats, delta=delta, v_threshold=vth)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        for what in todo:
            res = ANALYSES.get(what)(ctx)
            _add_provenance(out / f"{what}.json", res, args, runs, ds)
            _report(res, t0)


# -- the built-in analyses: each turns the command line into one ``analysis.commands.run_*`` call --


@register_analysis("membrane", in_all=True)
def _membrane(ctx: AnalysisContext) -> dict:
    """Histograms (overall + per layer), near-threshold bars, shares and reductions."""
    from ..analysis import commands as C

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
    from ..analysis import commands as C

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
    from ..analysis import commands as C

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
    from ..analysis import commands as C

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
    from ..analysis import commands as C

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
    from ..analysis import commands as C

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


def _report(res: dict, t0: float) -> None:
    """Print the key numbers and the written files."""
    kind = res.get("analysis")
    if kind == "membrane":
        for n, m in res["models"].items():
            print(f"{n}: near-threshold share {100 * m['near_threshold']:.2f}% (|U - V_th| < {res['delta']:g})")
        for n, r in res["reduction_vs_baseline"].items():
            print(f"{n} vs {res['baseline']}: {100 * r['overall']:.1f}% fewer near-threshold potentials")
    elif kind == "gradients":
        for n, s in res["metrics"]["logit"].items():
            print(f"{n}: d logit: near-zero {100 * s['near_zero']:.1f}%, L1/L2 {s['l1_l2']:.3g}, Gini {s['gini']:.3f}")
    elif kind == "landscape":
        for d, per in res["surfaces"].items():
            for n, s in per.items():
                print(
                    f"{n} [{d}]: loss(0,0) {s['center_loss']:.4f}, max {s['max_loss']:.3g}, "
                    f"mean rise within 0.25: {s['sharpness_0.25']:.4g}"
                )
    elif kind == "flip":
        for s, r in res["theory"]["sigmas"].items():
            print(f"sigma {s}: Monte Carlo vs Phi, max |error| {r['max_abs_error']:.4f} ({r['max_z']:.1f} s.e.)")
        for n, r in res.get("measured", {}).items():
            print(
                f"{n}: flip rate {100 * r['overall_rate']:.3f}% under {r['perturbation']} "
                f"eps={255 * r['eps']:.3g}/255 (noise {r['noise']})"
            )
    elif kind == "jacobian":
        for n, s in res["summary"].items():
            print(
                f"{n}: median ||J||_2 {s['median_spectral']:.4g}, median change {s['median_actual']:.4g} vs bound "
                f"{s['median_bound']:.4g}; {100 * s['share_exceeding_bound']:.0f}% of samples above the bound"
            )
    elif kind == "sweep":
        for m, pts in res["curves"].items():
            print(f"{m}: " + ", ".join(f"{p['eps_label']}: {100 * p['accuracy']:.1f}%" for p in pts))
        print()
        print(res["table"])
        for m, groups in res.get("merged", {}).items():
            print(f"row {m!r} merges results of different provenance: " + "; ".join(groups))
    for f in res.get("files", []):
        print(f"  wrote {f}")
    print(f"  ({time.perf_counter() - t0:.0f} s)")
