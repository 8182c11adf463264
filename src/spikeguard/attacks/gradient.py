"""First-order L-infinity attacks: FGSM, RFGSM, PGD and multi-targeted PGD (MTPGD)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import SpikeguardError
from .base import Attack, best_of_restarts, check_eps, get_loss, margin_loss, targeted_margin_loss
from .registry import register_attack


@register_attack("fgsm")
class FGSM(Attack):
    """Fast Gradient Sign Method (Goodfellow et al., 2015): ``x + eps * sign(grad)``."""

    name = "fgsm"
    family, table_rank = "fgsm", 0

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        grad, _ = self.input_grad(images, labels)
        return self.project(images + self.eps * grad.sign(), images)


@register_attack("rfgsm", aliases=("r-fgsm",))
class RFGSM(Attack):
    """FGSM from a random step (Tramer et al., 2018), the single-step "RFGSM" of SNN papers.

    ``x' = x + alpha * sign(N(0, I))``, then ``x_adv = x' + (eps - alpha) * sign(grad at x')``,
    clipped to the eps-ball and to [0, 1].

    Args:
        alpha: size of the random step, ``0 <= alpha <= eps`` (default ``eps / 2`` as in Tramer et al.).
    """

    name = "rfgsm"
    family, table_rank = "rfgsm", 1

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float | None = None, **kw) -> None:
        super().__init__(model, eps, **kw)
        self.alpha = self.eps / 2 if alpha is None else check_eps(alpha, "alpha")
        if self.alpha > self.eps:
            raise SpikeguardError(f"RFGSM needs alpha <= eps, got alpha={self.alpha:.4g} > eps={self.eps:.4g}")

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        start = self.project(images + self.alpha * torch.randn_like(images).sign(), images)
        grad, _ = self.input_grad(start, labels)
        return self.project(start + (self.eps - self.alpha) * grad.sign(), images)


@register_attack(
    "pgd", pattern=r"pgd(?P<steps>\d+)?(?:-r(?P<restarts>\d+))?", aliases={"pgd": "pgd10"}, example="pgdK, pgdK-rR"
)
class PGD(Attack):
    """Projected Gradient Descent (Madry et al., 2018) with random start and restarts.

    Args:
        alpha: step size (paper: 0.01).
        steps: number of iterations (PGD-k).
        random_start: start from a uniform point in the eps-ball.
        restarts: independent runs; per sample the one with the highest final loss is kept
            (a misclassifying run wins over any that is not).
        loss: objective to maximise: ``ce`` (default), ``dlr`` or ``margin``.
    """

    name = "pgd"
    family, table_rank = "pgd", 2
    iterative = True
    uses_step_size = True

    @classmethod
    def table_key(cls, args: dict) -> tuple | None:
        # restarted PGD is not one of the paper's PGD-k columns
        return None if args.get("restarts", 1) > 1 else super().table_key(args)

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float = 0.01,
        steps: int = 10,
        random_start: bool = True,
        restarts: int = 1,
        loss: str = "ce",
        **kw,
    ) -> None:
        super().__init__(model, eps, **kw)
        self.alpha = check_eps(alpha, "alpha")
        if int(steps) < 1 or int(restarts) < 1:
            raise SpikeguardError(f"steps and restarts must be >= 1, got {steps}, {restarts}")
        self.steps = int(steps)
        self.random_start = bool(random_start)
        self.restarts = int(restarts)
        self.loss = loss
        self.loss_fn = get_loss(loss)

    def run_once(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor | None]:
        adv = self.uniform_start(images) if self.random_start else images.clone()
        for _ in range(self.steps):
            grad, _ = self.input_grad(adv, labels, self.loss_fn)
            adv = self.project(adv + self.alpha * grad.sign(), images)
        if self.restarts == 1:
            return adv, None  # the final score only matters to pick among restarts
        return adv, _restart_score(self.logits(adv), labels, self.loss_fn)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        return best_of_restarts(self.run_once, images, labels, self.restarts)


def _restart_score(logits: Tensor, labels: Tensor, loss_fn) -> Tensor:
    """Score to pick the best of several runs per sample: misclassified first, then by loss."""
    fooled = (margin_loss(logits, labels) > 0).to(logits.dtype)
    return loss_fn(logits, labels) + 1e6 * fooled


@register_attack("mtpgd", pattern=r"mtpgd(?P<steps>\d+)?", aliases=("mt-pgd",), example="mtpgdK")
class MTPGD(Attack):
    """Multi-targeted PGD (Gowal et al., 2019).

    One PGD run per target class ``t`` among the ``n_targets`` classes the clean input
    ranks highest after the true one, each maximising the targeted margin ``z_t - z_y``
    from a random start, with momentum (paper: 0.9) on the L1-normalised gradient. Per
    sample the run with the largest final untargeted margin is kept; samples already
    misclassified by an earlier target are not attacked again.

    Args:
        alpha: step size (paper: 0.01).
        steps: iterations per target.
        n_targets: top-k target classes (capped at ``num_classes - 1``).
        momentum: momentum factor mu of ``g <- mu * g + grad / ||grad||_1``.
    """

    name = "mtpgd"
    family, table_rank = "mtpgd", 5
    iterative = True
    uses_step_size = True

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float = 0.01,
        steps: int = 20,
        n_targets: int = 9,
        momentum: float = 0.9,
        random_start: bool = True,
        **kw,
    ) -> None:
        super().__init__(model, eps, **kw)
        self.alpha = check_eps(alpha, "alpha")
        if int(steps) < 1 or int(n_targets) < 1:
            raise SpikeguardError(f"steps and n_targets must be >= 1, got {steps}, {n_targets}")
        if not 0.0 <= momentum < 1.0:
            raise SpikeguardError(f"momentum must be in [0, 1), got {momentum}")
        self.steps = int(steps)
        self.n_targets = int(n_targets)
        self.momentum = float(momentum)
        self.random_start = bool(random_start)

    def run_target(self, images: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
        """Maximise ``z_t - z_y`` for the given per-sample targets; returns the final iterate."""
        adv = self.uniform_start(images) if self.random_start else images.clone()
        g = torch.zeros_like(images)
        view = (-1,) + (1,) * (images.dim() - 1)

        def loss_fn(z: Tensor, y: Tensor) -> Tensor:
            # with EoT the batch is the K passes stacked: repeat the targets alongside the labels
            return targeted_margin_loss(z, targets.repeat(len(y) // len(targets)), y)

        for _ in range(self.steps):
            grad, _ = self.input_grad(adv, labels, loss_fn)
            g = self.momentum * g + grad / (grad.abs().flatten(1).mean(1).view(view) + 1e-12)
            adv = self.project(adv + self.alpha * g.sign(), images)
        return adv

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        clean = self.logits(images)
        k = min(self.n_targets, clean.shape[1] - 1)
        if k < 1:
            raise SpikeguardError("MTPGD needs at least 2 classes")
        ranked = clean.scatter(1, labels[:, None], float("-inf")).topk(k, dim=1).indices  # [B, k]
        best = images.clone()
        best_margin = margin_loss(clean, labels)
        for j in range(k):
            todo = (best_margin <= 0).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            adv = self.run_target(images[todo], labels[todo], ranked[todo, j])
            margin = margin_loss(self.logits(adv), labels[todo])
            better = margin > best_margin[todo]
            best[todo[better]] = adv[better]
            best_margin[todo[better]] = margin[better]
        return best
