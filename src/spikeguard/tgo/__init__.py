"""Threshold Guarding Optimization: the membrane-potential constraint and its dynamic weight."""

from .constraint import (
    DEFAULT_DELTA,
    HINGES,
    LAYER_REDUCTIONS,
    NEURON_REDUCTIONS,
    POTENTIALS,
    Normalisation,
    layer_penalty,
    membrane_constraint,
    near_threshold_share,
)
from .diagnostics import constraint_gradient_ratio
from .guard import ThresholdGuard
from .schedules import SCHEDULE_KINDS, SCHEDULES, LambdaSchedule, register_schedule

__all__ = [
    "DEFAULT_DELTA",
    "Normalisation",
    "LAYER_REDUCTIONS",
    "NEURON_REDUCTIONS",
    "HINGES",
    "POTENTIALS",
    "constraint_gradient_ratio",
    "layer_penalty",
    "membrane_constraint",
    "near_threshold_share",
    "ThresholdGuard",
    "LambdaSchedule",
    "SCHEDULES",
    "SCHEDULE_KINDS",
    "register_schedule",
]
