"""``spikeguard evaluate``: the attack suite on a trained run, worst case, optional audit."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Iterator

from ..utils import EPS_HELP
from .common import add_device_arg, nonneg_int, positive_int

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
  --suite strong: paper + pgd50-r3, apgd-dlr, square, transfer, noise-free, fixed-noise,
                  sg-ensemble, sg-adaptive, apgd-t (step 2.5 * eps / steps per attack)
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
        help="queries of 'square' (default 1000; 'squareQ' names set it per attack)",
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


def load_target(args: argparse.Namespace):
    """``(run, model, images, labels, data_info)`` for the common arguments."""
    import torch

    from ..checkpoint import load_run
    from ..data import load_dataset
    from ..errors import DataError, SpikeguardError
    from ..utils import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if getattr(args, "model_file", None):
        from ..foreign import load_foreign_model

        if not args.data:
            raise SpikeguardError("--model-file needs --data NAME (there is no run config to take it from)")
        run = load_foreign_model(args.model_file, args.weights, device=device)
        name, root, cache, verify, options = args.data, args.data_root, None, True, {}
    else:
        if getattr(args, "weights", None):
            raise SpikeguardError("--weights goes with --model-file (a run folder has its own weights)")
        run = load_run(args.checkpoint, device=device)  # type: ignore[assignment]  # a run folder's Run (a model file's ForeignRun above)
        d = run.config.data  # type: ignore[attr-defined]
        name = args.data or d.name
        root = args.data_root if args.data_root is not None else (d.root or None)
        cache, verify = d.cache_dir or None, d.verify_md5
        options = dict(d.options) if name == d.name else {}  # e.g. an event data set's frame settings
    model = run.model
    model.eval()  # BatchNorm in inference mode; Noisy-LIF noise stays on (it is not tied to the mode)
    ds = load_dataset(
        name, args.split, root=root, cache_dir=cache, subset=args.n_samples, seed=args.seed, verify=verify, **options
    )
    x, y = ds.float_images(), ds.labels
    try:
        with torch.inference_mode():
            out = model(x[:1].to(device))
    except (RuntimeError, ValueError) as e:
        raise DataError(
            f"dataset {name!r} (images {tuple(x.shape[1:])}) does not fit the model of "
            f"{args.checkpoint or args.model_file}: {str(e).splitlines()[0]}"
        ) from None
    if int(y.max()) >= out.shape[1]:
        raise DataError(f"dataset {name!r} has labels up to {int(y.max())} but the model has {out.shape[1]} classes")
    info = {"name": name, "split": args.split, "root": root, "n_samples": len(y), "seed": args.seed}
    return run, model, x, y, info, device


def _parse_ks(text: str) -> list[int]:
    from ..errors import SpikeguardError

    try:
        ks = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise SpikeguardError(f"--event-ks must be comma-separated integers, got {text!r}") from None
    if not ks or min(ks) < 0:
        raise SpikeguardError(f"--event-ks needs budgets >= 0, got {text!r}")
    return ks


def result_dir(
    args: argparse.Namespace, run, what: str, eps: float, result: str, ctx=None, journal_name: str | None = None
) -> tuple[Path, bool]:
    """``(folder, created)``: the output folder of one evaluation or audit, never one holding a result.

    ``--out DIR`` is used as given (a ``result`` file already there is an error unless
    ``--overwrite``); otherwise a new folder ``RUN/evaluation/<UTC time>-<what>-eps<k>`` is made,
    except that an unfinished run with the same settings (its ``journal_name`` folder is there,
    its result is not) is resumed in its own folder. Rank 0 decides; the others follow.
    """
    from ..io import ensure_dir, new_dir, refuse_overwrite, stamp
    from ..utils import eps_label

    chosen: tuple[str, bool] | None = None
    if ctx is None or ctx.is_main:
        if args.out:
            existed = Path(args.out).exists()
            refuse_overwrite(args.out, (result,), args.overwrite)
            chosen = (str(ensure_dir(args.out)), not existed)
        else:
            parent = Path(run.path) / "evaluation"
            unfinished = [
                j.parent
                for j in sorted(parent.glob(f"*/{journal_name}"))
                if journal_name and not (j.parent / result).exists()
            ]
            if unfinished:
                chosen = (str(unfinished[-1]), False)
            else:
                k = eps_label(eps).replace("/255", "")
                chosen = (str(new_dir(parent, f"{stamp()}-{what}-eps{k}")), True)
    if ctx is not None and ctx.is_distributed:
        chosen = ctx.all_gather_object(chosen)[0]
    return Path(chosen[0]), chosen[1]  # type: ignore[index]  # set on rank 0 and gathered by the others


def _check_source(source, model, x, path: str) -> None:
    """A one-line error if the transfer source cannot take the target's inputs or classes."""
    import torch

    from ..errors import CheckpointError

    try:
        with torch.inference_mode():
            k_src, k_tgt = source(x).shape[1], model(x).shape[1]
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(f"--source {path} cannot take this data: {str(e).splitlines()[0]}") from None
    if k_src != k_tgt:
        raise CheckpointError(f"--source {path} has {k_src} classes, the target {k_tgt}")


def run(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..attacks import parse_attacks
    from ..logging import NORMAL, VERBOSE, verbosity_from_args
    from .common import child_argv

    verbosity = verbosity_from_args(args)
    eps = parse_eps_arg(args.eps)
    names = parse_attacks(",".join(t for t in (args.suite or ("" if args.attacks else "paper"), args.attacks) if t))
    if args.distributed and distributed.env_world() is None:
        return distributed.launch_local(args.distributed, child_argv(args))
    ctx = distributed.init_from_env(args.device)
    try:
        with stop_on_signals(args):
            return _evaluate(args, eps, names, ctx, verbosity >= NORMAL and ctx.is_main, verbosity >= VERBOSE)
    finally:
        distributed.shutdown()


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


def _evaluate(args: argparse.Namespace, eps: float, names: list[str], ctx, talk: bool, verbose: bool) -> int:
    """The evaluation on this rank: shard of the batches, per-batch journal, rank 0 writes."""
    import shutil

    from ..attacks import PAPER_ALPHA, SUITE_ALPHA, parse_alpha
    from ..checkpoint import MODEL_FILE, load_run
    from ..evaluation import audit_robustness
    from ..evaluation.results import checkpoint_id, command_line, provenance, write_robustness
    from ..neurons import is_stochastic
    from ..evaluation.sharded import evaluate_sharded, journal_key, read_journal
    from ..io import removed_on_failure

    rn, model, x, y, info, device = load_target(args)
    individual = bool(args.individual or args.suite == "paper" or (not args.suite and not args.attacks))
    source = load_run(args.source, device=device).model if args.source else None
    if source is not None:
        _check_source(source, model, x[:2].to(device), args.source)
    kw = {"square": {"queries": args.square_queries}} if args.square_queries else None
    alpha = parse_alpha(args.alpha, SUITE_ALPHA.get(args.suite or ("" if args.attacks else "paper"), PAPER_ALPHA))
    # the journal of finished batches belongs to exactly these settings and weights
    st = Path(getattr(rn, "identity_file", Path(rn.path) / MODEL_FILE)).stat()
    settings = {
        "checkpoint": str(Path(rn.path).resolve()),
        "weights": [st.st_size, st.st_mtime_ns],
        "model_file": args.model_file,
        "randomness": args.randomness,
        "source": str(Path(args.source).resolve()) if args.source else None,
        "data": info,
        "attacks": names,
        "eps": eps,
        "eot": args.eot,
        "passes": args.passes,
        "alpha": alpha,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "attack_kw": kw,
        "individual": individual,
    }
    jname = f".evaluate-{journal_key(settings)}"
    what = args.suite or ("-".join(names) if len(names) <= 3 else f"{len(names)}attacks")
    out, created = result_dir(args, rn, what, eps, "robustness.json", ctx, jname)
    journal = out / jname
    with removed_on_failure(out, created=created and ctx.is_main):
        if args.restart and ctx.is_main and journal.exists():
            shutil.rmtree(journal, ignore_errors=True)
        ctx.barrier()
        n_done = len(read_journal(journal)) if talk else 0
        if talk:
            print(
                f"evaluating {rn.path} on {info['name']}/{info['split']} ({len(y)} images): {', '.join(names)}",
                file=sys.stderr,
            )
            print(f"output folder: {out}", file=sys.stderr)
            if n_done:
                print(f"resuming: {n_done} finished batches on record in {journal}", file=sys.stderr)
        if verbose and ctx.is_main:
            print(
                f"{ctx.world_size} process(es), {ctx.backend or 'no process group'}, device {device}, journal "
                f"{journal}",
                file=sys.stderr,
            )
        if talk and not n_done:
            from ..evaluation.progress import suite_cost

            b = args.batch_size
            # the event report's attacks (--event-ks) run on every sample after the suite
            event_names = (
                [f"{a}{k}" for k in _parse_ks(args.event_ks) for a in ("event-flip", "random-flip")]
                if args.event_ks
                else []
            )
            print(
                suite_cost(
                    model,
                    names + event_names,
                    x[:b].to(device),
                    y[:b].to(device),
                    len(y),
                    eps=eps,
                    eot=args.eot,
                    passes=args.passes,
                    alpha=alpha,
                    batch_size=b,
                    source=source,
                    attack_kw=kw,
                    cascade=not individual,
                ).format(),
                file=sys.stderr,
            )
        report = evaluate_sharded(
            model,
            x,
            y,
            names,
            eps=eps,
            eot=args.eot,
            passes=args.passes,
            alpha=alpha,
            batch_size=args.batch_size,
            seed=args.seed,
            source=source,
            attack_kw=kw,
            device=device,
            journal=journal,
            ctx=ctx,
            progress=talk and not args.no_progress,
            randomness=args.randomness,
            individual=individual,
        )
        if not ctx.is_main:
            return 0
        prov = provenance(
            command=command_line(args.argv),
            checkpoint=getattr(rn, "weights", None) or rn.path,
            report=report,
            attacks=names,
            data=info,
            alpha=alpha,
            batch_size=args.batch_size,
            source=args.source,
            processes=ctx.world_size,
            randomness=args.randomness,
            mode="individual" if individual else "cascade",
            # a --model-file model is identified by its weights file
            checkpoint_id=checkpoint_id(getattr(rn, "identity_file", None) or rn.path),
        )
        extra = {
            "checkpoint": str(rn.path),
            "model_file": args.model_file,
            "weights": args.weights,
            "source": args.source,
            "data": info,
            "command": "evaluate",
            "processes": ctx.world_size,
        }
        cfg = getattr(rn, "config", None)  # None for a --model-file model
        lam = cfg.tgo.lambda_max if cfg is not None and cfg.tgo.enabled else None
        if talk:
            print(report.format_table(f"robust accuracy of {rn.path}"))
        if args.audit:
            audit = audit_robustness(
                model,
                x,
                y,
                eps=eps,
                eot=args.eot,
                passes=args.passes,
                report=report,
                steps=args.audit_steps,
                batch_size=args.batch_size,
                seed=args.seed,
                device=device,
                progress=talk and not args.no_progress,
                randomness=args.randomness,
            )
            extra["audit"] = audit.to_dict()
            if talk:
                print()
                print(audit.format())
            if getattr(model, "frame_norm", "") and not args.event_ks:
                # event data: a frame attack that rounding back to events erases is false robustness
                from ..evaluation.events import rounding_check

                rc = rounding_check(
                    model,
                    x,
                    y,
                    "pgd10",
                    eps=eps,
                    batch_size=args.batch_size,
                    seed=args.seed,
                    eot=args.eot if is_stochastic(model) else 1,
                    alpha=alpha,
                )
                extra["audit"]["event_rounding"] = rc.to_dict()
                if talk:
                    print(
                        rc.warning()
                        or f"rounding PGD-10 back to events: success {rc.success_continuous:.1%} on "
                        f"frames, {rc.success_rounded:.1%} as events"
                    )
        if args.event_ks:  # event data: success rate of the event-stream attacks vs the budget k
            from ..evaluation.events import event_report

            extra["events"], text = event_report(
                model,
                x,
                y,
                _parse_ks(args.event_ks),
                eps=eps,
                eot=args.eot,
                batch_size=args.batch_size,
                seed=args.seed,
                alpha=alpha,
            )
            if talk:
                print()
                print(text)
        path = write_robustness(
            out / "robustness.json", report, prov, per_sample=not args.no_per_sample, lambda_max=lam, **extra
        )
        shutil.rmtree(journal, ignore_errors=True)  # the results are safe in robustness.json now
    if talk:
        print(f"\nwrote {path}")
    return 0
