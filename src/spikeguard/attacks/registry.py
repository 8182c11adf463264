"""Attack registry: every attack registers itself where its class is defined.

``@register_attack("pgd", pattern=r"pgd(?P<steps>\\d+)?(?:-r(?P<restarts>\\d+))?")`` on a class
makes ``pgd``, ``pgd20`` and ``pgd50-r3`` buildable by :func:`build_attack`; the pattern's
named groups become constructor arguments (digits become integers; the constructor checks
their range). The class's attributes say how the rest of the library treats it (see
:class:`~spikeguard.attacks.base.Attack`): ``family`` (its column in the paper-style
table), ``iterative`` (the audit compares
iterative attacks with single-step ones), ``threat`` and ``requires`` (what it needs from
the model; the evaluation skips it with a reason where that is missing). Adding an attack
is one class in one file.

Names (case-insensitive; ``K``, ``R``, ``Q`` are integers)::

    fgsm, rfgsm                       single-step
    pgdK, pgdK-rR                     PGD, K steps (default 10), R restarts
    apgd-ce[K], apgd-dlr[K]           Auto-PGD with CE / DLR loss, K steps (default 50)
    apgd-t[K]                         targeted APGD (DLR), 9 target classes, K steps (default 100)
    mtpgd[K]                          multi-targeted PGD, K steps per target (default 20)
    square[Q]                         Square attack, Q queries (default 1000)
    transfer                          PGD-20 on a source model (default: the noise-free twin)
    noise-free                        PGD-20 on the target's noise-free twin (Noisy-LIF models)
    fixed-noise                       PGD-20 with the evaluation's noise sample known
    sg-ensemble                       PGD-10 per surrogate gradient, per-sample worst
    sg-adaptive                       PGD-20 with a per-sample greedy surrogate width
    event-flipK, random-flipK,        event-stream attacks on frame data, budget K flipped
    event-steK                        event cells (default 50; see attacks/events.py)

Step sizes (``alpha``) of the attacks that take one: a number (the paper's protocol uses
0.01 whatever eps is), or :data:`EPS_RULE` (``"eps"``): ``alpha = 2.5 * eps / steps`` for
each attack from its own step count, so every attack can reach the boundary of the
eps-ball (the usual PGD choice; the strong protocol and the audit use it).
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from torch import nn

from ..errors import SpikeguardError
from ..registry import Registry, summary

if TYPE_CHECKING:  # pragma: no cover
    from .base import Attack

PAPER_ALPHA = 0.01
#: ``alpha="eps"``: the step size follows eps, ``2.5 * eps / steps`` per attack.
EPS_RULE = "eps"
EPS_RULE_FACTOR = 2.5

#: The paper's table (arXiv 2602.20548, section 5.1): clean, FGSM, RFGSM, PGD7..40, APGD, MTPGD.
PAPER_SUITE: tuple[str, ...] = ("fgsm", "rfgsm", "pgd7", "pgd10", "pgd20", "pgd40", "apgd-ce", "mtpgd")

#: Everything: the paper's attacks, longer/restarted PGD, APGD-DLR, black-box, transfer and
#: the SNN-adaptive attacks (those whose needs the model does not meet are skipped with a reason).
STRONG_SUITE: tuple[str, ...] = PAPER_SUITE + (
    "pgd50-r3",
    "apgd-dlr",
    "square",
    "transfer",
    "noise-free",
    "fixed-noise",
    "sg-ensemble",
    "sg-adaptive",
    "assg",
    "sa-pgd",
    "pdsg",
    "apgd-t",
)

SUITES: dict[str, tuple[str, ...]] = {"paper": PAPER_SUITE, "strong": STRONG_SUITE}

#: Square's query budget in the strong suite: AutoAttack's 5,000. In the cascade it runs late (its
#: cost rank is high) and so only on the few samples every gradient attack left robust; with
#: ``--individual`` it costs 5x the registry default of 1,000 on every sample.
STRONG_SQUARE_QUERIES = 5000

#: Constructor settings a suite gives its attacks (a caller's own settings win).
SUITE_ATTACK_KW: dict[str, dict[str, dict[str, Any]]] = {"strong": {"square": {"queries": STRONG_SQUARE_QUERIES}}}

#: The step-size rule each suite uses by default.
SUITE_ALPHA: dict[str, float | str] = {"paper": PAPER_ALPHA, "strong": EPS_RULE}


@dataclass(frozen=True)
class AttackSpec:
    """One registered attack: its name, class, name pattern and name-implied defaults."""

    name: str
    cls: type
    pattern: re.Pattern | None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    example: str = ""

    def match(self, text: str) -> dict[str, Any] | None:
        """Constructor arguments implied by ``text``, or None if ``text`` is not this attack's name."""
        if self.pattern is None:
            return {} if text == self.name else None
        m = self.pattern.fullmatch(text)
        if m is None:
            return None
        args = dict(self.defaults)
        for key, value in m.groupdict().items():
            if value is None:
                continue
            if value.isdigit():
                args[key] = int(value)  # its range is the constructor's to check (an event budget may be 0)
            else:
                args[key] = value
        return args


#: Every attack, by canonical name (``spikeguard list attacks``); an entry is its :class:`AttackSpec`.
ATTACKS: Registry[AttackSpec] = Registry("attack", error=SpikeguardError)
#: other spellings -> a name :func:`resolve` accepts (may be a parametrised one, ``apgd`` -> ``apgd-ce``)
_ALIASES: dict[str, str] = {}


def register_attack(
    name: str,
    pattern: str | None = None,
    *,
    aliases: Mapping[str, str] | Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
    example: str | None = None,
) -> Callable[[type], type]:
    """Class decorator: make ``cls`` buildable by :func:`build_attack` as ``name``.

    Args:
        name: canonical name (lower case).
        pattern: regular expression (matched in full) for parametrised names; its named groups
            are constructor arguments (``steps``, ``restarts``, ``queries``, ``loss`` ...).
        aliases: other spellings, as a list (meaning ``name``) or ``{alias: canonical name}``.
        defaults: constructor arguments every name of this attack implies (e.g. APGD's 50 steps).
        example: how ``list_attacks`` shows a parametrised name (e.g. ``pgdK-rR``).
    """

    def deco(cls: type) -> type:
        items = dict(aliases.items() if isinstance(aliases, Mapping) else ((a, name) for a in aliases))
        for a in items:
            if a in _ALIASES or a in ATTACKS:
                raise ValueError(f"attack alias {a!r} of {cls.__qualname__} is already registered")
        spec = AttackSpec(name, cls, re.compile(pattern) if pattern else None, dict(defaults or {}), example or name)
        ATTACKS.add(name, spec, description=summary(cls))
        _ALIASES.update(items)
        if "name" not in cls.__dict__:
            cls.name = name  # type: ignore[attr-defined]  # every attack class gets a name
        return cls

    return deco


def registered_attacks() -> dict[str, AttackSpec]:
    """The registered attacks by canonical name, sorted (a copy)."""
    return dict(ATTACKS.items())


def unregister_attack(name: str) -> None:
    """Remove a registered attack and its aliases (tests that define one clean up with this)."""
    ATTACKS.unregister(name)
    for a in [a for a, t in _ALIASES.items() if t == name]:
        del _ALIASES[a]


def list_attacks() -> list[str]:
    """Example names accepted by :func:`build_attack` (the patterns take any step count), sorted by name."""
    return [s.example for _, s in ATTACKS.items()]


def _spelling(name: str) -> str:
    n = name.strip().lower().replace("_", "-")
    return _ALIASES.get(n, n)


def resolve(name: str) -> tuple[str, AttackSpec, dict[str, Any]]:
    """``(canonical name, spec, name-implied constructor arguments)`` of an attack name."""
    n = _spelling(name)
    for _, spec in ATTACKS.items():
        args = spec.match(n)
        if args is not None:
            return n, spec, args
    raise SpikeguardError(
        f"unknown attack {name!r}; known: {', '.join(list_attacks())} "
        f"(K, R, Q are integers, e.g. pgd20, pgd50-r5, apgd-ce100, square2000)"
    )


def normalize_name(name: str) -> str:
    """Canonical spelling of an attack name (``APGD`` -> ``apgd-ce``, ``pgd`` -> ``pgd10``)."""
    return resolve(name)[0]


def attack_class(name: str) -> type:
    """The class that a registered attack name builds."""
    return resolve(name)[1].cls


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


def parse_alpha(text: str | float | None, default: float | str = PAPER_ALPHA) -> float | str:
    """A step-size setting: a number on the [0, 1] scale, ``eps`` (follow eps) or ``paper`` (0.01)."""
    if text is None:
        return default
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        t = str(text).strip().lower()
        if t == EPS_RULE:
            return EPS_RULE
        if t == "paper":
            return PAPER_ALPHA
        try:
            value = float(t)
        except ValueError:
            raise SpikeguardError(
                f"step size must be a number, 'eps' (2.5 * eps / steps) or 'paper' (0.01), got {text!r}"
            ) from None
    if not 0.0 < value <= 1.0:
        raise SpikeguardError(f"step size must be in (0, 1], got {value}")
    return value


def step_size(alpha: float | str, eps: float, steps: int) -> float:
    """The step size an attack of ``steps`` steps uses under the rule ``alpha`` (see module docstring)."""
    if alpha == EPS_RULE:
        return max(EPS_RULE_FACTOR * float(eps) / max(int(steps), 1), 1e-6) if eps > 0 else 0.0
    if isinstance(alpha, str):
        return float(parse_alpha(alpha))
    return float(alpha)


def describe_step_size(alpha: float | str) -> dict[str, Any]:
    """The step-size rule as recorded in a result."""
    if alpha == EPS_RULE:
        return {
            "rule": "eps",
            "alpha": f"{EPS_RULE_FACTOR:g} * eps / steps",
            "note": "each attack's step size follows eps and its own step count, so it can reach the eps boundary",
        }
    note = "the paper's fixed step size, whatever eps is" if float(alpha) == PAPER_ALPHA else "a fixed step size"
    return {"rule": "fixed", "alpha": float(alpha), "note": note}


def build_attack(
    name: str,
    model: nn.Module,
    eps: float = 8 / 255,
    eot: int = 1,
    alpha: float | str = PAPER_ALPHA,
    source: nn.Module | None = None,
    seed: int = 0,
    **overrides: Any,
) -> Attack:
    """Build the attack called ``name`` on ``model``.

    Args:
        name: see the module docstring.
        eps: L-inf budget on the [0, 1] scale.
        eot: EoT passes for the gradient attacks (use 1 for deterministic models).
        alpha: step size of the attacks that take one: a number (paper: 0.01) or ``"eps"``
            (``2.5 * eps / steps`` from each attack's own step count).
        source: model for ``transfer`` (default: the target's noise-free twin, which needs
            a Noisy-LIF target).
        seed: seed of ``fixed-noise``'s default noise sample.
        **overrides: constructor arguments replacing the defaults (e.g. ``queries=500``).
    """
    n, spec, args = resolve(name)
    kw = args | overrides
    cls = spec.cls
    if getattr(cls, "uses_step_size", False) and "alpha" not in overrides:
        kw["alpha"] = step_size(alpha, eps, kw.get("steps", _default(cls, "steps", 1)))
    attack = cls.build(model, eps, eot=eot, source=source, seed=seed, **kw)  # type: ignore[attr-defined]  # registered attack classes have build()
    attack.name = n
    return attack


def _default(cls: type, param: str, fallback: Any) -> Any:
    """The default of ``cls.__init__``'s parameter ``param`` (``fallback`` if it has none)."""
    p = inspect.signature(cls.__init__).parameters.get(param)  # type: ignore[misc]  # reads the signature only
    return fallback if p is None or p.default is inspect.Parameter.empty else p.default
