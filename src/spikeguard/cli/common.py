"""Argument types shared by the sub-commands (they turn bad input into one-line errors)."""

from __future__ import annotations

import argparse
import math
from typing import NoReturn

from ..utils import parse_eps


def eps_list(text: str) -> list[float]:
    """``8,16,32`` (units of 1/255), ``8/255,0.05`` -> floats in [0, 1]."""
    tokens = [t.strip() for t in text.split(",") if t.strip()]
    try:
        vals = [parse_eps(t) for t in tokens]
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"cannot parse eps list {text!r} (use e.g. 8,16,32 or 8/255)") from None
    if not vals:
        raise argparse.ArgumentTypeError("eps list is empty")
    for t, v in zip(tokens, vals, strict=True):
        if not math.isfinite(v) or v < 0 or v > 1:
            # quote what was typed: "-1" is -1/255 inside, and that number would only confuse
            raise argparse.ArgumentTypeError(f"eps {t} is outside [0, 1] on the pixel scale ({EPS_RANGE})")
    return vals


EPS_RANGE = "whole numbers count pixel levels 0..255, decimals and ratios are fractions: 8 = 8/255 = 0.0314"


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line naming the command and its ``--help``.

    argparse's default prints the whole usage block (a dozen lines for ``evaluate``) before the
    error, which buries the one line that matters. Sub-parsers inherit the class.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def add_device_arg(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """``--device`` of every command that computes."""
    p.add_argument(
        "--device",
        default=default,
        metavar="DEVICE",
        help="auto, cpu, cuda, cuda:1 ... (default " + (default or "the config's device") + "); an "
        "unavailable device is a one-line error",
    )


def child_argv(args: argparse.Namespace) -> list[str]:
    """The command line of one worker of ``--distributed N``: this one without ``--distributed``."""
    argv, skip = [], False
    for a in args.argv:
        if skip:
            skip = False
        elif a == "--distributed":
            skip = True
        elif not a.startswith("--distributed="):
            argv.append(a)
    return argv
