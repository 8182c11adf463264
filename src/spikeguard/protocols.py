"""Evaluation protocols as data: what the paper ran (``paper``) and what a trustworthy evaluation runs (``strong``).

A protocol is a list of :class:`EvalGroup` s; one group is one call of the evaluation engine
(:func:`spikeguard.evaluation.sharded.evaluate_sharded`, the entry point ``spikeguard
evaluate`` uses), so its attacks share the clean pass, the evaluation noise and the per-sample
worst case. Nothing here attacks anything: :mod:`spikeguard.jobs.study` hands these definitions to
the engine, which decides (per model) what applies and skips the rest with a reason.

``paper`` (arXiv 2602.20548, sections 5.1-5.2):

* ``single-pass``: FGSM, RFGSM, PGD-7/10/20/40 at eps 8/255, step 0.01. A Noisy-LIF model is
  attacked with one noisy pass per gradient (no EoT) and judged on one fresh noisy pass, as the
  paper's Table 1 appears to have been run.
* ``table3-eot``: APGD-CE and MTPGD (10 steps, the middle of Table 3) with EoT, judged on one
  pass, as Table 3 says.

The paper's groups run every attack on every sample (``individual``: its tables are per attack).

``strong``: one cascade group (the engine runs its attacks from cheap to expensive, each on the
samples still robust, so the survivors get the expensive attacks) with EoT and several
evaluation passes (mean and interval), FGSM/RFGSM
for reference, PGD-10/40, PGD-50 with 3 restarts, APGD-CE and APGD-DLR, MTPGD, Square
(black-box), transfer (from the noise-free twin, or from the study's source model for a
deterministic target), the noise-free twin itself, fixed noise, a surrogate-gradient ensemble
that sweeps surrogate widths (item 5(b): the attack's surrogate is a masking knob), the
adaptive surrogate, the per-sample worst case over all of them, and the audit. Its step sizes
follow eps (the engine's ``alpha="eps"`` rule, ``2.5 eps / steps`` per attack) where the paper
keeps 0.01.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import ConfigError, SpikeguardError
from .utils import eps_label, parse_budget
from .attacks.registry import STRONG_SQUARE_QUERIES, SUITE_ATTACK_KW, parse_attacks
from .neurons.surrogate import surrogate_members

PAPER_ALPHA = 0.01
"""The paper's PGD step (arXiv 2602.20548, section 5.1)."""

EPS_RULE = "eps"
"""The engine's eps-following step (``spikeguard.attacks.EPS_RULE``): ``2.5 eps / steps`` per attack."""

#: Surrogate-width sweep of the strong protocol's ``sg-ensemble`` (item 5(b) of issue 16: a
#: narrower attack surrogate than the training one changed FGSM accuracy by 25 points).
#: Every registered surrogate kind is swept at these widths (the triangle, the training default, at
#: one more; a kind's own ``sweep_widths`` win, e.g. the straight-through estimator's single 1.0).
SWEEP_WIDTHS: tuple[float, ...] = (0.25, 1.0, 2.0)
SWEEP_KIND_WIDTHS: dict[str, tuple[float, ...]] = {"triangle": (0.25, 0.5, 1.0, 2.0)}


def width_sweep() -> tuple[tuple[str, float], ...]:
    """The ``(surrogate, width)`` members of the sweep: every registered surrogate kind (one
    registered later included) at :data:`SWEEP_WIDTHS` / :data:`SWEEP_KIND_WIDTHS`."""
    return surrogate_members(SWEEP_WIDTHS, SWEEP_KIND_WIDTHS)


#: The sweep of the built-in surrogates (:func:`width_sweep` also has ones registered later).
WIDTH_SWEEP: tuple[tuple[str, float], ...] = width_sweep()


@dataclass(frozen=True)
class EvalGroup:
    """One engine call of a protocol.

    Attributes:
        name: short name (folder and column tag).
        attacks: registry names (:mod:`spikeguard.attacks.registry`).
        eot: EoT passes per gradient for a stochastic model (the engine uses 1 for deterministic ones).
        passes: evaluation passes for a stochastic model (the verdict; 1 = one fresh noisy pass).
        alpha: step of the attacks that take one: a number (the paper's 0.01) or ``"eps"``, the
            engine's eps-following rule (``2.5 eps / steps`` per attack, its own step count).
        attack_kw: per-attack constructor overrides (e.g. the surrogate widths).
        audit: also run the gradient-masking audit on this group's report.
        audit_steps: PGD steps of the audit's own runs.
        audit_eps: the budgets the audit runs at when a study evaluates several (empty: every one).
            The audit sweeps eps itself, so one budget usually suffices; each one costs about as
            much as the group's attacks on a noisy model.
        note: one line saying how this group reads the paper (shown under the tables).
        individual: run every attack on every sample (per-attack accuracy columns, the paper's
            tables); False: the engine's cascade (cheap to expensive, each attack on the samples
            still robust; the same per-sample worst case at a fraction of the cost, no per-attack
            accuracies).
    """

    name: str
    attacks: tuple[str, ...]
    eot: int = 1
    passes: int = 1
    alpha: float | str = PAPER_ALPHA
    attack_kw: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    audit: bool = False
    audit_steps: int = 10
    note: str = ""
    individual: bool = False
    audit_eps: tuple[float, ...] = ()

    def audits_at(self, eps: float) -> bool:
        """Whether the audit runs at budget ``eps`` (``audit`` on, and ``eps`` in ``audit_eps`` when given)."""
        return self.audit and (not self.audit_eps or any(abs(eps - e) < 1e-9 for e in self.audit_eps))

    def describe(self) -> str:
        """One line with the group's settings as they are now (overrides included) and its note."""
        step = "2.5 eps / steps" if self.alpha == EPS_RULE else f"{self.alpha:g}"
        text = (
            f"stochastic models: EoT {self.eot} per gradient, {self.passes} judging pass(es); step {step}; "
            + ("every attack on every sample" if self.individual else "cascade (worst case only)")
            + (f"; audit ({self.audit_steps}-step runs)" if self.audit else "")
            + (
                f" at eps {', '.join(eps_label(e) for e in self.audit_eps)} only"
                if self.audit and self.audit_eps
                else ""
            )
        )

        def fmt(kw: Mapping[str, Any]) -> str:
            return ", ".join(
                f"{k}=" + (" ".join(f"{n}:{w:g}" for n, w in v) if k == "members" else f"{v}") for k, v in kw.items()
            )

        custom = "; ".join(f"{k} ({fmt(v)})" for k, v in self.attack_kw.items())
        if custom:
            text += f"; settings {custom}"
        return text + (f". {self.note}" if self.note else "")


@dataclass(frozen=True)
class Protocol:
    """A named list of :class:`EvalGroup` s; ``tag`` marks its columns in the tables (``P``, ``S``)."""

    name: str
    tag: str
    description: str
    groups: tuple[EvalGroup, ...]
    n_samples: int = 0
    """Test images of this protocol (0 = the study's ``[evaluation].n_samples``)."""

    def attacks(self) -> list[str]:
        return [a for g in self.groups for a in g.attacks]

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> Protocol:
        """A copy with group fields replaced for every group (a study's ``[protocols.NAME]`` table).

        Keys: ``eot``, ``passes``, ``audit``, ``audit_steps``, ``audit_eps`` (the budgets of a
        several-eps study the audit runs at, e.g. ``["8/255"]``), ``alpha`` (number, or ``"eps"`` for
        eps-following), ``attack_kw`` (merged per attack), ``drop`` (attack names to leave out,
        e.g. to fit a CPU budget), ``groups`` (group names to keep), ``n_samples`` (this
        protocol's own number of test images, a class-balanced draw with the study's seed) and
        ``attacks`` (a list of registry names that replaces a group's attack list; checked
        against the attack registry, canonical spellings kept, suite names such as ``paper``
        expanded; ``drop`` still applies). A key that names a group holds overrides for that
        group only (``[protocols.paper.table3-eot]`` ``eot = 2`` leaves the single-pass group
        without EoT; ``[protocols.paper.single-pass]`` ``attacks = ["fgsm", "pgd40"]`` changes
        that group's attacks). ``attacks`` given for the whole protocol needs exactly one group
        (after ``groups``).
        """
        if not overrides:
            return self
        ov, per_group = self._split_overrides(overrides)
        n_samples = ov.pop("n_samples", self.n_samples)
        if not isinstance(n_samples, int) or n_samples < 0:
            raise ConfigError(f"protocol {self.name}: n_samples must be an integer >= 0, got {n_samples!r}")
        drop = set(ov.pop("drop", ()))
        keep = ov.pop("groups", None)
        kw_extra = ov.pop("attack_kw", {}) or {}
        new_attacks = self._attack_list(ov.pop("attacks")) if "attacks" in ov else None
        if new_attacks is not None:
            kept = [g.name for g in self.groups if keep is None or g.name in keep]
            if len(kept) != 1:
                raise ConfigError(
                    f"protocol {self.name}: attacks replaces one group's attack list; give it in a "
                    f"group's table ([protocols.{self.name}.GROUP], groups: {', '.join(kept)})"
                )
        self._check_group_values(ov)
        if "audit_eps" in ov:
            ov["audit_eps"] = self._eps_tuple(ov["audit_eps"])
        groups = []
        for g in self.groups:
            if keep is not None and g.name not in keep:
                continue
            new = self._override_group(g, ov, per_group.get(g.name), drop, kw_extra, new_attacks)
            if new is not None:
                groups.append(new)
        if not groups:
            raise ConfigError(f"protocol {self.name}: the overrides leave no attack to run")
        return dataclasses.replace(self, groups=tuple(groups), n_samples=n_samples)

    def _split_overrides(self, overrides: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(protocol-wide, per-group)`` overrides, the per-group ones keyed by group name; refuses unknown keys."""
        ov = dict(overrides)
        names = {g.name for g in self.groups}
        per_group = {k: ov.pop(k) for k in list(ov) if k in names}
        for k, v in per_group.items():
            if not isinstance(v, Mapping) or set(v) & {"n_samples", "groups"}:
                raise ConfigError(f"protocol {self.name}: [{k}] must be a table of group settings")
        unknown = set(ov) - {
            "eot",
            "passes",
            "audit",
            "audit_steps",
            "audit_eps",
            "alpha",
            "attack_kw",
            "drop",
            "groups",
            "n_samples",
            "attacks",
            "individual",
        }
        if unknown:
            raise ConfigError(
                f"protocol {self.name}: unknown override(s) {', '.join(sorted(unknown))} (known: eot, "
                "passes, audit, audit_steps, audit_eps, alpha, attack_kw, drop, groups, n_samples, attacks, "
                "individual, "
                f"or a group name: {', '.join(sorted(names))})"
            )
        return ov, per_group

    def _check_group_values(self, ov: Mapping[str, Any]) -> None:
        """Refuse group settings of the wrong type: ``alpha``, ``individual``, ``eot``, ``passes``, ``audit_steps``."""
        if "alpha" in ov and ov["alpha"] != EPS_RULE and not isinstance(ov["alpha"], (int, float)):
            raise ConfigError(f'protocol {self.name}: alpha must be a number or "eps", got {ov["alpha"]!r}')
        if "individual" in ov and not isinstance(ov["individual"], bool):
            raise ConfigError(f"protocol {self.name}: individual must be true or false, got {ov['individual']!r}")
        for key in ("eot", "passes", "audit_steps"):
            if key in ov and (not isinstance(ov[key], int) or ov[key] < 1):
                raise ConfigError(f"protocol {self.name}: {key} must be an integer >= 1, got {ov[key]!r}")

    def _eps_tuple(self, value: Any) -> tuple[float, ...]:
        """An ``audit_eps`` override (``["8/255"]``, numbers as fractions of the pixel range) as floats."""
        bad = f'protocol {self.name}: audit_eps must be a list of budgets like ["8/255"], got {value!r}'
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(bad)
        try:
            return tuple(parse_budget(v) for v in value)
        except (TypeError, ValueError):
            raise ConfigError(bad) from None

    def _override_group(
        self,
        g: EvalGroup,
        ov: Mapping[str, Any],
        own: Mapping[str, Any] | None,
        drop: set[str],
        kw_extra: Mapping[str, Any],
        new_attacks: tuple[str, ...] | None,
    ) -> EvalGroup | None:
        """Group ``g`` with the protocol-wide settings ``ov``, then its ``own`` ones, its attacks
        less the dropped ones (None: none left)."""
        kw = {k: dict(v) for k, v in g.attack_kw.items()}
        for k, v in kw_extra.items():
            kw[k] = {**kw.get(k, {}), **dict(v)}
        g = dataclasses.replace(g, attacks=new_attacks or g.attacks, attack_kw=kw, **ov)
        if own is not None:  # the group's own settings win over the protocol-wide ones
            own_kw = {k: v for k, v in own.items() if k != "drop"}
            drop_g = drop | set(own.get("drop", ()))
            g = Protocol(self.name, self.tag, "", (g,)).with_overrides(own_kw).groups[0] if own_kw else g
        else:
            drop_g = drop
        attacks = tuple(a for a in g.attacks if a not in drop_g)
        if not attacks:
            return None
        return dataclasses.replace(g, attacks=attacks)

    def _attack_list(self, value: Any) -> tuple[str, ...]:
        """An ``attacks`` override as canonical registry names (one-line :class:`ConfigError` otherwise)."""
        if (
            isinstance(value, str)
            or not isinstance(value, (list, tuple))
            or not value
            or not all(isinstance(a, str) for a in value)
        ):
            raise ConfigError(f"protocol {self.name}: attacks must be a non-empty list of attack names, got {value!r}")
        out: list[str] = []
        for a in value:
            try:
                names = parse_attacks(a)
            except SpikeguardError:
                raise ConfigError(
                    f"protocol {self.name}: unknown attack {a!r} in attacks (see `spikeguard list "
                    "attacks`; e.g. fgsm, rfgsm, pgd40, apgd-ce, square)"
                ) from None
            out += [n for n in names if n not in out]
        return tuple(out)


PAPER = Protocol(
    name="paper",
    tag="P",
    description="the paper's evaluation: eps 8/255, step 0.01; Noisy-LIF attacked with one noisy pass per gradient "
    "and judged on one fresh pass (no EoT, as Table 1 appears to have been run); APGD/MTPGD with EoT "
    "as in Table 3",
    groups=(
        EvalGroup(
            "single-pass",
            ("fgsm", "rfgsm", "pgd7", "pgd10", "pgd20", "pgd40"),
            eot=1,
            passes=1,
            individual=True,
            note="As the paper's Table 1 appears to have been run: one noisy pass per gradient, one "
            "fresh pass for the verdict, no EoT",
        ),
        EvalGroup(
            "table3-eot",
            ("apgd-ce10", "mtpgd10"),
            eot=8,
            passes=1,
            individual=True,
            note="As Table 3: EoT for the gradient, one pass for the verdict",
        ),
    ),
)

STRONG = Protocol(
    name="strong",
    tag="S",
    description="a strong evaluation: EoT and several judging passes (mean, 95% interval), adaptive and black-box "
    "attacks, the noise-free twin and fixed noise, a surrogate-width ensemble, per-sample worst case "
    "over every attack, and the gradient-masking audit; PGD steps follow eps",
    groups=(
        EvalGroup(
            "strong",
            (
                "fgsm",
                "rfgsm",
                "pgd10",
                "pgd40",
                "pgd50-r3",
                "apgd-ce",
                "apgd-dlr",
                "mtpgd",
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
            ),
            eot=8,
            passes=8,
            alpha=EPS_RULE,
            attack_kw={"sg-ensemble": {"members": WIDTH_SWEEP}, **SUITE_ATTACK_KW["strong"]},
            audit=True,
            note="Per-sample worst case over every attack; sg-ensemble sweeps surrogate widths 0.25-2; "
            f"Square with {STRONG_SQUARE_QUERIES} queries",
        ),
    ),
)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (PAPER, STRONG)}


def get_protocol(name: str, overrides: Mapping[str, Any] | None = None) -> Protocol:
    """The protocol called ``name`` with optional overrides (:meth:`Protocol.with_overrides`)."""
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name].with_overrides(overrides)


__all__ = [
    "EvalGroup",
    "Protocol",
    "PAPER",
    "STRONG",
    "PROTOCOLS",
    "get_protocol",
    "WIDTH_SWEEP",
    "width_sweep",
    "SWEEP_WIDTHS",
    "PAPER_ALPHA",
    "EPS_RULE",
    "STRONG_SQUARE_QUERIES",
]
