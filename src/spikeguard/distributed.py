"""Multi-process training and evaluation on ``torch.distributed`` (DDP).

Launch with PyTorch's own launcher::

    torchrun --nproc-per-node 4 -m spikeguard train --config cfg.toml --out runs/x
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint host0:29400 --rdzv-id job1 -m spikeguard train ...

or with ``spikeguard train --distributed N`` (N local processes, see :func:`launch_local`).
Each process reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR`` /
``MASTER_PORT``) from its environment (:func:`init_from_env`); gloo runs on CPU, NCCL on GPU.

How a step is split (see docs/distributed.md for the derivation):

* every rank draws the *same* seeded permutation of the training set; global batch ``i``
  (``cfg.optim.batch_size`` samples, exactly the single-process batch, augmented with the
  same random numbers) is cut into ``world_size`` contiguous shards, one per rank;
* rank ``r`` computes its loss as the mean over its ``b_r`` samples; the DDP communication
  hook multiplies its gradient by ``w_r = b_r / B`` and sums over ranks, so the update is the
  gradient of the mean over the global batch: the cross-entropy *and* the TGO constraint
  (a mean over samples too) are averaged exactly as in one process, even for an uneven
  last batch;
* BatchNorm in training mode normalises with the rank's own batch statistics unless
  ``sync_bn`` is on: :class:`SyncBatchNorm` (CPU and GPU) then uses the statistics of the
  global batch, which makes a multi-process step equal to the single-process one up to
  floating-point summation order;
* rank 0 keeps the single-process random stream; every other rank re-seeds its global
  generators (Noisy-LIF noise, attack random starts) from ``(seed, rank)``;
* only rank 0 writes files.
"""

from __future__ import annotations

import datetime
import math
import os
import random
import signal
import socket
import subprocess
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from .errors import ConfigError, SpikeguardError

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
        _current = DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local,
                               backend=str(dist.get_backend()))
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
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as e:
        raise SpikeguardError(f"cannot join the process group ({backend}, rank {rank}/{size} at "
                              f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}): "
                              f"{str(e).splitlines()[0]}") from None
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
# local launcher

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
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(nproc),
                LOCAL_WORLD_SIZE=str(nproc))
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


# ---------------------------------------------------------------------------------------
# sharded batches

class ShardWeight:
    """This rank's share ``w_r = b_r / B`` of the current global batch (read by the DDP hook and SyncBN)."""

    def __init__(self, world_size: int = 1) -> None:
        self.weight = 1.0 / max(1, world_size)
        self.world_size = world_size


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous share of ``n`` items (sizes differ by at most 1)."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class EpochLoader:
    """One epoch of training batches for this rank (the distributed twin of :func:`spikeguard.data.batches`).

    With one process it yields exactly what ``batches(ds, B, shuffle=True, generator, augment)``
    yields. With ``W`` processes every rank draws the same permutation and augmentation for
    the global batch and keeps its contiguous shard.

    Args:
        ds: the training split.
        batch_size: the *global* batch size.
        generator: data generator shared (in state) by all ranks.
        augment: ``augment(x, generator)`` applied to the global batch.
        device: where batches go.
        ctx: distributed context.
        start: skip the first ``start`` batches (resume inside an epoch); ``generator`` must
            then hold the state it had after those batches.
        order_state: ``generator`` state at the start of the epoch (resume inside an epoch:
            the permutation is drawn from it; ``generator`` itself is left as it is).
        stop: called before each batch; returning True ends the epoch early (agreed by all ranks).
        weight: receives ``b_r / B`` for each batch.

    Attributes:
        position: global batches finished in this epoch; ``samples``: their samples;
        ``stopped``: the epoch ended early on ``stop``; ``order_state``: see above.
    """

    def __init__(self, ds, batch_size: int, generator: torch.Generator, augment: Callable | None = None,
                 device: torch.device | str = "cpu", ctx: DistContext | None = None, shuffle: bool = True,
                 start: int = 0, order_state: Tensor | None = None, stop: Callable[[], bool] | None = None,
                 weight: ShardWeight | None = None) -> None:
        self.ctx = ctx or current()
        if batch_size < self.ctx.world_size:
            raise ConfigError(f"optim.batch_size {batch_size} is smaller than the {self.ctx.world_size} processes")
        self.ds, self.batch_size, self.generator = ds, int(batch_size), generator
        self.augment, self.device, self.stop, self.weight = augment, device, stop, weight
        now = generator.get_state()
        if order_state is not None:
            generator.set_state(order_state)
        self.order_state = generator.get_state()  # saved in mid-epoch checkpoints
        n = len(ds)
        self.order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        if order_state is not None:
            generator.set_state(now)
        self.position = int(start)  # global batches finished
        self.samples = 0  # global samples of the finished batches
        self.local_samples = 0  # this rank's share of them
        self.last_size = 0
        self.stopped = False
        stop_at = n
        if self.ctx.is_distributed and n % self.batch_size and n % self.batch_size < self.ctx.world_size:
            # a last batch with fewer samples than ranks would leave a rank without data;
            # drop it (all ranks alike)
            stop_at = n - n % self.batch_size
        self.stop_at = stop_at
        self.steps = math.ceil(stop_at / self.batch_size)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        ctx, B = self.ctx, self.batch_size
        for i in range(self.position * B, self.stop_at, B):
            if self.stop is not None and self.stop():
                self.stopped = True
                return
            idx = self.order[i:min(i + B, self.stop_at)]
            if ctx.is_distributed:
                x = self.ds.float_images(idx)
                if self.augment is not None:
                    x = self.augment(x, self.generator)
                s, e = shard_bounds(len(idx), ctx.rank, ctx.world_size)
                x, y = x[s:e].to(self.device, non_blocking=True), self.ds.labels[idx[s:e]].to(self.device)
                if self.weight is not None:
                    self.weight.weight = (e - s) / len(idx)
            else:
                x = self.ds.float_images(idx).to(self.device, non_blocking=True)
                y = self.ds.labels[idx].to(self.device, non_blocking=True)
                if self.augment is not None:
                    x = self.augment(x, self.generator)
            self.last_size = len(idx)
            yield x, y
            self.position += 1
            self.samples += len(idx)
            self.local_samples += int(y.shape[0])


# ---------------------------------------------------------------------------------------
# SyncBatchNorm that also runs on CPU (gloo)

class _AllReduceWeighted(torch.autograd.Function):
    """Forward: sum over ranks. Backward: ``sum_s w_s g_s / w_r``.

    Rank ``r``'s gradient is later scaled by ``w_r`` in the DDP hook; dividing here makes the
    contributions that flow through the shared statistics carry each *source* rank's weight
    ``w_s`` instead, so the result is the gradient of ``sum_s w_s L_s`` exactly.
    """

    @staticmethod
    def forward(ctx: Any, t: Tensor, weight: float) -> Tensor:  # type: ignore[override]
        out = t.clone()
        dist.all_reduce(out)
        ctx.weight = float(weight)
        return out

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        w = ctx.weight
        g = (g * w).contiguous()
        dist.all_reduce(g)
        return g / w, None


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of all ranks (CPU/gloo and GPU/NCCL).

    Same parameters, buffers and ``state_dict`` keys as ``nn.BatchNorm1d/2d``, so checkpoints
    load into a plain model. Synchronises only in training mode with a process group of more
    than one rank; otherwise it is plain BatchNorm.
    """

    def __init__(self, *args: Any, shard: ShardWeight | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.shard = shard

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {input.dim()}D")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        w = self.shard.weight if self.shard is not None else 1.0 / dist.get_world_size()
        dims = [0] + list(range(2, x.dim()))
        n_local = float(x.numel() // x.shape[1])
        c = x.shape[1]
        # two-pass statistics (as stable as the single-process kernel)
        s = torch.cat([x.sum(dims), x.new_full((1,), n_local)])
        s = _AllReduceWeighted.apply(s, w)
        n = s[-1].detach()
        mean = s[:c] / n
        shape = [1, c] + [1] * (x.dim() - 2)
        xc = x - mean.view(shape)
        var = _AllReduceWeighted.apply(xc.square().sum(dims), w) / n
        y = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                nn_ = float(n)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (nn_ / max(nn_ - 1, 1.0)), alpha=m)
        return y


def convert_sync_batchnorm(module: nn.Module, shard: ShardWeight | None = None) -> nn.Module:
    """Replace every ``BatchNorm1d/2d/3d`` in ``module`` by :class:`SyncBatchNorm`, in place.

    The parameters and buffers are *moved*, not copied: an optimizer built before the
    conversion keeps working.
    """
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, SyncBatchNorm):
            new = SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                child.track_running_stats, shard=shard)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.training = child.training
            setattr(module, name, new)
        else:
            convert_sync_batchnorm(child, shard)
    return module


# ---------------------------------------------------------------------------------------
# DDP wrapper

class _Steps(nn.Module):
    """``forward = model.forward_steps``, so DDP sees the per-step logits the loss uses."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_steps(x)


def _weighted_sum_hook(state, bucket):  # no annotations: DDP checks them and ours are strings here
    """DDP communication hook ``(ShardWeight, GradBucket) -> Future``: ``sum_r w_r * grad_r``
    (instead of DDP's plain mean over ranks)."""
    buf = bucket.buffer()
    buf.mul_(state.weight)
    fut = dist.all_reduce(buf, async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


class DistributedModel(nn.Module):
    """What the :class:`~spikeguard.training.Trainer` trains in a multi-process run.

    ``forward_steps`` (the forward the loss is computed on) goes through
    ``DistributedDataParallel`` and so synchronises gradients; ``forward`` (what strategies
    use to craft adversarial examples with the bare model) does not. Every other attribute
    is the wrapped model's.
    """

    def __init__(self, model: nn.Module, ddp: nn.Module, shard: ShardWeight) -> None:
        super().__init__()
        self.module = model
        object.__setattr__(self, "ddp", ddp)  # not a submodule: parameters stay listed once
        self.shard = shard

    def forward_steps(self, x: Tensor) -> Tensor:
        return self.ddp(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("module")
            if inner is None:  # not initialised yet (e.g. while unpickling)
                raise
            return getattr(inner, name)


class _SyncedSchedule:
    """A lambda schedule whose dual-ascent update sees the constraint of the global batch."""

    def __init__(self, inner: Any, ctx: DistContext, shard: ShardWeight) -> None:
        self._inner, self._ctx, self._shard = inner, ctx, shard

    def update(self, constraint_value: float) -> None:
        (v,) = self._ctx.all_reduce_sum([self._shard.weight * float(constraint_value)])
        self._inner.update(v)

    def __call__(self, epoch: float) -> float:
        return self._inner(epoch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def prepare_model(model: nn.Module, guard: Any = None, sync_bn: bool = False, ctx: DistContext | None = None,
                  shard: ShardWeight | None = None) -> nn.Module:
    """The model to hand to the trainer: ``model`` itself in one process, else a :class:`DistributedModel`.

    Converts BatchNorm to :class:`SyncBatchNorm` when ``sync_bn``; makes a dual-ascent TGO
    schedule use the global constraint value. ``model`` must already be on its device.
    """
    ctx = ctx or current()
    if not ctx.is_distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    shard = shard or ShardWeight(ctx.world_size)
    if sync_bn:
        convert_sync_batchnorm(model, shard)
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    # DDP notes that a conv with one input channel yields grads strided unlike its buckets: a
    # copy per step, not an error; keep it out of the user's console
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    ddp = DDP(_Steps(model), device_ids=[dev.index] if dev.type == "cuda" else None)
    ddp.register_comm_hook(shard, _weighted_sum_hook)
    if guard is not None and getattr(guard.schedule, "kind", "") == "dual":
        guard.schedule = _SyncedSchedule(guard.schedule, ctx, shard)
    return DistributedModel(model, ddp, shard)


def merge_epoch_stats(stats: Any, seen: int, partial: dict | None) -> Any:
    """Combine the stats of a resumed epoch's remainder with those saved at the interruption.

    ``partial`` is ``{"stats": EpochStats.as_dict(), "seen": samples}`` of the part done
    before a mid-epoch checkpoint (None: nothing to merge).
    """
    if not partial:
        return stats
    before, n0 = partial["stats"], int(partial["seen"])
    total = n0 + seen
    for k in ("loss", "task_loss", "constraint", "lam", "accuracy", "near_threshold"):
        a, b = float(before.get(k, float("nan"))), float(getattr(stats, k))
        if math.isnan(a) or n0 == 0:
            continue
        setattr(stats, k, a if math.isnan(b) or seen == 0 else (a * n0 + b * seen) / total)
    stats.seconds = float(before.get("seconds", 0.0)) + stats.seconds
    stats.images_per_s = total / stats.seconds if stats.seconds > 0 else float("nan")
    return stats


def reduce_epoch_stats(stats: Any, seen: int, ctx: DistContext | None = None) -> Any:
    """Average an :class:`~spikeguard.training.trainer.EpochStats` over all ranks (sample-weighted)."""
    ctx = ctx or current()
    if not ctx.is_distributed:
        return stats
    keys = ("loss", "task_loss", "constraint", "lam", "accuracy", "near_threshold")
    vals = [getattr(stats, k) for k in keys]
    ok = [0.0 if math.isnan(v) else 1.0 for v in vals]
    sums = ctx.all_reduce_sum([seen] + [(0.0 if math.isnan(v) else v) * seen for v in vals] + [o * seen for o in ok])
    total = sums[0]
    secs = max(ctx.all_gather_object(float(stats.seconds)))
    for i, k in enumerate(keys):
        denom = sums[1 + len(keys) + i]
        setattr(stats, k, sums[1 + i] / denom if denom else float("nan"))
    stats.seconds = secs
    stats.images_per_s = total / secs if secs > 0 else float("nan")
    return stats


__all__ = [
    "DistContext", "current", "init_from_env", "shutdown", "set_context", "env_world", "launch_local", "free_port",
    "rank_seed", "seed_rank", "ShardWeight", "shard_bounds", "EpochLoader", "SyncBatchNorm", "convert_sync_batchnorm",
    "DistributedModel", "prepare_model", "reduce_epoch_stats", "merge_epoch_stats",
]
