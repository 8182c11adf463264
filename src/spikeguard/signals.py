"""SIGTERM / SIGINT handling for long runs: finish the batch, checkpoint, exit non-zero.

A batch scheduler (Slurm, Kubernetes, a spot-instance reclaim) sends SIGTERM some seconds
before it kills a job; Ctrl-C sends SIGINT. Inside :func:`graceful_stop` the first such
signal only sets a flag. The training loop checks it between batches (a *safe point*:
weights, optimizer and RNG states are consistent there), writes a checkpoint atomically
and raises :class:`Interrupted`, which the CLI turns into exit code ``128 + signal``
(143 for SIGTERM, 130 for SIGINT). A second signal restores the default behaviour, so a
user who presses Ctrl-C twice is never stuck.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

from .errors import SpikeguardError

HANDLED = (signal.SIGTERM, signal.SIGINT)


class Interrupted(SpikeguardError):
    """A run stopped on a signal after saving its state; ``exit_code`` is ``128 + signum``."""

    def __init__(self, message: str, signum: int = signal.SIGTERM) -> None:
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + int(signum)


class StopFlag:
    """Set by the first SIGTERM/SIGINT inside :func:`graceful_stop`."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Ask for a stop as if ``signum`` had arrived (tests, programmatic stops)."""
        if self.signum is None:
            self.signum = int(signum)


@contextlib.contextmanager
def graceful_stop(enabled: bool = True) -> Iterator[StopFlag]:
    """Turn the first SIGTERM/SIGINT into a flag inside the block; restore the handlers after.

    Outside the main thread (where Python cannot install handlers) the flag simply never
    fires from a signal.
    """
    flag = StopFlag()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return
    old: dict[int, Any] = {}

    def handler(signum: int, _frame: Any) -> None:
        if flag.requested:
            # second signal: give the user the default behaviour back
            signal.signal(signum, old.get(signum, signal.SIG_DFL))
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.raise_signal(signum)
            return
        flag.request(signum)

    for s in HANDLED:
        old[s] = signal.signal(s, handler)
    try:
        yield flag
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


__all__ = ["Interrupted", "StopFlag", "graceful_stop"]
