"""Run an experiment from an :class:`~spikeguard.config.ExperimentConfig`.

``run_experiment(cfg, out_dir)`` trains with the :class:`~spikeguard.training.Trainer`, the
configured strategy and (optionally) the TGO :class:`~spikeguard.tgo.ThresholdGuard`, and
writes into ``out_dir``:

* ``config.json`` at the start (resolved config + model spec, see :mod:`spikeguard.checkpoint`);
* ``log.jsonl``: one JSON line per epoch (loss, accuracy, lambda, constraint, near-threshold
  share, learning rate, throughput, optional test accuracy);
* checkpoints every ``checkpoint_every`` epochs and at the end (``model.safetensors``,
  ``state.safetensors``/``state.json``);
* ``results.json``: clean test accuracy (and, if configured and available, attack results).

On CPU a run is deterministic given ``cfg.seed``; ``resume=True`` continues from the last
checkpoint and ends with the same weights as an uninterrupted run (every RNG the loop uses
is saved with the checkpoint).
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .checkpoint import (
    CONFIG_FILE, MODEL_FILE, load_training_state, load_weights, read_run_config, save_checkpoint,
    write_run_config,
)
from .config import ExperimentConfig, config_to_dict
from .data import ImageDataset, batches, load_dataset, random_crop_flip
from .errors import CheckpointError, ConfigError
from .io import atomic_write_json, atomic_write_text, ensure_dir
from .models import count_parameters, create_model
from .tgo import LambdaSchedule, Normalisation, ThresholdGuard, constraint_gradient_ratio
from .training import Trainer, create_strategy, make_sgd
from .utils import resolve_device, seed_everything

LOG_FILE = "log.jsonl"
RESULTS_FILE = "results.json"

# Shape and statistics of the known datasets, so a model can be built without loading data.
_DATA_SHAPES = {
    "digits": dict(in_channels=1, image_size=8, num_classes=10, mean=[0.3], std=[0.4]),
    "cifar10": dict(in_channels=3, image_size=32, num_classes=10),
    "cifar100": dict(in_channels=3, image_size=32, num_classes=100),
    "cifar100-coarse": dict(in_channels=3, image_size=32, num_classes=20),
}


def build_datasets(cfg: ExperimentConfig, progress: bool = False) -> tuple[ImageDataset, ImageDataset]:
    """The train and test splits named by ``cfg.data`` (subsets applied, cache used)."""
    d = cfg.data
    kw = dict(root=d.root or None, cache_dir=d.cache_dir or None, seed=cfg.seed, verify=d.verify_md5,
              progress=progress)
    train = load_dataset(d.name, "train", subset=d.subset, **kw)
    test = load_dataset(d.name, "test", subset=d.test_subset, **kw)
    if train.classes != test.classes:
        raise ConfigError(f"data: train and test splits have different classes ({len(train.classes)} vs "
                          f"{len(test.classes)})")
    return train, test


def _data_shape(cfg: ExperimentConfig, data: ImageDataset | None) -> dict:
    if data is not None:
        c, h, w = data.image_shape
        if h != w:
            raise ConfigError(f"data: images must be square, got {h}x{w}")
        return dict(in_channels=c, image_size=h, num_classes=data.num_classes,
                    mean=[float(v) for v in data.mean], std=[float(v) for v in data.std])
    from .data.cifar import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD

    name = cfg.data.name.lower().replace("cifar-", "cifar")
    if name not in _DATA_SHAPES:
        raise ConfigError(f"build_model: pass the dataset to infer the input shape of {cfg.data.name!r}")
    shape = dict(_DATA_SHAPES[name])
    if name == "cifar10":
        shape.update(mean=list(CIFAR10_MEAN), std=list(CIFAR10_STD))
    elif name.startswith("cifar100"):
        shape.update(mean=list(CIFAR100_MEAN), std=list(CIFAR100_STD))
    return shape


def build_model(cfg: ExperimentConfig, data: ImageDataset | None = None) -> nn.Module:
    """The network of ``cfg`` for ``data``'s input shape, classes and statistics.

    ``data`` may be omitted for the built-in datasets (their shapes are known). The model
    carries its ``create_model`` arguments as ``model.spikeguard_spec`` (used by checkpoints).
    """
    shape = _data_shape(cfg, data)
    num_classes = cfg.model.num_classes or shape.pop("num_classes")
    shape.pop("num_classes", None)
    if data is not None and cfg.model.num_classes and cfg.model.num_classes < data.num_classes:
        raise ConfigError(f"model.num_classes = {cfg.model.num_classes} but the data has {data.num_classes} classes")
    spec = {"name": cfg.model.name, "num_classes": int(num_classes), "T": int(cfg.model.T),
            "neuron": cfg.neuron.kind, "neuron_kw": cfg.neuron.neuron_kw(), "kw": {**shape, **cfg.model.kw}}
    try:
        model = create_model(spec["name"], num_classes=spec["num_classes"], T=spec["T"], neuron=spec["neuron"],
                             neuron_kw=spec["neuron_kw"], **spec["kw"])
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model: cannot build {cfg.model.name!r}: {e}") from None
    model.spikeguard_spec = spec
    return model


def build_guard(cfg: ExperimentConfig) -> ThresholdGuard | None:
    """The TGO term of ``cfg`` (None when ``tgo.enabled`` is false)."""
    t = cfg.tgo
    if not t.enabled:
        return None
    ramp = t.ramp_fraction * cfg.optim.epochs if t.ramp_fraction else (t.ramp_epochs or cfg.optim.epochs)
    sched = LambdaSchedule(kind=t.schedule, lambda_max=t.lambda_max,
                           lambda_start=None if t.lambda_start < 0 else t.lambda_start,
                           ramp_epochs=ramp, dual_lr=t.dual_lr, dual_target=t.dual_target)
    norm = Normalisation(layer_reduce=t.layer_reduce, neuron_reduce=t.neuron_reduce, hinge=t.hinge,
                         potential=t.potential)
    return ThresholdGuard(delta=t.delta, v_threshold=cfg.neuron.v_threshold, schedule=sched, norm=norm)


def grad_ratio_log(cfg: ExperimentConfig, model: nn.Module, strategy: Any, guard: ThresholdGuard | None,
                   train_ds: ImageDataset, epochs_done: int, device: torch.device | str) -> dict:
    """The per-epoch ``grad_ratio`` log entries (``tgo.log_grad_ratio``; empty without TGO).

    Measured on the first ``batch_size`` training images (fixed, not augmented) at the lambda the
    schedule has reached; see :mod:`spikeguard.tgo.diagnostics` (no training number changes).
    """
    if guard is None or not cfg.tgo.log_grad_ratio:
        return {}
    x, y = next(batches(train_ds, cfg.optim.batch_size, device=device))
    return {k: v for k, v in constraint_gradient_ratio(model, strategy, guard, x, y, guard.schedule(epochs_done)).items()
            if k != "lam"}


def build_strategy(cfg: ExperimentConfig):
    """``create_strategy(cfg.strategy, **cfg.strategy_kw)`` with config-level errors."""
    try:
        return create_strategy(cfg.strategy, **cfg.strategy_kw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"strategy {cfg.strategy!r} with strategy_kw {cfg.strategy_kw}: {e}") from None


@torch.no_grad()
def test_accuracy(model: nn.Module, ds: ImageDataset, batch_size: int = 256, passes: int = 1,
                  device: torch.device | str = "cpu") -> float:
    """Clean accuracy on ``ds``; stochastic models are averaged over ``passes`` forward passes."""
    from .neurons import is_stochastic

    model.eval()
    passes = passes if is_stochastic(model) else 1
    correct = 0.0
    for x, y in batches(ds, batch_size, device=device):
        for _ in range(passes):
            correct += float((model(x).argmax(1) == y).sum()) / passes
    return correct / max(len(ds), 1)


def _rng_state(gen: torch.Generator) -> dict:
    st: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                          "torch": torch.get_rng_state(), "data": gen.get_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict, gen: torch.Generator) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    gen.set_state(st["data"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _read_log(path: Path, upto: int) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    break  # a torn last line of a crashed run
                if row.get("epoch", 0) <= upto:
                    rows.append(row)
    return rows


def _write_log(path: Path, rows: list[dict]) -> None:
    from .io import _json_safe

    atomic_write_text(path, "".join(json.dumps(_json_safe(r), allow_nan=False) + "\n" for r in rows))


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict) and not k.endswith("kw"):
            keys += _config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def run_experiment(cfg: ExperimentConfig | None, out_dir: str | Path, resume: bool = False, progress: bool = True,
                   on_epoch: Callable[[int, dict], None] | None = None, logger: Any = None,
                   handle_signals: bool = True) -> dict:
    """Train (or resume) the experiment ``cfg`` in ``out_dir``; return the results dict.

    Runs in one process, or in every process of a ``torch.distributed`` job set up by
    :func:`spikeguard.distributed.init_from_env` (see :mod:`spikeguard.distributed`: sharded
    global batches, DDP, rank 0 writes every file).

    Args:
        cfg: the experiment; may be None when resuming (the run's saved config is used).
        out_dir: run folder. A new run refuses a folder that already holds a run.
        resume: continue from the last checkpoint in ``out_dir`` (an epoch's end, or the batch
            where a SIGTERM/SIGINT stopped the run).
        progress: show a progress bar and one summary line per epoch.
        on_epoch: optional callback ``(completed_epochs, log_row)`` after each epoch's checkpoint.
        logger: a :class:`spikeguard.logging.RunLogger` (step logs, TensorBoard, verbosity).
        handle_signals: on SIGTERM/SIGINT finish the batch, checkpoint and raise
            :class:`spikeguard.signals.Interrupted` (exit code 128 + signal in the CLI).

    Returns:
        the content of ``results.json`` (on ranks other than 0: ``{"rank": r}``).
    """
    from .distributed import current as dist_context

    ctx = dist_context()
    # rank 0 checks the folder and reads a saved run; the other ranks get its answer (and
    # its errors), so they need no shared file system and never hang on a failed check
    cfg = ctx.run_on_main(lambda: _prepare_run(cfg, Path(out_dir), resume))
    return _run(cfg, Path(out_dir), resume, progress and ctx.is_main, on_epoch, logger, handle_signals, ctx)


def _prepare_run(cfg: ExperimentConfig | None, out: Path, resume: bool) -> ExperimentConfig:
    if resume:
        if not (out / CONFIG_FILE).is_file():
            raise CheckpointError(f"nothing to resume in {out}: no {CONFIG_FILE} (start a new run without --resume)")
        saved, _ = read_run_config(out)
        if cfg is None:
            cfg = saved
        else:
            diff = _config_diff(config_to_dict(cfg), config_to_dict(saved))
            if diff:
                raise ConfigError(f"--resume with a config that differs from the run's in {', '.join(diff[:6])}; "
                                  f"omit --config/--set to resume {out} as it was")
    elif cfg is None:
        raise ConfigError("run_experiment needs a config")
    elif (out / CONFIG_FILE).exists():
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    cfg.validate()
    ensure_dir(out)
    return cfg


def _run(cfg: ExperimentConfig, out: Path, resume: bool, progress: bool, on_epoch: Callable | None, logger: Any,
         handle_signals: bool, ctx: Any) -> dict:
    from .distributed import EpochLoader, ShardWeight, merge_epoch_stats, prepare_model, reduce_epoch_stats, seed_rank
    from .logging import NORMAL, QUIET, RunLogger, memory_stats
    from .signals import Interrupted, graceful_stop

    main = ctx.is_main
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if logger is None:
        logger = RunLogger(out, verbosity=NORMAL if progress else QUIET, enabled=main, device=device)
    elif getattr(logger, "device", 0) is None:
        logger.device = device  # report this run's CUDA memory

    gen = seed_everything(cfg.seed)
    train_ds, test_ds = build_datasets(cfg, progress=progress)
    model = build_model(cfg, train_ds).to(device)
    n_params = count_parameters(model)
    if main:
        write_run_config(out, cfg, model.spikeguard_spec, n_params)

    steps = math.ceil(len(train_ds) / cfg.optim.batch_size)
    epochs = cfg.optim.epochs
    opt, sched = make_sgd(model, lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay,
                          epochs=epochs, steps_per_epoch=steps)
    if cfg.optim.schedule == "constant":
        sched = None
    strategy = build_strategy(cfg)
    guard = build_guard(cfg)
    trainer = Trainer(model, opt, sched, strategy=strategy, guard=guard, delta_stat=cfg.tgo.delta,
                      grad_clip=cfg.optim.grad_clip or None)

    start, elapsed, start_batch, order_state, partial = 0, 0.0, 0, None, None
    state = None
    if resume:
        def _load() -> dict | None:
            if not (out / MODEL_FILE).exists():
                return None
            st = load_training_state(out)
            if st is not None:  # other ranks get rank 0's weights from DDP
                load_weights(model, out / MODEL_FILE, device=device)
            return st

        state = ctx.run_on_main(_load)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler") is not None:
            sched.load_state_dict(state["scheduler"])
        if guard is not None and state.get("guard") is not None:
            guard.load_state_dict(state["guard"])
        if state.get("strategy") is not None and hasattr(strategy, "load_state_dict"):
            strategy.load_state_dict(state["strategy"])
        ranks = [state["rng"]] + list(state.get("rng_ranks") or [])
        if len(ranks) == ctx.world_size:
            _set_rng_state(ranks[ctx.rank], gen)
        else:  # another number of processes: same data order, fresh per-rank noise streams
            _set_rng_state(state["rng"], gen)
            seed_rank(cfg.seed + int(state["epoch"]) + 1, ctx)
            if main:
                warnings.warn(f"resuming a {len(ranks)}-process run with {ctx.world_size} processes: the data "
                              "order is kept but the per-rank random streams are new", stacklevel=2)
        start, elapsed = int(state["epoch"]), float(state.get("elapsed", 0.0))
        start_batch, order_state, partial = int(state.get("batch", 0)), state.get("epoch_order"), state.get("partial")
    else:
        seed_rank(cfg.seed, ctx)  # rank 0 keeps the single-process stream
    shard = ShardWeight(ctx.world_size)
    train_model = prepare_model(model, guard, sync_bn=cfg.sync_bn, ctx=ctx, shard=shard)
    trainer.model = train_model
    log_path = out / LOG_FILE
    rows = _read_log(log_path, start) if resume and main else []
    if main:
        _write_log(log_path, rows)
        logger.resume(start * steps + start_batch)

    def checkpoint(epoch_done: int, batch: int = 0, loader: Any = None, stats: Any = None, seen: int = 0) -> None:
        own = _rng_state(gen)
        if loader is not None and not batch:  # stopped before the epoch's first batch: its order is not drawn yet
            own["data"] = loader.order_state
        rng = ctx.all_gather_object(own)  # every rank's streams, for an exact resume
        if not main:
            return
        ckpt_state = {"epoch": epoch_done, "elapsed": elapsed, "optimizer": opt.state_dict(),
                      "scheduler": sched.state_dict() if sched is not None else None,
                      "guard": guard.state_dict() if guard is not None else None,
                      "strategy": strategy.state_dict() if hasattr(strategy, "state_dict") else None,
                      "rng": rng[0]}
        if len(rng) > 1:
            ckpt_state["rng_ranks"] = rng[1:]
        if batch:
            ckpt_state.update(batch=batch, epoch_order=loader.order_state,
                              partial={"stats": stats.as_dict(), "seen": seen})
        save_checkpoint(out, model, cfg, ckpt_state)

    from tqdm.auto import tqdm

    augment = random_crop_flip if cfg.data.augment else None
    stop_ctx = graceful_stop(handle_signals)
    stop = stop_ctx.__enter__()
    try:
        for epoch in range(start, epochs):
            first = start_batch if epoch == start else 0
            loader = EpochLoader(train_ds, cfg.optim.batch_size, gen, augment, device, ctx, start=first,
                                 order_state=order_state if first else None,
                                 stop=lambda: ctx.any(stop.requested), weight=shard)
            lr = opt.param_groups[0]["lr"]
            stats = _train_epoch(trainer, loader, epoch, epochs, steps, first, progress, opt, logger, tqdm)
            stats = reduce_epoch_stats(stats, loader.local_samples, ctx)
            if first:
                stats = merge_epoch_stats(stats, loader.samples, partial)
            elapsed += stats.seconds - (float(partial["stats"].get("seconds", 0.0)) if first and partial else 0.0)
            if loader.stopped:
                done = loader.position
                if done or epoch > start:  # else the state on disk (if any) is this one
                    seen = loader.samples + (int(partial["seen"]) if first and partial else 0)
                    checkpoint(epoch, done, loader, stats, seen)
                    msg = f"checkpoint saved in {out}, continue with --resume"
                else:
                    msg = "nothing new to save"
                raise Interrupted(f"stopped by {stop.name} at epoch {epoch + 1}, batch {done}/{steps}; {msg}",
                                  stop.signum or 15)
            row = {**stats.as_dict(), "epoch": epoch + 1, "step": (epoch + 1) * steps, "lr": lr, "elapsed": elapsed,
                   **memory_stats(device)}
            if ctx.world_size == 1:  # the constraint's pull next to the task's on one fixed batch (changes nothing)
                row.update(grad_ratio_log(cfg, model, strategy, guard, train_ds, epoch + 1, device))
            if main and cfg.eval.test_every and (epoch + 1) % cfg.eval.test_every == 0 and epoch + 1 < epochs:
                row["test_accuracy"] = test_accuracy(model, test_ds, cfg.eval.batch_size, cfg.eval.passes, device)
            rows.append(row)
            if main:
                _write_log(log_path, rows)
                logger.scalars(row, (epoch + 1) * steps, prefix="epoch/")
            if progress:
                extra = f" test {row['test_accuracy']:.4f}" if "test_accuracy" in row else ""
                tqdm.write(f"epoch {epoch + 1}/{epochs}: loss {stats.loss:.4f} acc {stats.accuracy:.4f} "
                           f"lambda {stats.lam:.3f} near {stats.near_threshold:.4f} "
                           f"{stats.images_per_s:.0f} img/s {stats.seconds:.1f}s{extra}")
            last = epoch + 1 == epochs
            if last or (cfg.checkpoint_every and (epoch + 1) % cfg.checkpoint_every == 0):
                checkpoint(epoch + 1)
            if on_epoch is not None:
                on_epoch(epoch + 1, row)
        if stop.requested:  # the signal came after the last batch: the final checkpoint is on disk
            raise Interrupted(f"stopped by {stop.name} after training; continue with --resume to write the results",
                              stop.signum or 15)
    finally:
        stop_ctx.__exit__(None, None, None)
        logger.close()
    if not main:
        return {"rank": ctx.rank}
    acc = test_accuracy(model, test_ds, cfg.eval.batch_size, cfg.eval.passes, device)
    results: dict[str, Any] = {
        "test_accuracy": acc, "test_samples": len(test_ds), "train_samples": len(train_ds),
        "epochs": epochs, "train_seconds": elapsed, "seconds_per_epoch": elapsed / max(len(rows), 1),
        "param_count": n_params, "model": cfg.model.name, "dataset": cfg.data.name, "device": str(device),
        "final_epoch": rows[-1] if rows else None,
    }
    if cfg.eval.attacks:
        results["attacks"] = _run_attacks(model, test_ds, cfg, out, progress)
    atomic_write_json(out / RESULTS_FILE, results)
    if progress:
        tqdm.write(f"clean test accuracy {acc:.4f} on {len(test_ds)} images; run saved in {out}")
    return results


def _train_epoch(trainer: Trainer, loader: Any, epoch: int, epochs: int, steps: int, first: int, progress: bool,
                 opt: torch.optim.Optimizer, logger: Any, tqdm: Any) -> Any:
    """One epoch with a progress bar (loss, accuracy, lambda, near-threshold share) and step logs."""
    bar = tqdm(total=steps, initial=first, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", disable=not progress,
               leave=False, dynamic_ncols=True)
    run_sums: dict[str, float] = {}
    count = [0]

    def on_batch(m: dict[str, float]) -> None:
        count[0] += 1
        for k in ("loss", "accuracy", "lam", "near_threshold"):
            if not math.isnan(m.get(k, float("nan"))):
                run_sums[k] = run_sums.get(k, 0.0) + m[k]
        n = count[0]
        bar.set_postfix(loss=f"{run_sums.get('loss', 0) / n:.3f}", acc=f"{run_sums.get('accuracy', 0) / n:.3f}",
                        lam=f"{m.get('lam', 0.0):.3f}", near=f"{run_sums.get('near_threshold', 0) / n:.3f}",
                        refresh=False)
        bar.update(1)
        i = loader.position  # index of the batch just trained
        logger.step(epoch * steps + i + 1, epoch + (i + 1) / steps, m, loader.last_size, opt.param_groups[0]["lr"])

    try:
        return trainer.train_epoch(loader, epoch, steps, on_batch=on_batch, start=first)
    finally:
        bar.close()


def _run_attacks(model: nn.Module, test_ds: ImageDataset, cfg: ExperimentConfig, out: Path, progress: bool) -> dict:
    """Hand the configured attacks to ``spikeguard.evaluation.evaluate_config_attacks`` if it exists."""
    from . import evaluation

    hook = getattr(evaluation, "evaluate_config_attacks", None)
    if hook is None:
        msg = "spikeguard.evaluation provides no evaluate_config_attacks; run 'spikeguard evaluate' on the run folder"
        warnings.warn(msg, stacklevel=2)
        return {"skipped": msg}
    return hook(model, test_ds, cfg, out_dir=out, progress=progress)


__all__ = ["run_experiment", "build_model", "build_datasets", "build_guard", "build_strategy", "test_accuracy",
           "LOG_FILE", "RESULTS_FILE"]
