"""Experiment configuration: one dataclass tree, TOML presets, strict parsing.

A config file is TOML whose tables mirror :class:`ExperimentConfig`::

    seed = 0
    strategy = "bptt"
    [data]
    name = "cifar100"
    [model]
    name = "vgg11"
    T = 8
    [tgo]
    enabled = true
    lambda_max = 0.4

Every key not given keeps its default. Unknown keys, wrong types and out-of-range values
raise :class:`~spikeguard.errors.ConfigError` naming the key (``tgo.lamda_max``), so a typo
never silently falls back to a default. ``--set key=value`` overrides use the same dotted
names; the value is parsed as a TOML literal (``0.3``, ``true``, ``"pgd"``, ``[1, 2]``)
and falls back to a plain string.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError
from .data.catalog import DATASET_LOADERS
from .models import list_models
from .neurons import list_neurons, neuron_class
from .neurons.lif import NOISY_GRADS
from .neurons.surrogate import surrogate_aliases, surrogate_names
from .tgo import HINGES, LAYER_REDUCTIONS, NEURON_REDUCTIONS, POTENTIALS, SCHEDULE_KINDS
from .training.strategies import list_strategies
from .utils import parse_eps

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FORMAT_VERSION = 1
"""Version of the config (and checkpoint) layout; bumped on incompatible changes."""


@dataclass
class DataConfig:
    """Dataset and input pipeline.

    Attributes:
        name: ``cifar10``, ``cifar100``, ``cifar100-coarse``, ``digits`` or ``folder``.
        root: dataset root ("" = ``$SPIKEGUARD_DATA`` then ``./data``).
        cache_dir: decoded-array cache ("" = ``$SPIKEGUARD_CACHE`` or ``~/.cache/spikeguard``).
        subset: class-balanced training subset size (0 = the whole split).
        test_subset: class-balanced test subset size (0 = the whole split).
        augment: random crop (4-pixel zero padding) + horizontal flip on training batches.
        verify_md5: check the pickle release against the official md5 sums.
        options: options of the event data sets (``cifar10-dvs``, ``nmnist``, ``dvs-gesture``,
            ``synthetic-dvs``): ``frames``, ``size``, ``split_by``, ``norm``, ... (see
            :mod:`spikeguard.data.event_sets`).
    """

    name: str = "cifar10"
    root: str = ""
    cache_dir: str = ""
    subset: int = 0
    test_subset: int = 0
    augment: bool = True
    verify_md5: bool = True
    options: dict = field(default_factory=dict)


@dataclass
class ModelConfig:
    """Network.

    Attributes:
        name: registered model (``vgg11``, ``wrn16_4``, ``vgg_small``, ``small_conv``, ``mlp``).
        T: time steps (forced to 1 for ``neuron.kind = "relu"``, the ANN twin).
        num_classes: 0 = taken from the dataset.
        kw: extra architecture arguments (e.g. ``{classifier = "mlp"}``, ``{width = 0.5}``).
    """

    name: str = "vgg11"
    T: int = 8
    num_classes: int = 0
    kw: dict = field(default_factory=dict)


@dataclass
class NeuronConfig:
    """Spiking neuron of every layer (arXiv 2602.20548, sections 3.1 and 4.2.2).

    Attributes:
        kind: a registered neuron (``spikeguard list neurons``): ``lif``, ``noisy_lif``, ``relu`` (ANN
            twin), ``dlif``, ``stog_lif``, ...
        decay: membrane decay beta (paper: 0.5).
        v_threshold: firing threshold (paper: 1.0).
        surrogate: surrogate gradient (``triangle``, ``sigmoid``, ``atan``, ``rectangle``, ``ste``).
        width: surrogate width (peak derivative ``1 / width``).
        sigma: Noisy-LIF noise std (paper: variance 0.4).
        noisy_grad: Noisy-LIF backward, ``surrogate`` or ``expected``.
        detach_reset: no gradient through the reset.
        kw: extra neuron arguments passed as-is (for neuron kinds registered by other modules).
    """

    kind: str = "lif"
    decay: float = 0.5
    v_threshold: float = 1.0
    surrogate: str = "triangle"
    width: float = 1.0
    sigma: float = math.sqrt(0.4)
    noisy_grad: str = "surrogate"
    detach_reset: bool = False
    kw: dict = field(default_factory=dict)

    def neuron_kw(self) -> dict:
        """Keyword arguments for :func:`spikeguard.models.create_model`'s ``neuron_kw``: the
        fields the registered neuron class lists in its ``config_fields``, then :attr:`kw`."""
        kw = {name: getattr(self, name) for name in neuron_class(self.kind).config_fields}  # type: ignore[attr-defined]  # registered neuron classes define config_fields
        kw.update(self.kw)
        return kw


@dataclass
class TGOConfig:
    """Threshold Guarding Optimization (arXiv 2602.20548, section 4.2.1).

    Attributes:
        enabled: add ``lambda * L_mc`` to the loss.
        delta: margin around V_th (also the margin of the logged near-threshold share).
        lambda_max: final weight (paper sweep: 0.2, 0.3, 0.4, 0.6).
        schedule: ``linear``, ``cosine``, ``exp``, ``constant``, ``dual`` or ``share`` (lambda steered
            toward a near-threshold share of the training batches, ``dual_target``).
        ramp_epochs: epochs of the ramp (0 = all training epochs).
        ramp_fraction: a short ramp given as a share of training (0.1 = lambda_max is reached after
            10% of the epochs); 0 = use ``ramp_epochs``. Follows the epoch count when a study's
            ``--budget`` chooses it.
        lambda_start: weight at the start (-1 = the schedule's default).
        dual_lr, dual_target: step and target of the feedback schedules (``dual``: a constraint
            value; ``share``: a near-threshold share in (0, 1)).
        layer_reduce: ``mean`` (default) or ``sum`` of the layer penalties.
        neuron_reduce: ``mean`` (default) over time steps, neurons and samples, or ``sum`` over
            time steps and neurons (mean over the batch).
        hinge: ``squared`` (default) or ``plain`` ``relu(delta - |U - V_th|)``.
        potential: ``pre`` (default: pre-spike U) or ``post`` (post-reset V).
        log_grad_ratio: log ``||lambda grad L_mc|| / ||grad L_task||`` once per epoch, measured on
            the first training batch (``grad_ratio`` in log.jsonl; changes no training number).
    """

    enabled: bool = False
    delta: float = 0.5
    lambda_max: float = 0.4
    schedule: str = "linear"
    ramp_epochs: float = 0.0
    lambda_start: float = -1.0
    dual_lr: float = 0.1
    dual_target: float = 0.0
    ramp_fraction: float = 0.0
    layer_reduce: str = "mean"
    neuron_reduce: str = "mean"
    hinge: str = "squared"
    potential: str = "pre"
    log_grad_ratio: bool = True


@dataclass
class OptimConfig:
    """SGD and its schedule (arXiv 2602.20548, section 5.1).

    Attributes:
        lr, momentum, weight_decay: SGD settings (paper: 0.1; 0.9 and 5e-4 assumed).
        epochs: training epochs (paper: 300).
        batch_size: training batch size (assumed 128).
        schedule: ``cosine`` (annealed per batch to 0 over all epochs) or ``constant``.
        grad_clip: max gradient norm (0 = off).
    """

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 300
    batch_size: int = 128
    schedule: str = "cosine"
    grad_clip: float = 0.0


@dataclass
class EvalConfig:
    """What is measured at the end of training.

    Attributes:
        attacks: attack names run by ``spikeguard.evaluation`` after training (e.g. ``["fgsm", "pgd10"]``).
        eps: L-inf budget on the [0, 1] pixel scale (a string like ``"8/255"`` is accepted).
        batch_size: evaluation batch size.
        passes: stochastic forward passes per test image for Noisy-LIF models.
        test_every: also measure clean test accuracy every N epochs (0 = only at the end).
    """

    attacks: list[str] = field(default_factory=list)
    eps: float = 8 / 255
    batch_size: int = 256
    passes: int = 1
    test_every: int = 0


@dataclass
class PerfConfig:
    """Speed options (docs/performance.md); none changes the defaults' numbers when off.

    Attributes:
        amp: training precision, ``off`` (float32) or ``bf16`` (autocast; evaluation stays
            float32 and records its precision).
        channels_last: NHWC weights and activations (faster convolutions on GPUs).
        fused_optimizer: torch's fused SGD kernel where the device supports it.
        compile: ``torch.compile`` the model's forward (``off``, ``default``, ``max-autotune``,
            ``reduce-overhead``).
        gpu_data: keep the training set on the training device (batches gathered and
            augmented there; same batches as on the CPU).
    """

    amp: str = "off"
    channels_last: bool = False
    fused_optimizer: bool = False
    compile: str = "off"
    gpu_data: bool = False


@dataclass
class ExperimentConfig:
    """Everything that defines a training run (see the module docstring for the TOML form).

    Attributes:
        name: free-form run name.
        seed: seed of weights, data order, augmentation and noise.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``...
        threads: torch CPU threads (0 = torch's default).
        strategy: registered training strategy (``bptt``, ``tet``, ...).
        strategy_kw: keyword arguments of ``spikeguard.training.create_strategy(strategy, **kw)``.
        checkpoint_every: write a checkpoint every N epochs (0 = only at the end).
        sync_bn: in a multi-process run, BatchNorm uses the statistics of the global batch
            (``spikeguard.distributed.SyncBatchNorm``); off: each process uses its own shard's.
        format_version: layout version of this config.
    """

    name: str = ""
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    strategy: str = "bptt"
    strategy_kw: dict = field(default_factory=dict)
    checkpoint_every: int = 10
    sync_bn: bool = False
    format_version: int = FORMAT_VERSION
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    neuron: NeuronConfig = field(default_factory=NeuronConfig)
    tgo: TGOConfig = field(default_factory=TGOConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    perf: PerfConfig = field(default_factory=PerfConfig)

    def validate(self) -> ExperimentConfig:
        """Check ranges and names; raises :class:`ConfigError` naming the key. Returns self."""
        validate_config(self)
        return self


# ---------------------------------------------------------------------------------------
# dict <-> dataclass


def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict (JSON/TOML-friendly) of a config dataclass."""
    return dataclasses.asdict(cfg)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and key.endswith("eps"):
            try:
                return parse_eps(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict or origin is dict:
        if isinstance(value, dict):
            for k in value:
                if not isinstance(k, str):
                    raise ConfigError(f"{key}: keys must be strings, got {k!r}")
            return dict(value)
    elif origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if isinstance(value, (list, tuple)):
            if item_tp is Any:
                return list(value)
            return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, str) and item_tp is str:  # "fgsm,pgd10" from the command line
            return [v.strip() for v in value.split(",") if v.strip()]
    else:  # pragma: no cover - every field uses one of the types above
        return value
    raise ConfigError(f"{key} must be {_type_name(tp)}, got {type(value).__name__} {value!r}")


def _from_dict(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a table/dict, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in fields:
            close = difflib.get_close_matches(str(k), list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f"; valid keys: {', '.join(fields)}"
            raise ConfigError(f"unknown config key {key!r}{hint}")
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            kwargs[k] = _from_dict(tp, v, f"{key}.")  # type: ignore[arg-type]  # a field annotated with a dataclass type
        else:
            kwargs[k] = _coerce(v, tp, key)
    return cls(**kwargs)


def config_from_dict(data: dict, validate: bool = True) -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from a nested dict; strict about keys and types."""
    cfg = _from_dict(ExperimentConfig, data, "")
    if cfg.format_version > FORMAT_VERSION or cfg.format_version < 1:
        raise ConfigError(
            f"format_version {cfg.format_version} is not supported (this spikeguard reads "
            f"1..{FORMAT_VERSION}); upgrade spikeguard"
        )
    if validate:
        validate_config(cfg)
    return cfg


# ---------------------------------------------------------------------------------------
# overrides and files


def parse_value(text: str) -> Any:
    """A ``--set`` value as a TOML literal (``0.3``, ``true``, ``[1, 2]``, ``"x"``), else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``key.sub=value`` strings to a nested dict (in place; returns it)."""
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} must look like key=value (e.g. tgo.lambda_max=0.3)")
        key, text = ov.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if not key or any(not p for p in parts):
            raise ConfigError(f"override {ov!r} has an empty key")
        node = data
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {key!r}: {p!r} is not a table")
            node = nxt
        node[parts[-1]] = parse_value(text.strip())
    return data


def read_toml(path: str | os.PathLike) -> dict:
    """Parse a TOML file; one-line errors for missing files and syntax errors."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config path {p} is a folder, not a TOML file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p} is not a UTF-8 text file") from None


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a TOML preset (or start from defaults when ``path`` is None) and apply overrides.

    Example::

        cfg = load_config("configs/paper/cifar100-vgg11-bptt-tgo.toml", ["tgo.lambda_max=0.3"])
    """
    data = read_toml(path) if path is not None else {}
    return config_from_dict(apply_overrides(data, overrides))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise ConfigError(f"cannot write {type(v).__name__} to TOML")


def config_to_toml(cfg: ExperimentConfig) -> str:
    """The config as TOML text (round-trips through :func:`load_config`)."""
    d = config_to_dict(cfg)
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict) or k.endswith("_kw")]
    for k, v in d.items():
        if isinstance(v, dict) and not k.endswith("_kw"):
            lines += ["", f"[{k}]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# validation


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key} {msg}")


def config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts (``*kw`` tables compared whole)."""
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict) and not k.endswith("kw"):
            keys += config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def validate_config(cfg: ExperimentConfig) -> None:
    """Range and name checks; :class:`ConfigError` naming the first offending key."""
    _validate_data_model(cfg.data, cfg.model)
    _validate_neuron(cfg.neuron)
    _validate_perf(cfg.perf)
    _validate_tgo(cfg.tgo, cfg.neuron)
    _validate_optim_eval(cfg.optim, cfg.eval)
    _validate_run(cfg)


def _validate_data_model(d: DataConfig, m: ModelConfig) -> None:
    """The dataset, its subsets and the model's name, time steps and classes."""
    _check(
        d.name.lower() in DATASET_LOADERS,
        "data.name",
        f"must be one of {', '.join(DATASET_LOADERS.names())}, got {d.name!r}",
    )
    _check(d.subset >= 0, "data.subset", f"must be >= 0, got {d.subset}")
    _check(d.test_subset >= 0, "data.test_subset", f"must be >= 0, got {d.test_subset}")
    _check(m.name in list_models(), "model.name", f"must be one of {', '.join(list_models())}, got {m.name!r}")
    _check(m.T >= 1, "model.T", f"must be >= 1, got {m.T}")
    _check(m.num_classes >= 0, "model.num_classes", f"must be >= 0 (0 = from the data), got {m.num_classes}")


def _validate_neuron(n: NeuronConfig) -> None:
    """The neuron kind, its dynamics, surrogate gradient and noise."""
    _check(n.kind in list_neurons(), "neuron.kind", f"must be one of {', '.join(list_neurons())}, got {n.kind!r}")
    _check(0.0 <= n.decay <= 1.0, "neuron.decay", f"must be in [0, 1], got {n.decay}")
    _check(
        math.isfinite(n.v_threshold) and n.v_threshold > 0, "neuron.v_threshold", f"must be > 0, got {n.v_threshold}"
    )
    _check(
        n.surrogate in surrogate_names() or n.surrogate in surrogate_aliases(),
        "neuron.surrogate",
        f"must be one of {', '.join(surrogate_names())}, got {n.surrogate!r}",
    )
    _check(math.isfinite(n.width) and n.width > 0, "neuron.width", f"must be > 0, got {n.width}")
    _check(math.isfinite(n.sigma) and n.sigma >= 0, "neuron.sigma", f"must be >= 0, got {n.sigma}")
    _check(
        n.noisy_grad in NOISY_GRADS,
        "neuron.noisy_grad",
        f"must be one of {', '.join(NOISY_GRADS)}, got {n.noisy_grad!r}",
    )


def _validate_perf(perf: PerfConfig) -> None:
    """The speed options: mixed precision and compilation mode."""
    _check(
        perf.amp.lower() in ("off", "float32", "fp32", "bf16", "bfloat16"),
        "perf.amp",
        f"must be 'off' or 'bf16', got {perf.amp!r}",
    )
    _check(
        perf.compile in ("off", "default", "max-autotune", "reduce-overhead", "max-autotune-no-cudagraphs"),
        "perf.compile",
        f"must be off, default, max-autotune or reduce-overhead, got {perf.compile!r}",
    )


def _validate_tgo(t: TGOConfig, n: NeuronConfig) -> None:
    """The threshold-guarded objective: band, lambda schedule, reductions, and a spiking neuron to guard."""
    _check(math.isfinite(t.delta) and t.delta > 0, "tgo.delta", f"must be > 0, got {t.delta}")
    _check(math.isfinite(t.lambda_max) and t.lambda_max >= 0, "tgo.lambda_max", f"must be >= 0, got {t.lambda_max}")
    _check(
        t.schedule in SCHEDULE_KINDS,
        "tgo.schedule",
        f"must be one of {', '.join(SCHEDULE_KINDS.names())}, got {t.schedule!r}",
    )
    _check(t.ramp_epochs >= 0, "tgo.ramp_epochs", f"must be >= 0 (0 = all epochs), got {t.ramp_epochs}")
    _check(
        t.lambda_start == -1.0 or 0 <= t.lambda_start <= t.lambda_max,
        "tgo.lambda_start",
        f"must be -1 (default) or in [0, tgo.lambda_max], got {t.lambda_start}",
    )
    _check(t.dual_lr >= 0, "tgo.dual_lr", f"must be >= 0, got {t.dual_lr}")
    _check(
        t.schedule != "share" or 0 < t.dual_target < 1,
        "tgo.dual_target",
        f"must be a share in (0, 1) with tgo.schedule = 'share', got {t.dual_target}",
    )
    _check(
        0 <= t.ramp_fraction <= 1,
        "tgo.ramp_fraction",
        f"must be in [0, 1] (0 = use ramp_epochs), got {t.ramp_fraction}",
    )

    for key, value, allowed in (
        ("layer_reduce", t.layer_reduce, LAYER_REDUCTIONS),
        ("neuron_reduce", t.neuron_reduce, NEURON_REDUCTIONS),
        ("hinge", t.hinge, HINGES),
        ("potential", t.potential, POTENTIALS),
    ):
        _check(value in allowed, f"tgo.{key}", f"must be one of {', '.join(allowed)}, got {value!r}")
    _check(t.enabled is False or n.kind != "relu", "tgo.enabled", "needs a spiking neuron (neuron.kind is relu)")


def _validate_optim_eval(o: OptimConfig, e: EvalConfig) -> None:
    """The optimiser's settings and those of the evaluation during training."""
    _check(math.isfinite(o.lr) and o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}")
    _check(0 <= o.momentum < 1, "optim.momentum", f"must be in [0, 1), got {o.momentum}")
    _check(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    _check(o.epochs >= 1, "optim.epochs", f"must be >= 1, got {o.epochs}")
    _check(o.batch_size >= 1, "optim.batch_size", f"must be >= 1, got {o.batch_size}")
    _check(o.schedule in ("cosine", "constant"), "optim.schedule", f"must be cosine or constant, got {o.schedule!r}")
    _check(o.grad_clip >= 0, "optim.grad_clip", f"must be >= 0 (0 = off), got {o.grad_clip}")
    _check(math.isfinite(e.eps) and 0.0 <= e.eps <= 1.0, "eval.eps", f"must be in [0, 1] (e.g. 8/255), got {e.eps}")
    _check(e.batch_size >= 1, "eval.batch_size", f"must be >= 1, got {e.batch_size}")
    _check(e.passes >= 1, "eval.passes", f"must be >= 1, got {e.passes}")
    _check(e.test_every >= 0, "eval.test_every", f"must be >= 0, got {e.test_every}")


def _validate_run(cfg: ExperimentConfig) -> None:
    """The run's own settings: checkpoints, threads, seed, strategy and device."""
    _check(
        cfg.checkpoint_every >= 0, "checkpoint_every", f"must be >= 0 (0 = only at the end), got {cfg.checkpoint_every}"
    )
    _check(cfg.threads >= 0, "threads", f"must be >= 0, got {cfg.threads}")
    _check(cfg.seed >= 0, "seed", f"must be >= 0, got {cfg.seed}")
    _check(bool(cfg.strategy), "strategy", "must name a training strategy")

    _check(
        cfg.strategy in list_strategies(),
        "strategy",
        f"must be one of {', '.join(list_strategies())}, got {cfg.strategy!r}",
    )
    if cfg.device != "auto":
        try:
            torch.device(cfg.device)
        except (RuntimeError, ValueError):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {cfg.device!r}") from None


__all__ = [
    "config_diff",
    "ExperimentConfig",
    "DataConfig",
    "ModelConfig",
    "NeuronConfig",
    "TGOConfig",
    "OptimConfig",
    "EvalConfig",
    "PerfConfig",
    "FORMAT_VERSION",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "config_to_toml",
    "apply_overrides",
    "parse_value",
    "validate_config",
    "read_toml",
]
