"""The robustness audit: sanity checks that expose gradient masking (after Athalye et al. 2018
and Carlini et al. 2019).

A stochastic, surrogate-gradient SNN can look robust because its gradients are noisy or
flat rather than because it is robust. Each check below is reported as PASS or WARN
(SKIP when it does not apply) with the numbers it is based on, and a WARN says what it
suggests:

============  ===================================================================
eps_sweep     PGD accuracy falls monotonically over eps in {1..64}/255 and reaches
              chance (<= 1/K + margin) at 64/255
iterative     every iterative attack is at least as strong as the best single-step one
steps         doubling PGD's steps changes robust accuracy by less than the tolerance
eot           PGD with EoT is at least as strong as without (stochastic models)
apgd          APGD is at least as strong as PGD (reviewers' masking flag)
black_box     no black-box / transfer attack beats the best white-box attack
zero_grad     share of samples whose input gradient is exactly zero (CE and margin loss)
surrogate     PGD's accuracy does not depend on the attack's surrogate width beyond noise
              (SNNs with swappable surrogate neurons; SKIP otherwise)
budget        ||x_adv - x||_inf <= eps + 1e-6 and x_adv in [0, 1] for every attack
============  ===================================================================

Comparisons use a tolerance in accuracy points (default 1), and every comparison of two
attacks on the same samples is decided by a paired test: exact McNemar on the per-sample
outcomes (``b`` samples broken by A only, ``c`` by B only, two-sided binomial p; with several
judging passes, "broken more often", the sign test over samples). A difference beyond the
tolerance that the paired test does not confirm (p >= 0.05) is within noise and is reported as
PASS with that said, not called gradient masking. Messages give both counts and p. Each check is one
``check_*(results, settings) -> Check`` function registered with :func:`register_check`; the audit
runs its attacks once and hands every check the same results.

The audit's own PGD runs take step ``2.5 * eps / steps`` (``alpha="eps"``), so at every
budget, the sweep's included, ``steps * alpha`` reaches past the boundary of the eps-ball;
a report's PGD pair is reused for the steps check only where its step size reaches too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from ..attacks import APGD, EPS_RULE, FGSM, PGD, Attack, NoiseFreeTransfer, Square, margin_loss, step_size
from ..attacks.adaptive import SurrogateEnsemble
from ..attacks.registry import describe_step_size
from ..attacks.requirements import model_traits, unmet
from ..errors import SpikeguardError
from ..registry import Registry
from ..neurons import is_stochastic
from ..randomness import Randomness, detect_randomness
from ..utils import eps_label
from .engine import AttackResult, RobustnessReport, evaluate_robustness, summarize
from .stats import mcnemar_exact, paired_counts
from ..protocols import width_sweep

DEFAULT_SWEEP: tuple[float, ...] = tuple(k / 255 for k in (1, 2, 4, 8, 16, 32, 64))
PASS, WARN, SKIP = "PASS", "WARN", "SKIP"
#: a difference counts as real when the paired test gives p below this
ALPHA_TEST = 0.05


@dataclass
class Check:
    """One audit check: ``status`` is PASS, WARN or SKIP; ``numbers`` what it was judged on."""

    key: str
    title: str
    status: str
    numbers: dict
    message: str

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "title": self.title,
            "status": self.status,
            "numbers": self.numbers,
            "message": self.message,
        }


@dataclass
class AuditReport:
    """All checks, the settings, and the audit's own attack runs."""

    checks: list[Check]
    settings: dict
    runs: RobustnessReport | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """``PASS`` if no check warns, else ``WARN``."""
        return WARN if any(c.status == WARN for c in self.checks) else PASS

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status == WARN]

    def check(self, key: str) -> Check:
        for c in self.checks:
            if c.key == key:
                return c
        raise KeyError(key)

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "n_warnings": len(self.warnings),
            "settings": self.settings,
            "checks": [c.to_dict() for c in self.checks],
            "seconds": round(self.seconds, 3),
            "runs": self.runs.to_dict(per_sample=False) if self.runs is not None else None,
        }

    def format(self) -> str:
        lines = [f"robustness audit: {self.verdict}" + (f" ({len(self.warnings)} warnings)" if self.warnings else "")]
        for c in self.checks:
            lines.append(f"  [{c.status}] {c.title}")
            lines.append(f"         {c.message}")
        return "\n".join(lines)


@dataclass(frozen=True)
class AuditSettings:
    """What every check is judged against: the thresholds, and which runs play which role.

    Attributes:
        eps: the budget the robust accuracy is claimed at.
        steps: PGD steps of the audit's own runs.
        tolerance: allowed difference, in accuracy points.
        chance_margin: accuracy at the largest sweep budget may exceed chance by this much.
        zero_grad_limit: largest acceptable share of samples with an all-zero input gradient.
        num_classes: classes of the model (chance is ``1 / num_classes``).
        sweep: the sweep's budgets and ``sweep_names`` the runs that measured them.
        pair: the ``(PGD-k, PGD-2k)`` runs of the steps check.
        eot_pair: the ``(EoT 1, EoT k)`` runs of the EoT check (None: deterministic model).
        eot_check: EoT samples of that check.
        zero_grad: measured shares of all-zero input gradients ``(CE, margin)`` and the EoT used.
        surrogate_runs: ``(surrogate name, width) -> run name`` of the surrogate check's PGD runs
            (empty: the model has no swappable surrogate neurons; ``surrogate_skip`` says why).
    """

    eps: float
    steps: int
    tolerance: float
    chance_margin: float
    zero_grad_limit: float
    num_classes: int
    sweep: tuple[float, ...]
    sweep_names: tuple[str, ...]
    pair: tuple[str, str]
    eot_pair: tuple[str, str] | None
    eot_check: int
    zero_grad: tuple[float, float, int]
    surrogate_runs: tuple[tuple[tuple[str, float], str], ...] = ()
    surrogate_skip: str = ""

    @property
    def tol(self) -> float:
        return self.tolerance / 100.0


Results = dict[str, AttackResult]


def _pts(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(r: AttackResult) -> list | None:
    s = summarize(r.robust)
    return s["ci95"] or s["ci95_samples"]


def _at_eps(results: Results, eps: float) -> Results:
    return {n: r for n, r in results.items() if abs(r.eps - eps) < 1e-12}


@dataclass(frozen=True)
class Paired:
    """A paired comparison of attacks ``a`` and ``b`` on the same samples (names in message order)."""

    a: str
    b: str
    a_only: int  # samples A breaks (more often) and B does not
    b_only: int
    p: float

    @classmethod
    def of(cls, a: str, ra: AttackResult, b: str, rb: AttackResult) -> Paired:
        na, nb = paired_counts(ra.robust, rb.robust)
        return cls(a, b, na, nb, mcnemar_exact(na, nb))

    def text(self) -> str:
        return (
            f"paired on the same samples: {self.a_only} broken by {self.a} only, {self.b_only} by {self.b} only, "
            f"exact McNemar p = {self.p:.3g}"
        )

    def to_dict(self) -> dict:
        return {
            "a": self.a,
            "b": self.b,
            "a_only": self.a_only,
            "b_only": self.b_only,
            "p": self.p,
            "test": "exact McNemar (sign test over samples with several passes)",
        }


CheckFn = Callable[["Results", "AuditSettings"], "Check"]

#: Every audit check, by key (``spikeguard list checks``); meta ``order`` (report position) and
#: ``every_run`` (the check also sees a cascade report's runs that the other checks leave out).
AUDIT_CHECKS: Registry[CheckFn] = Registry("audit check")


def register_check(
    key: str, *, order: int = 1000, every_run: bool = False, description: str | None = None
) -> Callable[[CheckFn], CheckFn]:
    """Decorator: run ``check(results, settings) -> Check`` in every audit (report position ``order``).

    The check gets the audit's attack results by run name and the :class:`AuditSettings`, and
    returns a :class:`Check` whose ``key`` is ``key`` (use :func:`verdict` for the PASS/WARN rule).
    """
    return AUDIT_CHECKS.register(key, description=description, order=order, every_run=every_run)


def audit_checks() -> list[CheckFn]:
    """The registered checks in report order."""
    return [e.obj for e in sorted(AUDIT_CHECKS.entries(), key=lambda e: (e.meta["order"], e.name))]


def verdict(
    key: str, title: str, ok: bool, numbers: dict, passed: str, warned: str, paired: Paired | None = None
) -> Check:
    """The one PASS/WARN rule: PASS if ``ok``; else WARN, unless the ``paired`` test of the two
    compared attacks does not confirm the difference (p >= :data:`ALPHA_TEST`): then it is within
    noise, and the check passes saying so (noise is not evidence of gradient masking)."""
    if paired is not None:
        numbers = numbers | {"paired_test": paired.to_dict()}
        passed, warned = f"{passed} ({paired.text()})", f"{warned} ({paired.text()})"
    if ok:
        return Check(key, title, PASS, numbers, passed)
    if paired is not None and paired.p >= ALPHA_TEST:
        return Check(
            key,
            title,
            PASS,
            numbers | {"within_noise": True},
            f"within noise: {warned.split('. ')[0]}, but the paired test does not separate them "
            f"({paired.text()} >= {ALPHA_TEST:g}), so this is not evidence of gradient masking; rerun with "
            "more --n-samples (or --passes) to resolve it.",
        )
    return Check(key, title, WARN, numbers, warned)


@register_check("eps_sweep", order=10)
def check_eps_sweep(results: Results, st: AuditSettings) -> Check:
    """PGD accuracy falls monotonically with eps and reaches chance at the largest budget."""
    accs = [results[n].accuracy for n in st.sweep_names]
    chance = 1.0 / max(st.num_classes, 1)
    rises = [
        (eps_label(st.sweep[i]), eps_label(st.sweep[i + 1]), accs[i + 1] - accs[i])
        for i in range(len(accs) - 1)
        if accs[i + 1] - accs[i] > st.tol
    ]
    top_ok = accs[-1] <= chance + st.chance_margin
    nums = {
        "eps": [eps_label(e) for e in st.sweep],
        "accuracy": accs,
        "chance": chance,
        "limit_at_max_eps": chance + st.chance_margin,
        "rises": rises,
        "attack": f"PGD-{st.steps}, alpha=2.5*eps/{st.steps}",
        "reach_over_eps": 2.5,
    }
    sweep_txt = ", ".join(f"{eps_label(e)}: {_pts(a)}" for e, a in zip(st.sweep, accs, strict=True))
    why = []
    if rises:
        why.append("accuracy rises with eps (" + "; ".join(f"{a}->{b}: +{100 * d:.1f} pts" for a, b, d in rises) + ")")
    if not top_ok:
        why.append(f"{_pts(accs[-1])} > {_pts(chance + st.chance_margin)} at {eps_label(st.sweep[-1])}")
    return verdict(
        "eps_sweep",
        "accuracy falls with eps and reaches chance",
        not why,
        nums,
        f"PGD-{st.steps} accuracy {sweep_txt}; monotone within {st.tolerance:g} points and "
        f"{_pts(accs[-1])} <= {_pts(chance + st.chance_margin)} at {eps_label(st.sweep[-1])}.",
        f"PGD-{st.steps} accuracy {sweep_txt}: " + " and ".join(why) + ". Suggests gradient "
        "masking/obfuscation (a budget that can erase the image must defeat the model); check the "
        "black-box and transfer numbers.",
    )


@register_check("iterative", order=20)
def check_iterative(results: Results, st: AuditSettings) -> Check:
    """Every iterative white-box attack at eps is at least as strong as the best single-step one."""
    at = _at_eps(results, st.eps)
    singles = {n: r.accuracy for n, r in at.items() if r.family in ("fgsm", "rfgsm")}
    best_single = min(singles.values())
    swept = {n for _, n in st.surrogate_runs}  # deliberately mismatched surrogates: check_surrogate's job
    iters = {n: r.accuracy for n, r in at.items() if r.iterative and r.threat == "white-box" and n not in swept}
    weaker = {n: a for n, a in iters.items() if a > best_single + st.tol}
    nums = {"single_step": singles, "iterative": iters, "weaker_than_single_step": weaker}
    best_txt = f" (strongest: {min(iters, key=iters.__getitem__)} {_pts(min(iters.values()))})" if iters else ""
    worst = max(weaker, key=weaker.__getitem__) if weaker else None
    bs = min(singles, key=singles.__getitem__)
    return verdict(
        "iterative",
        "iterative attacks beat single-step ones",
        not weaker,
        nums,
        f"all {len(iters)} iterative attacks <= best single-step {_pts(best_single)} + {st.tolerance:g} pts{best_txt}.",
        "weaker than the best single-step attack ("
        + _pts(best_single)
        + "): "
        + ", ".join(f"{n} {_pts(a)}" for n, a in weaker.items())
        + ". Suggests a masked or noisy loss "
        "surface that a single large step jumps over, or a step size too small for the budget.",
        Paired.of(bs, at[bs], worst, at[worst]) if worst else None,
    )


@register_check("steps", order=30)
def check_steps(results: Results, st: AuditSettings) -> Check:
    """Doubling PGD's steps changes robust accuracy by less than the tolerance."""
    r1, r2 = results[st.pair[0]], results[st.pair[1]]
    a1, a2 = r1.accuracy, r2.accuracy
    d = a2 - a1
    nums = {
        st.pair[0]: a1,
        st.pair[1]: a2,
        "difference_points": 100 * d,
        "ci95": {st.pair[0]: _ci(r1), st.pair[1]: _ci(r2)},
    }
    why = (
        "more steps still lower the accuracy: the attack has not converged; report more steps, restarts or APGD"
        if d < 0
        else "more steps raised the accuracy: the numbers are dominated by randomness (the model's noise or the "
        "random start); use more passes/samples, EoT, or restarts"
    )
    return verdict(
        "steps",
        "doubling the steps changes little",
        abs(d) < st.tol,
        nums,
        f"{st.pair[0]} {_pts(a1)} vs {st.pair[1]} {_pts(a2)}: {100 * d:+.2f} pts (< {st.tolerance:g}).",
        f"{st.pair[0]} {_pts(a1)} vs {st.pair[1]} {_pts(a2)}: {100 * d:+.2f} pts. Suggests {why}.",
        Paired.of(st.pair[0], r1, st.pair[1], r2),
    )


@register_check("eot", order=40)
def check_eot(results: Results, st: AuditSettings) -> Check:
    """On a stochastic model, PGD with EoT is at least as strong as without."""
    title = "EoT at least as strong as no EoT"
    if st.eot_pair is None:
        return Check("eot", title, SKIP, {}, "the model is deterministic (no randomness found): EoT does not apply.")
    r0, rk = results[st.eot_pair[0]], results[st.eot_pair[1]]
    a0, ak = r0.accuracy, rk.accuracy
    nums = {
        st.eot_pair[0]: a0,
        st.eot_pair[1]: ak,
        "difference_points": 100 * (ak - a0),
        "ci95": {st.eot_pair[0]: _ci(r0), st.eot_pair[1]: _ci(rk)},
    }
    return verdict(
        "eot",
        title,
        ak <= a0 + st.tol,
        nums,
        f"PGD-{st.steps} with EoT {st.eot_check}: {_pts(ak)} vs without: {_pts(a0)}.",
        f"PGD-{st.steps} with EoT {st.eot_check}: {_pts(ak)} > without: {_pts(a0)}. Suggests too few "
        "EoT samples or steps for the noise level (averaging over too few passes shrinks the step "
        "direction's signal), or noise-driven gradient masking.",
        Paired.of(st.eot_pair[1], rk, st.eot_pair[0], r0),
    )


@register_check("apgd", order=50)
def check_apgd(results: Results, st: AuditSettings) -> Check:
    """APGD is at least as strong as PGD (the paper's reviewers' masking flag)."""
    at = _at_eps(results, st.eps)
    apgds = {n: r.accuracy for n, r in at.items() if r.family == "apgd"}
    pgds = {n: r.accuracy for n, r in at.items() if r.family == "pgd" and r.threat == "white-box"}
    best_apgd, best_pgd = min(apgds, key=apgds.__getitem__), min(pgds, key=pgds.__getitem__)
    return verdict(
        "apgd",
        "APGD at least as strong as PGD",
        apgds[best_apgd] <= pgds[best_pgd] + st.tol,
        {"apgd": apgds, "pgd": pgds},
        f"best APGD {_pts(apgds[best_apgd])} vs best PGD {_pts(pgds[best_pgd])}.",
        f"best APGD {_pts(apgds[best_apgd])} > best PGD {_pts(pgds[best_pgd])}. APGD's step-size control "
        "relies on the loss going up; on a noisy or flat surrogate loss it stalls. The reviewers of the "
        "paper read this as a sign of masked gradients.",
        Paired.of(best_apgd, at[best_apgd], best_pgd, at[best_pgd]),
    )


@register_check("black_box", order=60)
def check_black_box(results: Results, st: AuditSettings) -> Check:
    """No black-box or transfer attack beats the best white-box attack."""
    at = _at_eps(results, st.eps)
    wb = {n: r.accuracy for n, r in at.items() if r.threat == "white-box"}
    bb = {n: r.accuracy for n, r in at.items() if r.threat in ("black-box", "transfer")}
    best_wb = min(wb, key=wb.__getitem__)
    stronger = {n: a for n, a in bb.items() if a < wb[best_wb] - st.tol}
    nums = {
        "white_box_best": wb[best_wb],
        "white_box_best_attack": best_wb,
        "black_box_transfer": bb,
        "stronger_than_white_box": stronger,
    }
    best_bb = min(stronger, key=stronger.__getitem__) if stronger else None
    return verdict(
        "black_box",
        "black-box/transfer not stronger than white-box",
        not stronger,
        nums,
        f"best white-box {_pts(wb[best_wb])} ({best_wb}); " + ", ".join(f"{n} {_pts(a)}" for n, a in bb.items()) + ".",
        ", ".join(f"{n} {_pts(a)}" for n, a in stronger.items()) + f" beat the best white-box attack "
        f"({_pts(wb[best_wb])}). The white-box gradients are uninformative: gradient masking. Trust the "
        "worst case, not the white-box numbers.",
        Paired.of(best_bb, at[best_bb], best_wb, at[best_wb]) if best_bb else None,
    )


@register_check("zero_grad", order=70)
def check_zero_grad(results: Results, st: AuditSettings) -> Check:
    """Few samples have an all-zero input gradient (CE and margin loss)."""
    z_ce, z_margin, eot = st.zero_grad
    nums = {"share_ce": z_ce, "share_margin": z_margin, "limit": st.zero_grad_limit, "eot": eot}
    hint = (
        "the margin loss's gradient vanishes too: the surrogate gradients are zero (no neuron within the "
        "surrogate's support), or the model blocks its gradient (rounding, stop-gradient), which no gradient "
        "attack can get past; use square/transfer or sg-ensemble/sg-adaptive"
        if z_margin > st.zero_grad_limit
        else "only the CE gradient vanishes (the softmax saturates in float32): use margin/DLR losses (apgd-dlr, mtpgd)"
    )
    return verdict(
        "zero_grad",
        "few samples with an all-zero input gradient",
        max(z_ce, z_margin) <= st.zero_grad_limit,
        nums,
        f"all-zero input gradient: {_pts(z_ce)} (CE), {_pts(z_margin)} (margin loss).",
        f"all-zero input gradient: {_pts(z_ce)} (CE), {_pts(z_margin)} (margin loss), limit "
        f"{_pts(st.zero_grad_limit)}. Their robustness is unverified: {hint}.",
    )


@register_check("budget", order=90, every_run=True)
def check_budget(results: Results, st: AuditSettings) -> Check:
    """Every attack run stays within ``||x_adv - x||_inf <= eps + 1e-6`` and [0, 1]."""
    bad = {
        n: {"max_linf": r.max_linf, "eps": r.eps, "x_min": r.x_min, "x_max": r.x_max}
        for n, r in results.items()
        if not r.within_budget
    }
    nums = {
        "attacks_checked": sorted(results),
        "violations": bad,
        "max_linf_over_eps": max(r.max_linf - r.eps for r in results.values()),
    }
    return verdict(
        "budget",
        "||delta||_inf <= eps and x_adv in [0, 1]",
        not bad,
        nums,
        f"all {len(results)} attack runs stay within eps + 1e-6 and [0, 1].",
        "out of the threat model: " + ", ".join(bad) + ". Their numbers are invalid: a bug in the attack "
        "or inputs outside [0, 1].",
    )


@register_check("surrogate", order=80)
def check_surrogate(results: Results, st: AuditSettings) -> Check:
    """PGD's robust accuracy does not depend on the attack's surrogate width by more than its noise.

    The forward pass is the same at every width (spikes are Heaviside); only the gradient
    estimate changes, so a spread between widths is a property of the attack, not of the
    model: the per-sample worst over widths (``sg-ensemble``) is the number to trust.
    """
    title = "robust accuracy independent of the attack's surrogate width"
    if not st.surrogate_runs:
        return Check("surrogate", title, SKIP, {}, st.surrogate_skip or "no surrogate-width runs.")
    runs = {f"{sg}:{w:g}": results[n] for (sg, w), n in st.surrogate_runs}
    accs = {k: r.accuracy for k, r in runs.items()}
    best, worst = (
        min(accs, key=accs.__getitem__),
        max(accs, key=accs.__getitem__),
    )  # best for the attacker: lowest accuracy
    spread = accs[worst] - accs[best]
    nums = {
        "accuracy": accs,
        "ci95": {k: _ci(r) for k, r in runs.items()},
        "spread_points": 100 * spread,
        "strongest": best,
        "weakest": worst,
        "attack": f"PGD-{st.steps}",
        "alpha": next(iter(runs.values())).settings.get("alpha"),
    }
    txt = ", ".join(f"{k} {_pts(a)}" for k, a in accs.items())
    return verdict(
        "surrogate",
        title,
        spread <= st.tol,
        nums,
        f"PGD-{st.steps} at {eps_label(st.eps)} per attack surrogate: {txt}; spread "
        f"{100 * spread:.1f} pts (<= {st.tolerance:g}).",
        f"PGD-{st.steps} at {eps_label(st.eps)} per attack surrogate: {txt}; the spread {worst} "
        f"{_pts(accs[worst])} vs {best} {_pts(accs[best])} is {100 * spread:.1f} pts. The attack's "
        "surrogate is a masking knob: a robust accuracy measured with one surrogate is not an upper "
        "bound. Trust the per-sample worst over widths (the strong suite's sg-ensemble).",
        Paired.of(worst, runs[worst], best, runs[best]),
    )


def surrogate_sweep(model: nn.Module) -> list[tuple[str, float]]:
    """The ``(surrogate, width)`` members of the surrogate check: the strong suite's ``sg-ensemble``
    sweep (:func:`spikeguard.protocols.width_sweep`), every registered surrogate kind at its widths."""
    return list(width_sweep())


#: The built-in checks, in report order (:func:`audit_checks` also has ones registered later).
CHECKS: tuple[CheckFn, ...] = tuple(audit_checks())


@dataclass
class AuditPlan:
    """The audit's own attack runs and the role each plays (see :func:`audit_plan`)."""

    runs: list[tuple[str, Attack]]
    sweep: list[float]
    sweep_names: list[str]
    pair: tuple[str, str]
    eot_pair: tuple[str, str] | None
    surrogate_runs: list[tuple[tuple[str, float], str]]
    surrogate_skip: list[str]


def audit_plan(
    model: nn.Module,
    eps: float,
    *,
    stochastic: bool,
    eot: int,
    eot_check: int,
    steps: int,
    alpha: float | str,
    sweep: Sequence[float],
    square_queries: int,
    have: Results | None = None,
) -> AuditPlan:
    """The attacks the audit runs itself (those ``have``, a report's results, do not cover):
    the eps sweep, FGSM, the PGD-k/2k pair, the EoT pair, APGD, Square and the noise-free
    transfer, and one PGD per attack surrogate width (``spikeguard audit`` prices them first)."""
    have = have or {}

    def pgd(e: float, k: int, **kw) -> PGD:
        return PGD(model, e, alpha=step_size(alpha, e, k), steps=k, **({"eot": eot} | kw))

    runs: list[tuple[str, Attack]] = []
    sweep = sorted(float(e) for e in sweep)
    sweep_names = []
    for e in sweep:
        name = f"pgd{steps}@{eps_label(e)}"
        sweep_names.append(name)
        runs.append((name, PGD(model, e, alpha=step_size(EPS_RULE, e, steps), steps=steps, eot=eot)))
    if not any(r.family in ("fgsm", "rfgsm") and abs(r.eps - eps) < 1e-12 for r in have.values()):
        runs.append(("fgsm", FGSM(model, eps, eot=eot)))
    pair = _pgd_pair(have, eps)
    if pair is None:
        pair = (f"pgd{steps}", f"pgd{2 * steps}")
        runs += [(pair[0], pgd(eps, steps)), (pair[1], pgd(eps, 2 * steps))]
    eot_pair = None
    if stochastic:
        eot_pair = (f"pgd{steps}-eot1", f"pgd{steps}-eot{eot_check}")
        runs += [(eot_pair[0], pgd(eps, steps, eot=1)), (eot_pair[1], pgd(eps, steps, eot=eot_check))]
    if not any(r.family == "apgd" for r in have.values()):
        runs.append((f"apgd-ce{2 * steps}", APGD(model, eps, steps=2 * steps, eot=eot)))
    if not any(r.threat in ("black-box", "transfer") for r in have.values()):
        runs.append((f"square{square_queries}", Square(model, eps, queries=square_queries, eot=eot)))
        if stochastic and is_stochastic(model):  # Noisy-LIF noise: its noise-free twin is a transfer source
            runs.append(
                ("noise-free", NoiseFreeTransfer(model, eps, alpha=step_size(alpha, eps, 2 * steps), steps=2 * steps))
            )
    # the surrogate check: PGD once per attack surrogate width (a one-member sg-ensemble each)
    sg_skip = unmet(SurrogateEnsemble, model_traits(model, stochastic))
    sg_runs: list[tuple[tuple[str, float], str]] = []
    if not sg_skip:
        for sg, w in surrogate_sweep(model):
            name = f"pgd{steps}-sg-{sg}{w:g}"
            sg_runs.append(((sg, w), name))
            runs.append(
                (
                    name,
                    SurrogateEnsemble(
                        model, eps, alpha=step_size(alpha, eps, steps), steps=steps, members=[(sg, w)], eot=eot
                    ),
                )
            )
    return AuditPlan(runs, sweep, sweep_names, pair, eot_pair, sg_runs, list(sg_skip))


def audit_robustness(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    eps: float = 8 / 255,
    eot: int = 8,
    passes: int = 4,
    report: RobustnessReport | None = None,
    steps: int = 10,
    alpha: float | str = EPS_RULE,
    sweep: Sequence[float] = DEFAULT_SWEEP,
    tolerance: float = 1.0,
    chance_margin: float = 0.05,
    zero_grad_limit: float = 0.01,
    square_queries: int = 500,
    batch_size: int = 128,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    randomness: str | Randomness = "auto",
) -> AuditReport:
    """Run the sanity checks on ``model`` and ``(images, labels)``.

    Args:
        eps: the budget the robust accuracy is claimed at.
        eot, passes: EoT samples and evaluation passes for a stochastic model.
        report: an :func:`evaluate_robustness` report on the same samples; its attacks are
            reused (FGSM, PGD-k/2k, APGD, black-box, transfer) and its budgets checked (a cascade
            report's attacks only for their budgets: their accuracies are not comparable).
        steps: PGD steps of the audit's own runs (and of the sweep).
        alpha: PGD step size of the audit's own runs at ``eps``: ``"eps"`` (default,
            ``2.5 * eps / steps`` for each run's step count) or a number; the sweep always
            uses ``2.5 * eps_i / steps``.
        sweep: budgets of the eps sweep (the last one is judged against chance).
        tolerance: allowed difference in accuracy points for the comparisons.
        chance_margin: accuracy at the largest sweep eps must be <= 1/K + this.
        zero_grad_limit: largest acceptable share of samples with a zero input gradient.
        square_queries: queries of the audit's own Square run (if the report has no black-box attack).
        randomness: ``auto`` (detect), ``deterministic`` or ``stochastic``, or a found
            :class:`~spikeguard.randomness.Randomness`.

    A model with swappable surrogate neurons also gets one PGD run per attack surrogate of
    :func:`surrogate_sweep` at ``eps`` (same steps and step size as the audit's PGD), for the
    ``surrogate`` check.
    """
    t0 = time.perf_counter()
    _check_audit_args(steps, sweep, report, len(labels))
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if not isinstance(randomness, Randomness):
        randomness = detect_randomness(model, images[:8].to(device), mode=randomness, seed=seed)
    run = _AuditRun(
        eps=eps,
        steps=steps,
        alpha=alpha,
        sweep=sweep,
        square_queries=square_queries,
        eot=eot if randomness.stochastic else 1,
        eot_check=eot if eot > 1 else 8,
        passes=passes,
        batch_size=batch_size,
        seed=seed,
        device=device,
        randomness=randomness,
    )
    have, budget_only = _reused_results(report)
    plan, own = _audit_runs(model, images, labels, run, have, progress)
    results = {**own.results, **have}  # the report's runs win (the user's settings)
    zero_grad = zero_gradient_share(model, images, labels, eot=run.eot, batch_size=batch_size, device=device)
    st = _audit_settings(run, plan, own.num_classes or 1, zero_grad, tolerance, chance_margin, zero_grad_limit)
    every = {e.obj for e in AUDIT_CHECKS.entries() if e.meta["every_run"]}
    checks = [check({**results, **budget_only} if check in every else results, st) for check in audit_checks()]
    settings = _settings_record(run, st, own.passes, len(labels), report is not None)
    return AuditReport(checks=checks, settings=settings, runs=own, seconds=time.perf_counter() - t0)


def _check_audit_args(steps: int, sweep: Sequence[float], report: RobustnessReport | None, n: int) -> None:
    """Refuse an audit without PGD steps or sweep budgets, or with a report on other samples."""
    if steps < 1 or not sweep:
        raise SpikeguardError("the audit needs steps >= 1 and a non-empty eps sweep")
    if report is not None and report.n != n:
        raise SpikeguardError(f"the report covers {report.n} samples but {n} were given")


@dataclass(frozen=True)
class _AuditRun:
    """How :func:`audit_robustness` makes its own runs, the model's randomness resolved."""

    eps: float
    steps: int
    alpha: float | str
    sweep: Sequence[float]
    square_queries: int
    eot: int  # EoT samples of the runs (1 for a deterministic model)
    eot_check: int  # EoT samples of the EoT check's second run
    passes: int
    batch_size: int
    seed: int
    device: torch.device | str
    randomness: Randomness


def _reused_results(report: RobustnessReport | None) -> tuple[Results, Results]:
    """A report's results the checks compare, and those only checked for their budgets."""
    # a cascade's attacks saw only the survivors of the ones before them: their accuracies cannot be
    # compared, so the audit runs its own (their budgets are still checked)
    have = dict(report.results) if report is not None and not report.cascade else {}
    budget_only = dict(report.results) if report is not None and report.cascade else {}
    return have, budget_only


def _audit_runs(
    model: nn.Module, images: Tensor, labels: Tensor, run: _AuditRun, have: Results, progress: bool
) -> tuple[AuditPlan, RobustnessReport]:
    """Plan the runs ``have`` does not cover and evaluate them (seeded apart from a report with the same seed)."""
    plan = audit_plan(
        model,
        run.eps,
        stochastic=run.randomness.stochastic,
        eot=run.eot,
        eot_check=run.eot_check,
        steps=run.steps,
        alpha=run.alpha,
        sweep=run.sweep,
        square_queries=run.square_queries,
        have=have,
    )
    own = evaluate_robustness(
        model,
        images,
        labels,
        plan.runs,
        eps=run.eps,
        eot=run.eot,
        passes=run.passes,
        batch_size=run.batch_size,
        seed=run.seed + 1,
        device=run.device,
        progress="audit" if progress else False,
        randomness=run.randomness,
    )
    return plan, own


def _audit_settings(
    run: _AuditRun,
    plan: AuditPlan,
    num_classes: int,
    zero_grad: tuple[float, float],
    tolerance: float,
    chance_margin: float,
    zero_grad_limit: float,
) -> AuditSettings:
    """What the checks judge against: the thresholds, the measured zero-gradient shares and the runs' roles."""
    sg_skip = plan.surrogate_skip
    return AuditSettings(
        eps=run.eps,
        steps=run.steps,
        tolerance=tolerance,
        chance_margin=chance_margin,
        zero_grad_limit=zero_grad_limit,
        num_classes=num_classes,
        sweep=tuple(plan.sweep),
        sweep_names=tuple(plan.sweep_names),
        pair=plan.pair,
        eot_pair=plan.eot_pair,
        eot_check=run.eot_check,
        zero_grad=(zero_grad[0], zero_grad[1], run.eot),
        surrogate_runs=tuple(plan.surrogate_runs),
        surrogate_skip=(
            "the surrogate-width sweep "
            + "; ".join(sg_skip)
            + " (a plain nn.Module's gradient has no surrogate to vary)"
        )
        if sg_skip
        else "",
    )


def _settings_record(run: _AuditRun, st: AuditSettings, passes: int, n_samples: int, used_report: bool) -> dict:
    """The audit's settings as recorded in its report."""
    return {
        "eps": run.eps,
        "eps_label": eps_label(run.eps),
        "eot": run.eot,
        "eot_check": run.eot_check if run.randomness.stochastic else None,
        "passes": passes,
        "steps": run.steps,
        "alpha": run.alpha,
        "step_size": describe_step_size(run.alpha),
        "sweep": [eps_label(e) for e in st.sweep],
        "tolerance_points": st.tolerance,
        "chance_margin": st.chance_margin,
        "zero_grad_limit": st.zero_grad_limit,
        "n_samples": n_samples,
        "stochastic": run.randomness.stochastic,
        "randomness": run.randomness.to_dict(),
        "used_report": used_report,
        "seed": run.seed,
        "surrogate_widths": [f"{sg}:{w:g}" for (sg, w), _ in st.surrogate_runs],
    }


def _pgd_pair(results: Results, eps: float) -> tuple[str, str] | None:
    """The largest ``(PGD-k, PGD-2k)`` pair of single-run white-box PGD runs at ``eps`` whose step
    size reaches the boundary (``steps * alpha >= eps``); None if there is none."""
    ks: dict[int, str] = {}
    for n, r in _at_eps(results, eps).items():
        cfg = r.settings
        if r.family != "pgd" or r.threat != "white-box" or cfg.get("restarts", 1) != 1 or "steps" not in cfg:
            continue
        if cfg["steps"] * cfg.get("alpha", 0.0) >= eps * (1 - 1e-9):
            ks[int(cfg["steps"])] = n
    pairs = [k for k in ks if 2 * k in ks]
    if not pairs:
        return None
    k = max(pairs)
    return ks[k], ks[2 * k]


def zero_gradient_share(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    eot: int = 1,
    batch_size: int = 128,
    device: torch.device | str | None = None,
) -> tuple[float, float]:
    """Share of samples whose input gradient is exactly zero, for the CE and the margin loss.

    The gradient is the EoT average over ``eot`` passes (zero only if every pass gives zero).
    """
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    probe = Attack(model, eps=0.0, eot=eot)
    zc = zm = 0
    for i in range(0, len(labels), batch_size):
        x, y = images[i : i + batch_size].to(device), labels[i : i + batch_size].to(device)
        with torch.enable_grad():
            g_ce, _ = probe.input_grad(x, y)
            g_m, _ = probe.input_grad(x, y, margin_loss)
        zc += int((g_ce.flatten(1).abs().amax(1) == 0).sum())
        zm += int((g_m.flatten(1).abs().amax(1) == 0).sum())
    return zc / len(labels), zm / len(labels)
