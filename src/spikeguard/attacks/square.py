"""Square attack (Andriushchenko et al., ECCV 2020): score-based black-box, L-infinity.

Restated from the paper: start from vertical stripes of ``+-eps``; at every query pick,
per sample, a random square window whose side shrinks on a fixed schedule of the query
index, set the perturbation inside it to ``+-eps`` (one random sign per channel), and
keep the change only if it lowers the margin ``z_y - max_{i != y} z_i``. Samples whose
margin is already negative are not queried any more. Only forward passes are used, so
gradient masking cannot hide a weakness from it: that is what makes it an audit tool.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import SpikeguardError
from .base import Attack, margin_loss
from .registry import register_attack

# Query indices (on a 10,000-query scale) after which the square's area share p halves.
_P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init: float, query: int, n_queries: int) -> float:
    """The share ``p`` of the image a square covers at ``query`` (schedule rescaled to ``n_queries``)."""
    it = int(query / n_queries * 10000)
    return p_init / 2 ** sum(it > h for h in _P_HALVINGS)


@register_attack("square", pattern=r"square(?P<queries>\d+)?", example="squareQ")
class Square(Attack):
    """Square attack, L-infinity, margin loss.

    Args:
        queries: query budget per sample (per restart).
        p_init: initial share of the image a square covers (0.8 in the paper's L-inf setting).
        restarts: independent runs; a later run only attacks samples still correctly classified.

    With ``eot > 1`` each query's margin is the average over ``eot`` stochastic passes.
    """

    name = "square"
    threat = "black-box"

    def __init__(
        self, model: nn.Module, eps: float = 8 / 255, queries: int = 1000, p_init: float = 0.8, restarts: int = 1, **kw
    ) -> None:
        super().__init__(model, eps, **kw)
        if int(queries) < 1 or int(restarts) < 1:
            raise SpikeguardError(f"queries and restarts must be >= 1, got {queries}, {restarts}")
        if not 0.0 < p_init <= 1.0:
            raise SpikeguardError(f"p_init must be in (0, 1], got {p_init}")
        self.queries = int(queries)
        self.p_init = float(p_init)
        self.restarts = int(restarts)

    def margin(self, x: Tensor, labels: Tensor) -> Tensor:
        """``z_y - max_{i != y} z_i`` (negative = misclassified), no graph."""
        return -margin_loss(self.logits(x), labels)

    @torch.no_grad()
    def run_once(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        b, c, h, w = images.shape
        dev = images.device
        stripes = torch.randint(0, 2, (b, c, 1, w), device=dev).to(images.dtype) * 2 - 1
        best = (images + self.eps * stripes).clamp(0.0, 1.0)
        best_margin = self.margin(best, labels)
        rows = torch.arange(h, device=dev).view(1, 1, h, 1)
        cols = torch.arange(w, device=dev).view(1, 1, 1, w)
        for q in range(self.queries):
            todo = (best_margin > 0).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            n = todo.numel()
            p = square_fraction(self.p_init, q, self.queries)
            s = min(max(int(round(math.sqrt(p * h * w))), 1), h, w)
            top = torch.randint(0, h - s + 1, (n, 1, 1, 1), device=dev)
            left = torch.randint(0, w - s + 1, (n, 1, 1, 1), device=dev)
            window = (rows >= top) & (rows < top + s) & (cols >= left) & (cols < left + s)
            signs = torch.randint(0, 2, (n, c, 1, 1), device=dev).to(images.dtype) * 2 - 1
            x0 = images[todo]
            cand = torch.where(window, (x0 + self.eps * signs).clamp(0.0, 1.0), best[todo])
            m = self.margin(cand, labels[todo])
            better = m < best_margin[todo]
            best[todo[better]] = cand[better]
            best_margin[todo[better]] = m[better]
        return best, best_margin

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        best, best_margin = self.run_once(images, labels)
        for _ in range(self.restarts - 1):
            todo = (best_margin > 0).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            adv, m = self.run_once(images[todo], labels[todo])
            better = m < best_margin[todo]
            best[todo[better]] = adv[better]
            best_margin[todo[better]] = m[better]
        return best
