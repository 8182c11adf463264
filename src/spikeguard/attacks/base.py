"""Attack base class (torchattacks-style: ``Attack(model, eps=...)(images, labels)``).

Conventions:

* images in ``[0, 1]``, ``eps`` and step sizes on that scale, L-infinity budget;
* the model's mode is never changed: Noisy-LIF noise is controlled by its own switch, and
  BatchNorm's mode is the caller's decision;
* gradients flow through the surrogate gradients of the model's neurons;
* ``eot=K`` averages the input gradient over K stochastic forward passes (Expectation over
  Transformation), computed as one batch of ``K * B`` unless ``eot_batched=False``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SpikeguardError


def check_eps(eps: float, name: str = "eps") -> float:
    """Validate a perturbation budget on the [0, 1] pixel scale."""
    eps = float(eps)
    if not math.isfinite(eps) or eps < 0 or eps > 1:
        raise SpikeguardError(f"{name} must be in [0, 1] (pixel scale; 8/255 = {8/255:.4f}), got {eps}")
    return eps


def check_batch(images: Tensor, labels: Tensor) -> None:
    """Raise a one-line error for inputs an attack cannot work on."""
    if images.dim() != 4:
        raise SpikeguardError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise SpikeguardError(f"labels must be [B] with B={images.shape[0]}, got shape {tuple(labels.shape)}")
    if not torch.isfinite(images).all():
        raise SpikeguardError("images contain NaN or Inf")
    if images.min() < 0 or images.max() > 1:
        raise SpikeguardError(
            f"images must lie in [0, 1] (normalisation belongs inside the model), got range "
            f"[{float(images.min()):.3g}, {float(images.max()):.3g}]")


def ce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample cross-entropy."""
    return F.cross_entropy(logits, labels, reduction="none")


class Attack:
    """Base class of every L-infinity attack.

    Args:
        model: maps images ``[B, C, H, W]`` in [0, 1] to logits ``[B, K]``.
        eps: L-infinity budget on the [0, 1] scale.
        eot: number of stochastic forward passes the input gradient is averaged over.
        eot_batched: run the EoT passes as one ``eot * B`` batch (faster) instead of a loop.
    """

    name = "attack"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, eot: int = 1, eot_batched: bool = True) -> None:
        self.model = model
        self.eps = check_eps(eps)
        if int(eot) < 1:
            raise SpikeguardError(f"eot must be >= 1, got {eot}")
        self.eot = int(eot)
        self.eot_batched = bool(eot_batched)

    def __call__(self, images: Tensor, labels: Tensor) -> Tensor:
        check_batch(images, labels)
        with torch.enable_grad():  # attacks need input gradients even when called under no_grad
            adv = self.forward(images.detach(), labels.detach())
        return adv.detach()

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError

    def project(self, adv: Tensor, images: Tensor) -> Tensor:
        """Clip to the eps-ball around ``images`` and to [0, 1]."""
        return torch.min(torch.max(adv, images - self.eps), images + self.eps).clamp(0.0, 1.0)

    def input_grad(self, x: Tensor, labels: Tensor,
                   loss_fn: Callable[[Tensor, Tensor], Tensor] = ce_loss) -> tuple[Tensor, Tensor]:
        """Gradient of the summed per-sample loss w.r.t. ``x``, averaged over ``eot`` passes.

        Returns ``(grad [B, ...], per-sample loss [B])`` (loss averaged over the passes).
        """
        k, b = self.eot, x.shape[0]
        x = x.detach().requires_grad_(True)
        if k == 1 or self.eot_batched:
            xs = x if k == 1 else x.expand(k, *x.shape).reshape(k * b, *x.shape[1:])
            ys = labels if k == 1 else labels.repeat(k)
            loss = loss_fn(self.model(xs), ys).view(k, b).mean(0)
            (grad,) = torch.autograd.grad(loss.sum(), x)
            return grad, loss.detach()
        grad = torch.zeros_like(x)
        total = torch.zeros(b, device=x.device)
        for _ in range(k):
            loss = loss_fn(self.model(x), labels)
            (g,) = torch.autograd.grad(loss.sum(), x)
            grad += g / k
            total += loss.detach() / k
        return grad, total

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps:.5g}, eot={self.eot})"
