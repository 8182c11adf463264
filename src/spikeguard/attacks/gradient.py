"""First-order L-infinity attacks: FGSM and PGD."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import SpikeguardError
from .base import Attack, check_eps


class FGSM(Attack):
    """Fast Gradient Sign Method (Goodfellow et al., 2015): ``x + eps * sign(grad)``."""

    name = "fgsm"

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        grad, _ = self.input_grad(images, labels)
        return self.project(images + self.eps * grad.sign(), images)


class PGD(Attack):
    """Projected Gradient Descent (Madry et al., 2018) with random start and restarts.

    Args:
        alpha: step size (paper: 0.01).
        steps: number of iterations (PGD-k).
        random_start: start from a uniform point in the eps-ball.
        restarts: independent runs; per sample the one with the highest final loss is kept.
    """

    name = "pgd"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 0.01, steps: int = 10,
                 random_start: bool = True, restarts: int = 1, **kw) -> None:
        super().__init__(model, eps, **kw)
        self.alpha = check_eps(alpha, "alpha")
        if int(steps) < 1 or int(restarts) < 1:
            raise SpikeguardError(f"steps and restarts must be >= 1, got {steps}, {restarts}")
        self.steps = int(steps)
        self.random_start = bool(random_start)
        self.restarts = int(restarts)

    def run_once(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor | None]:
        adv = images.clone()
        if self.random_start:
            adv = self.project(adv + torch.empty_like(adv).uniform_(-self.eps, self.eps), images)
        for _ in range(self.steps):
            grad, _ = self.input_grad(adv, labels)
            adv = self.project(adv + self.alpha * grad.sign(), images)
        if self.restarts == 1:
            return adv, None  # the final loss only matters to pick among restarts
        with torch.no_grad():
            loss = nn.functional.cross_entropy(self.model(adv), labels, reduction="none")
        return adv, loss

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        best, best_loss = self.run_once(images, labels)
        for _ in range(self.restarts - 1):
            adv, loss = self.run_once(images, labels)
            better = loss > best_loss
            best[better] = adv[better]
            best_loss = torch.where(better, loss, best_loss)
        return best

    def __repr__(self) -> str:
        return f"PGD(eps={self.eps:.5g}, alpha={self.alpha:.5g}, steps={self.steps}, restarts={self.restarts}, eot={self.eot})"
