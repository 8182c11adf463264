"""``spikeguard calibrate``: pick tgo.lambda_max on short runs to hit a target near-threshold share reduction."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  spikeguard calibrate --config configs/cpu/digits-small_conv-tgo.toml --out runs/cal-digits \\
      --short optim.epochs=2 --target 0.4
  spikeguard calibrate --config configs/cpu/cifar10-vgg_small-tgo.toml --out ../studies/cal-c10 \\
      --short optim.epochs=2 --short data.subset=10000 --seeds 0,1,2

The config's constraint is switched off for the baseline and on for each trial (lambda constant
over the short run unless --schedule keep). The grid is tried in ascending order until the share
falls by at least --target relative to the baseline, then --bisect steps of bisection in
log(lambda). The smallest lambda measured to reach the target is chosen. Writes OUT/calibration.json
and OUT/calibration.md (lambda, share, reduction, clean accuracy, gradient ratio per trial); each
trial is a run folder under OUT (reused when finished, resumed when interrupted)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate", help="choose tgo.lambda_max on short runs so the near-threshold share falls by a target share",
        description="Calibrate the membrane constraint's weight to an observable (the paper: about 40% fewer "
                    "near-threshold potentials) rather than to the paper's lambda value, whose meaning depends on "
                    "the constraint's normalisation.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", required=True, metavar="TOML", help="the experiment to calibrate")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override (repeatable)")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="folder of the trial runs and the result")
    p.add_argument("--target", type=float, default=0.4, help="relative share reduction to reach (default 0.4)")
    p.add_argument("--lambdas", default="0.1,0.3,1,3,10,30,100", metavar="LIST",
                   help="ascending log grid of lambda_max (default 0.1,0.3,1,3,10,30,100)")
    p.add_argument("--bisect", type=int, default=2, help="bisection steps in log(lambda) (default 2)")
    p.add_argument("--seeds", default="0", metavar="LIST", help="training seeds, share averaged (default 0)")
    p.add_argument("--short", action="append", default=None, metavar="KEY=VALUE",
                   help="override that makes the trials short (repeatable; default optim.epochs=1)")
    p.add_argument("--share-samples", type=int, default=256, help="test images for the share (default 256, 0 = all)")
    p.add_argument("--schedule", default="constant",
                   help="lambda schedule of the trials: constant (default) or keep (the config's)")
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

    from ..calibration import CalibrationSettings, calibrate_lambda
    from ..config import load_config

    base = load_config(args.config, args.overrides)
    settings = CalibrationSettings(
        target_reduction=args.target, lambdas=tuple(sorted(_numbers(args.lambdas, "--lambdas"))), bisect=args.bisect,
        seeds=_numbers(args.seeds, "--seeds", int), short=tuple(args.short or ("optim.epochs=1",)),
        share_samples=args.share_samples, schedule="" if args.schedule == "keep" else args.schedule)
    res = calibrate_lambda(base, args.out, settings, progress=not args.no_progress,
                           log=lambda s: print(s, file=sys.stderr, flush=True))
    print(f"tgo.lambda_max={res['lambda_max']:.4g}")
    return 0
