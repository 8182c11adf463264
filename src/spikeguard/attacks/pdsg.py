"""PDSG: PGD through a potential-dependent surrogate gradient (Lun et al., CVPR 2025).

The surrogate of every neuron at time step ``t`` is a normal density whose spread is the
standard deviation of its layer's membrane potentials over steps ``0..t`` (per channel in
conv layers) and whose centre lies half a deviation above threshold (see
:class:`~spikeguard.neurons.potential_surrogate.PdsgRule`). It ties the gradient to the
victim's own potential distribution, whatever surrogate (if any) the model was trained with.
"""

from __future__ import annotations

from torch import nn

from ..neurons.potential_surrogate import PdsgRule
from .assg import SurrogatePGD
from .registry import register_attack


@register_attack("pdsg", pattern=r"pdsg(?P<steps>\d+)?", example="pdsgK")
class PDSG(SurrogatePGD):
    """L-inf PGD whose gradients come from the potential-dependent surrogate gradient.

    Args:
        alpha: PGD step size; steps: iterations (default 10); random_start: uniform start.
        shift: centre of the Gaussian surrogate above threshold, in deviations (0.5).
        loss: ``ce`` (default), ``dlr`` or ``margin``.
    """

    name = "pdsg"

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
        super().__init__(model, eps, alpha, steps, random_start, loss, **kw)
        self.shift = float(shift)

    def make_rule(self) -> PdsgRule:
        return PdsgRule(self.shift)
