"""Clean and robust accuracy, with stochastic models judged over several passes."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from ..data import ImageDataset, batches
from ..neurons import is_stochastic, record_potentials
from ..tgo import near_threshold_share


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    """Predicted labels ``[N]`` for images ``[N, C, H, W]`` (one stochastic pass)."""
    return torch.cat([model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])


def correct_over_passes(
    model: nn.Module, images: Tensor, labels: Tensor, passes: int = 1, batch_size: int = 256
) -> Tensor:
    """Per-sample fraction of ``passes`` forward passes that classify correctly, ``[N]``.

    Deterministic models are evaluated once whatever ``passes`` says.
    """
    passes = passes if is_stochastic(model) else 1
    hits = torch.zeros(len(labels), device=labels.device)
    for _ in range(passes):
        hits += (predict(model, images, batch_size) == labels).float()
    return hits / passes


def clean_accuracy(model: nn.Module, images: Tensor, labels: Tensor, passes: int = 1, batch_size: int = 256) -> float:
    """Clean accuracy, the mean of :func:`correct_over_passes` (stochastic models: over ``passes``
    forward passes, each drawing fresh noise from the global RNG). The one clean-accuracy function
    of the training loop, the demo and the ablation; :func:`~spikeguard.evaluation.evaluate_robustness`
    reports its own per-pass clean flags (same definition, noise under common random numbers)."""
    return float(correct_over_passes(model, images, labels, passes, batch_size).mean())


def adversarial_examples(
    attack: Callable[[Tensor, Tensor], Tensor],
    images: Tensor,
    labels: Tensor,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Run ``attack`` over ``images`` in batches."""
    out = []
    for i in range(0, len(images), batch_size):
        out.append(attack(images[i : i + batch_size], labels[i : i + batch_size]))
        if progress is not None:
            progress(len(out[-1]))
    return torch.cat(out)


@torch.no_grad()
def near_threshold_of(
    model: nn.Module,
    ds: ImageDataset,
    delta: float = 0.5,
    v_threshold: float = 1.0,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> float:
    """Share of pre-spike potentials within ``delta`` of ``v_threshold`` over a whole split."""
    near = total = 0

    def count(_name: str, u: Tensor) -> None:
        nonlocal near, total
        near += int(((u - v_threshold).abs() < delta).sum())
        total += u.numel()

    with record_potentials(model, detach=True, keep=False, on_record=count):
        for x, _ in batches(ds, batch_size, device=device):
            model(x)
    return near / total if total else float("nan")


__all__ = [
    "predict",
    "correct_over_passes",
    "clean_accuracy",
    "adversarial_examples",
    "near_threshold_of",
    "near_threshold_share",
]
