"""``spikeguard calibrate``: pick tgo.lambda_max so the near-threshold share falls by a target share
against vanilla LIF (search or controller), or compare the paper's weight under each normalisation."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  spikeguard calibrate --config configs/cpu/digits-small_conv-tgo.toml --out runs/cal-digits --target 0.4
  spikeguard calibrate --config configs/cpu/digits-small_conv-tgo.toml --out runs/cal-digits-ctl --controller
  spikeguard calibrate --config configs/cpu/digits-small_conv-tgo.toml --out runs/norms-digits \\
      --normalisations --lambda 0.4 --share-samples 0
  spikeguard calibrate --config configs/cpu/cifar10-vgg_small-tgo.toml --out runs/cal-c10 \\
      --short optim.epochs=2 --short data.subset=10000 --seeds 0,1,2

The reference is vanilla LIF without the constraint, on the same data, seeds and length
(--reference same-neuron: the config's neuron without the constraint, so Noisy-LIF's own cut is
not counted). Runs are as long as the config's unless --short shortens them; full length is the
recommendation, because the constraint keeps cutting the share after a short trial ends.

search (default): the grid is tried in ascending order (lambda constant unless --schedule keep)
until the share falls by at least --target, then --bisect steps of bisection in log(lambda); the
smallest lambda measured to reach the target is chosen.
--controller: one run per seed whose lambda follows the `share` schedule (dual ascent on the
training batches' near-threshold share, toward (1 - target) x the reference's), capped at
--cap; no grid.
Both write OUT/calibration.json and OUT/calibration.md.
--normalisations: the reference, the config's neuron without the constraint, and one run per
normalisation of L_mc (layers mean/sum x neurons mean/sum x hinge squared/plain) at
lambda_max = --lambda with the config's schedule; writes OUT/normalisations.json and .md.
Each run is a folder under OUT (reused when finished, resumed when interrupted; a folder trained
with other settings is refused)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="choose tgo.lambda_max so the near-threshold share falls by a target share against "
        "vanilla LIF, or compare a weight under each normalisation",
        description="Calibrate the membrane constraint's weight to an observable (the paper: about 40% fewer "
        "near-threshold potentials than vanilla LIF) rather than to the paper's lambda value, whose "
        "meaning depends on the constraint's normalisation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", "-c", required=True, metavar="TOML", help="the experiment to calibrate")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)"
    )
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="folder of the runs and the result")
    p.add_argument("--target", type=float, default=0.4, help="relative share reduction to reach (default 0.4)")
    p.add_argument(
        "--reference",
        default="lif",
        choices=("lif", "same-neuron"),
        help="what the cut is measured against (default lif: vanilla LIF without the constraint)",
    )
    p.add_argument(
        "--lambdas",
        default="0.1,0.3,1,3,10,30,100",
        metavar="LIST",
        help="search: ascending log grid of lambda_max (default 0.1,0.3,1,3,10,30,100)",
    )
    p.add_argument("--bisect", type=int, default=2, help="search: bisection steps in log(lambda) (default 2)")
    p.add_argument("--seeds", default="0", metavar="LIST", help="training seeds, share averaged (default 0)")
    p.add_argument(
        "--short",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="override that shortens the runs (repeatable; default: none, the config's full length)",
    )
    p.add_argument("--share-samples", type=int, default=256, help="test images for the share (default 256, 0 = all)")
    p.add_argument(
        "--schedule",
        default="constant",
        help="search: lambda schedule of the trials, constant (default) or keep (the config's)",
    )
    p.add_argument(
        "--controller",
        action="store_true",
        help="steer lambda during one run per seed (the share schedule) instead of searching a grid",
    )
    p.add_argument("--cap", type=float, default=100.0, help="controller: largest lambda (default 100)")
    p.add_argument(
        "--controller-lr",
        type=float,
        default=0.0,
        help="controller: lambda step per unit of share error per batch (default 0: 0.25 x cap / (target share x batches))",
    )
    p.add_argument(
        "--tolerance", type=float, default=0.05, help="points of cut that count as on target / closest (default 0.05)"
    )
    p.add_argument(
        "--normalisations",
        action="store_true",
        help="compare lambda_max --lambda under each normalisation of L_mc instead of calibrating",
    )
    p.add_argument(
        "--lambda",
        dest="lam",
        type=float,
        default=None,
        metavar="VALUE",
        help="with --normalisations: the weight to compare (the paper: 0.4 WRN-16, 0.6 VGG-11)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide training progress")
    p.set_defaults(func=run)


def _numbers(text: str, what: str, kind=float) -> tuple:
    from ..errors import ConfigError

    try:
        return tuple(kind(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ConfigError(f"cannot read {what} {text!r} (comma-separated numbers)") from None


def run(args: argparse.Namespace) -> int:
    import sys

    from ..jobs.calibration import CalibrationSettings, calibrate_lambda, compare_normalisations
    from ..config import load_config
    from ..errors import ConfigError

    if args.normalisations and args.lam is None:
        raise ConfigError("--normalisations needs --lambda VALUE (the weight to compare, e.g. 0.4)")
    if args.lam is not None and not args.normalisations:
        raise ConfigError("--lambda is for --normalisations (a calibration searches lambda itself)")
    if args.normalisations and args.controller:
        raise ConfigError("--normalisations and --controller are two different commands: choose one")
    base = load_config(args.config, args.overrides)
    settings = CalibrationSettings(
        target_reduction=args.target,
        lambdas=tuple(sorted(_numbers(args.lambdas, "--lambdas"))),
        bisect=args.bisect,
        seeds=_numbers(args.seeds, "--seeds", int),
        short=tuple(args.short or ()),
        share_samples=args.share_samples,
        schedule="" if args.schedule == "keep" else args.schedule,
        reference=args.reference,
        method="controller" if args.controller else "search",
        controller_cap=args.cap,
        controller_lr=args.controller_lr,
        tolerance=args.tolerance,
    ).validate()
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    if args.normalisations:
        res = compare_normalisations(base, args.out, args.lam, settings, progress=not args.no_progress, log=log)
        print("closest: " + ", ".join(res["closest"]))
        return 0
    res = calibrate_lambda(base, args.out, settings, progress=not args.no_progress, log=log)
    print(f"tgo.lambda_max={res['lambda_max']:.4g}")
    return 0
