"""The object a training loop calls: ``loss = task_loss + tgo(potentials, epoch)``."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor

from .constraint import DEFAULT_DELTA, Normalisation, membrane_constraint, near_threshold_share
from .schedules import LambdaSchedule


class ThresholdGuard:
    """Threshold Guarding Optimization: ``lambda(epoch) * L_mc(potentials)``.

    Args:
        delta: margin around the threshold.
        v_threshold: firing threshold of the guarded neurons.
        schedule: the dynamic lambda (default: linear ramp 0 -> 0.4 over ``ramp_epochs``).
        norm: how ``L_mc`` is reduced over layers and neurons, which hinge and which potential
            (default: the paper's formula; see :mod:`spikeguard.tgo.constraint`).

    After each call, :attr:`last_constraint` and :attr:`last_lambda` hold the values used
    (for logging). A feedback schedule (``dual``, ``share``) is updated after every call with the
    signal it asks for (:attr:`LambdaSchedule.signal`): ``L_mc`` or the batch's near-threshold
    share at ``delta``.
    """

    def __init__(
        self,
        delta: float = DEFAULT_DELTA,
        v_threshold: float = 1.0,
        schedule: LambdaSchedule | None = None,
        norm: Normalisation | None = None,
    ) -> None:
        if delta <= 0:
            raise ValueError(f"delta must be > 0, got {delta}")
        self.delta = float(delta)
        self.v_threshold = float(v_threshold)
        self.schedule = schedule or LambdaSchedule()
        self.norm = norm or Normalisation()
        self.last_constraint = 0.0
        self.last_lambda = 0.0

    def constraint(self, potentials: Sequence[Tensor]) -> Tensor:
        """``L_mc`` without the weight."""
        return membrane_constraint(potentials, self.v_threshold, self.delta, self.norm)

    def __call__(self, potentials: Sequence[Tensor], epoch: float) -> Tensor:
        lam = self.schedule(epoch)
        l_mc = self.constraint(potentials)
        self.last_constraint = float(l_mc.detach())
        self.last_lambda = lam
        signal = getattr(self.schedule, "signal", "constraint")
        if signal == "share":
            self.schedule.update(near_threshold_share(potentials, self.v_threshold, self.delta))
        elif signal:
            self.schedule.update(self.last_constraint)
        if lam == 0.0:
            return l_mc * 0.0  # keeps the graph uniform; costs nothing measurable
        return lam * l_mc

    def state_dict(self) -> dict:
        return {"schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.schedule.load_state_dict(state.get("schedule", {}))
