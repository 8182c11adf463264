"""Adversarial attacks (torchattacks-style classes; inputs in [0, 1])."""

from .base import Attack, ce_loss, check_batch, check_eps
from .gradient import FGSM, PGD

__all__ = ["Attack", "FGSM", "PGD", "ce_loss", "check_batch", "check_eps"]
