"""Adversarial attacks (torchattacks-style classes; inputs in [0, 1]).

``Attack(model, eps=8/255, ...)(images, labels) -> adversarial images``; the registry
(:func:`build_attack`) builds any of them by name (``fgsm``, ``pgd20``, ``apgd-dlr``, ...).
Each attack registers itself with :func:`register_attack` where it is defined and says
what it needs from the model (:mod:`spikeguard.attacks.requirements`).
"""

from .adaptive import (
    AdaptiveSurrogate,
    FixedNoise,
    FixedNoiseModel,
    NoiseFreeTransfer,
    NoiseFreeTwin,
    SurrogateEnsemble,
    Transfer,
    attack_surrogate,
)
from .apgd import APGD, APGDT, apgd_checkpoints, dlr_targeted_loss
from .assg import ASSG
from .base import Attack, ce_loss, check_batch, check_eps, dlr_loss, get_loss, margin_loss, targeted_margin_loss
from .events import EventAttack, EventFlip, EventSTE, RandomFlip
from .gradient import FGSM, MTPGD, PGD, RFGSM
from .pdsg import PDSG
from .registry import (
    EPS_RULE,
    PAPER_ALPHA,
    PAPER_SUITE,
    STRONG_SUITE,
    SUITE_ALPHA,
    SUITES,
    attack_class,
    build_attack,
    list_attacks,
    normalize_name,
    parse_alpha,
    parse_attacks,
    register_attack,
    registered_attacks,
    step_size,
)
from .requirements import REQUIREMENTS, ModelTraits, model_traits, unmet
from .sapgd import SAPGD
from .square import Square

__all__ = [
    "Attack",
    "EventAttack",
    "EventFlip",
    "RandomFlip",
    "EventSTE",
    "FGSM",
    "RFGSM",
    "PGD",
    "MTPGD",
    "APGD",
    "ASSG",
    "SAPGD",
    "PDSG",
    "Square",
    "Transfer",
    "NoiseFreeTransfer",
    "FixedNoise",
    "SurrogateEnsemble",
    "AdaptiveSurrogate",
    "NoiseFreeTwin",
    "FixedNoiseModel",
    "attack_surrogate",
    "ce_loss",
    "dlr_loss",
    "margin_loss",
    "targeted_margin_loss",
    "get_loss",
    "check_batch",
    "check_eps",
    "APGDT",
    "dlr_targeted_loss",
    "apgd_checkpoints",
    "build_attack",
    "list_attacks",
    "normalize_name",
    "parse_attacks",
    "SUITES",
    "PAPER_SUITE",
    "STRONG_SUITE",
    "SUITE_ALPHA",
    "PAPER_ALPHA",
    "EPS_RULE",
    "register_attack",
    "registered_attacks",
    "attack_class",
    "parse_alpha",
    "step_size",
    "REQUIREMENTS",
    "ModelTraits",
    "model_traits",
    "unmet",
]
