"""``spikeguard demo``: vanilla vs TGO SNN on the embedded digits data."""

from __future__ import annotations

import argparse

from ..utils import EPS_HELP
from .common import eps_list, nonneg_int, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train a vanilla and a TGO SNN on digits, attack both, compare (about 40 s on 2 cores)",
        description="Train a vanilla BPTT spiking net (LIF) and a TGO spiking net (membrane-potential "
        "constraint + Noisy-LIF) on scikit-learn's bundled 8x8 digits, attack both with FGSM and "
        "PGD over an eps sweep (EoT for the noisy model), and print clean/robust accuracy and the "
        "share of near-threshold membrane potentials side by side. Writes OUT/results.json and "
        "OUT/potentials.png. No data files or network needed.",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed for weights, data order, noise (default 0)")
    p.add_argument("--epochs", type=positive_int, default=20, help="training epochs per model (default 20)")
    p.add_argument(
        "--eps", type=eps_list, default=None, help=f"comma-separated L-inf budgets, each {EPS_HELP} (default 8,16,32)"
    )
    p.add_argument("--T", type=positive_int, default=4, help="time steps (default 4)")
    p.add_argument("--lambda-max", type=float, default=0.4, help="TGO's final constraint weight (default 0.4)")
    p.add_argument("--eot", type=positive_int, default=8, help="EoT samples for attacking the noisy model (default 8)")
    p.add_argument(
        "--passes", type=positive_int, default=8, help="stochastic passes to judge the noisy model (default 8)"
    )
    p.add_argument("--n-test", type=nonneg_int, default=0, help="test images to use, 0 = all 360 (default 0)")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the demo already in --out: both models, results.json and the evaluations "
        "written into its run folders (default: refuse)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        metavar="DEVICE",
        help="cpu, cuda, cuda:1 ... (default cpu, where the README's numbers were measured); an "
        "unavailable device is a one-line error",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..jobs.demo import DemoConfig, run_demo

    cfg = DemoConfig(
        seed=args.seed,
        epochs=args.epochs,
        T=args.T,
        lambda_max=args.lambda_max,
        eot=args.eot,
        passes=args.passes,
        n_test=args.n_test,
        out=args.out,
        device=args.device,
    )
    if args.eps is not None:
        cfg.eps = args.eps
    run_demo(cfg, progress=not args.no_progress, argv=args.argv, overwrite=args.overwrite)
    return 0
