"""SA-PGD: stable adaptive PGD (Wang et al., arXiv 2512.22522), by default through ASSG gradients.

Per sample, with ``g`` the input gradient and ``mean|.|`` the mean over its coordinates
(``||g||_1 / d``)::

    m <- mu * m + g / mean|g|             (L1-normalised momentum; m = g / mean|g| at the start)
    v <- nu * v + g^2 / mean(g^2)         (normalised second moment)
    x <- Proj_eps( x + clip(eta * m / sqrt(v), -eta, eta) )

The step size ``eta`` starts at ``eps`` and halves every ``k`` iterations; ``k`` starts at
``0.22 * steps`` and shrinks by ``0.03 * steps`` at every halving, down to ``0.06 * steps``
(each at least 1). Per sample the attack returns its best iterate: a misclassified one if any,
else the one with the highest loss.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from ..errors import SpikeguardError
from .assg import assg_rule, check_spiking, rule_surrogate
from .base import Attack, get_loss, keep_better
from .gradient import _restart_score
from .registry import register_attack


def l1_normalised(g: Tensor) -> Tensor:
    """``g / mean|g|`` per sample (mean over every coordinate but the batch's; 0 stays 0)."""
    scale = g.abs().flatten(1).mean(1).view(-1, *([1] * (g.dim() - 1)))
    return g / (scale + 1e-12)


def sapgd_direction(
    m: Tensor | None, v: Tensor | None, grad: Tensor, mu: float, nu: float
) -> tuple[Tensor, Tensor, Tensor]:
    """One update of the momentum ``m`` and second moment ``v`` (None: the first step);
    returns ``(m, v, m / sqrt(v))``."""
    g1 = l1_normalised(grad)
    g2 = grad * grad
    g2 = g2 / (g2.flatten(1).mean(1).view(-1, *([1] * (g2.dim() - 1))) + 1e-24)
    m = g1 if m is None else mu * m + g1
    v = g2 if v is None else nu * v + g2
    return m, v, m / (v.sqrt() + 1e-12)


def step_schedule(steps: int) -> list[int]:
    """The iterations (1-based) after which SA-PGD halves its step size."""
    k = max(int(0.22 * steps), 1)
    decr, k_min = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    out, at = [], k
    while at <= steps:
        out.append(at)
        k = max(k - decr, k_min)
        at += k
    return out


@register_attack("sa-pgd", pattern=r"sa-pgd(?P<steps>\d+)?", aliases={"sapgd": "sa-pgd"}, example="sa-pgdK")
class SAPGD(Attack):
    """Stable adaptive PGD: L1-normalised momentum, adaptive clipped step; ASSG gradients by default.

    Args:
        steps: iterations (default 50).
        assg: back-propagate through ASSG's adaptive-sharpness surrogate (default, as the paper
            pairs them); False: the model's own surrogate gradients.
        mu, nu: momentum and second-moment coefficients (0.5, 0.8).
        vanishing, relax, beta_m, beta_d: ASSG's settings (see :class:`~spikeguard.attacks.assg.ASSG`).
        loss: ``ce`` (default), ``dlr`` or ``margin``.
    """

    name = "sa-pgd"
    requires: tuple[str, ...] = ("surrogate",)
    iterative = True

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 50,
        assg: bool = True,
        mu: float = 0.5,
        nu: float = 0.8,
        vanishing: float = 0.85,
        relax: float = 1.5,
        beta_m: float = 0.9,
        beta_d: float = 0.9,
        random_start: bool = True,
        loss: str = "ce",
        **kw,
    ) -> None:
        super().__init__(model, eps, **kw)
        if int(steps) < 1:
            raise SpikeguardError(f"steps must be >= 1, got {steps}")
        if not 0.0 <= mu < 1.0 or not 0.0 <= nu < 1.0:
            raise SpikeguardError(f"mu and nu must be in [0, 1), got {mu}, {nu}")
        self.steps, self.assg, self.mu, self.nu = int(steps), bool(assg), float(mu), float(nu)
        self.random_start = bool(random_start)
        if self.assg:
            check_spiking(model, "sa-pgd")
            assg_rule(vanishing, relax, beta_m, beta_d)
        else:
            self.requires = ()  # plain surrogate gradients: any differentiable model
        self.vanishing, self.relax, self.beta_m, self.beta_d = (
            float(vanishing),
            float(relax),
            float(beta_m),
            float(beta_d),
        )
        self.loss = loss
        self.loss_fn = get_loss(loss)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        rule = assg_rule(self.vanishing, self.relax, self.beta_m, self.beta_d) if self.assg else None
        b = images.shape[0]

        def gradient(x: Tensor) -> tuple[Tensor, Tensor]:
            with rule.observing(rows=b) if rule is not None else contextlib.nullcontext():
                grad, _, logits = self.loss_grad(x, labels, self.loss_fn)
            return grad, _restart_score(logits, labels, self.loss_fn)

        with rule_surrogate(self.model, rule) if rule is not None else contextlib.nullcontext():
            adv = self.uniform_start(images) if self.random_start else images.clone()
            grad, score = gradient(adv)
            best, best_score = adv.clone(), score
            eta = torch.full((b,) + (1,) * (images.dim() - 1), self.eps, device=images.device, dtype=images.dtype)
            halve = set(step_schedule(self.steps))
            m = v = None
            for i in range(1, self.steps + 1):
                m, v, direction = sapgd_direction(m, v, grad, self.mu, self.nu)
                adv = self.project(adv + torch.max(torch.min(direction * eta, eta), -eta), images)
                grad, score = gradient(adv)
                best, best_score = keep_better(best, best_score, adv, score)
                if i in halve:
                    eta = eta / 2
        return best
