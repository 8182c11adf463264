"""Speed options for training on a GPU: bf16 autocast, channels_last, fused optimizer, compile.

Every option is off by default and none changes what is computed, only how fast (bf16 also
how precisely). The precision of an evaluation is recorded with its results
(:func:`current_precision`); attacks and evaluation run in float32 unless a caller enters
``autocast("bf16", device)`` around them on purpose.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from .errors import ConfigError

PRECISIONS = ("float32", "bf16")
_ALIASES = {"off": "float32", "fp32": "float32", "none": "float32", "bfloat16": "bf16"}


def resolve_precision(name: str) -> str:
    """``float32`` or ``bf16`` from a name or alias (``off``, ``fp32``, ``bfloat16``)."""
    key = _ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
    if key not in PRECISIONS:
        raise ConfigError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)} (or 'off')")
    return key


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The autocast context for ``precision`` on ``device``'s type. ``float32`` switches
    autocast *off* (so an outer bf16 region does not leak into, e.g., an evaluation)."""
    kind = torch.device(device).type
    if resolve_precision(precision) == "bf16":
        return torch.autocast(device_type=kind, dtype=torch.bfloat16)
    return torch.autocast(device_type=kind, enabled=False)


def current_precision(device: torch.device | str) -> str:
    """The precision in effect for ``device`` right now (what a result should record)."""
    kind = torch.device(device).type
    try:
        on = torch.is_autocast_enabled(kind)
        dtype = torch.get_autocast_dtype(kind)
    except (TypeError, AttributeError, RuntimeError):  # older torch: per-device-type functions
        on = torch.is_autocast_enabled() if kind == "cuda" else torch.is_autocast_cpu_enabled()
        dtype = torch.get_autocast_gpu_dtype() if kind == "cuda" else torch.get_autocast_cpu_dtype()
    if not on:
        return "float32"
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store 4-D conv weights as channels_last (NHWC); activations follow. In place; returns the model."""
    return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to accepts memory_format; the stubs' overloads miss it


def compile_model(model: nn.Module, mode: str | None = None) -> nn.Module:
    """Compile the model's ``forward_steps`` (and hence ``forward``) with ``torch.compile``.

    The module itself is kept (its ``state_dict``, hooks, recorders and checkpoints are the
    same); only the bound method is replaced by an instance attribute, undone with
    :func:`uncompile_model`.
    """
    target = getattr(model, "forward_steps", None)
    if target is None:
        raise ConfigError(f"{type(model).__name__} has no forward_steps to compile")
    model.forward_steps = torch.compile(target, mode=mode)  # type: ignore[assignment]  # an instance attribute shadows the method
    return model


def uncompile_model(model: nn.Module) -> nn.Module:
    """Undo :func:`compile_model`."""
    model.__dict__.pop("forward_steps", None)
    return model


def fused_optimizer_kw(params, want: bool) -> dict:
    """``{"fused": True}`` where torch's fused SGD supports every parameter's device, else ``{}``."""
    if not want:
        return {}
    devices = {p.device.type for p in params}
    ok = devices <= {"cuda"} or (
        devices <= {"cpu"} and tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)
    )
    if not ok:
        warnings.warn(f"fused optimizer not available for devices {sorted(devices)}; using the default", stacklevel=3)
        return {}
    return {"fused": True}
