"""Load a classifier that was not trained by spikeguard: a factory function plus weights.

``spikeguard evaluate --model-file my_model.py:build --weights model.safetensors`` calls
``build()`` from ``my_model.py`` (or from an importable module: ``pkg.models:build``),
loads the weights into what it returns and evaluates that. The factory must return an
``nn.Module`` mapping images ``[B, C, H, W]`` in [0, 1] to logits ``[B, K]`` (normalisation
inside the model), whose output depends only on its input: a SpikingJelly network must
reset its neuron states at the start of ``forward`` (``functional.reset_net``), an snnTorch
one must initialise its membranes there.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file
from torch import nn

from .errors import CheckpointError, SpikeguardError


@dataclass
class ForeignRun:
    """A model loaded with :func:`load_foreign_model`, shaped like a run for the CLI.

    Attributes:
        model: the network, weights loaded, in eval mode.
        path: the folder results go to by default (the weights' or the model file's folder).
        spec: the ``--model-file`` text.
        weights: the weights file (None: the factory's own initialisation).
    """

    model: nn.Module
    path: Path
    spec: str
    weights: Path | None = None

    @property
    def identity_file(self) -> Path:
        """The file whose size and time identify these weights (for the evaluation journal)."""
        return self.weights if self.weights is not None else Path(self.spec.rsplit(":", 1)[0])


def load_factory(spec: str) -> Callable[[], nn.Module]:
    """The callable named by ``FILE.py:NAME`` or ``package.module:NAME``."""
    if ":" not in spec:
        raise SpikeguardError(f"--model-file needs FILE.py:FUNCTION or package.module:FUNCTION, got {spec!r}")
    where, name = spec.rsplit(":", 1)
    if where.endswith(".py") or os.sep in where or "/" in where:
        path = Path(where)
        if not path.is_file():
            raise SpikeguardError(f"model file {path} does not exist")
        mod_name = f"spikeguard_user_model_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        if module_spec is None or module_spec.loader is None:
            raise SpikeguardError(f"cannot import {path} as a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module  # dataclasses and pickling look modules up by name
        try:
            module_spec.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - the user's code: report it in one line
            sys.modules.pop(mod_name, None)
            raise SpikeguardError(f"importing {path} failed: {type(e).__name__}: {e}") from None
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise SpikeguardError(f"cannot import {where!r}: {e}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise SpikeguardError(f"{where} has no callable {name!r}")
    return fn


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)  # no arbitrary pickles
    except Exception as e:  # noqa: BLE001 - reported as a one-line error
        raise CheckpointError(f"cannot read weights {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state_dict (a mapping of names to tensors)")
    return obj


def load_foreign_model(
    spec: str, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> ForeignRun:
    """Build the model from the factory ``spec`` and load ``weights`` (safetensors, or a
    ``torch.save``-d state dict read with ``weights_only=True``); returns it in eval mode."""
    fn = load_factory(spec)
    try:
        model = fn()
    except Exception as e:  # noqa: BLE001 - reported as a one-line error
        raise SpikeguardError(f"{spec}() failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise SpikeguardError(f"{spec}() returned {type(model).__name__}, not a torch.nn.Module")
    wpath = Path(weights) if weights is not None else None
    if wpath is not None:
        sd = _state_dict(wpath)
        try:
            model.load_state_dict(sd)
        except RuntimeError as e:
            lines = str(e).splitlines()
            first = lines[0] + (" " + lines[1].strip() if len(lines) > 1 else "")
            raise CheckpointError(f"weights {wpath} do not fit {spec}(): {first}") from None
    model.to(device).eval()
    home = wpath.parent if wpath is not None else Path(spec.rsplit(":", 1)[0]).parent
    return ForeignRun(model=model, path=home if str(home) else Path("."), spec=spec, weights=wpath)


__all__ = ["ForeignRun", "load_factory", "load_foreign_model"]
