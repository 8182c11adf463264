"""``spikeguard audit``: the gradient-masking sanity checks on a trained run."""

from __future__ import annotations

import argparse
import sys

from .evaluate import add_common_args

EPILOG = """\
checks (each PASS or WARN with its numbers; SKIP where it does not apply):
  eps_sweep  PGD accuracy falls monotonically over eps in {1,2,4,8,16,32,64}/255 and is
             <= 1/num_classes + margin at 64/255
  iterative  iterative attacks at least as strong as single-step ones
  steps      doubling PGD's steps changes robust accuracy by < --tolerance points
  eot        EoT at least as strong as no EoT (Noisy-LIF models)
  apgd       APGD at least as strong as PGD
  black_box  Square / transfer attacks not stronger than the best white-box attack
  zero_grad  share of samples whose input gradient is exactly zero (CE and margin loss)
  surrogate  PGD per attack surrogate width (the strong suite's sg-ensemble widths, model's
             own family) differs by <= --tolerance points or within noise; SKIP without
             swappable spiking neurons. A WARN: trust the per-sample worst over widths
  budget     ||x_adv - x||_inf <= eps + 1e-6 and x_adv in [0, 1] for every attack run

A comparison beyond --tolerance whose two 95% intervals overlap is within noise: it passes,
saying so, instead of being called gradient masking. The audit's PGD runs step 2.5 * eps /
steps, so they reach the boundary of the eps-ball at every budget.

examples:
  spikeguard audit --checkpoint runs/demo/tgo --n-samples 200
  spikeguard audit --model-file my_snn.py:build --weights my_snn.safetensors --data cifar10
Writes audit.json (atomically, with its provenance) into a new folder
RUN/evaluation/<UTC time>-audit-eps<k>/ (or --out DIR; an existing audit.json there is never
replaced without --overwrite) and prints the verdicts; exit status 0 (1 with --strict when a
check warns)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="sanity checks for gradient masking on a trained run (PASS/WARN per check)",
        description="Run the sanity checks of a trustworthy robustness evaluation on a trained run: eps sweep, "
        "iterative vs single-step, doubling steps, EoT vs no EoT, APGD vs PGD, black-box/transfer vs "
        "white-box, zero input gradients, attack surrogate width, budget and range. Each WARN says what it suggests.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_args(p)
    p.add_argument("--steps", type=int, default=10, help="PGD steps of the audit's runs (default 10)")
    p.add_argument(
        "--alpha",
        default="eps",
        metavar="STEP",
        help="PGD step size of the audit's runs at --eps: 'eps' (2.5 * eps / steps, default: enough to "
        "reach the boundary), 'paper' (0.01) or a number",
    )
    p.add_argument("--tolerance", type=float, default=1.0, help="allowed difference in accuracy points (default 1)")
    p.add_argument(
        "--chance-margin",
        type=float,
        default=0.05,
        help="accuracy at 64/255 may exceed 1/num_classes by this much (default 0.05)",
    )
    p.add_argument(
        "--zero-grad-limit",
        type=float,
        default=0.01,
        help="largest acceptable share of zero-gradient samples (default 0.01)",
    )
    p.add_argument("--square-queries", type=int, default=500, help="queries of the audit's Square run (default 500)")
    p.add_argument("--strict", action="store_true", help="exit with status 1 if any check warns")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..jobs.audit import AuditRequest, run_audit
    from .evaluate import target_fields

    req = AuditRequest(
        **target_fields(args),
        steps=args.steps,
        alpha=args.alpha,
        tolerance=args.tolerance,
        chance_margin=args.chance_margin,
        zero_grad_limit=args.zero_grad_limit,
        square_queries=args.square_queries,
    )
    result = run_audit(req, log=lambda text: print(text, file=sys.stderr), echo=print, progress=not args.no_progress)
    print(f"\nwrote {result.path}")
    return 1 if args.strict and result.audit.warnings else 0
