"""``spikeguard analyze WHAT``: the paper's analyses for your own checkpoints.

Figures as PNG (plus SVG/PDF with --format), the numbers behind them as JSON and CSV,
everything written atomically into --out.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import fields

from ..analysis.registry import ANALYSES
from ..jobs.analyze import AnalysisRequest, run_analysis  # registers the built-in analyses
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


def request_from_args(args: argparse.Namespace) -> AnalysisRequest:
    """The job's request: every option of the parsed command line under its own name, and the command line."""
    return AnalysisRequest(**{f.name: getattr(args, f.name) for f in fields(AnalysisRequest) if hasattr(args, f.name)})


def run(args: argparse.Namespace) -> int:
    """``spikeguard analyze``: build the request, run the job, print its key numbers."""
    run_analysis(request_from_args(args), log=print)
    return 0
