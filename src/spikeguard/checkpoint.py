"""Checkpoints: safetensors weights + JSON, written atomically; no pickle anywhere.

A run folder holds:

* ``config.json``: format version, model name, parameter count, the exact ``create_model``
  arguments (``model_spec``) and the resolved :class:`~spikeguard.config.ExperimentConfig`;
* ``model.safetensors``: parameters and BatchNorm buffers (``state_dict``);
* ``state.safetensors`` + ``state.json``: training state for ``--resume`` (epoch, optimizer,
  scheduler, TGO lambda / dual state, RNG states of Python, NumPy, torch and the data
  generator). Tensors go to the safetensors file, the structure to JSON.

Every file is written to a temporary name and renamed (see :mod:`spikeguard.io`). The three
checkpoint files carry the same random ``checkpoint_id``; a save interrupted between files
is detected on load instead of silently mixing two epochs.

``load_run(path)`` rebuilds the model from ``config.json`` and loads the weights strictly;
``load_model(path)`` (alias ``spikeguard.load``) returns just the model.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load, save
from torch import nn

from ._version import __version__
from .config import FORMAT_VERSION, ExperimentConfig, config_diff, config_from_dict, config_to_dict
from .errors import CheckpointError, SpikeguardError
from .training.state import TrainState
from .io import _json_safe, atomic_write_json, atomic_write_many, ensure_dir
from .models import create_model

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "state.safetensors"
STATE_JSON = "state.json"


# ---------------------------------------------------------------------------------------
# model spec: the create_model call that rebuilds a network


def model_spec(cfg: ExperimentConfig, model: nn.Module | None = None, **arch: Any) -> dict:
    """The ``create_model`` arguments of ``cfg``'s network.

    ``arch`` adds architecture arguments (``in_channels``, ``image_size``, ``mean``, ``std``)
    that come from the data; models built by :func:`spikeguard.jobs.train.build_model` carry
    their spec as ``model.spikeguard_spec``, which wins.
    """
    if model is not None and isinstance(getattr(model, "spikeguard_spec", None), dict):
        return json.loads(json.dumps(model.spikeguard_spec))
    kw = dict(cfg.model.kw)
    kw.update(arch)
    num_classes = cfg.model.num_classes
    if model is not None:
        num_classes = int(getattr(model, "num_classes", num_classes))
        if hasattr(model, "in_channels"):
            kw.setdefault("in_channels", int(model.in_channels))  # type: ignore[arg-type]  # a plain int attribute of the model
        for name in ("mean", "std"):
            buf = getattr(model, name, None)
            if isinstance(buf, torch.Tensor):
                kw.setdefault(name, [float(v) for v in buf.flatten()])
    if num_classes < 1:
        raise CheckpointError("cannot record the model: num_classes is unknown (set model.num_classes)")
    return {
        "name": cfg.model.name,
        "num_classes": int(num_classes),
        "T": int(cfg.model.T),
        "neuron": cfg.neuron.kind,
        "neuron_kw": cfg.neuron.neuron_kw(),
        "kw": kw,
    }


def create_from_spec(spec: dict) -> nn.Module:
    """``create_model(**spec)`` with the spec recorded on the model (``model.spikeguard_spec``);
    a bad spec raises the model's own ``KeyError``/``TypeError``/``ValueError`` for the caller to word."""
    model = create_model(
        spec["name"],
        num_classes=spec["num_classes"],
        T=spec["T"],
        neuron=spec["neuron"],
        neuron_kw=dict(spec.get("neuron_kw") or {}),
        **dict(spec.get("kw") or {}),
    )
    model.spikeguard_spec = json.loads(json.dumps(spec))
    return model


def build_from_spec(spec: dict) -> nn.Module:
    """:func:`create_from_spec`; a bad spec is a :class:`CheckpointError`."""
    try:
        return create_from_spec(spec)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"cannot rebuild the model from its recorded spec ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------------------
# nested structures <-> (JSON, tensors)


def _encode(obj: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().clone().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(tensors)}"
        arr = obj.astype(np.int64) if obj.dtype == np.uint32 else obj
        tensors[key] = torch.from_numpy(np.ascontiguousarray(arr)).clone()
        return {"__ndarray__": key, "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{where}.{k}") for k, v in obj.items()}
        return {
            "__items__": [[_encode(k, tensors, where), _encode(v, tensors, f"{where}[{k!r}]")] for k, v in obj.items()]
        }
    raise CheckpointError(
        f"cannot store a {type(obj).__name__} at {where or 'state'} in a checkpoint "
        f"(only tensors, arrays, numbers, strings, lists, tuples and dicts)"
    )


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    try:
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy().astype(obj["dtype"])
    except KeyError as e:
        raise CheckpointError(f"training state refers to a missing tensor {e}") from None
    if "__float__" in obj:
        return float(obj["__float__"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_hashable(_decode(k, tensors)): _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def _hashable(k: Any) -> Any:
    return tuple(_hashable(v) for v in k) if isinstance(k, list) else k


# ---------------------------------------------------------------------------------------
# files


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing (not a spikeguard run folder?)")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is corrupt or truncated ({e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return obj


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    data = path.read_bytes()
    try:
        tensors = load(data)
        # metadata lives in the header: 8-byte little-endian length, then JSON
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + n])
        meta = header.get("__metadata__") or {}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types; all mean "bad file"
        raise CheckpointError(f"{path} is corrupt or truncated ({type(e).__name__}: {e})") from None
    return tensors, {str(k): str(v) for k, v in meta.items()}


def _check_format(meta: dict, path: Path) -> None:
    v = meta.get("format_version")
    try:
        v = int(v)  # type: ignore[arg-type]  # None raises TypeError, handled below
    except (TypeError, ValueError):
        raise CheckpointError(f"{path} has no valid format_version") from None
    if v > FORMAT_VERSION or v < 1:
        raise CheckpointError(
            f"{path} has format_version {v}; this spikeguard reads 1..{FORMAT_VERSION} (upgrade spikeguard)"
        )


def write_run_config(
    run_dir: str | os.PathLike, config: ExperimentConfig, spec: dict, param_count: int | None = None
) -> None:
    """Write ``config.json`` (the resolved config and the model spec) atomically."""
    atomic_write_json(
        Path(run_dir) / CONFIG_FILE,
        {
            "format_version": FORMAT_VERSION,
            "spikeguard_version": __version__,
            "model": spec["name"],
            "param_count": param_count,
            "model_spec": spec,
            "config": config_to_dict(config),
        },
    )


def save_checkpoint(
    run_dir: str | os.PathLike, model: nn.Module, config: ExperimentConfig, state: dict | None = None
) -> Path:
    """Save model weights, the resolved config and (optionally) the training state.

    Args:
        run_dir: the run folder (created if needed).
        model: the network (its ``state_dict``, BatchNorm buffers included, is stored).
        config: the resolved experiment config.
        state: training state for resuming (any nesting of dicts/lists/tuples of tensors,
            arrays, numbers and strings), or None to save only the model.

    Returns:
        the run folder.
    """
    run = ensure_dir(run_dir)
    spec = model_spec(config, model)
    ckpt_id = uuid.uuid4().hex
    meta = {"format_version": str(FORMAT_VERSION), "checkpoint_id": ckpt_id, "model": spec["name"]}
    files: dict[str | os.PathLike, bytes] = {}
    if state is not None:
        tensors: dict[str, torch.Tensor] = {}
        structure = _encode(state, tensors, "state")
        files[run / STATE_FILE] = save(tensors, metadata=meta)
        files[run / STATE_JSON] = (
            json.dumps(
                _json_safe({"format_version": FORMAT_VERSION, "checkpoint_id": ckpt_id, "state": structure}),
                indent=2,
                allow_nan=False,
            )
            + "\n"
        ).encode("utf-8")
    weights = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    files[run / MODEL_FILE] = save(weights, metadata=meta)
    # all files reach the disk before any is renamed: a full disk or a failed write leaves the
    # previous checkpoint whole (the renames themselves take microseconds)
    atomic_write_many(files)
    n_params = sum(p.numel() for p in model.parameters())
    write_run_config(run, config, spec, n_params)
    return run


def _run_dir(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_file():
        p = p.parent
    if not p.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return p


def load_weights(model: nn.Module, path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, str]:
    """Load ``model.safetensors`` (a file, or a run folder's) into ``model`` strictly.

    Raises:
        CheckpointError: corrupt file, or missing/unexpected/mis-shaped tensors (named).
    Returns:
        the file's metadata.
    """
    p = Path(path)
    file = p / MODEL_FILE if p.is_dir() else p
    tensors, meta = _read_safetensors(file)
    if meta:
        _check_format(meta, file)
    own = model.state_dict()
    missing = [k for k in own if k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in tensors and tensors[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        src = meta.get("model", "?")
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:2])})")
        raise CheckpointError(f"{file} (model {src!r}) does not fit this {type(model).__name__}: " + ", ".join(parts))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()}, strict=True)
    model.to(device)
    return meta


@dataclass
class Run:
    """A loaded run folder.

    Attributes:
        model: the network, weights loaded, in eval mode, on the requested device.
        config: the run's :class:`ExperimentConfig`.
        path: the run folder.
        meta: the raw ``config.json`` (model spec, parameter count, versions).
    """

    model: nn.Module
    config: ExperimentConfig
    path: Path
    meta: dict = field(default_factory=dict)

    def training_state(self) -> dict | None:
        """The saved training state, or None if the run saved none."""
        return load_training_state(self.path)


def read_run_config(path: str | os.PathLike) -> tuple[ExperimentConfig, dict]:
    """``(config, raw config.json)`` of a run folder."""
    run = _run_dir(path)
    meta = _read_json(run / CONFIG_FILE)
    _check_format(meta, run / CONFIG_FILE)
    try:
        cfg = config_from_dict(meta.get("config") or {}, validate=False)
    except SpikeguardError as e:
        raise CheckpointError(f"{run / CONFIG_FILE}: invalid config ({e})") from None
    if not isinstance(meta.get("model_spec"), dict):
        raise CheckpointError(f"{run / CONFIG_FILE} has no model_spec")
    return cfg, meta


def run_config_diff(cfg: ExperimentConfig, path: str | os.PathLike, ignore: tuple[str, ...] = ("name",)) -> list[str]:
    """Dotted config keys in which the run saved in ``path`` differs from ``cfg``, except ``ignore``
    (by default its ``name``, a label)."""
    saved, _ = read_run_config(path)
    return [k for k in config_diff(config_to_dict(cfg), config_to_dict(saved)) if k not in ignore]


def load_run(path: str | os.PathLike, device: str | torch.device = "cpu") -> Run:
    """Load a run folder (or its ``model.safetensors``): model rebuilt from the config, weights loaded."""
    run = _run_dir(path)
    cfg, meta = read_run_config(run)
    model = build_from_spec(meta["model_spec"])
    wmeta = load_weights(model, run / MODEL_FILE, device=device)
    if wmeta.get("model") and wmeta["model"] != meta["model_spec"]["name"]:
        raise CheckpointError(
            f"{run}: weights are from model {wmeta['model']!r} but config.json says {meta['model_spec']['name']!r}"
        )
    model.eval()
    return Run(model=model, config=cfg, path=run, meta=meta)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """The trained model of a run folder, in eval mode (``spikeguard.load``)."""
    return load_run(path, device).model


def load_training_state(path: str | os.PathLike) -> dict | None:
    """The training state of a run folder (None if it has none); checks it matches the weights."""
    run = _run_dir(path)
    if not (run / STATE_JSON).exists() and not (run / STATE_FILE).exists():
        return None
    doc = _read_json(run / STATE_JSON)
    _check_format(doc, run / STATE_JSON)
    tensors, meta = _read_safetensors(run / STATE_FILE)
    _, wmeta = _read_safetensors(run / MODEL_FILE)
    ids = {doc.get("checkpoint_id"), meta.get("checkpoint_id"), wmeta.get("checkpoint_id")}
    if len(ids) != 1:
        raise CheckpointError(
            f"{run}: model and training-state files come from different saves (a save was "
            f"interrupted); cannot resume exactly"
        )
    return _decode(doc.get("state"), tensors)


def save_train_state(run_dir: str | os.PathLike, model: nn.Module, config: Any, state: TrainState) -> Path:
    """Write the checkpoint of a training run (weights, config, ``state``) atomically into ``run_dir``."""
    return save_checkpoint(run_dir, model, config, state.to_dict())


def load_train_state(run_dir: str | os.PathLike) -> TrainState | None:
    """The :class:`~spikeguard.training.TrainState` saved in ``run_dir`` (None if the run saved none)."""
    d = load_training_state(run_dir)
    return None if d is None else TrainState.from_dict(d)


__all__ = [
    "save_checkpoint",
    "load_run",
    "load_model",
    "load_weights",
    "load_train_state",
    "load_training_state",
    "save_train_state",
    "Run",
    "model_spec",
    "build_from_spec",
    "write_run_config",
    "read_run_config",
    "MODEL_FILE",
    "CONFIG_FILE",
    "STATE_FILE",
    "STATE_JSON",
]
