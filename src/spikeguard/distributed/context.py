"""The process group a run belongs to: :class:`DistContext`, joining it from torchrun's
environment, and per-rank seeding."""

from __future__ import annotations

import datetime
import os
import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist

from ..errors import ConfigError, SpikeguardError


ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly one-process) job.

    Attributes:
        rank: global rank (0 writes files).
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        backend: ``gloo``, ``nccl`` or ``""`` for a single process.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ collectives
    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def all_gather_object(self, obj: Any) -> list[Any]:
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in one process)."""
        if not self.is_distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` on every rank."""
        if not self.is_distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any rank (used to stop all ranks at one batch)."""
        if not self.is_distributed:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def all_reduce_sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks of a short list of floats (float64)."""
        if not self.is_distributed:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(t)
        return t.tolist()

    def run_on_main(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on rank 0, its result broadcast to every rank; a :class:`SpikeguardError`
        raised there is raised on every rank (so all ranks fail alike instead of hanging)."""
        if not self.is_distributed:
            return fn()
        payload: Any = None
        if self.is_main:
            try:
                payload = ("ok", fn())
            except SpikeguardError as e:
                payload = ("err", type(e), str(e))
        payload = self.broadcast_object(payload)
        if payload[0] == "err":
            raise payload[1](payload[2])
        return payload[1]

    @property
    def comm_device(self) -> torch.device:
        """Device of tensors handed to collectives (NCCL needs CUDA tensors)."""
        if self.backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


_SINGLE = DistContext()
_current: DistContext = _SINGLE


def current() -> DistContext:
    """The context of this process (a one-process context unless :func:`init_from_env` ran)."""
    return _current


def _env_int(name: str, default: int | None = None) -> int:
    text = os.environ.get(name)
    if text is None:
        if default is None:
            raise ConfigError(f"distributed launch: environment variable {name} is not set")
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"distributed launch: {name}={text!r} is not an integer") from None


def env_world() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from torchrun's environment, or None without one."""
    if "WORLD_SIZE" not in os.environ:
        return None
    world = _env_int("WORLD_SIZE")
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"distributed launch: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local} are inconsistent")
    return rank, world, local


def init_from_env(device: str = "auto", timeout_s: float = 1800.0) -> DistContext:
    """Join the process group described by the environment (no-op for one process).

    ``device`` is the run's device setting: ``auto``/``cuda*`` with CUDA available picks NCCL
    and ``cuda:LOCAL_RANK``; otherwise gloo on CPU.
    """
    global _current
    world = env_world()
    if world is None or world[1] == 1:
        _current = _SINGLE
        return _current
    rank, size, local = world
    if dist.is_initialized():
        _current = DistContext(
            rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local, backend=str(dist.get_backend())
        )
        return _current
    use_cuda = device != "cpu" and not device.startswith("cpu") and torch.cuda.is_available()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    backend = "nccl" if use_cuda else "gloo"
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise ConfigError(f"distributed launch: {var} is not set (launch with torchrun or --distributed N)")
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs are visible")
        torch.cuda.set_device(local)
    try:
        dist.init_process_group(
            backend, init_method="env://", rank=rank, world_size=size, timeout=datetime.timedelta(seconds=timeout_s)
        )
    except (RuntimeError, ValueError) as e:
        raise SpikeguardError(
            f"cannot join the process group ({backend}, rank {rank}/{size} at "
            f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}): "
            f"{str(e).splitlines()[0]}"
        ) from None
    _current = DistContext(rank=rank, world_size=size, local_rank=local, backend=backend)
    return _current


def shutdown() -> None:
    """Leave the process group (if any) and return to a one-process context."""
    global _current
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _current = _SINGLE


def set_context(ctx: DistContext) -> DistContext:
    """Install ``ctx`` as the current context (for callers that initialised the group themselves)."""
    global _current
    old, _current = _current, ctx
    return old


# ---------------------------------------------------------------------------------------
# seeding


def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank`` (rank 0 keeps ``seed``, so one process matches a plain run)."""
    return int(seed) if rank == 0 else (int(seed) * 1_000_003 + 7_919 * rank) % 2**63


def seed_rank(seed: int, ctx: DistContext | None = None) -> None:
    """Give this rank its own Python/NumPy/torch streams (Noisy-LIF noise, attack starts).

    Rank 0 is left untouched; call it after the model is built so every rank starts from
    the same weights (DDP broadcasts rank 0's anyway).
    """
    ctx = ctx or current()
    if ctx.rank == 0:
        return
    s = rank_seed(seed, ctx.rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
