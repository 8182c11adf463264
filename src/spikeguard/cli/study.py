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


def run(args: argparse.Namespace) -> int:
    import sys

    from ..errors import ConfigError
    from ..jobs.study import load_study, run_study, summarize_study

    overrides = list(args.overrides) + ([f'device="{args.device}"'] if args.device else [])
    spec = load_study(args.study, overrides)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.tables_only and args.budget is not None:
        raise ConfigError("--tables-only trains nothing: drop --budget")
    if args.tables_only and not args.overwrite:
        _refuse_other_study(spec, Path(args.out))
    for line in rewrite_notes(Path(args.out), report=not args.no_report):
        log(line)
    if args.tables_only:
        summarize_study(spec, args.out, report=not args.no_report, log=log)
        return 0
    run_study(spec, args.out, budget=args.budget, progress=not args.no_progress, log=log, report=not args.no_report)
    return 0


def _written_by(out: Path) -> tuple[str | None, str | None]:
    """``(study name, study file)`` recorded in ``OUT/study.json`` (Nones when there is none)."""
    import json

    from ..jobs.study import STUDY_JSON

    try:
        doc = json.loads((out / STUDY_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(doc, dict):
        return None, None
    return doc.get("study"), doc.get("file")


def _refuse_other_study(spec, out: Path) -> None:
    """A one-line error if OUT's tables were written from another study (name or file)."""
    from ..errors import ConfigError

    name, file = _written_by(out)
    if name is None and file is None:
        return
    mine = Path(spec.path) if spec.path else None
    # the file is recorded as typed (relative to where the study ran): compare by name, and the
    # resolved path only when both resolve to existing files
    same_file = (
        file is None
        or mine is None
        or Path(file).name == mine.name
        or (Path(file).is_file() and Path(file).resolve() == mine.resolve())
    )
    if name == spec.name and same_file:
        return
    raise ConfigError(
        f"{out} holds the tables of study {name!r} ({file or 'file not recorded'}), not of "
        f"{spec.name!r} ({spec.path}); choose another --out, or pass --overwrite to replace them"
    )


def rewrite_notes(out: Path, report: bool = True) -> list[str]:
    """One ``rewriting FILE (written DATE)`` line per table, figure or report already in OUT."""
    import datetime as dt

    from ..jobs.study import STUDY_JSON, STUDY_MD

    names = [STUDY_MD, STUDY_JSON] + (["report.html"] if report else [])
    files = [out / n for n in names] + sorted((out / "figures").glob("*.png"))
    lines = []
    for f in files:
        if f.is_file():
            when = dt.datetime.fromtimestamp(f.stat().st_mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            lines.append(f"rewriting {f} (written {when})")
    return lines
