"""``spikeguard`` command line: one sub-command per module in ``spikeguard.cli``."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import SpikeguardError
from .common import OneLineParser

# Sub-command modules, each with ``add_parser(subparsers)``.
COMMANDS = ("demo", "train", "evaluate", "audit", "analyze", "report", "ablation", "study", "calibrate", "list")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="spikeguard",
        description="Adversarially robust spiking neural networks: train SNNs with Threshold Guarding "
        "Optimization (TGO) and Noisy-LIF neurons, attack them, and analyse why they hold up.",
        epilog="Run 'spikeguard COMMAND --help' for the options of a command.",
    )
    from .._version import __version__

    parser.add_argument("--version", action="version", version=f"spikeguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # name the sub-command (and its --help) rather than the top-level parser
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        target = sub.choices.get(getattr(args, "command", None) or "", parser)
        target.error(f"unrecognized arguments: {' '.join(extra)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)  # --distributed N re-runs it in N workers
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SpikeguardError as e:
        from ..signals import Interrupted

        # a stop on request (Ctrl-C, SIGTERM) that saved its state is not an error
        kind = "interrupted" if isinstance(e, Interrupted) else "error"
        print(f"spikeguard {args.command}: {kind}: {e}", file=sys.stderr)
        return int(getattr(e, "exit_code", 2))  # e.g. 143 after a checkpoint on SIGTERM
    except KeyboardInterrupt:
        print(f"spikeguard {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
