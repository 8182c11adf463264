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

The package's modules, one concern each: :mod:`.context` (process group, seeding),
:mod:`.launch` (local launcher), :mod:`.loader` (sharded batches), :mod:`.syncbn`
(SyncBatchNorm on CPU and GPU) and :mod:`.ddp` (the DDP model wrapper, the synced TGO
schedule, stats reduction and :class:`DistributedTraining`, the wrapper
:func:`spikeguard.jobs.train.run_experiment` puts around a single-process trainer).
"""

from .context import (
    ENV_VARS,
    DistContext,
    current,
    env_world,
    init_from_env,
    rank_seed,
    seed_rank,
    set_context,
    shutdown,
)
from .ddp import DistributedModel, DistributedTraining, merge_epoch_stats, prepare_model, reduce_epoch_stats
from .launch import free_port, launch_local
from .loader import EpochLoader, ShardWeight, shard_bounds
from .syncbn import SyncBatchNorm, convert_sync_batchnorm

__all__ = [
    "DistContext",
    "current",
    "init_from_env",
    "shutdown",
    "set_context",
    "env_world",
    "launch_local",
    "free_port",
    "rank_seed",
    "seed_rank",
    "ShardWeight",
    "shard_bounds",
    "EpochLoader",
    "SyncBatchNorm",
    "convert_sync_batchnorm",
    "DistributedModel",
    "DistributedTraining",
    "prepare_model",
    "reduce_epoch_stats",
    "merge_epoch_stats",
    "ENV_VARS",
]
