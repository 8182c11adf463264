"""Auto-PGD (Croce & Hein, ICML 2020) in the L-infinity threat model, CE or DLR loss.

The algorithm, restated from the paper (Algorithm 1 and Section 3):

* step size ``eta`` starts at ``2 * eps``; the first step is plain PGD, later ones use
  momentum: ``z = P(x_k + eta * sign(grad))``,
  ``x_{k+1} = P(x_k + a * (z - x_k) + (1 - a) * (x_k - x_{k-1}))`` with ``a = 0.75``;
* checkpoints ``w_j = ceil(p_j * N)`` with ``p_0 = 0, p_1 = 0.22,
  p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``;
* at a checkpoint the step size of a sample is halved, and the sample restarts from its
  best point so far, when (1) the loss increased in fewer than ``rho * (w_j - w_{j-1})``
  of the steps since the last checkpoint, or (2) the step size was not halved at the
  last checkpoint and the best loss has not improved since;
* the attack returns, per sample, a misclassifying iterate if it met one, else the point
  of highest loss; several restarts keep the per-sample best.

With ``eot > 1`` every gradient, loss and "misclassified?" decision uses the average over
the EoT passes (so a stochastic model is judged on its expected logits).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import SpikeguardError
from .base import Attack, best_of_restarts, get_loss, keep_better, margin_loss, targeted_margin_loss
from .registry import register_attack


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations ``w_1 < w_2 < ...`` (1-based, <= steps) at which APGD may halve its step."""
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({max(1, math.ceil(q * steps - 1e-9)) for q in p[1:] if q <= 1.0 + 1e-12})


@register_attack(
    "apgd",
    pattern=r"apgd-(?P<loss>ce|dlr)(?P<steps>\d+)?",
    aliases={"apgd": "apgd-ce"},
    defaults={"steps": 50},
    example="apgd-ceK, apgd-dlrK",
)
class APGD(Attack):
    """Auto-PGD with step-size halving at checkpoints, momentum and restarts.

    Args:
        steps: iterations N per restart (AutoAttack uses 100).
        loss: ``ce`` (APGD-CE) or ``dlr`` (APGD-DLR, needs >= 3 classes).
        restarts: independent random starts; per sample the best run is kept.
        rho: fraction of successful steps below which the step size is halved (0.75).
        momentum: the weight ``a`` of the new step against the previous one (0.75).
    """

    name = "apgd"
    family, table_rank = "apgd", 3
    iterative = True

    @classmethod
    def table_key(cls, args: dict) -> tuple | None:
        # APGD-CE columns before APGD-DLR ones, each by steps
        return 3 + (args.get("loss", "ce") == "dlr"), args.get("steps", 0)

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 100,
        loss: str = "ce",
        restarts: int = 1,
        rho: float = 0.75,
        momentum: float = 0.75,
        **kw,
    ) -> None:
        super().__init__(model, eps, **kw)
        if int(steps) < 1 or int(restarts) < 1:
            raise SpikeguardError(f"steps and restarts must be >= 1, got {steps}, {restarts}")
        if not 0.0 < rho <= 1.0 or not 0.0 < momentum <= 1.0:
            raise SpikeguardError(f"rho and momentum must be in (0, 1], got {rho}, {momentum}")
        self.steps = int(steps)
        self.loss = loss
        self.loss_fn = get_loss(loss)
        self.restarts = int(restarts)
        self.rho = float(rho)
        self.momentum = float(momentum)
        self.name = f"apgd-{loss}"

    def run_once(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """One APGD run; returns ``(adversarial images, per-sample score)``."""
        b = images.shape[0]
        view = (-1,) + (1,) * (images.dim() - 1)
        x = self.uniform_start(images)
        grad, loss, logits = self.loss_grad(x, labels, self.loss_fn)
        fooled = margin_loss(logits, labels) > 0
        out = x.clone()  # misclassifying iterate, where one was met
        x_best, best_loss, grad_best = x.clone(), loss.clone(), grad.clone()
        eta = torch.full((b,), 2.0 * self.eps, device=images.device, dtype=images.dtype)
        x_prev = x.clone()
        prev_loss = loss
        successes = torch.zeros(b, device=images.device)
        checkpoints = apgd_checkpoints(self.steps)
        last_check = 0
        best_at_check = best_loss.clone()
        halved_at_check = torch.ones(b, dtype=torch.bool, device=images.device)
        for i in range(self.steps):
            with torch.no_grad():
                z = self.project(x + eta.view(view) * grad.sign(), images)
                a = 1.0 if i == 0 else self.momentum
                x_new = self.project(x + a * (z - x) + (1.0 - a) * (x - x_prev), images)
                x_prev, x = x, x_new
            grad, loss, logits = self.loss_grad(x, labels, self.loss_fn)
            with torch.no_grad():
                now_fooled = margin_loss(logits, labels) > 0
                out[now_fooled] = x[now_fooled]
                fooled |= now_fooled
                successes += (loss > prev_loss).float()
                prev_loss = loss
                better = loss > best_loss
                x_best[better], grad_best[better], best_loss[better] = x[better], grad[better], loss[better]
                if i + 1 in checkpoints:
                    span = i + 1 - last_check
                    too_few = successes < self.rho * span
                    stalled = ~halved_at_check & (best_loss <= best_at_check)
                    halve = too_few | stalled
                    eta[halve] /= 2.0
                    x[halve], grad[halve] = x_best[halve], grad_best[halve]
                    x_prev[halve] = x[halve]  # no momentum across a restart from the best point
                    halved_at_check = halve
                    best_at_check = best_loss.clone()
                    successes.zero_()
                    last_check = i + 1
        result = torch.where(fooled.view(view), out, x_best)
        score = best_loss + 1e6 * fooled.to(best_loss.dtype)
        return result, score

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        return best_of_restarts(self.run_once, images, labels, self.restarts)


def dlr_targeted_loss(logits: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
    """Targeted DLR loss (Croce & Hein, 2020), per sample, to be maximised:
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``; needs >= 4 classes."""
    if logits.shape[1] < 4:
        raise SpikeguardError(f"the targeted DLR loss needs at least 4 classes, the model has {logits.shape[1]}")
    top = logits.topk(4, dim=1).values
    zy, zt = logits.gather(1, labels[:, None]).squeeze(1), logits.gather(1, targets[:, None]).squeeze(1)
    return -(zy - zt) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


@register_attack(
    "apgd-t", pattern=r"apgd-t(?P<steps>\d+)?", aliases={"apgdt": "apgd-t"}, defaults={"steps": 100}, example="apgd-tK"
)
class APGDT(APGD):
    """Targeted APGD (AutoAttack's APGD-T): one APGD run with the targeted DLR loss per target
    class, the ``n_targets`` classes the clean input ranks highest after its label; per sample
    the first misclassifying (else the highest-scoring) run is kept. A model with fewer than 4
    classes gets the targeted margin loss ``z_t - z_y`` (the DLR ratio needs 4).

    Args:
        steps: iterations per target and restart (AutoAttack: 100).
        n_targets: target classes (AutoAttack: 9; at most classes - 1).
        restarts: APGD restarts per target.
    """

    name = "apgd-t"

    @classmethod
    def table_key(cls, args: dict) -> tuple | None:
        return 4.5, args.get("steps", 0)  # after APGD-CE/DLR, before MTPGD

    def __init__(
        self, model: nn.Module, eps: float = 8 / 255, steps: int = 100, n_targets: int = 9, restarts: int = 1, **kw
    ) -> None:
        super().__init__(model, eps, steps=steps, loss="dlr", restarts=restarts, **kw)
        if int(n_targets) < 1:
            raise SpikeguardError(f"n_targets must be >= 1, got {n_targets}")
        self.n_targets = int(n_targets)
        self.name = "apgd-t"

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        with torch.no_grad():
            ranked = self.logits(images).scatter(1, labels[:, None], float("-inf")).argsort(1, descending=True)
        best, best_score = images.clone(), torch.full((images.shape[0],), float("-inf"), device=images.device)
        for j in range(min(self.n_targets, ranked.shape[1] - 1)):
            targets = ranked[:, j]

            def loss(z: Tensor, y: Tensor, t: Tensor = targets) -> Tensor:
                # EoT batches repeat the labels; repeat the targets alike. The DLR ratio needs 4
                # classes; with fewer the targeted margin z_t - z_y is maximised instead
                t = t.repeat(len(y) // len(t))
                return dlr_targeted_loss(z, y, t) if z.shape[1] >= 4 else targeted_margin_loss(z, t, y)

            self.loss_fn = loss
            for _ in range(self.restarts):
                adv, score = self.run_once(images, labels)
                best, best_score = keep_better(best, best_score, adv, score)
        return best
