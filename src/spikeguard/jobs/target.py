"""The model and the data of an evaluation or audit job: a run folder or any classifier, plus a data set."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..checkpoint import MODEL_FILE, load_run
from ..data import load_dataset
from ..errors import DataError, SpikeguardError
from ..evaluation.results import checkpoint_id, command_line, evaluation_provenance
from ..foreign import load_foreign_model
from ..utils import resolve_device


@dataclass
class TargetRequest:
    """What ``spikeguard evaluate`` and ``spikeguard audit`` share: the model, the data, the budget, the output.

    ``checkpoint`` (a run folder or its ``model.safetensors``) or ``model_file`` (``FILE.py:FN``,
    with ``weights`` and ``data``); ``eps`` on the [0, 1] pixel scale; ``out`` None for a new
    folder under the run; ``argv`` the command line recorded in the provenance (without the
    program name).
    """

    checkpoint: str | None = None
    model_file: str | None = None
    weights: str | None = None
    randomness: str = "auto"
    eps: float = 8 / 255
    eot: int = 8
    passes: int = 8
    n_samples: int = 0
    split: str = "test"
    data: str | None = None
    data_root: str | None = None
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    out: str | None = None
    overwrite: bool = False
    argv: list[str] = field(default_factory=list)

    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes`` (a dataclass ``replace``)."""
        return dataclasses.replace(self, **changes)


@dataclass
class Target:
    """A loaded model (eval mode) with its images, labels and the data description recorded in results."""

    run: Any  # a run folder's Run or a model file's ForeignRun
    model: nn.Module
    images: Tensor
    labels: Tensor
    data: dict
    device: torch.device

    @property
    def path(self) -> Path:
        """The run folder (a model file's: the weights' or the model file's folder)."""
        return Path(self.run.path)

    @property
    def identity_file(self) -> Path:
        """The file whose size, time and hash identify the weights."""
        return Path(getattr(self.run, "identity_file", None) or Path(self.run.path) / MODEL_FILE)

    def weights_stamp(self) -> str | None:
        """The weights' content hash: a journal of finished batches belongs to exactly these bytes."""
        return checkpoint_id(self.identity_file)

    def provenance(self, argv: list[str], **fields: Any) -> dict:
        """The provenance record of a result measured on this target (see ``evaluation_provenance``)."""
        return evaluation_provenance(
            command=command_line(argv),
            checkpoint=getattr(self.run, "weights", None) or self.run.path,
            # a --model-file model is identified by its weights file
            identity=getattr(self.run, "identity_file", None) or self.run.path,
            **fields,
        )


def _load_run(req: TargetRequest, device: torch.device) -> tuple[Any, str, Any, Any, bool, dict]:
    """``(run, data name, root, cache, verify, options)`` of a run folder or a model file."""
    if req.model_file:
        if not req.data:
            raise SpikeguardError("--model-file needs --data NAME (there is no run config to take it from)")
        foreign = load_foreign_model(req.model_file, req.weights, device=device)
        return foreign, req.data, req.data_root, None, True, {}
    if req.weights:
        raise SpikeguardError("--weights goes with --model-file (a run folder has its own weights)")
    run = load_run(req.checkpoint, device=device)  # type: ignore[arg-type]  # one of checkpoint/model_file is set
    d = run.config.data
    name = req.data or d.name
    root = req.data_root if req.data_root is not None else (d.root or None)
    options = dict(d.options) if name == d.name else {}  # e.g. an event data set's frame settings
    return run, name, root, d.cache_dir or None, d.verify_md5, options


def load_target(req: TargetRequest) -> Target:
    """Load the model and the class-balanced data subset of ``req``; one-line errors when they do not fit."""
    if req.threads:
        torch.set_num_threads(req.threads)
    device = resolve_device(req.device)
    run, name, root, cache, verify, options = _load_run(req, device)
    model = run.model
    model.eval()  # BatchNorm in inference mode; Noisy-LIF noise stays on (it is not tied to the mode)
    ds = load_dataset(
        name, req.split, root=root, cache_dir=cache, subset=req.n_samples, seed=req.seed, verify=verify, **options
    )
    x, y = ds.float_images(), ds.labels
    try:
        with torch.inference_mode():
            out = model(x[:1].to(device))
    except (RuntimeError, ValueError) as e:
        raise DataError(
            f"dataset {name!r} (images {tuple(x.shape[1:])}) does not fit the model of "
            f"{req.checkpoint or req.model_file}: {str(e).splitlines()[0]}"
        ) from None
    if int(y.max()) >= out.shape[1]:
        raise DataError(f"dataset {name!r} has labels up to {int(y.max())} but the model has {out.shape[1]} classes")
    info = {"name": name, "split": req.split, "root": root, "n_samples": len(y), "seed": req.seed}
    return Target(run, model, x, y, info, device)
