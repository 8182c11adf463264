"""PDSG: PGD through a potential-dependent surrogate gradient (Lun et al., CVPR 2025).

The surrogate of every neuron at time step ``t`` is a normal density whose spread is the
standard deviation of its layer's membrane potentials over steps ``0..t`` (per channel in
conv layers) and whose centre lies half a deviation above threshold (see
:class:`~spikeguard.neurons.potential_surrogate.PdsgRule`). It ties the gradient to the
victim's own potential distribution, whatever surrogate (if any) the model was trained with.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import SpikeguardError
from ..neurons.potential_surrogate import PdsgRule
from .assg import check_spiking, rule_surrogate
from .base import Attack, check_eps, get_loss
from .registry import register_attack


@register_attack("pdsg", pattern=r"pdsg(?P<steps>\d+)?", example="pdsgK")
class PDSG(Attack):
    """L-inf PGD whose gradients come from the potential-dependent surrogate gradient.

    Args:
        alpha: PGD step size; steps: iterations (default 10); random_start: uniform start.
        shift: centre of the Gaussian surrogate above threshold, in deviations (0.5).
        loss: ``ce`` (default), ``dlr`` or ``margin``.
    """

    name = "pdsg"
    requires = ("surrogate",)
    iterative = True
    uses_step_size = True

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float = 0.01,
        steps: int = 10,
        random_start: bool = True,
        shift: float = 0.5,
        loss: str = "ce",
        **kw,
    ) -> None:
        super().__init__(model, eps, **kw)
        check_spiking(model, "pdsg")
        self.alpha = check_eps(alpha, "alpha")
        if int(steps) < 1:
            raise SpikeguardError(f"steps must be >= 1, got {steps}")
        self.steps, self.random_start, self.shift = int(steps), bool(random_start), float(shift)
        self.loss = loss
        self.loss_fn = get_loss(loss)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        adv = self.uniform_start(images) if self.random_start else images.clone()
        with rule_surrogate(self.model, PdsgRule(self.shift)):
            for _ in range(self.steps):
                grad, _ = self.input_grad(adv, labels, self.loss_fn)
                adv = self.project(adv + self.alpha * grad.sign(), images)
        return adv
