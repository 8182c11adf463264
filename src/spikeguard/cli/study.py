"""``spikeguard study``: train a list of runs, evaluate each under named protocols, one comparison."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
examples:
  spikeguard study configs/studies/cpu-digits-smoke.toml --out runs/cpu-digits-smoke      # seconds to minutes
  spikeguard study configs/studies/digits-verdict.toml --out runs/digits-verdict         # 5 seeds x 4 rows x 3 eps
  spikeguard study configs/studies/cifar10k-verdict.toml --out runs/cifar10k-verdict \\
      --set data.root=../shared/data/cifar10-jpg
  spikeguard study configs/studies/cifar10k-verdict.toml --out runs/cifar10k-verdict --seeds 0 \\
      --set data.root=../shared/data/cifar10-jpg      # seed 0 of every row first
  spikeguard study configs/studies/digits-verdict.toml --out runs/digits-verdict --tables-only
  spikeguard study configs/studies/cifar10-wrn16-table1-gpu-short.toml --out runs/gpu-short --budget 9m \\
      --set data.root=shared_copy/cifar10-parquet --device cuda

Stages (each printed as it starts): plan (with --budget: one probe epoch per run, then the epoch
count that fits), lambda_max calibration (runs with calibrate = true), training (finished runs
reused, interrupted ones resumed), evaluation (near-threshold share, BN-rescaled control, each
protocol's attack groups through the evaluation engine; finished groups reused), tables, figures
and the HTML report. Protocols: 'paper' (the paper's attacks at step 0.01, Noisy-LIF attacked and
judged on single noisy passes, APGD/MTPGD with EoT) and 'strong' (EoT, several passes, adaptive
and black-box attacks, surrogate-width ensemble, per-sample worst case, audit); see
spikeguard/protocols.py and docs/study.md.

A study file may name training seeds (seeds = [0, 1, 2]: every run trains once per seed, in
OUT/runs/NAME-sSEED; lambda_max is calibrated once per calibrated run and used for all its seeds)
and several budgets ([evaluation] eps = ["2/255", "8/255"]: every protocol at every eps).

Writes OUT/study.md (Table 1 layout per eps and protocol: rows = models, mean over seeds with a 95%
interval (over seeds; with one seed over the test samples), columns = attacks tagged (P) paper /
(S) strong, the worst case under fresh noise and including the known-noise FIXED-NOISE diagnostic;
per row the paired per-sample difference to its baseline; then normalisation, lambda_max, gradient
ratio, near-threshold share and the BN control per run), OUT/study.json, OUT/figures/*.png,
OUT/report.html and one folder per run under OUT/runs/. See docs/study.md."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="train several runs, evaluate each under the paper's and a strong protocol, one comparison table",
        description="Run a study file: train its runs (presets plus overrides), evaluate each under named "
        "evaluation protocols, and write one comparison in the paper's Table 1 layout with the "
        "near-threshold share, the BN-rescaled control, figures and an HTML report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("study", metavar="STUDY_TOML", help="study file (e.g. configs/studies/cpu-digits-smoke.toml)")
    p.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="DIR",
        help="study folder; rerunning with the same folder reuses finished work and resumes the rest",
    )
    p.add_argument(
        "--budget",
        metavar="TIME",
        default=None,
        help="wall-clock budget (9m, 1h30m, 540s): the epoch count of every run is chosen from a "
        "measured probe epoch so that the study fits, and printed",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override applied to every run, e.g. --set data.root=DATA_ROOT (repeatable)",
    )
    p.add_argument(
        "--seeds",
        type=_seed_list,
        default=None,
        metavar="S[,S...]",
        help="train and evaluate only these of the file's seeds (a long study seed by seed); "
        "the tables cover the whole study, unfinished seeds listed as not finished",
    )
    p.add_argument(
        "--rows",
        type=_row_list,
        default=None,
        metavar="ROW[,ROW...]",
        help="calibrate, train and evaluate only these [[runs]] rows (with their transfer sources); "
        "the tables cover the whole study",
    )
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1 ... (default: each run's config)")
    p.add_argument(
        "--tables-only",
        action="store_true",
        help="train and attack nothing: write study.md/json, figures and the report from what OUT "
        "holds now (an interrupted study, or one still running elsewhere); unfinished runs, eps "
        "and groups are listed as not finished",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="with --tables-only: replace tables that another study file wrote into OUT (default: refuse)",
    )
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars (stage lines are still printed)")
    p.set_defaults(func=run)


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds like 0 or 0,2, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("expected at least one seed")
    return seeds


def _row_list(text: str) -> list[str]:
    rows = [t.strip() for t in text.split(",") if t.strip()]
    if not rows:
        raise argparse.ArgumentTypeError("expected at least one row name")
    return rows


def run(args: argparse.Namespace) -> int:
    import sys

    from ..errors import ConfigError
    from ..jobs.study import load_study, run_study, summarize_study
    from ..jobs.study.output import refuse_other_study, rewrite_notes

    overrides = list(args.overrides) + ([f'device="{args.device}"'] if args.device else [])
    spec = load_study(args.study, overrides)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.tables_only and args.budget is not None:
        raise ConfigError("--tables-only trains nothing: drop --budget")
    if args.tables_only and (args.seeds or args.rows):
        raise ConfigError("--tables-only trains nothing: drop --seeds and --rows (the tables cover everything)")
    if args.tables_only and not args.overwrite:
        refuse_other_study(spec, Path(args.out))
    for line in rewrite_notes(Path(args.out), report=not args.no_report):
        log(line)
    if args.tables_only:
        summarize_study(spec, args.out, report=not args.no_report, log=log)
        return 0
    run_study(
        spec,
        args.out,
        budget=args.budget,
        progress=not args.no_progress,
        log=log,
        report=not args.no_report,
        seeds=args.seeds,
        rows=args.rows,
    )
    return 0
