"""Robustness evaluation: many attacks, per-sample results, stochastic passes, worst case.

What a result means (see docs/evaluation.md):

* every sample gets, per attack and per evaluation pass ``p``, one boolean: *robust on
  pass p* = classified correctly on pass ``p`` both clean and after the attack (the
  attacker may always choose the zero perturbation, so a clean mistake is never robust);
* whether the model is stochastic is found out before anything else, by comparing
  several forward passes on the same batch (:func:`spikeguard.randomness.detect_randomness`;
  ``randomness="deterministic"/"stochastic"`` overrides it);
* a stochastic model is judged over ``passes`` forward passes: pass ``p`` draws the same
  randomness for the clean images and for every attack (common random numbers: the
  Noisy-LIF generators, the generators the model's modules hold and the global generators
  are seeded per pass, and attacked images are judged in their clean batch's place, so a
  sample sees the very draw of its clean pass), so the per-pass worst case is well defined;
  accuracies are reported as the mean over passes with a 95% interval;
* randomness that the seeding does not repeat (``uncontrolled``) cannot be paired: then an
  attack's verdict on a sample is the worse of its clean and attacked pass rates (over
  independent passes), and the worst case takes, per sample, the attack with the lowest rate
  (never an AND over unrelated draws);
* attacks whose needs the model does not meet (``Attack.requires``) are skipped and the
  report says why;
* the worst case counts a sample as robust on pass ``p`` only if it survives every
  attack on that pass;
* **individual mode** (``individual=True``) runs every attack on every sample that some
  clean pass gets right: every attack's accuracy is measured on the same samples;
* **cascade mode** (``individual=False``, AutoAttack's "standard" style) runs the attacks
  from cheap to expensive (:func:`attack_cost`; attacks that know the evaluation's noise
  last), each only on the samples still robust on at least one pass. The per-sample worst
  case has the same definition; an attack's own accuracy does not exist (it only saw the
  survivors of the ones before it), so the report gives, per attack, the samples it was run
  on and the samples it broke (``broken_by``: the attack after which a sample was robust on
  no pass).

Every attack's random draws (random starts, EoT noise) are seeded from ``(seed, batch,
attack name)``, so an attack's result does not depend on the attacks run before it.
"""

from __future__ import annotations

import contextlib
import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor, nn

from ..attacks import Attack, build_attack, check_eps, parse_attacks
from ..attacks.registry import PAPER_ALPHA, describe_step_size, resolve
from ..attacks.requirements import model_traits, unmet
from ..errors import SpikeguardError
from ..neurons import noise_seed
from ..perf import current_precision
from ..randomness import Randomness, detect_randomness, seeded_rng
from ..utils import eps_label, parse_eps
from .progress import as_progress, attack_passes
from .stats import mean_ci95, wilson_ci95
from .results import evaluation_provenance, write_robustness

BUDGET_TOL = 1e-6
INDIVIDUAL, CASCADE = "individual", "cascade"
#: A forward-only pass costs about a third of a forward+backward pass (the cost rank's unit).
FORWARD_SHARE = 1 / 3


def _paper_key(name: str) -> tuple | None:
    """Sort key of an attack in the paper's table layout (None: not one of the paper's columns):
    the attack class's own :meth:`~spikeguard.attacks.Attack.table_key` for a registry name."""
    try:
        _, spec, args = resolve(name)
    except SpikeguardError:
        return None  # a caller's own label (e.g. the audit's "pgd10@8/255")
    return spec.cls.table_key(args)  # type: ignore[attr-defined]  # attack classes define table_key


def display_name(name: str) -> str:
    """``pgd10`` -> ``PGD10``, ``apgd-ce`` -> ``APGD-CE``, ``sg-ensemble`` -> ``SG-ENSEMBLE``."""
    return name.upper()


def attack_cost(atk: Any) -> float:
    """The cost rank of an attack: model passes per attacked sample, forward+backward = 1,
    forward only = :data:`FORWARD_SHARE`.

    An attack class (or instance) may state its own ``cost_per_sample``; otherwise it is read
    from its settings by :func:`~spikeguard.evaluation.progress.attack_passes` (steps x
    restarts x EoT x targets x members, queries x restarts x EoT for score-based attacks).
    The cascade runs attacks in increasing cost (ties in the given order).
    """
    own = getattr(atk, "cost_per_sample", None)
    if own is not None:
        return float(own)
    grad, fwd = attack_passes(atk)
    return grad + FORWARD_SHARE * fwd


def cascade_order(named: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """``named`` from cheap to expensive; attacks that know the evaluation's noise
    (``known-noise``) last, so the worst case over fresh-noise attacks stays exact."""
    return sorted(named, key=lambda la: (getattr(la[1], "threat", "white-box") == "known-noise", attack_cost(la[1])))


def worse(a: Tensor, b: Tensor, paired: bool = True) -> Tensor:
    """Per sample, the worse of two ``[P, n]`` verdicts.

    ``paired`` (pass ``p`` of both is one random draw): robust on ``p`` under both, ``a & b``.
    Unpaired (independent draws): the rows of whichever has the lower pass rate, per sample
    (``a`` on ties), never an AND over unrelated draws.
    """
    if paired or a.shape[0] == 1:
        return a & b
    pick_b = b.float().mean(0) < a.float().mean(0)
    return torch.where(pick_b[None], b, a)


@dataclass
class AttackResult:
    """Per-sample outcome of one attack.

    Attributes:
        name: attack name (registry name or the caller's label).
        robust: bool ``[P, n]``: robust on evaluation pass ``p`` (``P = 1`` when deterministic).
            In cascade mode, samples the attack was not run on (``ran`` False) hold False.
        eps: the attack's budget.
        threat: ``white-box``, ``black-box``, ``transfer`` or ``known-noise``.
        description: ``repr`` of the attack (its settings).
        seconds: wall time spent attacking and judging.
        max_linf: largest ``||x_adv - x||_inf`` over the attacked samples.
        x_min, x_max: range of the adversarial images.
        n_attacked: samples actually attacked.
        iterative: the attack is multi-step (``Attack.iterative``; the audit reads it).
        family: the attack's table family (``Attack.family``).
        settings: the attack's settings (``Attack.settings()``).
        ran: bool ``[n]``: the samples it was run on (None: individual mode, every sample some
            clean pass gets right).
        cost: its cost rank (:func:`attack_cost`).
    """

    name: str
    robust: Tensor
    eps: float
    threat: str
    description: str
    seconds: float = 0.0
    max_linf: float = 0.0
    x_min: float = 0.0
    x_max: float = 1.0
    n_attacked: int = 0
    iterative: bool = False
    family: str | None = None
    settings: dict = field(default_factory=dict)
    ran: Tensor | None = None
    cost: float = 0.0

    #: fields a record (:meth:`record`) carries as they are; the rest are tensors or merged
    SCALARS = ("eps", "threat", "description", "iterative", "family", "settings", "cost")

    @property
    def cascade(self) -> bool:
        return self.ran is not None

    @property
    def per_pass(self) -> list[float]:
        return self.robust.float().mean(1).tolist()

    @property
    def accuracy(self) -> float:
        """Robust accuracy over all samples; in cascade mode NaN (the attack saw only survivors)."""
        return math.nan if self.cascade else float(self.robust.float().mean())

    @property
    def within_budget(self) -> bool:
        """``||delta||_inf <= eps + 1e-6`` and ``x_adv`` in [0, 1] for every sample."""
        return self.max_linf <= self.eps + BUDGET_TOL and self.x_min >= 0.0 and self.x_max <= 1.0

    def summary(self, broke: int | None = None) -> dict:
        """JSON-ready summary; in cascade mode no accuracy, but ``cascade: {attacked, broke}``."""
        head = (
            {"accuracy": None, "cascade": {"attacked": self.n_attacked, "broke": broke}}
            if self.cascade
            else summarize(self.robust)
        )
        return head | {
            "threat": self.threat,
            "eps": self.eps,
            "eps_label": eps_label(self.eps),
            "attack": self.description,
            "seconds": round(self.seconds, 3),
            "max_linf": self.max_linf,
            "x_min": self.x_min,
            "x_max": self.x_max,
            "within_budget": self.within_budget,
            "n_attacked": self.n_attacked,
            "iterative": self.iterative,
            "family": self.family,
            "settings": dict(self.settings),
            "cost": round(self.cost, 3),
        }

    def record(self) -> dict:
        """JSON-able record of this result (the journal of sharded evaluation); :meth:`merge` reads it."""
        return {
            "robust": _bits(self.robust),
            "ran": None if self.ran is None else _bits(self.ran[None])[0],
            "seconds": self.seconds,
            "max_linf": self.max_linf,
            "x_min": self.x_min,
            "x_max": self.x_max,
            "n_attacked": self.n_attacked,
            **{k: getattr(self, k) for k in self.SCALARS},
        }

    @classmethod
    def merge(cls, name: str, parts: Sequence[dict | AttackResult]) -> AttackResult:
        """One result from the records (or results) of consecutive sample ranges, in order."""
        recs = [p.record() if isinstance(p, AttackResult) else p for p in parts]
        hit = [p for p in recs if p["n_attacked"]]  # parts where nothing was attacked carry no range
        ran = None if recs[0].get("ran") is None else torch.cat([_unbits([p["ran"]])[0] for p in recs])
        first = recs[0]
        return cls(
            name=name,
            robust=torch.cat([_unbits(p["robust"]) for p in recs], 1),
            seconds=sum(p["seconds"] for p in recs),
            max_linf=max((p["max_linf"] for p in hit), default=0.0),
            x_min=min((p["x_min"] for p in hit), default=0.0),
            x_max=max((p["x_max"] for p in hit), default=1.0),
            n_attacked=sum(p["n_attacked"] for p in recs),
            ran=ran,
            **{
                k: (dict(first.get(k) or {}) if k == "settings" else first.get(k, cls._default(k)))  # type: ignore[arg-type]  # SCALARS: each field's own value from the records
                for k in cls.SCALARS
            },
        )

    @staticmethod
    def _default(key: str) -> Any:
        return {"iterative": False, "family": None, "cost": 0.0}.get(key)


def _bits(t: Tensor) -> list[str]:
    return ["".join("1" if v else "0" for v in row) for row in t.tolist()]


def _unbits(rows: list[str]) -> Tensor:
    return torch.tensor([[c == "1" for c in r] for r in rows], dtype=torch.bool)


def summarize(robust: Tensor) -> dict:
    """Accuracy summary of a bool ``[P, n]`` array: mean over passes, intervals, per pass."""
    per_pass = robust.float().mean(1).tolist()
    mean, ci = mean_ci95(per_pass)
    # accuracies live in [0, 1]; a t-interval over few passes can reach past either end
    return {
        "accuracy": mean,
        "ci95": [max(0.0, ci[0]), min(1.0, ci[1])] if ci else None,
        "ci95_samples": list(wilson_ci95(mean, robust.shape[1]) or ()) or None,
        "per_pass": per_pass if len(per_pass) > 1 else None,
    }


@dataclass
class RobustnessReport:
    """Everything :func:`evaluate_robustness` measured.

    Attributes:
        clean: bool ``[P, n]``: correct on clean pass ``p``.
        results: per attack, in run order.
        skipped: attacks not run and why (what they need that the model lacks).
        randomness: how the model's randomness was found and repeated
            (:meth:`spikeguard.randomness.Randomness.to_dict`).
        step_size: the step-size rule of the attacks built by name
            (:func:`spikeguard.attacks.registry.describe_step_size`).
        mode: ``individual`` or ``cascade`` (see the module docstring).
        paired: pass ``p`` of the clean images and of every attack is one random draw (False:
            uncontrolled randomness, independent passes; see :func:`worse`).
    """

    eps: float
    eot: int
    passes: int
    stochastic: bool
    num_classes: int
    seed: int
    clean: Tensor
    results: dict[str, AttackResult] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    labels: Tensor | None = None
    precision: str = "float32"  # autocast in effect while attacking and judging (spikeguard.perf)
    randomness: dict = field(default_factory=dict)
    step_size: dict = field(default_factory=dict)
    mode: str = INDIVIDUAL
    paired: bool = True

    @property
    def n(self) -> int:
        return int(self.clean.shape[1])

    @property
    def cascade(self) -> bool:
        return self.mode == CASCADE

    def robust(self, name: str) -> Tensor:
        """``[P, n]`` robust flags of an attack, broadcast to the report's passes."""
        r = self.results[name].robust
        return r.expand(self.clean.shape[0], -1) if r.shape[0] == 1 else r

    def worst_case(self, names: Iterable[str] | None = None) -> Tensor:
        """``[P, n]``: robust on pass p against every attack in ``names`` (default: all run);
        unpaired passes: per sample the rows of the attack with the lowest rate (:func:`worse`)."""
        out = self.clean.clone()
        for name in self.results if names is None else names:
            out = worse(out, self.robust(name), self.paired)
        return out

    def broken_by(self, order: Sequence[str] | None = None) -> list[str | None]:
        """Per sample, the first attack (in ``order``, default: run order) after which it is robust
        on no pass: ``clean`` for a sample no clean pass gets right, None for a survivor."""
        names = list(self.results if order is None else order)
        alive = self.clean.any(0)
        out: list[str | None] = [None if a else "clean" for a in alive.tolist()]
        cum = self.clean.clone()
        for name in names:
            cum = worse(cum, self.robust(name), self.paired)
            now = cum.any(0)
            for i in (alive & ~now).nonzero().squeeze(1).tolist():
                out[i] = name
            alive = now
        return out

    def broke_counts(self) -> dict[str, int]:
        """``{attack: samples it finished off}`` (:meth:`broken_by` in run order)."""
        by = self.broken_by()
        return {k: by.count(k) for k in self.results}

    def accuracy(self, name: str) -> float:
        """Mean robust accuracy of an attack (``clean`` and ``worst_case`` also accepted; NaN for
        an attack of a cascade, which saw only the survivors of the attacks before it)."""
        if name == "clean":
            return float(self.clean.float().mean())
        if name == "worst_case":
            return float(self.worst_case().float().mean())
        return self.results[name].accuracy

    def fresh_noise_names(self) -> list[str]:
        return [k for k, r in self.results.items() if r.threat != "known-noise"]

    def to_dict(self, per_sample: bool = True) -> dict:
        """JSON-ready dict: settings, clean, per attack, worst case, paper-layout table."""
        wc_names = list(self.results)
        broke = self.broke_counts()
        doc: dict = {
            "eps": self.eps,
            "eps_label": eps_label(self.eps),
            "n_samples": self.n,
            "passes": self.passes,
            "eot": self.eot,
            "stochastic": self.stochastic,
            "num_classes": self.num_classes,
            "seed": self.seed,
            "seconds": round(self.seconds, 3),
            "precision": self.precision,
            "mode": self.mode,
            "paired_passes": self.paired,
            "attack_order": wc_names,
            "clean": summarize(self.clean),
            "attacks": {k: r.summary(broke[k]) for k, r in self.results.items()},
            "worst_case": summarize(self.worst_case()) | {"attacks": wc_names},
            "skipped": dict(self.skipped),
            "randomness": dict(self.randomness),
            "step_size": dict(self.step_size),
        }
        if self.cascade:
            doc["cascade_note"] = (
                "cascade: each attack ran only on the samples still robust on some pass after "
                "the attacks before it; per-attack accuracies do not exist, only the worst case "
                "and, per attack, the samples it was run on and broke"
            )
        fresh = self.fresh_noise_names()
        if len(fresh) < len(wc_names):
            doc["worst_case_fresh_noise"] = summarize(self.worst_case(fresh)) | {"attacks": fresh}
        doc["table"] = self.table_row()
        if per_sample:
            doc["per_sample"] = {
                "note": "fraction of evaluation passes on which each sample was robust (clean: correct); broken_by: "
                "the first attack (run order) after which it was robust on no pass",
                "labels": self.labels.tolist() if self.labels is not None else None,
                "clean": [round(v, 4) for v in self.clean.float().mean(0).tolist()],
                **(
                    {}
                    if self.cascade
                    else {k: [round(v, 4) for v in self.robust(k).float().mean(0).tolist()] for k in self.results}
                ),
                "worst_case": [round(v, 4) for v in self.worst_case().float().mean(0).tolist()],
                "broken_by": self.broken_by(),
            }
        return doc

    def ordered_names(self) -> list[str]:
        """Attacks in the paper's column order first, then the others in run order (cascade: run order)."""
        if self.cascade:
            return list(self.results)
        first = sorted((n for n in self.results if _paper_key(n) is not None), key=_paper_key)  # type: ignore[arg-type]  # None keys are filtered out above
        return first + [n for n in self.results if n not in first]

    def table_row(self) -> dict[str, float]:
        """``{column: accuracy}`` in the paper's layout: clean, FGSM, RFGSM, PGD7..40, APGD, MTPGD, ..., worst
        case; in cascade mode only clean and worst case (per-attack accuracies do not exist there)."""
        row = {"clean": self.accuracy("clean")}
        if not self.cascade:
            row.update({display_name(n): self.results[n].accuracy for n in self.ordered_names()})
        row["worst case"] = self.accuracy("worst_case")
        return row

    def _judged_text(self) -> str:
        judged = f"{self.passes} passes, EoT {self.eot}" if self.stochastic else "deterministic"
        if self.randomness.get("override"):
            judged += f" (--{self.randomness['override']}; detected: "
            judged += ("stochastic" if self.randomness.get("detected") else "deterministic") + ")"
        elif self.stochastic and self.randomness.get("sources"):
            judged += f" (randomness: {', '.join(self.randomness['sources'])})"
        if not self.paired:
            judged += "; passes not repeatable: independent clean/attacked passes"
        return judged + f"; {self.mode}"

    def format_table(self, title: str | None = None) -> str:
        """Printable table: one row per attack (individual: accuracy with its 95% interval;
        cascade: samples attacked and broken), then the worst case."""
        lines = [title] if title else []
        lines.append(f"eps = {eps_label(self.eps)}, n = {self.n}, {self._judged_text()}")
        fresh = self.fresh_noise_names()
        extra = ["no known-noise"] if len(fresh) < len(self.results) else []
        # columns as wide as their longest entry, so that every row lines up
        aw = max([16, len("WORST CASE")] + [len(display_name(n)) for n in self.results])
        tw = max([12] + [len(r.threat) for r in self.results.values()] + [len(t) for t in extra])
        head = f"{'attack':<{aw}} {'threat':<{tw}} {'accuracy':>9}  {'95% interval':<17} {'time':>7}"
        if self.cascade:  # no per-attack accuracy: the cascade's counts share the column
            head = f"{'attack':<{aw}} {'threat':<{tw}} {'accuracy / cascade':<28} {'time':>7}"
        lines += [head, "-" * len(head)]

        def row(label: str, threat: str, robust: Tensor, seconds: float | None) -> str:
            s = summarize(robust)
            ci = s["ci95"] or s["ci95_samples"]
            kind = "" if s["ci95"] else "*"
            ci_txt = f"[{100 * ci[0]:5.1f}, {100 * ci[1]:5.1f}]{kind}" if ci else ""
            t = f"{seconds:6.1f}s" if seconds is not None else ""
            acc = f"{100 * s['accuracy']:8.2f}%  {ci_txt:<17}"
            if self.cascade:
                acc = f"{acc:<28}"
            return f"{label:<{aw}} {threat:<{tw}} {acc} {t:>7}"

        lines.append(row("clean", "", self.clean, None))
        broke = self.broke_counts()
        for n in self.ordered_names():
            r = self.results[n]
            if self.cascade:
                txt = f"broke {broke[n]} of {r.n_attacked} attacked"
                lines.append(f"{display_name(n):<{aw}} {r.threat:<{tw}} {txt:<28} {r.seconds:6.1f}s")
            else:
                lines.append(row(display_name(n), r.threat, self.robust(n), r.seconds))
        lines.append("-" * len(head))
        lines.append(row("WORST CASE", "all", self.worst_case(), None))
        if extra:
            lines.append(row("worst, fresh", extra[0], self.worst_case(fresh), None))
        for k, why in self.skipped.items():
            lines.append(f"(skipped {k}: {why})")
        if self.cascade:
            lines.append(
                "cascade: each attack ran on the samples still robust after the ones above; per-attack "
                "accuracies are not comparable (use --individual for them)"
            )
        if not self.stochastic:
            lines.append("* interval over the test samples (Wilson); stochastic models show it over passes")
        return "\n".join(lines)


def _eval_seed(seed: int, batch_index: int) -> int:
    # Distinct per batch and far apart: noise_seed adds the layer index (< 100) and the
    # pass seeds add 100 * (pass + 1) (< 100,000 for up to 998 passes).
    return (int(seed) % 10_007) * 10**10 + batch_index * 100_000


def pass_seed(batch_seed: int, p: int) -> int:
    """The seed of evaluation pass ``p`` of a batch (also the fixed-noise attack's seed for that pass)."""
    return int(batch_seed) + 100 * (p + 1)


def _batch_seed(seed: int, batch_index: int) -> int:
    # seeds the global generator (not the noise generators of _eval_seed) for one batch
    return (int(seed) * 1_000_003 + int(batch_index) * 7_919 + 12_345) % 2**63


def _attack_seed(seed: int, batch_index: int, label: str) -> int:
    # one stream per (batch, attack): an attack's draws do not depend on what ran before it
    return (_batch_seed(seed, batch_index) + zlib.crc32(label.encode("utf-8")) * 104_729) % 2**63


def correct_per_pass(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    passes: int,
    seed: int | None,
    max_batch: int = 4096,
    global_rng: bool = False,
) -> Tensor:
    """bool ``[passes, b]``: correct on each of ``passes`` forward passes.

    With ``seed`` the randomness is repeatable (same seed and shape, same draws):

    * default: the Noisy-LIF noise is drawn from ``seed`` for one batch of ``passes * b``;
    * ``global_rng``: one forward per pass ``p``, with the Noisy-LIF generators, the global
      generators and the generators the model's modules hold seeded from :func:`pass_seed`
      (for randomness that is not spikeguard's own; a pass's draw then does not depend on how
      many passes there are).

    Runs under ``torch.inference_mode``.
    """
    b = x.shape[0]
    if global_rng and seed is not None:
        out = torch.zeros(passes, b, dtype=torch.bool, device=y.device)
        with torch.inference_mode():
            for p in range(passes):
                ps = pass_seed(seed, p)
                with seeded_rng(ps, x.device, model), noise_seed(model, ps):
                    preds = torch.cat([model(x[i : i + max_batch]).argmax(1) for i in range(0, b, max_batch)])
                out[p] = preds == y
        return out
    ctx = noise_seed(model, seed) if seed is not None else contextlib.nullcontext()
    with torch.inference_mode(), ctx:
        if passes == 1:
            return (model(x).argmax(1) == y)[None]
        xs = x.expand(passes, *x.shape).reshape(passes * b, *x.shape[1:])
        preds = torch.cat([model(xs[i : i + max_batch]).argmax(1) for i in range(0, len(xs), max_batch)])
        return preds.view(passes, b) == y[None]


AttackLike = str | Attack | tuple[str, Attack]


def _build_attacks(
    model: nn.Module, attacks: Sequence[AttackLike], traits: Any, build: dict, attack_kw: dict[str, dict] | None
) -> tuple[list[tuple[str, Attack]], dict[str, str]]:
    """``(label, attack)`` pairs to run and ``{label: why}`` of the skipped ones."""
    named: list[tuple[str, Attack]] = []
    skipped: dict[str, str] = {}
    for a in attacks:
        if isinstance(a, tuple):
            label, atk = a
        elif isinstance(a, Attack):
            label, atk = a.name, a
        else:
            label, spec, _ = resolve(a)
            why = unmet(spec.cls, traits)
            if why:
                skipped[label] = "; ".join(why)
                continue
            atk = build_attack(label, model, **(build | (attack_kw or {}).get(label, {})))
        why = unmet(atk, traits)
        if why:
            skipped[label] = "; ".join(why)
            continue
        if label in dict(named):
            raise SpikeguardError(f"attack {label!r} given twice")
        named.append((label, atk))
    return named, skipped


@dataclass
class _Batch:
    """One batch in flight: its images, clean verdicts and the judging settings."""

    x: Tensor
    y: Tensor
    ok: Tensor  # [P, b] clean verdicts (CPU)
    es: int | None  # evaluation noise seed of the batch (None: deterministic)
    n_pass: int
    global_rng: bool
    max_eval_batch: int


def _judge(model: nn.Module, atk: Attack, bt: _Batch, todo: Tensor, st: dict) -> Tensor:
    """bool ``[P, len(todo)]``: the attacked images of ``todo`` classified correctly, per pass.

    A stochastic model judges them in their clean batch's place (the other rows clean), so
    every sample sees exactly the draw of its clean pass whichever samples are attacked.
    """
    dev = bt.x.device
    idx = todo.to(dev)
    xs, ys = bt.x[idx], bt.y[idx]
    hit = torch.zeros(bt.n_pass, len(todo), dtype=torch.bool)
    for adv, on, judge in atk.per_pass(xs, ys, bt.n_pass, bt.es):
        _budget(st, adv, xs)
        rows = list(range(bt.n_pass)) if on is None else list(on)
        if judge is not None:  # the attack's own view of those passes (e.g. a known noise sample)
            hit[rows] = correct_per_pass(judge, adv, ys, 1, None, bt.max_eval_batch)[0].cpu()
        elif bt.es is not None:
            full = bt.x.clone()
            full[idx] = adv
            hit[rows] = correct_per_pass(model, full, bt.y, bt.n_pass, bt.es, bt.max_eval_batch, bt.global_rng)[
                :, idx
            ].cpu()[rows]
        else:
            hit[rows] = correct_per_pass(model, adv, ys, bt.n_pass, None, bt.max_eval_batch).cpu()[rows]
    return hit


def _run_batch(
    model: nn.Module,
    order: list[tuple[str, Attack]],
    bt: _Batch,
    s: int,
    cascade: bool,
    paired: bool,
    seed: int,
    batch_index: int,
    robust: dict,
    ran: dict,
    stats: dict,
    bar: Any,
) -> None:
    """Every attack of ``order`` on one batch (cascade: each on the samples still robust on some pass)."""
    b = bt.ok.shape[1]
    cum = bt.ok.clone()  # per-pass worst case so far
    for label, atk in order:
        st = stats[label]
        todo = (cum.any(0) if cascade else bt.ok.any(0)).nonzero().squeeze(1)
        t0 = time.perf_counter()
        if len(todo):
            torch.manual_seed(_attack_seed(seed, batch_index, label))
            st["n_attacked"] += len(todo)
            hit = _judge(model, atk, bt, todo, st)
            r = worse(bt.ok[:, todo], hit, paired)
            robust[label][:, s + todo] = r
            ran[label][s + todo] = True
            cum[:, todo] = worse(cum[:, todo], r, paired)
        seconds = time.perf_counter() - t0
        st["seconds"] += seconds
        bar.step(label, b, attacked=len(todo), seconds=seconds)


def evaluate_robustness(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attacks: Sequence[AttackLike],
    *,
    eps: float = 8 / 255,
    eot: int = 1,
    passes: int = 1,
    alpha: float | str = PAPER_ALPHA,
    batch_size: int = 128,
    seed: int = 0,
    source: nn.Module | None = None,
    attack_kw: dict[str, dict] | None = None,
    device: torch.device | str | None = None,
    max_eval_batch: int = 4096,
    progress: Any = False,
    first_batch: int = 0,
    randomness: str | Randomness = "auto",
    individual: bool = True,
) -> RobustnessReport:
    """Run ``attacks`` on ``(images, labels)`` and judge every sample on every pass.

    Args:
        model: the target, any classifier of images in [0, 1]; its train/eval mode is left as
            it is (call ``model.eval()``).
        images: ``[N, C, H, W]`` in [0, 1]; labels ``[N]``.
        attacks: registry names (``"pgd10"``), :class:`Attack` objects, or ``(label, Attack)``.
        eps: budget of the attacks built by name.
        alpha: step size of the attacks built by name that take one: a number (the paper's
            0.01) or ``"eps"`` (``2.5 * eps / steps`` per attack).
        eot: EoT passes for attacks built by name (forced to 1 for deterministic models).
        passes: evaluation passes for a stochastic model (1 for deterministic ones).
        batch_size: images per attack batch.
        seed: seeds the attacks' random starts (global torch RNG) and the evaluation noise.
        source: source model of the ``transfer`` attack.
        attack_kw: per-name constructor overrides, e.g. ``{"square": {"queries": 500}}``.
        device: where to run (default: the model's device).
        max_eval_batch: largest batch of one judging forward (``passes * b`` is split).
        progress: a progress bar: True, a label (``"audit"``), or an
            :class:`~spikeguard.evaluation.progress.EvalProgress` shared over several calls.
        first_batch: global index of this call's first batch. Every batch's randomness (noise,
            random starts, EoT) is seeded from ``(seed, batch index)``, so evaluating a
            contiguous slice of whole batches with ``first_batch`` set gives exactly the
            numbers of those batches in a full run (sharded and resumed evaluation).
        randomness: ``auto`` (detect it from a few forward passes on the first images),
            ``deterministic`` / ``stochastic`` (override the detection), or a
            :class:`~spikeguard.randomness.Randomness` found before (sharded evaluation).
        individual: True (default): every attack on every sample (per-attack accuracies);
            False: the cascade (cheap to expensive, each on the survivors; see the module docstring).

    Raises:
        SpikeguardError: bad inputs or attack names.
    """
    t_start = time.perf_counter()
    _check_inputs(images, labels, passes, eot, batch_size)
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if not isinstance(randomness, Randomness):
        randomness = detect_randomness(model, images[:8].to(device), mode=randomness, seed=seed)
    run = _run_settings(randomness, device, passes, eot, seed, first_batch, batch_size, max_eval_batch, individual)
    order, skipped = _attack_order(model, attacks, run, eps, alpha, source, attack_kw)
    tally = _run_batches(model, images, labels, order, run, progress)
    report = _make_report(run, randomness, order, skipped, tally, eps, alpha, labels)
    report.seconds = time.perf_counter() - t_start
    return report


@dataclass
class _RunSettings:
    """How one :func:`evaluate_robustness` call judges, once the model's randomness is known."""

    device: torch.device | str
    stochastic: bool
    global_rng: bool  # randomness that is not Noisy-LIF noise, repeated pass by pass
    paired: bool
    n_pass: int
    eot: int
    seed: int
    first_batch: int
    batch_size: int
    max_eval_batch: int
    individual: bool


def _run_settings(
    randomness: Randomness,
    device: torch.device | str,
    passes: int,
    eot: int,
    seed: int,
    first_batch: int,
    batch_size: int,
    max_eval_batch: int,
    individual: bool,
) -> _RunSettings:
    """The passes, EoT and pairing a model with ``randomness`` is judged with."""
    stochastic = randomness.stochastic
    # randomness that is not Noisy-LIF noise is repeated through the global generators, pass by pass
    global_rng = stochastic and (randomness.global_rng or "noisy-lif" not in randomness.sources)
    return _RunSettings(
        device=device,
        stochastic=stochastic,
        global_rng=global_rng,
        paired=randomness.controlled or not stochastic,
        n_pass=passes if stochastic else 1,
        eot=eot if stochastic else 1,
        seed=seed,
        first_batch=first_batch,
        batch_size=batch_size,
        max_eval_batch=max_eval_batch,
        individual=individual,
    )


def _attack_order(
    model: nn.Module,
    attacks: Sequence[AttackLike],
    run: _RunSettings,
    eps: float,
    alpha: float | str,
    source: nn.Module | None,
    attack_kw: dict[str, dict] | None,
) -> tuple[list[tuple[str, Attack]], dict[str, str]]:
    """The attacks to run in running order (the cascade's: cheap to expensive) and the skipped ones."""
    # one forward per EoT sample: a model may draw one random transform per batch
    build = dict(eps=eps, eot=run.eot, alpha=alpha, source=source, seed=run.seed) | (
        {"eot_batched": False} if run.global_rng else {}
    )
    named, skipped = _build_attacks(model, attacks, model_traits(model, run.stochastic, source), build, attack_kw)
    return (named if run.individual else cascade_order(named)), skipped


@dataclass
class _Tally:
    """What the batches of one call found: clean and attacked verdicts and per-attack statistics."""

    clean: Tensor  # [P, N]
    robust: dict[str, Tensor]
    ran: dict[str, Tensor]
    stats: dict[str, dict]
    num_classes: int | None = None


def _run_batches(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    order: list[tuple[str, Attack]],
    run: _RunSettings,
    progress: Any,
) -> _Tally:
    """Judge every batch clean, then run every attack of ``order`` on it."""
    n = len(labels)
    tally = _Tally(
        clean=torch.zeros(run.n_pass, n, dtype=torch.bool),
        robust={k: torch.zeros(1 if not run.stochastic else run.n_pass, n, dtype=torch.bool) for k, _ in order},
        ran={k: torch.zeros(n, dtype=torch.bool) for k, _ in order},
        stats={k: dict(seconds=0.0, max_linf=0.0, x_min=math.inf, x_max=-math.inf, n_attacked=0) for k, _ in order},
    )
    n_batches = math.ceil(n / run.batch_size)
    bar, own_bar = as_progress(progress, n)
    bar.set_attacks([k for k, _ in order], {k: attack_cost(a) for k, a in order}, clean_cost=FORWARD_SHARE * run.n_pass)
    for bi in range(n_batches):
        s, e = bi * run.batch_size, min(n, (bi + 1) * run.batch_size)
        x, y = images[s:e].to(run.device), labels[s:e].to(run.device)
        if own_bar:  # a shared bar counts its caller's batches
            bar.batch(bi, n_batches)
        es = _eval_seed(run.seed, run.first_batch + bi) if run.stochastic else None
        if tally.num_classes is None:
            with torch.inference_mode():
                tally.num_classes = int(model(x[:1]).shape[1])
        t0 = time.perf_counter()
        ok = correct_per_pass(model, x, y, run.n_pass, es, run.max_eval_batch, run.global_rng).cpu()
        tally.clean[:, s:e] = ok
        bar.step("clean", e - s, seconds=time.perf_counter() - t0)
        bt = _Batch(x, y, ok, es, run.n_pass, run.global_rng, run.max_eval_batch)
        _run_batch(
            model,
            order,
            bt,
            s,
            not run.individual,
            run.paired,
            run.seed,
            run.first_batch + bi,
            tally.robust,
            tally.ran,
            tally.stats,
            bar,
        )
    if own_bar:
        bar.close()
    return tally


def _make_report(
    run: _RunSettings,
    randomness: Randomness,
    order: list[tuple[str, Attack]],
    skipped: dict[str, str],
    tally: _Tally,
    eps: float,
    alpha: float | str,
    labels: Tensor,
) -> RobustnessReport:
    """The report of one call: its settings, the clean verdicts and one :class:`AttackResult` per attack."""
    report = RobustnessReport(
        eps=float(eps),
        eot=run.eot,
        passes=run.n_pass,
        stochastic=run.stochastic,
        num_classes=tally.num_classes or 0,
        seed=run.seed,
        clean=tally.clean,
        skipped=skipped,
        labels=labels.detach().cpu(),
        precision=current_precision(run.device),
        randomness=randomness.to_dict(),
        step_size=describe_step_size(alpha),
        mode=INDIVIDUAL if run.individual else CASCADE,
        paired=run.paired,
    )
    for label, atk in order:
        report.results[label] = _attack_result(label, atk, tally, run.individual)
    return report


def _attack_result(label: str, atk: Attack, tally: _Tally, individual: bool) -> AttackResult:
    """The :class:`AttackResult` of one attack from its verdicts and statistics."""
    st = tally.stats[label]
    if st["n_attacked"] == 0:
        st["x_min"], st["x_max"] = 0.0, 1.0
    return AttackResult(
        name=label,
        robust=tally.robust[label],
        eps=atk.eps,
        threat=getattr(atk, "threat", "white-box"),
        description=repr(atk),
        seconds=st["seconds"],
        max_linf=st["max_linf"],
        x_min=st["x_min"],
        x_max=st["x_max"],
        n_attacked=int(st["n_attacked"]),  # an integer count kept in a float dict
        iterative=bool(getattr(atk, "iterative", False)),
        family=getattr(atk, "family", None),
        settings=atk.settings() if hasattr(atk, "settings") else {},
        ran=None if individual else tally.ran[label],
        cost=attack_cost(atk),
    )


def _check_inputs(images: Tensor, labels: Tensor, passes: int, eot: int, batch_size: int) -> None:
    if images.dim() != 4 or labels.dim() != 1 or len(images) != len(labels):
        raise SpikeguardError(
            f"need images [N, C, H, W] and labels [N], got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    if len(labels) == 0:
        raise SpikeguardError("no samples to evaluate")
    if passes < 1 or eot < 1 or batch_size < 1:
        raise SpikeguardError("passes, eot and batch_size must be >= 1")
    if images.is_floating_point() is False:
        raise SpikeguardError("images must be float in [0, 1] (use ImageDataset.float_images())")


def _budget(st: dict, adv: Tensor, x: Tensor) -> None:
    with torch.no_grad():
        st["max_linf"] = max(st["max_linf"], float((adv - x).abs().max()))
        st["x_min"] = min(st["x_min"], float(adv.min()))
        st["x_max"] = max(st["x_max"], float(adv.max()))


DEFAULT_EOT = 8


def evaluate_config_attacks(
    model: nn.Module, test_ds, cfg, out_dir=None, progress: bool = False, eot: int = DEFAULT_EOT
) -> dict:
    """The end-of-training evaluation hook of :func:`spikeguard.jobs.train.run_experiment`.

    Runs ``cfg.eval.attacks`` (names or suite names) at ``cfg.eval.eps`` on ``test_ds``,
    judging a stochastic model over ``cfg.eval.passes`` passes and attacking it with EoT
    over ``eot`` passes; writes ``out_dir/robustness.json`` when ``out_dir`` is given and
    returns the report's summary (no per-sample lists). The caller sets the model's mode.
    """
    names = parse_attacks(",".join(cfg.eval.attacks))
    eps = check_eps(parse_eps(cfg.eval.eps) if isinstance(cfg.eval.eps, str) else cfg.eval.eps)
    report = evaluate_robustness(
        model,
        test_ds.float_images(),
        test_ds.labels,
        names,
        eps=eps,
        eot=eot,
        passes=max(1, int(cfg.eval.passes)),
        batch_size=int(cfg.eval.batch_size),
        seed=int(cfg.seed),
        progress=progress,
    )
    summary = report.to_dict(per_sample=False)
    if out_dir is not None:
        data = {"name": test_ds.name, "split": "test", "n_samples": len(test_ds)}
        prov = evaluation_provenance(
            command="spikeguard train (eval.attacks)",
            checkpoint=out_dir,
            report=report,
            attacks=names,
            data=data,
            alpha=0.01,
            batch_size=int(cfg.eval.batch_size),
        )
        tgo = getattr(cfg, "tgo", None)
        write_robustness(
            Path(out_dir) / "robustness.json",
            report,
            prov,
            command="train (eval.attacks)",
            data=data,
            lambda_max=tgo.lambda_max if tgo is not None and tgo.enabled else None,
        )
    return summary
