"""The robustness audit: sanity checks that expose gradient masking (PAPER.md section 7).

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
budget        ||x_adv - x||_inf <= eps + 1e-6 and x_adv in [0, 1] for every attack
============  ===================================================================

Comparisons use a tolerance in accuracy points (default 1, as in the issue); on small
samples or few passes, differences of that size can be noise: the numbers include the
95% intervals so the reader can tell.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor, nn

from ..attacks import APGD, FGSM, PGD, Attack, NoiseFreeTransfer, Square, margin_loss
from ..errors import SpikeguardError
from ..neurons import is_stochastic
from ..utils import eps_label
from .engine import RobustnessReport, evaluate_robustness, summarize

DEFAULT_SWEEP: tuple[float, ...] = tuple(k / 255 for k in (1, 2, 4, 8, 16, 32, 64))
PASS, WARN, SKIP = "PASS", "WARN", "SKIP"
_ITERATIVE = re.compile(r"^(pgd\d+(-r\d+)?|apgd-(ce|dlr)\d*|mtpgd\d*|sg-ensemble|sg-adaptive)$")
_PLAIN_PGD = re.compile(r"^pgd(\d+)$")


@dataclass
class Check:
    """One audit check: ``status`` is PASS, WARN or SKIP; ``numbers`` what it was judged on."""

    key: str
    title: str
    status: str
    numbers: dict
    message: str

    def to_dict(self) -> dict:
        return {"key": self.key, "title": self.title, "status": self.status, "numbers": self.numbers,
                "message": self.message}


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
        return {"verdict": self.verdict, "n_warnings": len(self.warnings), "settings": self.settings,
                "checks": [c.to_dict() for c in self.checks], "seconds": round(self.seconds, 3),
                "runs": self.runs.to_dict(per_sample=False) if self.runs is not None else None}

    def format(self) -> str:
        lines = [f"robustness audit: {self.verdict}" + (f" ({len(self.warnings)} warnings)" if self.warnings else "")]
        for c in self.checks:
            lines.append(f"  [{c.status}] {c.title}")
            lines.append(f"         {c.message}")
        return "\n".join(lines)


def _pts(x: float) -> str:
    return f"{100 * x:.1f}%"


def _overlap(a: list | None, b: list | None) -> bool:
    """True if two 95% intervals overlap (a difference between them may be noise)."""
    return bool(a and b and a[0] <= b[1] and b[0] <= a[1])


def _noise_note(a: list | None, b: list | None) -> str:
    return (" The two 95% intervals overlap, so this may be noise: rerun with more --passes / --n-samples."
            if _overlap(a, b) else "")


def audit_robustness(model: nn.Module, images: Tensor, labels: Tensor, *, eps: float = 8 / 255, eot: int = 8,
                     passes: int = 4, report: RobustnessReport | None = None, steps: int = 10,
                     alpha: float = 0.01, sweep: Sequence[float] = DEFAULT_SWEEP, tolerance: float = 1.0,
                     chance_margin: float = 0.05, zero_grad_limit: float = 0.01, square_queries: int = 500,
                     batch_size: int = 128, seed: int = 0, device: torch.device | str | None = None,
                     progress: bool = False) -> AuditReport:
    """Run the sanity checks on ``model`` and ``(images, labels)``.

    Args:
        eps: the budget the robust accuracy is claimed at.
        eot, passes: EoT samples and evaluation passes for a stochastic model.
        report: an :func:`evaluate_robustness` report on the same samples; its attacks are
            reused (FGSM, PGD-k/2k, APGD, black-box, transfer) and its budgets checked.
        steps: PGD steps of the audit's own runs (and of the sweep).
        alpha: PGD step size at ``eps``; the sweep uses ``2.5 * eps_i / steps``.
        sweep: budgets of the eps sweep (the last one is judged against chance).
        tolerance: allowed difference in accuracy points for the comparisons.
        chance_margin: accuracy at the largest sweep eps must be <= 1/K + this.
        zero_grad_limit: largest acceptable share of samples with a zero input gradient.
        square_queries: queries of the audit's own Square run (if the report has no black-box attack).
    """
    import time

    t0 = time.perf_counter()
    if steps < 1 or not sweep:
        raise SpikeguardError("the audit needs steps >= 1 and a non-empty eps sweep")
    if report is not None and report.n != len(labels):
        raise SpikeguardError(f"the report covers {report.n} samples but {len(labels)} were given")
    stochastic = is_stochastic(model)
    eot_used = eot if stochastic else 1
    eot_check = eot if eot > 1 else 8
    tol = tolerance / 100.0
    have = dict(report.results) if report is not None else {}

    # -- the audit's own runs: one engine call, so they share the clean pass and the noise -------
    runs: list[tuple[str, Attack]] = []
    sweep = sorted(float(e) for e in sweep)
    sweep_names = []
    for e in sweep:
        name = f"pgd{steps}@{eps_label(e)}"
        sweep_names.append(name)
        runs.append((name, PGD(model, e, alpha=max(2.5 * e / steps, 1e-6) if e > 0 else 0.0, steps=steps,
                               eot=eot_used)))
    if "fgsm" not in have:
        runs.append(("fgsm", FGSM(model, eps, eot=eot_used)))
    pair = _pgd_pair(have)
    if pair is None:
        k = steps
        pair = (f"pgd{k}", f"pgd{2 * k}")
        runs += [(pair[0], PGD(model, eps, alpha=alpha, steps=k, eot=eot_used)),
                 (pair[1], PGD(model, eps, alpha=alpha, steps=2 * k, eot=eot_used))]
    eot_pair = None
    if stochastic:
        eot_pair = (f"pgd{steps}-eot1", f"pgd{steps}-eot{eot_check}")
        runs += [(eot_pair[0], PGD(model, eps, alpha=alpha, steps=steps, eot=1)),
                 (eot_pair[1], PGD(model, eps, alpha=alpha, steps=steps, eot=eot_check))]
    if not any(n.startswith("apgd") for n in have):
        runs.append((f"apgd-ce{2 * steps}", APGD(model, eps, steps=2 * steps, eot=eot_used)))
    if not any(r.threat in ("black-box", "transfer") for r in have.values()):
        runs.append((f"square{square_queries}", Square(model, eps, queries=square_queries, eot=eot_used)))
        if stochastic:
            runs.append(("noise-free", NoiseFreeTransfer(model, eps, alpha=alpha, steps=2 * steps)))
    own = evaluate_robustness(model, images, labels, runs, eps=eps, eot=eot_used, passes=passes,
                              batch_size=batch_size, seed=seed + 1, device=device,
                              progress="audit" if progress else False)
    allres = {**own.results, **have}  # the report's runs win (the user's settings)

    def acc(name: str) -> float:
        return allres[name].accuracy

    def ci(name: str) -> list | None:
        s = summarize(allres[name].robust)
        return s["ci95"] or s["ci95_samples"]

    checks: list[Check] = []

    # 1. eps sweep --------------------------------------------------------------------------------
    accs = [acc(n) for n in sweep_names]
    num_classes = own.num_classes or 1
    chance = 1.0 / num_classes
    rises = [(eps_label(sweep[i]), eps_label(sweep[i + 1]), accs[i + 1] - accs[i])
             for i in range(len(accs) - 1) if accs[i + 1] - accs[i] > tol]
    top_ok = accs[-1] <= chance + chance_margin
    nums = {"eps": [eps_label(e) for e in sweep], "accuracy": accs, "chance": chance,
            "limit_at_max_eps": chance + chance_margin, "rises": rises, "attack": f"PGD-{steps}, alpha=2.5*eps/{steps}"}
    sweep_txt = ", ".join(f"{eps_label(e)}: {_pts(a)}" for e, a in zip(sweep, accs))
    if not rises and top_ok:
        checks.append(Check("eps_sweep", "accuracy falls with eps and reaches chance", PASS, nums,
                            f"PGD-{steps} accuracy {sweep_txt}; monotone within {tolerance:g} points and "
                            f"{_pts(accs[-1])} <= {_pts(chance + chance_margin)} at {eps_label(sweep[-1])}."))
    else:
        why = []
        if rises:
            why.append("accuracy rises with eps (" + "; ".join(f"{a}->{b}: +{100 * d:.1f} pts" for a, b, d in rises) + ")")
        if not top_ok:
            why.append(f"{_pts(accs[-1])} > {_pts(chance + chance_margin)} at {eps_label(sweep[-1])}")
        checks.append(Check("eps_sweep", "accuracy falls with eps and reaches chance", WARN, nums,
                            f"PGD-{steps} accuracy {sweep_txt}: " + " and ".join(why) + ". Suggests gradient "
                            "masking/obfuscation (a budget that can erase the image must defeat the model) or too "
                            "few steps; check the black-box and transfer numbers."))

    # 2. iterative >= single-step ----------------------------------------------------------------------
    singles = {n: acc(n) for n in ("fgsm", "rfgsm") if n in allres}
    best_single = min(singles.values())
    iters = {n: acc(n) for n, r in allres.items() if _ITERATIVE.match(n) and abs(r.eps - eps) < 1e-12
             and r.threat == "white-box"}
    weaker = {n: a for n, a in iters.items() if a > best_single + tol}
    nums = {"single_step": singles, "iterative": iters, "weaker_than_single_step": weaker}
    if not weaker:
        checks.append(Check("iterative", "iterative attacks beat single-step ones", PASS, nums,
                            f"all {len(iters)} iterative attacks <= best single-step {_pts(best_single)} + {tolerance:g} pts "
                            f"(strongest: {min(iters, key=iters.get)} {_pts(min(iters.values()))})."))
    else:
        checks.append(Check("iterative", "iterative attacks beat single-step ones", WARN, nums,
                            "weaker than the best single-step attack (" + _pts(best_single) + "): " +
                            ", ".join(f"{n} {_pts(a)}" for n, a in weaker.items()) + ". Suggests a masked or "
                            "noisy loss surface that a single large step jumps over, or a step size too small."
                            + (_noise_note(ci(min(singles, key=singles.get)), ci(max(weaker, key=weaker.get))))))

    # 3. doubling the steps -----------------------------------------------------------------------------
    a1, a2 = acc(pair[0]), acc(pair[1])
    d = a2 - a1
    nums = {pair[0]: a1, pair[1]: a2, "difference_points": 100 * d, "ci95": {pair[0]: ci(pair[0]), pair[1]: ci(pair[1])}}
    if abs(d) < tol:
        checks.append(Check("steps", "doubling the steps changes little", PASS, nums,
                            f"{pair[0]} {_pts(a1)} vs {pair[1]} {_pts(a2)}: {100 * d:+.2f} pts (< {tolerance:g})."))
    else:
        why = ("more steps still lower the accuracy: the attack has not converged; report more steps, "
               "restarts or APGD" if d < 0 else
               "more steps raised the accuracy: the numbers are dominated by randomness (the model's noise or "
               "the random start); use more passes/samples, EoT, or restarts")
        checks.append(Check("steps", "doubling the steps changes little", WARN, nums,
                            f"{pair[0]} {_pts(a1)} vs {pair[1]} {_pts(a2)}: {100 * d:+.2f} pts. Suggests {why}."
                            + _noise_note(ci(pair[0]), ci(pair[1]))))

    # 4. EoT ---------------------------------------------------------------------------------------------
    if eot_pair is None:
        checks.append(Check("eot", "EoT at least as strong as no EoT", SKIP, {},
                            "the model is deterministic: EoT does not apply."))
    else:
        a0, ak = acc(eot_pair[0]), acc(eot_pair[1])
        nums = {eot_pair[0]: a0, eot_pair[1]: ak, "difference_points": 100 * (ak - a0),
                "ci95": {eot_pair[0]: ci(eot_pair[0]), eot_pair[1]: ci(eot_pair[1])}}
        if ak <= a0 + tol:
            checks.append(Check("eot", "EoT at least as strong as no EoT", PASS, nums,
                                f"PGD-{steps} with EoT {eot_check}: {_pts(ak)} vs without: {_pts(a0)}."))
        else:
            checks.append(Check("eot", "EoT at least as strong as no EoT", WARN, nums,
                                f"PGD-{steps} with EoT {eot_check}: {_pts(ak)} > without: {_pts(a0)}. Suggests too "
                                "few EoT samples or steps for the noise level (averaging over too few passes "
                                "shrinks the step direction's signal), or noise-driven gradient masking."
                                + _noise_note(ci(eot_pair[0]), ci(eot_pair[1]))))

    # 5. APGD >= PGD ---------------------------------------------------------------------------------------
    apgds = {n: acc(n) for n, r in allres.items() if n.startswith("apgd") and abs(r.eps - eps) < 1e-12}
    pgds = {n: acc(n) for n, r in allres.items() if _PLAIN_PGD.match(n) and abs(r.eps - eps) < 1e-12}
    best_apgd, best_pgd = min(apgds.values()), min(pgds.values())
    nums = {"apgd": apgds, "pgd": pgds}
    if best_apgd <= best_pgd + tol:
        checks.append(Check("apgd", "APGD at least as strong as PGD", PASS, nums,
                            f"best APGD {_pts(best_apgd)} vs best PGD {_pts(best_pgd)}."))
    else:
        checks.append(Check("apgd", "APGD at least as strong as PGD", WARN, nums,
                            f"best APGD {_pts(best_apgd)} > best PGD {_pts(best_pgd)}. APGD's step-size control "
                            "relies on the loss going up; on a noisy or flat surrogate loss it stalls. The "
                            "reviewers of the paper read this as a sign of masked gradients."
                            + _noise_note(ci(min(apgds, key=apgds.get)), ci(min(pgds, key=pgds.get)))))

    # 6. black-box / transfer not stronger than white-box ---------------------------------------------------
    wb = {n: acc(n) for n, r in allres.items() if r.threat == "white-box" and abs(r.eps - eps) < 1e-12}
    bb = {n: acc(n) for n, r in allres.items() if r.threat in ("black-box", "transfer") and abs(r.eps - eps) < 1e-12}
    best_wb = min(wb.values())
    stronger = {n: a for n, a in bb.items() if a < best_wb - tol}
    nums = {"white_box_best": best_wb, "white_box_best_attack": min(wb, key=wb.get), "black_box_transfer": bb,
            "stronger_than_white_box": stronger}
    if not stronger:
        checks.append(Check("black_box", "black-box/transfer not stronger than white-box", PASS, nums,
                            f"best white-box {_pts(best_wb)} ({min(wb, key=wb.get)}); " +
                            ", ".join(f"{n} {_pts(a)}" for n, a in bb.items()) + "."))
    else:
        checks.append(Check("black_box", "black-box/transfer not stronger than white-box", WARN, nums,
                            ", ".join(f"{n} {_pts(a)}" for n, a in stronger.items()) +
                            f" beat the best white-box attack ({_pts(best_wb)}). The white-box gradients are "
                            "uninformative: gradient masking. Trust the worst case, not the white-box numbers."
                            + _noise_note(ci(min(wb, key=wb.get)), ci(min(stronger, key=stronger.get)))))

    # 7. zero input gradients -----------------------------------------------------------------------------------
    z_ce, z_margin = zero_gradient_share(model, images, labels, eot=eot_used, batch_size=batch_size, device=device)
    nums = {"share_ce": z_ce, "share_margin": z_margin, "limit": zero_grad_limit, "eot": eot_used}
    if max(z_ce, z_margin) <= zero_grad_limit:
        checks.append(Check("zero_grad", "few samples with an all-zero input gradient", PASS, nums,
                            f"all-zero input gradient: {_pts(z_ce)} (CE), {_pts(z_margin)} (margin loss)."))
    else:
        hint = ("the margin loss's gradient vanishes too: the surrogate gradients are zero (no neuron within "
                "the surrogate's support), which no gradient attack can get past; use square/transfer or "
                "sg-ensemble/sg-adaptive" if z_margin > zero_grad_limit else
                "only the CE gradient vanishes (the softmax saturates in float32): use margin/DLR losses "
                "(apgd-dlr, mtpgd)")
        checks.append(Check("zero_grad", "few samples with an all-zero input gradient", WARN, nums,
                            f"all-zero input gradient: {_pts(z_ce)} (CE), {_pts(z_margin)} (margin loss), "
                            f"limit {_pts(zero_grad_limit)}. Their robustness is unverified: {hint}."))

    # 8. budget and range ---------------------------------------------------------------------------------------
    bad = {n: {"max_linf": r.max_linf, "eps": r.eps, "x_min": r.x_min, "x_max": r.x_max}
           for n, r in allres.items() if not r.within_budget}
    nums = {"attacks_checked": sorted(allres), "violations": bad,
            "max_linf_over_eps": max(r.max_linf - r.eps for r in allres.values())}
    if not bad:
        checks.append(Check("budget", "||delta||_inf <= eps and x_adv in [0, 1]", PASS, nums,
                            f"all {len(allres)} attack runs stay within eps + 1e-6 and [0, 1]."))
    else:
        checks.append(Check("budget", "||delta||_inf <= eps and x_adv in [0, 1]", WARN, nums,
                            "out of the threat model: " + ", ".join(bad) + ". Their numbers are invalid: a bug in "
                            "the attack or inputs outside [0, 1]."))

    settings = {"eps": eps, "eps_label": eps_label(eps), "eot": eot_used, "eot_check": eot_check if stochastic else None,
                "passes": own.passes, "steps": steps, "alpha": alpha, "sweep": [eps_label(e) for e in sweep],
                "tolerance_points": tolerance, "chance_margin": chance_margin, "zero_grad_limit": zero_grad_limit,
                "n_samples": len(labels), "stochastic": stochastic, "used_report": report is not None, "seed": seed}
    return AuditReport(checks=checks, settings=settings, runs=own, seconds=time.perf_counter() - t0)


def _pgd_pair(results: dict) -> tuple[str, str] | None:
    """The largest ``(pgdK, pgd2K)`` pair among plain-PGD runs at the same budget."""
    ks = {int(m.group(1)): n for n, r in results.items() if (m := _PLAIN_PGD.match(n))}
    pairs = [(k, 2 * k) for k in ks if 2 * k in ks and abs(results[ks[k]].eps - results[ks[2 * k]].eps) < 1e-12]
    if not pairs:
        return None
    k, k2 = max(pairs)
    return ks[k], ks[k2]


def zero_gradient_share(model: nn.Module, images: Tensor, labels: Tensor, eot: int = 1, batch_size: int = 128,
                        device: torch.device | str | None = None) -> tuple[float, float]:
    """Share of samples whose input gradient is exactly zero, for the CE and the margin loss.

    The gradient is the EoT average over ``eot`` passes (zero only if every pass gives zero).
    """
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    probe = Attack(model, eps=0.0, eot=eot)
    zc = zm = 0
    for i in range(0, len(labels), batch_size):
        x, y = images[i:i + batch_size].to(device), labels[i:i + batch_size].to(device)
        with torch.enable_grad():
            g_ce, _ = probe.input_grad(x, y)
            g_m, _ = probe.input_grad(x, y, margin_loss)
        zc += int((g_ce.flatten(1).abs().amax(1) == 0).sum())
        zm += int((g_m.flatten(1).abs().amax(1) == 0).sum())
    return zc / len(labels), zm / len(labels)
