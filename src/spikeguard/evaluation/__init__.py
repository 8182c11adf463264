"""Accuracy and robustness evaluation."""

from .basic import adversarial_examples, correct_over_passes, near_threshold_of, predict

__all__ = ["predict", "correct_over_passes", "adversarial_examples", "near_threshold_of"]
