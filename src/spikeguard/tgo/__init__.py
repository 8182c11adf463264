"""Threshold Guarding Optimization: the membrane-potential constraint and its dynamic weight."""

from .constraint import DEFAULT_DELTA, layer_penalty, membrane_constraint, near_threshold_share
from .guard import ThresholdGuard
from .schedules import SCHEDULES, LambdaSchedule

__all__ = [
    "DEFAULT_DELTA", "layer_penalty", "membrane_constraint", "near_threshold_share",
    "ThresholdGuard", "LambdaSchedule", "SCHEDULES",
]
