"""Accuracy and robustness evaluation.

* :func:`evaluate_robustness`: many attacks, per-sample results over stochastic passes,
  worst case, JSON and table (:class:`RobustnessReport`);
* :func:`audit_robustness`: the sanity checks that expose gradient masking (:class:`AuditReport`);
* ``predict`` / ``correct_over_passes`` / ``adversarial_examples``: the simple helpers.
"""

from .audit import AuditReport, Check, audit_robustness
from .basic import adversarial_examples, clean_accuracy, correct_over_passes, near_threshold_of, predict
from .engine import (
    AttackResult,
    RobustnessReport,
    correct_per_pass,
    evaluate_config_attacks,
    evaluate_robustness,
    summarize,
)
from .events import EventCurve, RoundingCheck, event_attack_curve, rounding_check
from .stats import mean_ci95, wilson_ci95

__all__ = [
    "predict",
    "correct_over_passes",
    "clean_accuracy",
    "adversarial_examples",
    "near_threshold_of",
    "evaluate_robustness",
    "evaluate_config_attacks",
    "RobustnessReport",
    "AttackResult",
    "correct_per_pass",
    "summarize",
    "audit_robustness",
    "AuditReport",
    "Check",
    "mean_ci95",
    "wilson_ci95",
    "event_attack_curve",
    "rounding_check",
    "EventCurve",
    "RoundingCheck",
]
