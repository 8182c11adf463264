"""``spikeguard evaluate``: the attack suite on a trained run, worst case, optional audit."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import nonneg_int, positive_int

EPILOG = """\
examples:
  spikeguard evaluate --checkpoint runs/demo/tgo --suite paper
  spikeguard evaluate --checkpoint runs/demo/tgo --suite strong --audit --source runs/demo/vanilla
  spikeguard evaluate --checkpoint runs/c100-wrn --attacks fgsm,pgd10,apgd-ce100,square5000 \\
      --eps 8/255 --eot 16 --passes 10 --n-samples 1000 --data-root /data

attacks (comma-separated; suites expand): fgsm, rfgsm, pgdK, pgdK-rR (R restarts), apgd-ce[K],
apgd-dlr[K], mtpgd[K], square[Q], transfer (PGD-20 from --source, or from the target's noise-free
twin), noise-free, fixed-noise (the attacker knows the evaluation's noise sample), sg-ensemble
(PGD per surrogate gradient, per-sample worst), sg-adaptive (greedy per-sample surrogate width);
on event data (models on frame sequences) also event-flipK, random-flipK, event-steK (K flipped
event cells; the output is a valid event stream) and --event-ks for success rate vs k.
  --suite paper : fgsm, rfgsm, pgd7, pgd10, pgd20, pgd40, apgd-ce, mtpgd   (eps 8/255, step 0.01)
  --suite strong: paper + pgd50-r3, apgd-dlr, square, transfer, noise-free, fixed-noise,
                  sg-ensemble, sg-adaptive; stochastic-only attacks are skipped on LIF models.

A sample counts as robust on an evaluation pass only if it is classified correctly there both
clean and attacked; the worst case requires it to survive every attack. Noisy-LIF models are
judged over --passes passes (mean and 95% interval) and attacked with EoT over --eot passes.
Writes OUT/robustness.json (atomically) and prints the table."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="attack a trained run with the attack suite; per-attack and worst-case robust accuracy",
        description="Evaluate a trained spikeguard run against a suite of L-inf attacks (gradient, adaptive, "
                    "black-box, transfer), judging stochastic models over several passes, and report each "
                    "attack's robust accuracy and the per-sample worst case; --audit adds the gradient-masking "
                    "sanity checks.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--attacks", default="", metavar="LIST", help="comma-separated attack names (see below)")
    p.add_argument("--suite", choices=("paper", "strong"), default=None,
                   help="attack preset (default: paper when --attacks is not given)")
    p.add_argument("--alpha", type=float, default=0.01, help="step size of the PGD-type attacks (default 0.01)")
    p.add_argument("--source", metavar="RUN_DIR", default=None,
                   help="source model of the transfer attack (default: the target's noise-free twin)")
    p.add_argument("--square-queries", type=positive_int, default=None, metavar="Q",
                   help="queries of 'square' (default 1000; 'squareQ' names set it per attack)")
    p.add_argument("--audit", action="store_true", help="also run the audit (reuses this evaluation's attacks)")
    p.add_argument("--audit-steps", type=positive_int, default=10, help="PGD steps of the audit's own runs (default 10)")
    p.add_argument("--no-per-sample", action="store_true", help="leave the per-sample results out of the JSON")
    p.add_argument("--event-ks", default="", metavar="LIST",
                   help="event data only: also measure the event-flip attack (and the random-flip baseline) at "
                        "these budgets k of flipped event cells, e.g. 1,5,20,50 (success rate over originally "
                        "correct samples, accuracy vs k), and what rounding PGD-10 back to events leaves")
    p.add_argument("--distributed", type=positive_int, default=None, metavar="N",
                   help="shard the batches over N local processes (under torchrun: over its processes); the "
                        "result is identical to one process")
    p.add_argument("--restart", action="store_true",
                   help="ignore the per-batch journal of an interrupted run with the same settings (default: "
                        "finished batches are reused)")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    p.add_argument("--verbose", "-v", action="store_true", help="also print setup details")
    p.set_defaults(func=run)


def add_common_args(p: argparse.ArgumentParser) -> None:
    """Arguments shared by ``evaluate`` and ``audit``."""
    p.add_argument("--checkpoint", required=True, metavar="RUN_DIR", help="run folder (or its model.safetensors)")
    p.add_argument("--eps", default="8/255", help="L-inf budget: 8/255, 8 (= 8/255) or 0.03 (default 8/255)")
    p.add_argument("--eot", type=positive_int, default=8,
                   help="EoT passes per attack gradient for Noisy-LIF models (default 8; 1 for LIF models)")
    p.add_argument("--passes", type=positive_int, default=8,
                   help="evaluation passes for Noisy-LIF models (default 8; 1 for LIF models)")
    p.add_argument("--n-samples", type=nonneg_int, default=0,
                   help="class-balanced test subset size, 0 = the whole test split (default 0)")
    p.add_argument("--split", choices=("test", "train"), default="test", help="data split (default test)")
    p.add_argument("--data", default=None, metavar="NAME", help="dataset name (default: the run's data.name)")
    p.add_argument("--data-root", default=None, metavar="PATH", help="dataset root (default: the run's data.root)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="images per attack batch (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset, random starts and noise (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default auto)")
    p.add_argument("--threads", type=nonneg_int, default=0, help="torch CPU threads, 0 = torch's default")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default RUN_DIR/evaluation)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def parse_eps_arg(text: str) -> float:
    from ..attacks import check_eps
    from ..errors import SpikeguardError
    from ..utils import parse_eps

    try:
        return check_eps(parse_eps(text))
    except ValueError:
        raise SpikeguardError(f"cannot parse --eps {text!r} (use e.g. 8/255, 8 or 0.031)") from None


def load_target(args: argparse.Namespace):
    """``(run, model, images, labels, data_info)`` for the common arguments."""
    import torch

    from ..checkpoint import load_run
    from ..data import load_dataset
    from ..errors import DataError, SpikeguardError
    from ..utils import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except RuntimeError as e:
        raise SpikeguardError(f"bad --device {args.device!r}: {e}") from None
    run = load_run(args.checkpoint, device=device)
    model = run.model
    model.eval()  # BatchNorm in inference mode; Noisy-LIF noise stays on (it is not tied to the mode)
    d = run.config.data
    name = args.data or d.name
    root = args.data_root if args.data_root is not None else (d.root or None)
    ds = load_dataset(name, args.split, root=root, cache_dir=d.cache_dir or None, subset=args.n_samples,
                      seed=args.seed, verify=d.verify_md5, **(d.options if name == d.name else {}))
    x, y = ds.float_images(), ds.labels
    try:
        with torch.inference_mode():
            out = model(x[:1].to(device))
    except (RuntimeError, ValueError) as e:
        raise DataError(f"dataset {name!r} (images {tuple(x.shape[1:])}) does not fit the model of "
                        f"{args.checkpoint}: {str(e).splitlines()[0]}") from None
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


def out_dir(args: argparse.Namespace, run) -> Path:
    from ..io import ensure_dir

    return ensure_dir(args.out or Path(run.path) / "evaluation")


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
    from .train import child_argv

    verbosity = verbosity_from_args(args)
    eps = parse_eps_arg(args.eps)
    names = parse_attacks(",".join(t for t in (args.suite or ("" if args.attacks else "paper"), args.attacks) if t))
    if args.distributed and distributed.env_world() is None:
        return distributed.launch_local(args.distributed, child_argv(args))
    ctx = distributed.init_from_env(args.device)
    try:
        return _evaluate(args, eps, names, ctx, verbosity >= NORMAL and ctx.is_main, verbosity >= VERBOSE)
    finally:
        distributed.shutdown()


def _evaluate(args: argparse.Namespace, eps: float, names: list[str], ctx, talk: bool, verbose: bool) -> int:
    """The evaluation on this rank: shard of the batches, per-batch journal, rank 0 writes."""
    import shutil

    from ..checkpoint import MODEL_FILE, load_run
    from ..evaluation import audit_robustness
    from ..neurons import is_stochastic
    from ..evaluation.sharded import evaluate_sharded, journal_key, read_journal
    from ..io import atomic_write_json

    rn, model, x, y, info, device = load_target(args)
    out = out_dir(args, rn)
    source = load_run(args.source, device=device).model if args.source else None
    if source is not None:
        _check_source(source, model, x[:2].to(device), args.source)
    kw = {"square": {"queries": args.square_queries}} if args.square_queries else None
    # the journal of finished batches belongs to exactly these settings and weights
    st = (Path(rn.path) / MODEL_FILE).stat()
    settings = {"checkpoint": str(Path(rn.path).resolve()), "weights": [st.st_size, st.st_mtime_ns],
                "source": str(Path(args.source).resolve()) if args.source else None, "data": info, "attacks": names,
                "eps": eps, "eot": args.eot, "passes": args.passes, "alpha": args.alpha, "batch_size": args.batch_size,
                "seed": args.seed, "attack_kw": kw}
    journal = out / f".evaluate-{journal_key(settings)}"
    if args.restart and ctx.is_main and journal.exists():
        shutil.rmtree(journal, ignore_errors=True)
    ctx.barrier()
    if talk:
        print(f"evaluating {rn.path} on {info['name']}/{info['split']} ({len(y)} images): {', '.join(names)}",
              file=sys.stderr)
        n_done = len(read_journal(journal))
        if n_done:
            print(f"resuming: {n_done} finished batches on record in {journal}", file=sys.stderr)
    if verbose and ctx.is_main:
        print(f"{ctx.world_size} process(es), {ctx.backend or 'no process group'}, device {device}, journal {journal}",
              file=sys.stderr)
    report = evaluate_sharded(model, x, y, names, eps=eps, eot=args.eot, passes=args.passes, alpha=args.alpha,
                              batch_size=args.batch_size, seed=args.seed, source=source, attack_kw=kw,
                              device=device, journal=journal, ctx=ctx, progress=talk and not args.no_progress)
    if not ctx.is_main:
        return 0
    doc = {"checkpoint": str(rn.path), "source": args.source, "data": info, "command": "evaluate",
           "processes": ctx.world_size, "table": report.table_row(),
           "report": report.to_dict(per_sample=not args.no_per_sample)}
    if talk:
        print(report.format_table(f"robust accuracy of {rn.path}"))
    if args.audit:
        audit = audit_robustness(model, x, y, eps=eps, eot=args.eot, passes=args.passes, report=report,
                                 steps=args.audit_steps, alpha=args.alpha, batch_size=args.batch_size,
                                 seed=args.seed, device=device, progress=talk and not args.no_progress)
        doc["audit"] = audit.to_dict()
        if talk:
            print()
            print(audit.format())
        if getattr(model, "frame_norm", "") and not args.event_ks:
            # event data: a frame attack that rounding back to events erases is false robustness
            from ..evaluation.events import rounding_check

            rc = rounding_check(model, x, y, "pgd10", eps=eps, batch_size=args.batch_size, seed=args.seed,
                                eot=args.eot if is_stochastic(model) else 1, alpha=args.alpha)
            doc["audit"]["event_rounding"] = rc.to_dict()
            if talk:
                print(rc.warning() or f"rounding PGD-10 back to events: success {rc.success_continuous:.1%} on "
                                      f"frames, {rc.success_rounded:.1%} as events")
    if args.event_ks:
        from ..evaluation.events import event_report

        ks = _parse_ks(args.event_ks)
        doc["events"], text = event_report(model, x, y, ks, eps=eps, eot=args.eot, batch_size=args.batch_size,
                                           seed=args.seed, alpha=args.alpha)
        if talk:
            print()
            print(text)
    path = out / "robustness.json"
    atomic_write_json(path, doc)
    shutil.rmtree(journal, ignore_errors=True)  # the results are safe in robustness.json now
    if talk:
        print(f"\nwrote {path}")
    return 0
