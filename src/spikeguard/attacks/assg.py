"""ASSG: PGD through an adaptive-sharpness surrogate gradient (Wang et al., arXiv 2512.22522).

The surrogate is atan-shaped with a sharpness per neuron and time step that follows running
statistics of the distance to threshold ``|U - V_th|`` over the attack's iterations (see
:class:`~spikeguard.neurons.potential_surrogate.AssgRule` for the equations and
``docs/evaluation.md`` for the reading of the paper they implement).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, cast

from torch import Tensor, nn

from ..errors import SpikeguardError
from ..neurons.potential_surrogate import AssgRule, PotentialRule, potential_surrogate
from .base import Attack, check_eps, get_loss
from .registry import register_attack
from ..adapters import foreign_neurons
from ..neurons import spiking_neurons


def check_spiking(model: nn.Module, attack: str) -> None:
    """A one-line error unless ``model`` has spiking neurons whose surrogate can be replaced."""
    if not spiking_neurons(model) and not foreign_neurons(model):
        raise SpikeguardError(f"{attack} needs a model with spiking neurons (spikeguard, SpikingJelly or snnTorch)")


@contextlib.contextmanager
def rule_surrogate(model: nn.Module, rule: PotentialRule) -> Iterator[None]:
    """:func:`~spikeguard.neurons.potential_surrogate.potential_surrogate` with a one-line error."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(potential_surrogate(model, rule))
        except ValueError as e:
            raise SpikeguardError(str(e)) from None
        yield  # the stack restores the neurons also when the block raises


class SurrogatePGD(Attack):
    """L-inf sign-gradient PGD whose gradients come from an attack-time surrogate rule.

    The shared body of ASSG and PDSG: they differ only in the rule (:meth:`make_rule`) and in
    whether the rule observes each iteration's forward pass (:meth:`observing`).
    """

    requires = ("surrogate",)
    iterative = True
    uses_step_size = True

    def __init__(
        self, model: nn.Module, eps: float, alpha: float, steps: int, random_start: bool, loss: str, **kw
    ) -> None:
        super().__init__(model, eps, **kw)
        check_spiking(model, self.name)
        self.alpha = check_eps(alpha, "alpha")
        if int(steps) < 1:
            raise SpikeguardError(f"steps must be >= 1, got {steps}")
        self.steps, self.random_start = int(steps), bool(random_start)
        self.loss = loss
        self.loss_fn = get_loss(loss)

    def make_rule(self) -> PotentialRule:
        """The surrogate rule of one call (fresh state per call)."""
        raise NotImplementedError

    def observing(self, rule: PotentialRule, rows: int) -> contextlib.AbstractContextManager:
        """Context of one iteration's gradient (default: nothing to observe)."""
        return contextlib.nullcontext()

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        rule = self.make_rule()
        adv = self.uniform_start(images) if self.random_start else images.clone()
        with rule_surrogate(self.model, rule):
            for _ in range(self.steps):
                with self.observing(rule, images.shape[0]):
                    grad, _ = self.input_grad(adv, labels, self.loss_fn)
                adv = self.project(adv + self.alpha * grad.sign(), images)
        return adv


def assg_rule(vanishing: float, relax: float, beta_m: float, beta_d: float) -> AssgRule:
    """An :class:`AssgRule`, bad settings reported as a one-line error."""
    try:
        return AssgRule(vanishing=vanishing, relax=relax, beta_m=beta_m, beta_d=beta_d)
    except ValueError as e:
        raise SpikeguardError(str(e)) from None


@register_attack("assg", pattern=r"assg(?P<steps>\d+)?", example="assgK")
class ASSG(SurrogatePGD):
    """L-inf PGD whose gradients come from ASSG's adaptive-sharpness surrogate.

    Every iteration first updates each neuron's running statistics from the forward pass of
    its gradient, then back-propagates with the atan surrogate of sharpness
    ``a / (M + relax * D)`` (one sharpness per neuron, sample and time step). The statistics
    start afresh at every call. EoT passes of one iteration share the first pass's statistics.

    Args:
        alpha: PGD step size; steps: iterations (default 10); random_start: uniform start.
        vanishing: the gradient-vanishing bound A in (0, 1) that sets ``a = 2/pi tan(pi A / 2)``.
        relax: weight of the running deviation D; beta_m, beta_d: running-average coefficients.
        loss: ``ce`` (default), ``dlr`` or ``margin``.
    """

    name = "assg"

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float = 0.01,
        steps: int = 10,
        random_start: bool = True,
        vanishing: float = 0.85,
        relax: float = 1.5,
        beta_m: float = 0.9,
        beta_d: float = 0.9,
        loss: str = "ce",
        **kw,
    ) -> None:
        super().__init__(model, eps, alpha, steps, random_start, loss, **kw)
        assg_rule(vanishing, relax, beta_m, beta_d)  # validate now, not at the first call
        self.vanishing, self.relax, self.beta_m, self.beta_d = (
            float(vanishing),
            float(relax),
            float(beta_m),
            float(beta_d),
        )

    def make_rule(self) -> AssgRule:
        return assg_rule(self.vanishing, self.relax, self.beta_m, self.beta_d)

    def observing(self, rule: PotentialRule, rows: int) -> contextlib.AbstractContextManager:
        # the running statistics move once per iteration, from that gradient's forward pass
        return cast(AssgRule, rule).observing(rows=rows)
