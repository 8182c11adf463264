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
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    create_from_spec,
    load_train_state,
    load_weights,
    read_run_config,
    save_train_state,
    write_run_config,
)
from ..config import ExperimentConfig, config_diff, config_to_dict
from ..data import ImageDataset, batches, dataset_info, load_dataset, random_crop_flip
from ..perf import compile_model, resolve_precision, to_channels_last
from ..errors import CheckpointError, ConfigError
from ..io import _json_safe, atomic_write_json, atomic_write_text, ensure_dir
from ..models import count_parameters
from ..tgo import LambdaSchedule, Normalisation, ThresholdGuard, constraint_gradient_ratio
from ..training import Trainer, TrainState, create_strategy, make_sgd
from ..utils import resolve_device, seed_everything
from ..data.event_sets import EventFrameDataset, event_data_shape, is_event_dataset
from ..distributed import DistributedTraining, current as dist_context
from ..evaluation import evaluate_config_attacks
from ..evaluation.basic import clean_accuracy
from ..logging import NORMAL, QUIET, RunLogger, memory_stats
from ..signals import Interrupted, graceful_stop

LOG_FILE = "log.jsonl"
RESULTS_FILE = "results.json"


def build_datasets(cfg: ExperimentConfig, progress: bool = False) -> tuple[ImageDataset, ImageDataset]:
    """The train and test splits named by ``cfg.data`` (subsets applied, cache used)."""
    d = cfg.data
    kw = dict(
        root=d.root or None,
        cache_dir=d.cache_dir or None,
        seed=cfg.seed,
        verify=d.verify_md5,
        progress=progress,
        **d.options,
    )
    train = load_dataset(d.name, "train", subset=d.subset, **kw)
    test = load_dataset(d.name, "test", subset=d.test_subset, **kw)
    if train.classes != test.classes:
        raise ConfigError(
            f"data: train and test splits have different classes ({len(train.classes)} vs {len(test.classes)})"
        )
    return train, test


def _data_shape(cfg: ExperimentConfig, data: ImageDataset | None) -> dict:
    """``in_channels``, ``image_size``, ``num_classes``, ``mean``, ``std`` of ``data``, or of the
    dataset ``cfg`` names (its :class:`~spikeguard.data.DatasetInfo`) when ``data`` is None; event
    data sets (frame sequences, 2 polarities per step) from their frame options."""
    if isinstance(data, EventFrameDataset):  # frame sequences: 2 polarities per step
        shape = event_data_shape(data.name, {**data.options})
        shape.update(num_classes=data.num_classes)
        return shape
    if data is None and is_event_dataset(cfg.data.name):
        return event_data_shape(cfg.data.name.lower(), cfg.data.options)
    if data is not None:
        c, h, w = data.image_shape
        if h != w:
            raise ConfigError(f"data: images must be square, got {h}x{w}")
        return dict(
            in_channels=c,
            image_size=h,
            num_classes=data.num_classes,
            mean=[float(v) for v in data.mean],
            std=[float(v) for v in data.std],
        )
    info = dataset_info(cfg.data.name)
    if info is None:
        raise ConfigError(f"build_model: pass the dataset to infer the input shape of {cfg.data.name!r}")
    return dict(info.model_kw(), num_classes=info.num_classes)


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
    spec: dict[str, Any] = {
        "name": cfg.model.name,
        "num_classes": int(num_classes),
        "T": int(cfg.model.T),
        "neuron": cfg.neuron.kind,
        "neuron_kw": cfg.neuron.neuron_kw(),
        "kw": {**shape, **cfg.model.kw},
    }
    try:
        model = create_from_spec(spec)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model: cannot build {cfg.model.name!r}: {e}") from None
    return model


def build_schedule(cfg: ExperimentConfig) -> LambdaSchedule | None:
    """The TGO lambda schedule of ``cfg`` (None when ``tgo.enabled`` is false)."""
    t = cfg.tgo
    if not t.enabled:
        return None
    ramp = t.ramp_fraction * cfg.optim.epochs if t.ramp_fraction else (t.ramp_epochs or cfg.optim.epochs)
    return LambdaSchedule(
        kind=t.schedule,
        lambda_max=t.lambda_max,
        lambda_start=None if t.lambda_start < 0 else t.lambda_start,
        ramp_epochs=ramp,
        dual_lr=t.dual_lr,
        dual_target=t.dual_target,
    )


def build_guard(cfg: ExperimentConfig, schedule: Any = None) -> ThresholdGuard | None:
    """The TGO term of ``cfg`` (None when ``tgo.enabled`` is false), with ``schedule`` or
    :func:`build_schedule`'s."""
    t = cfg.tgo
    if not t.enabled:
        return None
    norm = Normalisation(
        layer_reduce=t.layer_reduce, neuron_reduce=t.neuron_reduce, hinge=t.hinge, potential=t.potential
    )
    return ThresholdGuard(
        delta=t.delta, v_threshold=cfg.neuron.v_threshold, schedule=schedule or build_schedule(cfg), norm=norm
    )


def grad_ratio_log(
    cfg: ExperimentConfig,
    model: nn.Module,
    strategy: Any,
    guard: ThresholdGuard | None,
    train_ds: ImageDataset,
    epochs_done: int,
    device: torch.device | str,
) -> dict:
    """The per-epoch ``grad_ratio`` log entries (``tgo.log_grad_ratio``; empty without TGO).

    Measured on the first ``batch_size`` training images (fixed, not augmented) at the lambda the
    schedule has reached; see :mod:`spikeguard.tgo.diagnostics` (no training number changes).
    """
    if guard is None or not cfg.tgo.log_grad_ratio:
        return {}
    x, y = next(batches(train_ds, cfg.optim.batch_size, device=device))
    return {
        k: v
        for k, v in constraint_gradient_ratio(model, strategy, guard, x, y, guard.schedule(epochs_done)).items()
        if k != "lam"
    }


def build_strategy(cfg: ExperimentConfig):
    """``create_strategy(cfg.strategy, **cfg.strategy_kw)`` with config-level errors."""
    try:
        return create_strategy(cfg.strategy, **cfg.strategy_kw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"strategy {cfg.strategy!r} with strategy_kw {cfg.strategy_kw}: {e}") from None


@torch.no_grad()
def test_accuracy(
    model: nn.Module, ds: ImageDataset, batch_size: int = 256, passes: int = 1, device: torch.device | str = "cpu"
) -> float:
    """Clean accuracy on ``ds`` (:func:`spikeguard.evaluation.clean_accuracy`); stochastic models are
    averaged over ``passes`` forward passes."""
    model.eval()
    if len(ds) == 0:
        return 0.0
    return clean_accuracy(model, ds.float_images().to(device), ds.labels.to(device), passes, batch_size)


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
    atomic_write_text(path, "".join(json.dumps(_json_safe(r), allow_nan=False) + "\n" for r in rows))


def run_experiment(
    cfg: ExperimentConfig | None,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[int, dict], None] | None = None,
    logger: Any = None,
    handle_signals: bool = True,
) -> dict:
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
            diff = config_diff(config_to_dict(cfg), config_to_dict(saved))
            if diff:
                raise ConfigError(
                    f"--resume with a config that differs from the run's in {', '.join(diff[:6])}; "
                    f"omit --config/--set to resume {out} as it was"
                )
    elif cfg is None:
        raise ConfigError("run_experiment needs a config")
    elif (out / CONFIG_FILE).exists():
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    cfg.validate()
    ensure_dir(out)
    return cfg


def _run(
    cfg: ExperimentConfig,
    out: Path,
    resume: bool,
    progress: bool,
    on_epoch: Callable | None,
    logger: Any,
    handle_signals: bool,
    ctx: Any,
) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if logger is None:
        logger = RunLogger(out, verbosity=NORMAL if progress else QUIET, enabled=ctx.is_main, device=device)
    elif getattr(logger, "device", 0) is None:
        logger.device = device  # report this run's CUDA memory

    gen = seed_everything(cfg.seed)
    train_ds, test_ds = build_datasets(cfg, progress=progress)
    model, n_params = _model_on(cfg, train_ds, device, out, ctx.is_main)
    perf = cfg.perf  # speed options (spikeguard.perf); all off by default
    steps, epochs = math.ceil(len(train_ds) / cfg.optim.batch_size), cfg.optim.epochs
    opt, sched = _optimizer(cfg, model, epochs, steps)
    strategy = build_strategy(cfg)
    dist = DistributedTraining(ctx, sync_bn=cfg.sync_bn)
    if perf.gpu_data:
        train_ds = train_ds.to(device)  # the same batches, gathered and augmented on the device
    if perf.compile != "off":
        compile_model(model, mode=None if perf.compile == "default" else perf.compile)
    state = _start_state(cfg, ctx, dist, model, out, device, gen, resume)
    train_model, schedule = dist.prepare(model, build_schedule(cfg))
    trainer = _trainer(cfg, train_model, opt, sched, strategy, schedule)
    trainer.load_state_dict(state)
    report = _EpochReport(cfg, out, ctx.is_main, progress, logger, steps, device, model, opt, test_ds, on_epoch)
    report.start(state, resume)
    save = _checkpoint_saver(cfg, out, ctx, dist, gen, trainer, model)
    report.save = save
    if ctx.world_size == 1:  # the constraint's pull next to the task's on one fixed batch (changes nothing)
        report.extra = lambda done: grad_ratio_log(cfg, model, strategy, trainer.guard, train_ds, done, device)
    augment = random_crop_flip if cfg.data.augment else None
    start = state.epoch
    with graceful_stop(handle_signals) as stop:
        try:
            loader = dist.loader(train_ds, cfg.optim.batch_size, gen, augment, device, stop=lambda: stop.requested)
            state = _fit(trainer, loader, state, epochs, steps, dist, report)
            if state.stopped:
                msg = "nothing new to save"
                if state.batch or state.epoch > start:
                    save(state)
                    msg = f"checkpoint saved in {out}, continue with --resume"
                raise Interrupted(
                    f"stopped by {stop.name} at epoch {state.epoch + 1}, batch {state.batch}/{steps}; {msg}",
                    stop.signum or 15,
                )
            if stop.requested:  # the signal came after the last batch: the final checkpoint is on disk
                raise Interrupted(
                    f"stopped by {stop.name} after training; continue with --resume to write the results",
                    stop.signum or 15,
                )
        finally:
            logger.close()
    if not ctx.is_main:
        return {"rank": ctx.rank}
    return _finish(cfg, out, model, train_ds, test_ds, state, report.rows, n_params, device, progress)


def _model_on(
    cfg: ExperimentConfig, train_ds: ImageDataset, device: torch.device, out: Path, is_main: bool
) -> tuple[nn.Module, int]:
    """The run's model on ``device`` and its parameter count (the main process records its config)."""
    model = build_model(cfg, train_ds).to(device)
    if cfg.perf.channels_last:
        to_channels_last(model)
    n_params = count_parameters(model)
    if is_main:
        write_run_config(out, cfg, model.spikeguard_spec, n_params)  # type: ignore[arg-type]  # set by build_model
    return model, n_params


def _optimizer(cfg: ExperimentConfig, model: nn.Module, epochs: int, steps: int) -> tuple[Any, Any]:
    """SGD and its learning-rate schedule, from ``cfg.optim``."""
    return make_sgd(
        model,
        lr=cfg.optim.lr,
        momentum=cfg.optim.momentum,
        weight_decay=cfg.optim.weight_decay,
        epochs=epochs,
        steps_per_epoch=steps,
        fused=cfg.perf.fused_optimizer,
    )


def _start_state(
    cfg: ExperimentConfig,
    ctx: Any,
    dist: Any,
    model: nn.Module,
    out: Path,
    device: torch.device,
    gen: Any,
    resume: bool,
) -> TrainState:
    """The state training starts from: the checkpoint's (resume, its random streams restored) or a fresh one."""
    state = ctx.run_on_main(lambda: _load_state(model, out, device)) if resume else None
    if state is not None:
        dist.restore_rng(state, gen, cfg.seed)
    else:
        state = TrainState()
        dist.seed(cfg.seed)  # rank 0 keeps the single-process stream
    return state


def _trainer(
    cfg: ExperimentConfig, train_model: nn.Module, opt: Any, sched: Any, strategy: Any, schedule: Any
) -> Trainer:
    """The trainer of ``train_model``: the strategy, the threshold guard, gradient clipping and precision of ``cfg``."""
    return Trainer(
        train_model,
        opt,
        None if cfg.optim.schedule == "constant" else sched,
        strategy=strategy,
        guard=build_guard(cfg, schedule),
        delta_stat=cfg.tgo.delta,
        grad_clip=cfg.optim.grad_clip or None,
        precision=cfg.perf.amp,
    )


def _checkpoint_saver(
    cfg: ExperimentConfig, out: Path, ctx: Any, dist: Any, gen: Any, trainer: Trainer, model: nn.Module
) -> Callable[[TrainState], None]:
    """``save(state)``: gathers every rank's random streams; the main process writes the checkpoint."""

    def save(st: TrainState) -> None:
        rng = dist.gather_rng(gen, st.epoch_order if not st.batch else None)
        if ctx.is_main:
            st.rng, st.rng_ranks = rng[0], rng[1:]
            for key, value in trainer.state_dict().items():  # optimizer, scheduler, guard
                setattr(st, key, value)
            save_train_state(out, model, cfg, st)

    return save


def _fit(
    trainer: Trainer, loader: Any, state: TrainState, epochs: int, steps: int, dist: Any, report: _EpochReport
) -> TrainState:
    """Train from ``state`` to the last epoch (or a stop request), reporting every batch and epoch."""
    return trainer.fit(
        loader,
        state,
        epochs,
        steps,
        reduce=dist.reduce,
        on_batch=report.batch,
        on_epoch=report.epoch,
        on_epoch_end=report.close_bar,
    )


def _load_state(model: nn.Module, out: Path, device: torch.device) -> TrainState | None:
    """The run's saved :class:`TrainState`, its weights loaded into ``model`` (None: nothing saved)."""
    if not (out / MODEL_FILE).exists():
        return None
    st = load_train_state(out)
    if st is not None:  # other ranks get rank 0's weights from DDP
        load_weights(model, out / MODEL_FILE, device=device)
    return st


class _EpochReport:
    """The run's outputs during training: progress bar, step logs, ``log.jsonl``, per-epoch
    lines, test accuracy every ``eval.test_every`` epochs, checkpoints, the ``on_epoch`` callback."""

    bar: Any  # the tqdm bar while one is shown
    rows: list[dict]

    def __init__(
        self,
        cfg: ExperimentConfig,
        out: Path,
        main: bool,
        progress: bool,
        logger: Any,
        steps: int,
        device: torch.device,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        test_ds: ImageDataset,
        on_epoch: Callable | None,
    ) -> None:
        self.cfg, self.out, self.main, self.progress, self.logger = cfg, out, main, progress, logger
        self.steps, self.device, self.model, self.optimizer = steps, device, model, optimizer
        self.test_ds, self.on_epoch = test_ds, on_epoch
        self.tqdm, self.bar, self.rows = tqdm, None, []
        self.run_sums: dict[str, float] = {}
        self.count = 0
        self.save: Callable[[TrainState], None] = lambda st: None
        self.extra: Callable[[int], dict] = lambda done: {}  # more log entries after epoch ``done``

    def start(self, state: TrainState, resume: bool) -> None:
        self.rows = _read_log(self.out / LOG_FILE, state.epoch) if resume and self.main else []
        if self.main:
            _write_log(self.out / LOG_FILE, self.rows)
            self.logger.resume(state.epoch * self.steps + state.batch)

    def batch(self, epoch: int, loader: Any, m: dict[str, float]) -> None:
        if self.bar is None:
            epochs = self.cfg.optim.epochs
            self.bar = self.tqdm(
                total=self.steps,
                initial=loader.position,
                desc=f"epoch {epoch + 1}/{epochs}",
                unit="batch",
                disable=not self.progress,
                leave=False,
                dynamic_ncols=True,
            )
            self.run_sums, self.count = {}, 0
        self.count += 1
        for k in ("loss", "accuracy", "lam", "near_threshold"):
            if not math.isnan(m.get(k, float("nan"))):
                self.run_sums[k] = self.run_sums.get(k, 0.0) + m[k]
        n, sums = self.count, self.run_sums
        self.bar.set_postfix(
            loss=f"{sums.get('loss', 0) / n:.3f}",
            acc=f"{sums.get('accuracy', 0) / n:.3f}",
            lam=f"{m.get('lam', 0.0):.3f}",
            near=f"{sums.get('near_threshold', 0) / n:.3f}",
            refresh=False,
        )
        self.bar.update(1)
        i = loader.position  # index of the batch just trained
        self.logger.step(
            epoch * self.steps + i + 1,
            epoch + (i + 1) / self.steps,
            m,
            loader.last_size,
            self.optimizer.param_groups[0]["lr"],
        )

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def epoch(self, state: TrainState, stats: Any, lr: float) -> None:
        cfg, done, epochs = self.cfg, state.epoch, self.cfg.optim.epochs
        row = {
            **stats.as_dict(),
            "epoch": done,
            "step": done * self.steps,
            "lr": lr,
            "elapsed": state.elapsed,
            **memory_stats(self.device),
            **self.extra(done),
        }
        if self.main and cfg.eval.test_every and done % cfg.eval.test_every == 0 and done < epochs:
            row["test_accuracy"] = test_accuracy(
                self.model, self.test_ds, cfg.eval.batch_size, cfg.eval.passes, self.device
            )
        self.rows.append(row)
        if self.main:
            _write_log(self.out / LOG_FILE, self.rows)
            self.logger.scalars(row, done * self.steps, prefix="epoch/")
        if self.progress:
            extra = f" test {row['test_accuracy']:.4f}" if "test_accuracy" in row else ""
            self.tqdm.write(
                f"epoch {done}/{epochs}: loss {stats.loss:.4f} acc {stats.accuracy:.4f} "
                f"lambda {stats.lam:.3f} near {stats.near_threshold:.4f} "
                f"{stats.images_per_s:.0f} img/s {stats.seconds:.1f}s{extra}"
            )
        if done == epochs or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0):
            self.save(state)
        if self.on_epoch is not None:
            self.on_epoch(done, row)


def _finish(
    cfg: ExperimentConfig,
    out: Path,
    model: nn.Module,
    train_ds: ImageDataset,
    test_ds: ImageDataset,
    state: TrainState,
    rows: list[dict],
    n_params: int,
    device: torch.device,
    progress: bool,
) -> dict:
    """Clean test accuracy (and configured attacks) of the trained model into ``results.json``."""
    acc = test_accuracy(model, test_ds, cfg.eval.batch_size, cfg.eval.passes, device)
    results: dict[str, Any] = {
        "test_accuracy": acc,
        "test_samples": len(test_ds),
        "train_samples": len(train_ds),
        "epochs": cfg.optim.epochs,
        "train_seconds": state.elapsed,
        "seconds_per_epoch": state.elapsed / max(len(rows), 1),
        "param_count": n_params,
        "model": cfg.model.name,
        "dataset": cfg.data.name,
        "device": str(device),
        "final_epoch": rows[-1] if rows else None,
        "train_precision": resolve_precision(cfg.perf.amp),  # evaluation below runs in float32
    }
    if cfg.eval.attacks:
        results["attacks"] = _run_attacks(model, test_ds, cfg, out, progress)
    atomic_write_json(out / RESULTS_FILE, results)
    if progress:
        tqdm.write(f"clean test accuracy {acc:.4f} on {len(test_ds)} images; run saved in {out}")
    return results


def _run_attacks(model: nn.Module, test_ds: ImageDataset, cfg: ExperimentConfig, out: Path, progress: bool) -> dict:
    """The configured end-of-training attacks (:func:`spikeguard.evaluation.evaluate_config_attacks`)."""
    return evaluate_config_attacks(model, test_ds, cfg, out_dir=out, progress=progress)


__all__ = [
    "run_experiment",
    "build_model",
    "build_datasets",
    "build_schedule",
    "build_guard",
    "build_strategy",
    "test_accuracy",
    "LOG_FILE",
    "RESULTS_FILE",
]
