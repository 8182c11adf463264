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
    from ..attacks import EPS_RULE, parse_alpha
    from ..errors import SpikeguardError
    from ..evaluation import audit_robustness
    from ..evaluation.results import command_line, provenance, write_audit
    from ..io import removed_on_failure
    from ..randomness import detect_randomness
    from .evaluate import load_target, parse_eps_arg, result_dir

    eps = parse_eps_arg(args.eps)
    if (
        args.steps < 1
        or args.square_queries < 1
        or args.tolerance < 0
        or args.chance_margin < 0
        or not 0 <= args.zero_grad_limit <= 1
    ):
        raise SpikeguardError(
            "need --steps >= 1, --square-queries >= 1, --tolerance >= 0, --chance-margin >= 0 "
            "and --zero-grad-limit in [0, 1]"
        )
    rn, model, x, y, info, device = load_target(args)
    out, created = result_dir(args, rn, "audit", eps, "audit.json")
    with removed_on_failure(out, created=created):
        print(
            f"auditing {rn.path} on {info['name']}/{info['split']} ({len(y)} images); output folder {out}",
            file=sys.stderr,
        )
        rnd = detect_randomness(model, x[:8].to(device), mode=args.randomness, seed=args.seed)
        _print_cost(model, x, y, eps, args, rnd, device)
        audit = audit_robustness(
            model,
            x,
            y,
            eps=eps,
            eot=args.eot,
            passes=args.passes,
            steps=args.steps,
            alpha=parse_alpha(args.alpha, EPS_RULE),
            randomness=rnd,
            tolerance=args.tolerance,
            chance_margin=args.chance_margin,
            zero_grad_limit=args.zero_grad_limit,
            square_queries=args.square_queries,
            batch_size=args.batch_size,
            seed=args.seed,
            device=device,
            progress=not args.no_progress,
        )
        print(audit.format())
        prov = provenance(
            command=command_line(args.argv),
            checkpoint=getattr(rn, "weights", None) or rn.path,
            attacks=[],
            eps=eps,
            n_samples=len(y),
            seed=args.seed,
            passes=args.passes,
            eot=args.eot,
            data=info,
            steps=args.steps,
        )
        path = write_audit(
            out / "audit.json",
            audit,
            prov,
            checkpoint=str(rn.path),
            model_file=args.model_file,
            weights=args.weights,
            data=info,
            command="audit",
        )
    print(f"\nwrote {path}")
    return 1 if args.strict and audit.warnings else 0


def _print_cost(model, x, y, eps: float, args: argparse.Namespace, rnd, device) -> None:
    """The audit's own runs priced like ``spikeguard evaluate``'s suite (before they start)."""
    from ..attacks import EPS_RULE, parse_alpha
    from ..evaluation.audit import DEFAULT_SWEEP, audit_plan
    from ..evaluation.progress import estimate_cost

    eot = args.eot if rnd.stochastic else 1
    plan = audit_plan(
        model,
        eps,
        stochastic=rnd.stochastic,
        eot=eot,
        eot_check=args.eot if args.eot > 1 else 8,
        steps=args.steps,
        alpha=parse_alpha(args.alpha, EPS_RULE),
        sweep=DEFAULT_SWEEP,
        square_queries=args.square_queries,
    )
    b = args.batch_size
    cost = estimate_cost(
        model, plan.runs, x[:b].to(device), y[:b].to(device), len(y), b, args.passes if rnd.stochastic else 1
    )
    print(cost.format(), file=sys.stderr)
