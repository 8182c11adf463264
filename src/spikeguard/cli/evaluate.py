"""``spikeguard evaluate``: the attack suite on a trained run, worst case, optional audit."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Iterator

from ..utils import EPS_HELP
from .common import add_device_arg, child_argv, nonneg_int, positive_int

EPILOG = """\
examples:
  spikeguard evaluate --checkpoint runs/demo/tgo --suite paper
  spikeguard evaluate --checkpoint runs/demo/tgo --suite strong --audit --source runs/demo/vanilla
  spikeguard evaluate --checkpoint runs/c100-wrn --attacks fgsm,pgd10,apgd-ce100,square5000 \\
      --eps 8/255 --eot 16 --passes 10 --n-samples 1000 --data-root DATA_ROOT
  spikeguard evaluate --model-file my_snn.py:build --weights my_snn.safetensors --data cifar10 \\
      --suite strong --audit            # any classifier: SpikingJelly, snnTorch, plain PyTorch

attacks (comma-separated; suites expand): fgsm, rfgsm, pgdK, pgdK-rR (R restarts), apgd-ce[K],
apgd-dlr[K], apgd-t[K], mtpgd[K], square[Q], transfer (PGD-20 from --source, or from the target's noise-free
twin), noise-free, fixed-noise (the attacker knows the evaluation's noise sample), sg-ensemble
(PGD per surrogate gradient, per-sample worst), sg-adaptive (greedy per-sample surrogate width);
on event data (models on frame sequences) also event-flipK, random-flipK, event-steK (K flipped
event cells; the output is a valid event stream) and --event-ks for success rate vs k.
  --suite paper : fgsm, rfgsm, pgd7, pgd10, pgd20, pgd40, apgd-ce, mtpgd
                  (the paper's protocol: step 0.01 whatever eps is)
  --suite strong: paper + pgd50-r3, apgd-dlr, square (5000 queries), transfer, noise-free,
                  fixed-noise, sg-ensemble, sg-adaptive, assg, sa-pgd, pdsg, apgd-t
                  (step 2.5 * eps / steps per attack)
Attacks whose needs the model does not meet (swappable surrogate gradients, noise to fix or
switch off, a transfer source) are skipped and listed with the reason.

Cascade (default): the attacks run from cheap to expensive, each only on the samples still
robust on some judging pass after the ones before it; the per-sample worst case is the same as
running every attack on every sample, at a fraction of the cost, and the table shows per attack
how many samples it was run on and broke. --individual runs every attack on every sample and
shows each attack's robust accuracy (--suite paper always does: its table is per attack).

Randomness: before evaluating, several forward passes on the same images are compared. A
stochastic model (Noisy-LIF noise, or any randomness drawn from the global generators: random
input transforms, another library's noisy neurons) is judged over --passes passes, each
repeating the same draw for the clean images and every attack, and attacked with EoT over
--eot passes; --deterministic / --stochastic override the detection (recorded in the result).
A sample counts as robust on an evaluation pass only if it is classified correctly there both
clean and attacked; the worst case requires it to survive every attack. Noisy-LIF models are
judged over --passes passes (mean and 95% interval) and attacked with EoT over --eot passes.
Each evaluation gets a folder of its own, RUN/evaluation/<UTC time>-<attacks>-eps<k>/ (or --out
DIR; an existing result there is never replaced without --overwrite), holding robustness.json:
the result schema of docs/evaluation.md with its provenance (checkpoint hash, command, attacks,
eps, sample count, seed, passes, versions, date). An interrupted run resumes in its folder.
Before a long suite a cost estimate is printed (passes of the model, measured time per pass);
progress shows samples done per attack and batch, rate and ETA. Typical costs: docs/evaluation.md."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="attack a trained run with the attack suite; per-attack and worst-case robust accuracy",
        description="Evaluate a trained spikeguard run against a suite of L-inf attacks (gradient, adaptive, "
        "black-box, transfer), judging stochastic models over several passes, and report each "
        "attack's robust accuracy and the per-sample worst case; --audit adds the gradient-masking "
        "sanity checks.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_args(p)
    p.add_argument("--attacks", default="", metavar="LIST", help="comma-separated attack names (see below)")
    p.add_argument(
        "--suite",
        choices=("paper", "strong"),
        default=None,
        help="attack preset (default: paper when --attacks is not given)",
    )
    p.add_argument(
        "--alpha",
        default=None,
        metavar="STEP",
        help="step size of the PGD-type attacks: a number, 'eps' (2.5 * eps / steps) or 'paper' (0.01); "
        "default: 'eps' with --suite strong, else 0.01",
    )
    p.add_argument(
        "--source",
        metavar="RUN_DIR",
        default=None,
        help="source model of the transfer attack (default: the target's noise-free twin)",
    )
    p.add_argument(
        "--square-queries",
        type=positive_int,
        default=None,
        metavar="Q",
        help="queries of 'square' (default 1000, 5000 in --suite strong; 'squareQ' names set it per attack)",
    )
    p.add_argument("--audit", action="store_true", help="also run the audit (reuses this evaluation's attacks)")
    p.add_argument(
        "--audit-steps", type=positive_int, default=10, help="PGD steps of the audit's own runs (default 10)"
    )
    p.add_argument(
        "--individual",
        action="store_true",
        help="run every attack on every sample and report each attack's accuracy (default: the cascade, "
        "cheap to expensive, each attack only on the samples still robust: the same worst case at a "
        "fraction of the cost; --suite paper always runs individually)",
    )
    p.add_argument("--no-per-sample", action="store_true", help="leave the per-sample results out of the JSON")
    p.add_argument(
        "--event-ks",
        default="",
        metavar="LIST",
        help="event data only: also measure the event-flip attack (and the random-flip baseline) at "
        "these budgets k of flipped event cells, e.g. 1,5,20,50 (success rate over originally "
        "correct samples, accuracy vs k), and what rounding PGD-10 back to events leaves",
    )
    p.add_argument(
        "--distributed",
        type=positive_int,
        default=None,
        metavar="N",
        help="shard the batches over N local processes (under torchrun: over its processes); the "
        "result is identical to one process",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="ignore the per-batch journal of an interrupted run with the same settings (default: "
        "finished batches are reused)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    p.add_argument("--verbose", "-v", action="store_true", help="also print setup details")
    p.set_defaults(func=run)


def add_common_args(p: argparse.ArgumentParser) -> None:
    """Arguments shared by ``evaluate`` and ``audit``."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="RUN_DIR", help="run folder (or its model.safetensors)")
    src.add_argument(
        "--model-file",
        metavar="FILE.py:FN",
        help="any classifier: FN() from FILE.py (or package.module:FN) returns an nn.Module taking images "
        "in [0, 1]; needs --data (see docs/evaluation.md, 'Evaluate your own model')",
    )
    p.add_argument(
        "--weights",
        metavar="FILE",
        default=None,
        help="weights for --model-file: .safetensors or a torch.save-d state_dict (read weights_only)",
    )
    rnd = p.add_mutually_exclusive_group()
    rnd.add_argument(
        "--deterministic",
        dest="randomness",
        action="store_const",
        const="deterministic",
        help="treat the model as deterministic whatever the randomness detection finds",
    )
    rnd.add_argument(
        "--stochastic",
        dest="randomness",
        action="store_const",
        const="stochastic",
        help="treat the model as stochastic (EoT, several passes) whatever the detection finds",
    )
    p.set_defaults(randomness="auto")
    p.add_argument("--eps", default="8/255", help=f"L-inf budget: {EPS_HELP} (default 8/255)")
    p.add_argument(
        "--eot",
        type=positive_int,
        default=8,
        help="EoT passes per attack gradient for stochastic models (default 8; 1 for deterministic ones)",
    )
    p.add_argument(
        "--passes",
        type=positive_int,
        default=8,
        help="evaluation passes for stochastic models (default 8; 1 for deterministic ones)",
    )
    p.add_argument(
        "--n-samples",
        type=nonneg_int,
        default=0,
        help="class-balanced test subset size, 0 = the whole test split (default 0)",
    )
    p.add_argument("--split", choices=("test", "train"), default="test", help="data split (default test)")
    p.add_argument(
        "--data",
        default=None,
        metavar="NAME",
        help="dataset name (default: the run's data.name; required with --model-file)",
    )
    p.add_argument("--data-root", default=None, metavar="PATH", help="dataset root (default: the run's data.root)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="images per attack batch (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset, random starts and noise (default 0)")
    add_device_arg(p)
    p.add_argument("--threads", type=nonneg_int, default=0, help="torch CPU threads, 0 = torch's default")
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output folder (default: a new folder RUN_DIR/evaluation/<UTC time>-<what>-eps<k>)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a result already in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def parse_eps_arg(text: str) -> float:
    from ..attacks import check_eps
    from ..errors import SpikeguardError
    from ..utils import parse_eps

    from .common import EPS_RANGE

    try:
        value = parse_eps(text)
    except (ValueError, ZeroDivisionError):
        raise SpikeguardError(f"cannot parse --eps {text!r} (use {EPS_HELP})") from None
    try:
        return check_eps(value, "--eps")
    except SpikeguardError:  # name what was typed, not -1/255 = -0.00392157
        raise SpikeguardError(f"--eps {text} is outside [0, 1] on the pixel scale ({EPS_RANGE})") from None


def target_fields(args: argparse.Namespace) -> dict:
    """The fields of a :class:`~spikeguard.jobs.TargetRequest` from the common arguments (``--eps`` parsed)."""
    return {
        "checkpoint": args.checkpoint,
        "model_file": args.model_file,
        "weights": args.weights,
        "randomness": args.randomness,
        "eps": parse_eps_arg(args.eps),
        "eot": args.eot,
        "passes": args.passes,
        "n_samples": args.n_samples,
        "split": args.split,
        "data": args.data,
        "data_root": args.data_root,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "device": args.device,
        "threads": args.threads,
        "out": args.out,
        "overwrite": args.overwrite,
        "argv": list(args.argv),
    }


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..jobs.evaluate import EvaluationRequest, run_evaluation
    from ..logging import NORMAL, VERBOSE, verbosity_from_args

    verbosity = verbosity_from_args(args)
    req = EvaluationRequest(
        **target_fields(args),
        attacks=args.attacks,
        suite=args.suite,
        alpha=args.alpha,
        source=args.source,
        square_queries=args.square_queries,
        audit=args.audit,
        audit_steps=args.audit_steps,
        individual=args.individual,
        per_sample=not args.no_per_sample,
        event_ks=args.event_ks,
        restart=args.restart,
    )
    req.attack_names()  # an unknown attack is a one-line error before any process starts
    if args.distributed and distributed.env_world() is None:
        return distributed.launch_local(args.distributed, child_argv(args))
    ctx = distributed.init_from_env(args.device)
    talk = verbosity >= NORMAL and ctx.is_main
    try:
        with stop_on_signals(args):
            result = run_evaluation(
                req,
                log=_stderr if talk else None,
                echo=print if talk else None,
                detail=_stderr if verbosity >= VERBOSE else None,
                progress=talk and not args.no_progress,
                ctx=ctx,
            )
    finally:
        distributed.shutdown()
    if talk:
        print(f"\nwrote {result.path}")
    return 0


class _Stopped(BaseException):
    """Raised by the SIGINT/SIGTERM handler of :func:`stop_on_signals` (a BaseException, so that no
    ``except Exception`` on the way up mistakes it for a failure of the evaluation)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def resume_command(argv: list[str]) -> str:
    """The command that resumes an interrupted evaluation: the same one, without ``--restart``
    (which would throw the finished batches away)."""
    from ..evaluation.results import command_line

    return command_line([a for a in argv if a != "--restart"])


@contextlib.contextmanager
def stop_on_signals(args: argparse.Namespace) -> Iterator[None]:
    """Turn SIGINT/SIGTERM into a one-line ``interrupted`` that says how to resume (exit 130/143).

    The handlers are installed explicitly: a process started in the background by a
    non-interactive shell inherits SIGINT ignored, and ``kill -INT`` would not stop it.
    """
    import signal
    import threading

    from ..signals import Interrupted

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old: dict = {}

    def handler(signum: int, _frame) -> None:
        for s_, h in old.items():  # a second signal gets the previous behaviour
            signal.signal(s_, h)
        raise _Stopped(signum)

    for s_ in (signal.SIGINT, signal.SIGTERM):
        old[s_] = signal.signal(s_, handler)
    try:
        yield
    except _Stopped as e:
        name = signal.Signals(e.signum).name
        raise Interrupted(
            f"stopped by {name}; the finished batches are kept, resume with: {resume_command(args.argv)}", e.signum
        ) from None
    finally:
        for s_, h in old.items():
            signal.signal(s_, h)
