"""Dynamic weight lambda of the constraint (arXiv 2602.20548, section 4.2.1, Eq. 14).

The paper says lambda starts small so the network can explore and grows during training
to ``lambda_max``, without giving the curve. spikeguard offers linear, cosine and
exponential ramps over training progress, a constant, and two feedback controllers: dual
ascent on the constraint's value (``dual``) and on the near-threshold share of the training
batches (``share``: lambda is steered so the share settles at a target, e.g. 60% of a vanilla
model's share, the paper's observed 40% cut, whatever ``L_mc``'s normalisation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from ..registry import Registry

#: ``curve(lo, hi, p) -> lambda`` of a ramp (``p`` = progress in [0, 1]), or None for a feedback
#: schedule; meta ``signal`` (what a feedback schedule follows) and ``start`` (default
#: ``lambda_start`` as a fraction of ``lambda_max``). ``spikeguard list schedules`` reads it.
SCHEDULE_KINDS: Registry[Callable[[float, float, float], float] | None] = Registry("lambda schedule")


def register_schedule(
    name: str, *, description: str | None = None, signal: str = "", start: float = 0.0
) -> Callable[[Callable[[float, float, float], float]], Callable[[float, float, float], float]]:
    """Decorator registering a lambda ramp ``curve(lo, hi, p) -> lambda`` as ``tgo.schedule = name``."""
    return SCHEDULE_KINDS.register(name, description=description, signal=signal, start=start)


def register_feedback(name: str, signal: str, description: str) -> None:
    """Register a feedback schedule: lambda takes the dual-ascent step on ``signal`` after each batch."""
    SCHEDULE_KINDS.add(name, None, description=description, signal=signal, start=0.0)


@register_schedule("linear")
def linear(lo: float, hi: float, p: float) -> float:
    """lambda grows linearly from lambda_start to lambda_max over training (the default)."""
    return lo + (hi - lo) * p


@register_schedule("cosine")
def cosine(lo: float, hi: float, p: float) -> float:
    """half-cosine ease-in from lambda_start to lambda_max."""
    return lo + (hi - lo) * 0.5 * (1.0 - math.cos(math.pi * p))


@register_schedule("exp", start=0.01)
def exponential(lo: float, hi: float, p: float) -> float:
    """geometric growth from lambda_start (> 0) to lambda_max."""
    return hi * p if lo <= 0 else lo * (hi / lo) ** p


@register_schedule("constant", start=0.01)
def constant(lo: float, hi: float, p: float) -> float:
    """lambda_max from the first step."""
    return hi


register_feedback(
    "dual", "constraint", "dual ascent: lambda follows the constraint's distance to tgo.dual_target (step tgo.dual_lr)"
)
register_feedback(
    "share",
    "share",
    "controller: lambda steered so the training batches' near-threshold share settles at tgo.dual_target",
)

#: The built-in schedules (``SCHEDULE_KINDS`` also holds ones registered later).
SCHEDULES: tuple[str, ...] = tuple(SCHEDULE_KINDS.names())
FEEDBACK: tuple[str, ...] = tuple(e.name for e in SCHEDULE_KINDS.entries() if e.meta["signal"])
"""The schedules whose lambda follows a measured signal (:meth:`LambdaSchedule.update`)."""


@dataclass
class LambdaSchedule:
    """lambda as a function of training progress ``p = epoch / ramp_epochs`` in [0, 1].

    Args:
        kind: ``linear``, ``cosine`` (half-cosine ease-in), ``exp`` (geometric from
            ``lambda_start`` to ``lambda_max``), ``constant``, ``dual`` (dual ascent:
            ``lambda += lr * (L_mc - target)``, clipped to ``[0, lambda_max]``) or ``share``
            (the same step on the batch's near-threshold share: ``lambda += lr * (share -
            target)``, so ``target`` is a share in (0, 1) and ``lambda_max`` only a cap).
        lambda_max: final (and maximal) weight.
        lambda_start: weight at the start (``exp`` needs it > 0; default 1% of lambda_max).
        ramp_epochs: epochs over which the ramp reaches ``lambda_max``; then it stays there.
        dual_lr, dual_target: step size and target of the feedback schedules (``dual``: a
            constraint value; ``share``: a near-threshold share).
    """

    kind: str = "linear"
    lambda_max: float = 0.4
    lambda_start: float | None = None
    ramp_epochs: float = 1.0
    dual_lr: float = 0.1
    dual_target: float = 0.0

    def __post_init__(self) -> None:
        self._entry = SCHEDULE_KINDS.entry(self.kind)  # a ValueError (ConfigError) naming the known ones
        if not (self.lambda_max >= 0 and math.isfinite(self.lambda_max)):
            raise ValueError(f"lambda_max must be a finite number >= 0, got {self.lambda_max}")
        if self.ramp_epochs <= 0:
            raise ValueError(f"ramp_epochs must be > 0, got {self.ramp_epochs}")
        if self.lambda_start is None:
            self.lambda_start = float(self._entry.meta["start"]) * self.lambda_max
        if not 0 <= self.lambda_start <= self.lambda_max:
            raise ValueError(f"lambda_start must be in [0, lambda_max], got {self.lambda_start}")
        self._dual_value = float(self.lambda_start)

    def __call__(self, epoch: float) -> float:
        """lambda at (possibly fractional) ``epoch``."""
        lo, hi = float(self.lambda_start), float(self.lambda_max)  # type: ignore[arg-type]  # start: set in __post_init__
        p = min(max(epoch / self.ramp_epochs, 0.0), 1.0)
        curve = self._entry.obj
        return self._dual_value if curve is None else curve(lo, hi, p)

    @property
    def signal(self) -> str:
        """What :meth:`update` expects after each batch: ``"constraint"`` (``L_mc``), ``"share"``
        (the near-threshold share of the batch's potentials) or ``""`` (nothing: a ramp)."""
        return str(self._entry.meta["signal"])

    def update(self, value: float) -> None:
        """Feedback step after a batch on the measured :attr:`signal` (no-op for the ramps).

        ``lambda <- clip(lambda + dual_lr * (value - dual_target), 0, lambda_max)``: lambda grows
        while the signal is above its target and shrinks (to 0 at least) while it is below.
        """
        if self.signal:
            v = self._dual_value + self.dual_lr * (float(value) - self.dual_target)
            self._dual_value = min(max(v, 0.0), float(self.lambda_max))

    def state_dict(self) -> dict:
        return {"dual_value": self._dual_value}

    def load_state_dict(self, state: dict) -> None:
        self._dual_value = float(state.get("dual_value", self._dual_value))
