"""``spikeguard train --distributed N``: N local worker processes on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import Any, Sequence

from ..errors import ConfigError


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_local(nproc: int, argv: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Run ``python -m spikeguard ARGV`` in ``nproc`` processes on this machine and wait.

    The processes rendezvous on 127.0.0.1 (nothing leaves the machine). SIGINT/SIGTERM are
    forwarded to every worker (so they checkpoint and stop at the same batch); if a worker
    fails, the others are terminated. Returns the first non-zero exit code (0 if all succeed).
    """
    if nproc < 1:
        raise ConfigError(f"--distributed needs at least 1 process, got {nproc}")
    base = dict(os.environ if env is None else env)
    base.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc)
    )
    # N processes each using every core would oversubscribe the CPU (torchrun sets 1)
    base.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    procs: list[subprocess.Popen] = []
    for r in range(nproc):
        e = dict(base, RANK=str(r), LOCAL_RANK=str(r))
        procs.append(subprocess.Popen([sys.executable, "-m", "spikeguard", *argv], env=e))

    def forward(signum: int, _frame: Any) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        pending = list(procs)
        while pending:
            for p in list(pending):
                try:
                    rc = p.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    continue
                pending.remove(p)
                if rc != 0 and code == 0:
                    code = rc if rc > 0 else 128 - rc  # killed by signal -s: shell convention
                    for q in pending:  # one worker failed: the others would wait forever
                        q.terminate()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return code
