"""``spikeguard ablation``: the MC x NLIF ablation of Table 4 for one training strategy, run as a study
(:func:`spikeguard.jobs.ablation.run_ablation`; the in-memory version of ``configs/studies/cifar100-vgg11-table4.toml``)."""

from __future__ import annotations

import argparse

from ..utils import EPS_HELP
from .common import add_device_arg, eps_list, positive_int

EPILOG = """\
examples:
  spikeguard ablation --quick --out runs/ablation-quick              # digits, about 5 min on 2 cores
  spikeguard ablation --strategy rat --config configs/paper/cifar100-vgg11-rat.toml --out runs/abl-rat
  spikeguard ablation --strategy bptt --config configs/paper/cifar100-vgg11-bptt.toml \\
      --set data.root=DATA_ROOT --out runs/abl-bptt

The four cells are the base config with (tgo.enabled, neuron.kind) = (false, lif), (true, lif),
(false, noisy_lif), (true, noisy_lif). They run as a study (spikeguard study's machinery, built
in memory; the in-memory, one-strategy version of configs/studies/cifar100-vgg11-table4.toml):
each cell is trained into OUT/runs/mc<0|1>-nlif<0|1>/ (a finished cell is reused, an
interrupted one resumed), its near-threshold share measured (with the BN-rescaled control's
share and clean accuracy), and it is attacked through the evaluation engine with FGSM, RFGSM
and PGD-40 (eps 8/255, step 0.01; EoT gradients and several judging passes for the Noisy-LIF
cells) on data.test_subset test images (0 = all), results in
OUT/runs/CELL/eval-ablation/table4.json. The table is printed in the paper's layout with deltas
to the first row; OUT/ablation.json holds every number, OUT/study.md, OUT/study.json,
OUT/figures/ and OUT/report.html the study's comparison."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablation",
        help="train + attack the four MC/NLIF cells of the TGO ablation (Table 4) for one strategy",
        description="Derive the four cells of the paper's ablation (membrane constraint on/off x Noisy-LIF on/off) "
        "from one base config and run them as a study (spikeguard study, built in memory): train each, "
        "measure the near-threshold share, evaluate clean, FGSM, RFGSM and PGD-40 accuracy through the "
        "evaluation engine, write the study's tables, figures and report, and print the table in the "
        "paper's layout with deltas to the first row.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", "-c", metavar="TOML", help="base experiment config (optional with --quick)")
    p.add_argument(
        "--strategy",
        "-s",
        metavar="NAME",
        help="training strategy of every cell, e.g. bptt or rat (default: the config's)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one base-config value, e.g. --set optim.epochs=50 (repeatable)",
    )
    p.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="DIR",
        help="study folder: runs/ (the four cells), ablation.json, study.md, study.json, figures/, report.html",
    )
    p.add_argument(
        "--attacks",
        default=None,
        metavar="LIST",
        help="comma-separated attacks (default fgsm,rfgsm,pgd40; any spikeguard attack name)",
    )
    p.add_argument(
        "--eps", type=eps_list, default=None, metavar="EPS", help=f"L-inf budget: {EPS_HELP} (default 8/255)"
    )
    p.add_argument("--alpha", type=float, default=0.01, help="PGD step size on the [0, 1] scale (default 0.01)")
    p.add_argument("--eot", type=positive_int, default=4, help="EoT samples for attacking Noisy-LIF cells (default 4)")
    p.add_argument(
        "--passes",
        type=positive_int,
        default=4,
        help="forward passes per image when judging Noisy-LIF cells (default 4)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny run: digits, small conv SNN, T=2, 3 epochs, 120 test images (overrides the config)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the result JSON here")
    add_device_arg(p, default=None)
    p.add_argument("--no-progress", action="store_true", help="hide training and evaluation progress")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..jobs.ablation import DEFAULT_ATTACKS, QUICK_OVERRIDES, AttackSettings, format_table, run_ablation
    from ..config import load_config
    from ..errors import ConfigError
    from ..io import atomic_write_json

    if args.config is None and not args.quick:
        raise ConfigError("give a base config with --config (or use --quick)")
    overrides = list(QUICK_OVERRIDES if args.quick else ()) + list(args.overrides)
    base = load_config(args.config, overrides)
    attacks = DEFAULT_ATTACKS
    if args.attacks:
        from ..attacks.registry import parse_attacks

        attacks = tuple(parse_attacks(args.attacks))
    if args.eps is not None and len(args.eps) != 1:
        raise ConfigError("--eps takes one value for the ablation")
    if not 0 < args.alpha <= 1:
        raise ConfigError(f"--alpha must be in (0, 1], got {args.alpha}")
    settings = AttackSettings(
        attacks=attacks,
        eps=args.eps[0] if args.eps else 8 / 255,
        alpha=args.alpha,
        eot=args.eot,
        passes=args.passes,
        batch_size=base.eval.batch_size,
        seed=base.seed,
    )
    if args.device:
        base.device = args.device
    from ..utils import resolve_device

    resolve_device(base.device)
    result = run_ablation(
        base, args.out, strategy=args.strategy, settings=settings, progress=not args.no_progress, argv=args.argv
    )
    print()
    print(format_table(result))
    if args.json:
        atomic_write_json(args.json, result)
    print(f"\nwrote {args.out}/ablation.json (the study: {args.out}/study.md, {args.out}/report.html)")
    return 0
