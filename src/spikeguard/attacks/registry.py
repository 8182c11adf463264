"""Attack registry: build any attack of the suite by name.

Names (case-insensitive; ``K``, ``R``, ``Q`` are integers)::

    fgsm, rfgsm                       single-step
    pgdK, pgdK-rR                     PGD, K steps (default 10), R restarts; alpha = the shared step
    apgd-ce[K], apgd-dlr[K]           Auto-PGD with CE / DLR loss, K steps (default 50)
    mtpgd[K]                          multi-targeted PGD, K steps per target (default 20)
    square[Q]                         Square attack, Q queries (default 1000)
    transfer                          PGD-20 on a source model (default: the noise-free twin)
    noise-free                        PGD-20 on the target's noise-free twin (Noisy-LIF models)
    fixed-noise                       PGD-20 with the evaluation's noise sample known (Noisy-LIF)
    sg-ensemble                       PGD-10 per surrogate gradient, per-sample worst
    sg-adaptive                       PGD-20 with a per-sample greedy surrogate width
    event-flipK, random-flipK,        event-stream attacks on frame data, budget K flipped
    event-steK                        event cells (default 50; see attacks/events.py)

Paper settings: eps 8/255, step 0.01 (``alpha``).
"""

from __future__ import annotations

import re
from typing import Callable

from torch import nn

from ..errors import SpikeguardError
from ..neurons import is_stochastic
from .adaptive import AdaptiveSurrogate, FixedNoise, NoiseFreeTransfer, SurrogateEnsemble, Transfer
from .apgd import APGD
from .base import Attack
from .events import build_event_attack, is_event_attack_name
from .gradient import FGSM, MTPGD, PGD, RFGSM
from .square import Square

PAPER_ALPHA = 0.01

#: The paper's table (PAPER.md section 4): clean, FGSM, RFGSM, PGD7..40, APGD, MTPGD.
PAPER_SUITE: tuple[str, ...] = ("fgsm", "rfgsm", "pgd7", "pgd10", "pgd20", "pgd40", "apgd-ce", "mtpgd")

#: Everything: the paper's attacks, longer/restarted PGD, APGD-DLR, black-box, transfer and
#: the SNN-adaptive attacks (the stochastic-only ones are skipped on deterministic models).
STRONG_SUITE: tuple[str, ...] = PAPER_SUITE + (
    "pgd50-r3", "apgd-dlr", "square", "transfer", "noise-free", "fixed-noise", "sg-ensemble", "sg-adaptive")

SUITES: dict[str, tuple[str, ...]] = {"paper": PAPER_SUITE, "strong": STRONG_SUITE}

_PATTERNS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^pgd(\d+)?(?:-r(\d+))?$"), "pgd"),
    (re.compile(r"^apgd-(ce|dlr)(\d+)?$"), "apgd"),
    (re.compile(r"^mtpgd(\d+)?$"), "mtpgd"),
    (re.compile(r"^square(\d+)?$"), "square"),
]
_FIXED = ("fgsm", "rfgsm", "transfer", "noise-free", "fixed-noise", "sg-ensemble", "sg-adaptive")


def list_attacks() -> list[str]:
    """Example names accepted by :func:`build_attack` (the patterns take any step count)."""
    return ["fgsm", "rfgsm", "pgdK", "pgdK-rR", "apgd-ceK", "apgd-dlrK", "mtpgdK", "squareQ", *_FIXED[2:],
            "event-flipK", "random-flipK", "event-steK"]


def _int(text: str | None, default: int, what: str) -> int:
    v = default if text is None else int(text)
    if v < 1:
        raise SpikeguardError(f"{what} must be >= 1, got {v}")
    return v


def normalize_name(name: str) -> str:
    """Canonical spelling of an attack name (``APGD`` -> ``apgd-ce``, ``pgd`` -> ``pgd10``)."""
    n = name.strip().lower().replace("_", "-")
    n = {"apgd": "apgd-ce", "pgd": "pgd10", "mt-pgd": "mtpgd", "r-fgsm": "rfgsm", "fixednoise": "fixed-noise",
         "noisefree": "noise-free", "sg-ens": "sg-ensemble", "assg": "sg-adaptive"}.get(n, n)
    if n in _FIXED or any(p.match(n) for p, _ in _PATTERNS) or is_event_attack_name(n):
        return n
    raise SpikeguardError(f"unknown attack {name!r}; known: {', '.join(list_attacks())} "
                          f"(K, R, Q are integers, e.g. pgd20, pgd50-r5, apgd-ce100, square2000)")


def parse_attacks(text: str) -> list[str]:
    """``"fgsm,pgd10,paper"`` -> canonical names; suite names expand; duplicates dropped."""
    out: list[str] = []
    for part in (t for t in text.split(",") if t.strip()):
        key = part.strip().lower()
        names = SUITES[key] if key in SUITES else (normalize_name(part),)
        out += [n for n in names if n not in out]
    if not out:
        raise SpikeguardError("no attack given")
    return out


def build_attack(name: str, model: nn.Module, eps: float = 8 / 255, eot: int = 1, alpha: float = PAPER_ALPHA,
                 source: nn.Module | None = None, seed: int = 0, **overrides) -> Attack:
    """Build the attack called ``name`` on ``model``.

    Args:
        name: see the module docstring.
        eps: L-inf budget on the [0, 1] scale.
        eot: EoT passes for the gradient attacks (use 1 for deterministic models).
        alpha: step size of the PGD-type attacks (paper: 0.01).
        source: model for ``transfer`` (default: the target's noise-free twin, which needs
            a Noisy-LIF target).
        seed: seed of ``fixed-noise``'s default noise sample.
        **overrides: constructor arguments replacing the defaults (e.g. ``queries=500``).
    """
    n = normalize_name(name)
    if (event_attack := build_event_attack(n, model, eot=eot, **overrides)) is not None:
        return event_attack
    kw: dict = dict(eot=eot)
    attack: Attack
    if n == "fgsm":
        attack = FGSM(model, eps, **kw, **overrides)
    elif n == "rfgsm":
        attack = RFGSM(model, eps, **kw, **overrides)
    elif n == "transfer":
        if source is None:
            if not is_stochastic(model):
                raise SpikeguardError("the transfer attack needs a source model (--source RUN_DIR) for a "
                                      "deterministic target; its noise-free twin would be the target itself")
            attack = NoiseFreeTransfer(model, eps, alpha=alpha, **overrides)
        else:
            src_eot = eot if is_stochastic(source) else 1
            attack = Transfer(model, source, eps, alpha=alpha, **(dict(steps=20) | overrides), eot=src_eot)
        attack.name = "transfer"
    elif n == "noise-free":
        attack = NoiseFreeTransfer(model, eps, alpha=alpha, **overrides)
    elif n == "fixed-noise":
        attack = FixedNoise(model, eps, alpha=alpha, seed=seed, **overrides)
    elif n == "sg-ensemble":
        attack = SurrogateEnsemble(model, eps, alpha=alpha, **kw, **overrides)
    elif n == "sg-adaptive":
        attack = AdaptiveSurrogate(model, eps, alpha=alpha, **kw, **overrides)
    else:
        attack = _build_pattern(n, model, eps, kw, alpha, overrides)
    attack.name = n
    return attack


def _build_pattern(n: str, model: nn.Module, eps: float, kw: dict, alpha: float, overrides: dict) -> Attack:
    for pattern, kind in _PATTERNS:
        m = pattern.match(n)
        if not m:
            continue
        if kind == "pgd":
            args = dict(alpha=alpha, steps=_int(m.group(1), 10, "PGD steps"), restarts=_int(m.group(2), 1, "restarts"))
            return PGD(model, eps, **kw, **(args | overrides))
        if kind == "apgd":
            args = dict(loss=m.group(1), steps=_int(m.group(2), 50, "APGD steps"))
            return APGD(model, eps, **kw, **(args | overrides))
        if kind == "mtpgd":
            args = dict(alpha=alpha, steps=_int(m.group(1), 20, "MTPGD steps"))
            return MTPGD(model, eps, **kw, **(args | overrides))
        if kind == "square":
            return Square(model, eps, **kw, **(dict(queries=_int(m.group(1), 1000, "queries")) | overrides))
    raise SpikeguardError(f"unknown attack {n!r}")  # unreachable after normalize_name


AttackBuilder = Callable[..., Attack]
