"""``spikeguard train``: run an experiment from a TOML config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_device_arg, child_argv

EPILOG = """\
examples:
  spikeguard train --config configs/cpu/cifar10-vgg_small-bptt.toml --out runs/cpu-vgg
  spikeguard train --config configs/paper/cifar100-vgg11-bptt-tgo.toml --set tgo.lambda_max=0.3 \\
      --set data.root=DATA_ROOT --out runs/c100-vgg11-tgo-0.3
  spikeguard train --out runs/c100-vgg11-tgo-0.3 --resume      # continue an interrupted run
  spikeguard train --set data.name=digits --set model.name=small_conv --set model.T=4 \\
      --set optim.epochs=5 --out runs/digits                    # no config file: defaults + overrides

--set KEY=VALUE uses the config's dotted names (data.*, model.*, neuron.*, tgo.*, optim.*,
eval.*, strategy, strategy_kw.*, seed, device, threads, checkpoint_every); VALUE is a TOML
literal (0.3, true, "tet", [1, 2], {width = 0.5}) or a bare string. Unknown keys are errors.

The run folder gets config.json (resolved config), log.jsonl (one line per epoch),
model.safetensors + state.* (checkpoints) and results.json (clean test accuracy).
Load the model with spikeguard.load(OUT). Data: --set data.root=DIR where DIR holds
cifar-10-batches-py/ or cifar-100-python/ (official python release, md5-checked) or an image
folder DIR/{train,test}/<class>/*.png; nothing is ever downloaded."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a spiking network from a TOML config (BPTT/TET, TGO, Noisy-LIF), with checkpoints",
        description="Train the experiment described by a TOML config (see configs/paper and configs/cpu): dataset, "
        "network, neuron, TGO constraint, training strategy, SGD schedule. Shows a progress bar with "
        "loss, accuracy, lambda and the near-threshold share, writes a JSON-lines log, checkpoints "
        "(safetensors) and the clean test accuracy. Deterministic on CPU for a given seed; --resume "
        "continues exactly where an interrupted run stopped.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config", "-c", metavar="TOML", help="experiment config (omit to start from the defaults, or when resuming)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set tgo.lambda_max=0.3 (repeatable)",
    )
    p.add_argument(
        "--out", "-o", metavar="DIR", help="run folder to create (or to resume); required unless --print-config"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as TOML and exit")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar and per-epoch lines")
    add_device_arg(p, default=None)
    add_run_args(p)
    p.set_defaults(func=run)


def add_run_args(p: argparse.ArgumentParser) -> None:
    """Process-count and logging options (shared with ``evaluate``)."""
    from .common import nonneg_int, positive_int

    p.add_argument(
        "--distributed",
        type=positive_int,
        default=None,
        metavar="N",
        help="run N processes on this machine (DDP over gloo on CPU, NCCL on GPU); under torchrun "
        "(RANK/WORLD_SIZE set) the processes are torchrun's and this flag is not needed",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    p.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="also print one line per logged step (loss, lambda, throughput, memory) and setup details",
    )
    p.add_argument(
        "--log-every",
        type=nonneg_int,
        default=None,
        metavar="K",
        help="append a line to OUT/steps.jsonl every K steps (default 50; 10 with --verbose; 0 = off)",
    )
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard scalars to OUT/tensorboard (needs the tensorboard package)",
    )


def run(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..config import config_to_toml, load_config
    from ..errors import ConfigError
    from ..jobs.train import run_experiment
    from ..io import removed_on_failure
    from ..logging import NORMAL, QUIET, RunLogger, verbosity_from_args
    from ..utils import resolve_device

    if not args.out and not args.print_config:
        raise ConfigError("--out DIR is required (the run folder to create or resume)")
    verbosity = verbosity_from_args(args)

    cfg = None
    overrides = list(args.overrides) + ([f'device="{args.device}"'] if args.device else [])
    if args.config is not None or overrides or not args.resume:
        cfg = load_config(args.config, overrides)
    if args.print_config:
        print(config_to_toml(cfg) if cfg is not None else "(resuming: the run's saved config is used)", end="")
        return 0
    if args.distributed and distributed.env_world() is None:
        return distributed.launch_local(args.distributed, child_argv(args))
    resolve_device(_device_setting(cfg, args))  # a one-line error before any folder is made
    note = _resume_note(args.out) if args.resume and ctx_is_main() else None
    if note:
        print(note, file=sys.stderr)
    ctx = distributed.init_from_env(_device_setting(cfg, args))
    created = not Path(args.out).exists()
    try:
        log_every = args.log_every if args.log_every is not None else (10 if verbosity > NORMAL else 50)
        logger = RunLogger(
            args.out,
            verbosity=verbosity if not args.no_progress else min(verbosity, QUIET),
            log_every=log_every,
            tensorboard=args.tensorboard,
            enabled=ctx.is_main,
        )
        logger.debug(f"spikeguard train: rank {ctx.rank}/{ctx.world_size} ({ctx.backend or 'single process'})")
        # a run that fails before its first checkpoint leaves no folder behind
        with removed_on_failure(
            args.out, keep=lambda p: (p / "model.safetensors").exists(), created=created and ctx.is_main
        ):
            res = run_experiment(
                cfg, args.out, resume=args.resume, progress=verbosity >= NORMAL and not args.no_progress, logger=logger
            )
        # every rank is done before any leaves the group: a rank tearing its process group
        # down while a peer still finishes (rank 0 writes the results) can abort the peer
        ctx.barrier()
    finally:
        distributed.shutdown()
    if args.no_progress and verbosity >= NORMAL and ctx.is_main:
        print(f"clean test accuracy {res['test_accuracy']:.4f} ({res['test_samples']} images); run in {args.out}")
    return 0


def ctx_is_main() -> bool:
    from .. import distributed

    world = distributed.env_world()
    return world is None or world[0] == 0


def _resume_note(out: str) -> str | None:
    """``resuming RUN from epoch E, batch B (checkpoint of DATE)``; None where there is no run to
    resume (the run's own one-line error says so, and a note before it would only contradict it)."""
    import datetime as dt

    from ..checkpoint import CONFIG_FILE, MODEL_FILE, load_training_state

    p = Path(out)
    if not (p / CONFIG_FILE).is_file():
        return None
    if not (p / MODEL_FILE).exists():
        return f"resuming {out}: no checkpoint there yet"
    try:
        st = load_training_state(p) or {}
    except Exception:  # noqa: BLE001 - the run itself reports a broken state as a one-line error
        return f"resuming {out}"
    when = dt.datetime.fromtimestamp((p / MODEL_FILE).stat().st_mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    batch = f", batch {st['batch']}" if st.get("batch") else ""
    return f"resuming {out} after epoch {st.get('epoch', '?')}{batch} (checkpoint of {when})"


def _device_setting(cfg, args: argparse.Namespace) -> str:
    """The run's ``device`` (from the saved config when resuming without one) to pick gloo or NCCL."""
    if cfg is not None:
        return cfg.device
    try:
        from ..checkpoint import read_run_config

        return read_run_config(args.out)[0].device
    except Exception:  # noqa: BLE001 - rank 0 reports a missing or broken run; here any default will do
        return "auto"
