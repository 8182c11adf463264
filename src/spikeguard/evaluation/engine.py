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
  Noisy-LIF generators and, for any other randomness, the global generators are seeded
  per pass), so attacks are compared under identical noise and the per-pass worst case
  is well defined; accuracies are reported as the mean over passes with a 95% interval;
* attacks whose needs the model does not meet (``Attack.requires``) are skipped and the
  report says why;
* the worst case counts a sample as robust on pass ``p`` only if it survives every
  attack on that pass;
* the clean forward is computed once per batch and reused: samples that no pass
  classifies correctly are not attacked at all.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor, nn

from ..attacks import Attack, build_attack
from ..attacks.registry import PAPER_ALPHA, describe_step_size, resolve
from ..attacks.requirements import model_traits, unmet
from ..errors import SpikeguardError
from ..neurons import noise_seed
from ..perf import current_precision
from ..randomness import Randomness, detect_randomness, seeded_rng
from ..utils import eps_label
from .progress import as_progress
from .stats import mean_ci95, wilson_ci95

BUDGET_TOL = 1e-6

def _paper_key(name: str) -> tuple | None:
    """Sort key of an attack in the paper's table layout (None: not one of the paper's columns):
    the attack class's own :meth:`~spikeguard.attacks.Attack.table_key` for a registry name."""
    try:
        _, spec, args = resolve(name)
    except SpikeguardError:
        return None  # a caller's own label (e.g. the audit's "pgd10@8/255")
    return spec.cls.table_key(args)


def display_name(name: str) -> str:
    """``pgd10`` -> ``PGD10``, ``apgd-ce`` -> ``APGD-CE``, ``sg-ensemble`` -> ``SG-ENSEMBLE``."""
    return name.upper()


@dataclass
class AttackResult:
    """Per-sample outcome of one attack.

    Attributes:
        name: attack name (registry name or the caller's label).
        robust: bool ``[P, n]``: robust on evaluation pass ``p`` (``P = 1`` when deterministic).
        eps: the attack's budget.
        threat: ``white-box``, ``black-box``, ``transfer`` or ``known-noise``.
        description: ``repr`` of the attack (its settings).
        seconds: wall time spent attacking and judging.
        max_linf: largest ``||x_adv - x||_inf`` over the attacked samples.
        x_min, x_max: range of the adversarial images.
        n_attacked: samples actually attacked (those some clean pass got right).
        iterative: the attack is multi-step (``Attack.iterative``; the audit reads it).
        family: the attack's table family (``Attack.family``).
        settings: the attack's settings (``Attack.settings()``).
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

    @property
    def per_pass(self) -> list[float]:
        return self.robust.float().mean(1).tolist()

    @property
    def accuracy(self) -> float:
        return float(self.robust.float().mean())

    @property
    def within_budget(self) -> bool:
        """``||delta||_inf <= eps + 1e-6`` and ``x_adv`` in [0, 1] for every sample."""
        return self.max_linf <= self.eps + BUDGET_TOL and self.x_min >= 0.0 and self.x_max <= 1.0

    def summary(self) -> dict:
        return summarize(self.robust) | {
            "threat": self.threat, "eps": self.eps, "eps_label": eps_label(self.eps), "attack": self.description,
            "seconds": round(self.seconds, 3), "max_linf": self.max_linf, "x_min": self.x_min, "x_max": self.x_max,
            "within_budget": self.within_budget, "n_attacked": self.n_attacked, "iterative": self.iterative,
            "family": self.family, "settings": dict(self.settings)}


def summarize(robust: Tensor) -> dict:
    """Accuracy summary of a bool ``[P, n]`` array: mean over passes, intervals, per pass."""
    per_pass = robust.float().mean(1).tolist()
    mean, ci = mean_ci95(per_pass)
    # accuracies live in [0, 1]; a t-interval over few passes can reach past either end
    return {"accuracy": mean, "ci95": [max(0.0, ci[0]), min(1.0, ci[1])] if ci else None,
            "ci95_samples": list(wilson_ci95(mean, robust.shape[1]) or ()) or None,
            "per_pass": per_pass if len(per_pass) > 1 else None}


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

    @property
    def n(self) -> int:
        return int(self.clean.shape[1])

    def robust(self, name: str) -> Tensor:
        """``[P, n]`` robust flags of an attack, broadcast to the report's passes."""
        r = self.results[name].robust
        return r.expand(self.clean.shape[0], -1) if r.shape[0] == 1 else r

    def worst_case(self, names: Iterable[str] | None = None) -> Tensor:
        """``[P, n]``: robust on pass p against every attack in ``names`` (default: all run)."""
        out = self.clean.clone()
        for name in (self.results if names is None else names):
            out &= self.robust(name)
        return out

    def accuracy(self, name: str) -> float:
        """Mean robust accuracy of an attack (``clean`` and ``worst_case`` also accepted)."""
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
        doc: dict = {
            "eps": self.eps, "eps_label": eps_label(self.eps), "n_samples": self.n, "passes": self.passes,
            "eot": self.eot, "stochastic": self.stochastic, "num_classes": self.num_classes, "seed": self.seed,
            "seconds": round(self.seconds, 3), "precision": self.precision,
            "clean": summarize(self.clean),
            "attacks": {k: r.summary() for k, r in self.results.items()},
            "worst_case": summarize(self.worst_case()) | {"attacks": wc_names},
            "skipped": dict(self.skipped),
            "randomness": dict(self.randomness),
            "step_size": dict(self.step_size),
        }
        fresh = self.fresh_noise_names()
        if len(fresh) < len(wc_names):
            doc["worst_case_fresh_noise"] = summarize(self.worst_case(fresh)) | {"attacks": fresh}
        doc["table"] = self.table_row()
        if per_sample:
            doc["per_sample"] = {
                "note": "fraction of evaluation passes on which each sample was robust (clean: correct)",
                "labels": self.labels.tolist() if self.labels is not None else None,
                "clean": [round(v, 4) for v in self.clean.float().mean(0).tolist()],
                **{k: [round(v, 4) for v in self.robust(k).float().mean(0).tolist()] for k in self.results},
                "worst_case": [round(v, 4) for v in self.worst_case().float().mean(0).tolist()],
            }
        return doc

    def ordered_names(self) -> list[str]:
        """Attacks in the paper's column order first, then the others in run order."""
        first = sorted((n for n in self.results if _paper_key(n) is not None), key=_paper_key)
        return first + [n for n in self.results if n not in first]

    def table_row(self) -> dict[str, float]:
        """``{column: accuracy}`` in the paper's layout: clean, FGSM, RFGSM, PGD7..40, APGD, MTPGD, ..., worst case."""
        row = {"clean": self.accuracy("clean")}
        row.update({display_name(n): self.results[n].accuracy for n in self.ordered_names()})
        row["worst case"] = self.accuracy("worst_case")
        return row

    def format_table(self, title: str | None = None) -> str:
        """Printable table: one row per attack, accuracy with its 95% interval."""
        lines = []
        if title:
            lines.append(title)
        judged = f"{self.passes} passes, EoT {self.eot}" if self.stochastic else "deterministic"
        if self.randomness.get("override"):
            judged += f" (--{self.randomness['override']}; detected: "
            judged += ("stochastic" if self.randomness.get("detected") else "deterministic") + ")"
        elif self.stochastic and self.randomness.get("sources"):
            judged += f" (randomness: {', '.join(self.randomness['sources'])})"
        lines.append(f"eps = {eps_label(self.eps)}, n = {self.n}, {judged}")
        fresh = self.fresh_noise_names()
        extra = ["no known-noise"] if len(fresh) < len(self.results) else []
        # columns as wide as their longest entry, so that every row lines up
        aw = max([16, len("WORST CASE")] + [len(display_name(n)) for n in self.results])
        tw = max([12] + [len(r.threat) for r in self.results.values()] + [len(t) for t in extra])
        head = f"{'attack':<{aw}} {'threat':<{tw}} {'accuracy':>9}  {'95% interval':<17} {'time':>7}"
        lines += [head, "-" * len(head)]

        def row(label: str, threat: str, robust: Tensor, seconds: float | None) -> str:
            s = summarize(robust)
            ci = s["ci95"] or s["ci95_samples"]
            kind = "" if s["ci95"] else "*"
            ci_txt = f"[{100 * ci[0]:5.1f}, {100 * ci[1]:5.1f}]{kind}" if ci else ""
            t = f"{seconds:6.1f}s" if seconds is not None else ""
            return f"{label:<{aw}} {threat:<{tw}} {100 * s['accuracy']:8.2f}%  {ci_txt:<17} {t:>7}"

        lines.append(row("clean", "", self.clean, None))
        for n in self.ordered_names():
            r = self.results[n]
            lines.append(row(display_name(n), r.threat, self.robust(n), r.seconds))
        lines.append("-" * len(head))
        lines.append(row("WORST CASE", "all", self.worst_case(), None))
        if extra:
            lines.append(row("worst, fresh", extra[0], self.worst_case(fresh), None))
        for k, why in self.skipped.items():
            lines.append(f"(skipped {k}: {why})")
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


def correct_per_pass(model: nn.Module, x: Tensor, y: Tensor, passes: int, seed: int | None,
                     max_batch: int = 4096, global_rng: bool = False) -> Tensor:
    """bool ``[passes, b]``: correct on each of ``passes`` forward passes.

    With ``seed`` the randomness is repeatable (same seed and shape, same draws):

    * default: the Noisy-LIF noise is drawn from ``seed`` for one batch of ``passes * b``;
    * ``global_rng``: one forward per pass ``p``, with the Noisy-LIF generators and the
      global generators seeded from :func:`pass_seed` (for randomness that is not
      spikeguard's own; a pass's draw then does not depend on how many passes there are).

    Runs under ``torch.inference_mode``.
    """
    b = x.shape[0]
    if global_rng and seed is not None:
        out = torch.zeros(passes, b, dtype=torch.bool, device=y.device)
        with torch.inference_mode():
            for p in range(passes):
                ps = pass_seed(seed, p)
                with noise_seed(model, ps), seeded_rng(ps, x.device):
                    preds = torch.cat([model(x[i:i + max_batch]).argmax(1) for i in range(0, b, max_batch)])
                out[p] = preds == y
        return out
    ctx = noise_seed(model, seed) if seed is not None else contextlib.nullcontext()
    with torch.inference_mode(), ctx:
        if passes == 1:
            return (model(x).argmax(1) == y)[None]
        xs = x.expand(passes, *x.shape).reshape(passes * b, *x.shape[1:])
        preds = torch.cat([model(xs[i:i + max_batch]).argmax(1) for i in range(0, len(xs), max_batch)])
        return preds.view(passes, b) == y[None]


AttackLike = str | Attack | tuple[str, Attack]


def evaluate_robustness(model: nn.Module, images: Tensor, labels: Tensor, attacks: Sequence[AttackLike], *,
                        eps: float = 8 / 255, eot: int = 1, passes: int = 1, alpha: float | str = PAPER_ALPHA,
                        batch_size: int = 128, seed: int = 0, source: nn.Module | None = None,
                        attack_kw: dict[str, dict] | None = None, device: torch.device | str | None = None,
                        max_eval_batch: int = 4096, progress: Any = False, first_batch: int = 0,
                        randomness: str | Randomness = "auto") -> RobustnessReport:
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

    Raises:
        SpikeguardError: bad inputs or attack names.
    """
    t_start = time.perf_counter()
    if images.dim() != 4 or labels.dim() != 1 or len(images) != len(labels):
        raise SpikeguardError(f"need images [N, C, H, W] and labels [N], got {tuple(images.shape)} and {tuple(labels.shape)}")
    if len(labels) == 0:
        raise SpikeguardError("no samples to evaluate")
    if passes < 1 or eot < 1 or batch_size < 1:
        raise SpikeguardError("passes, eot and batch_size must be >= 1")
    if images.is_floating_point() is False:
        raise SpikeguardError("images must be float in [0, 1] (use ImageDataset.float_images())")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if not isinstance(randomness, Randomness):
        randomness = detect_randomness(model, images[:8].to(device), mode=randomness, seed=seed)
    stochastic = randomness.stochastic
    # randomness that is not Noisy-LIF noise is repeated through the global generators, pass by pass
    global_rng = stochastic and (randomness.global_rng or "noisy-lif" not in randomness.sources)
    n_pass = passes if stochastic else 1
    eot_used = eot if stochastic else 1
    # one forward per EoT sample: a model may draw one random transform per batch
    build_kw: dict = {"eot_batched": False} if global_rng else {}
    traits = model_traits(model, stochastic, source)
    torch.manual_seed(seed)

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
            atk = build_attack(label, model, eps=eps, eot=eot_used, alpha=alpha, source=source, seed=seed,
                               **(build_kw | (attack_kw or {}).get(label, {})))
        why = unmet(atk, traits)
        if why:
            skipped[label] = "; ".join(why)
            continue
        if label in dict(named):
            raise SpikeguardError(f"attack {label!r} given twice")
        named.append((label, atk))

    n = len(labels)
    clean = torch.zeros(n_pass, n, dtype=torch.bool)
    robust = {k: torch.zeros(1 if not stochastic else n_pass, n, dtype=torch.bool) for k, _ in named}
    stats = {k: dict(seconds=0.0, max_linf=0.0, x_min=math.inf, x_max=-math.inf, n_attacked=0) for k, _ in named}
    n_batches = math.ceil(n / batch_size)
    bar, own_bar = as_progress(progress, n)
    bar.set_attacks([k for k, _ in named])
    num_classes = None
    for bi in range(n_batches):
        s, e = bi * batch_size, min(n, (bi + 1) * batch_size)
        x, y = images[s:e].to(device), labels[s:e].to(device)
        if own_bar:  # a shared bar counts its caller's batches
            bar.batch(bi, n_batches)
        # the global stream (random starts, EoT noise) restarts per batch: results of a
        # batch do not depend on which batches ran before it (sharding, resuming)
        torch.manual_seed(_batch_seed(seed, first_batch + bi))
        es = _eval_seed(seed, first_batch + bi) if stochastic else None
        if num_classes is None:
            with torch.inference_mode():
                num_classes = int(model(x[:1]).shape[1])
        ok = correct_per_pass(model, x, y, n_pass, es, max_eval_batch, global_rng).cpu()
        clean[:, s:e] = ok
        bar.step("clean", e - s)
        todo = ok.any(0).nonzero().squeeze(1)
        xs, ys = x[todo.to(device)], y[todo.to(device)]
        for label, atk in named:
            st = stats[label]
            t0 = time.perf_counter()
            if len(todo):
                st["n_attacked"] += len(todo)
                hit = torch.zeros(n_pass, len(todo), dtype=torch.bool)
                for adv, on, judge in atk.per_pass(xs, ys, n_pass, es):
                    _budget(st, adv, xs)
                    rows = list(range(n_pass)) if on is None else list(on)
                    if judge is not None:  # the attack's own view of those passes (e.g. a known noise sample)
                        hit[rows] = correct_per_pass(judge, adv, ys, 1, None, max_eval_batch)[0].cpu()
                    elif global_rng:
                        # judged in the clean batch's place, so each sample sees the clean pass's very draw
                        full = x.clone()
                        full[todo.to(device)] = adv
                        hit[rows] = correct_per_pass(model, full, y, n_pass, es, max_eval_batch,
                                                     True)[:, todo.to(device)].cpu()[rows]
                    else:
                        hit[rows] = correct_per_pass(model, adv, ys, n_pass, es, max_eval_batch).cpu()[rows]
                robust[label][:, s + todo] = hit & ok[:, todo]
            st["seconds"] += time.perf_counter() - t0
            bar.step(label, e - s)
    if own_bar:
        bar.close()

    report = RobustnessReport(eps=float(eps), eot=eot_used, passes=n_pass, stochastic=stochastic,
                              num_classes=num_classes or 0, seed=seed, clean=clean, skipped=skipped,
                              labels=labels.detach().cpu(), precision=current_precision(device),
                              randomness=randomness.to_dict(), step_size=describe_step_size(alpha))
    for label, atk in named:
        st = stats[label]
        if st["n_attacked"] == 0:
            st["x_min"], st["x_max"] = 0.0, 1.0
        report.results[label] = AttackResult(
            name=label, robust=robust[label], eps=atk.eps, threat=getattr(atk, "threat", "white-box"),
            description=repr(atk), seconds=st["seconds"], max_linf=st["max_linf"], x_min=st["x_min"],
            x_max=st["x_max"], n_attacked=st["n_attacked"], iterative=bool(getattr(atk, "iterative", False)),
            family=getattr(atk, "family", None), settings=atk.settings() if hasattr(atk, "settings") else {})
    report.seconds = time.perf_counter() - t_start
    return report


def _budget(st: dict, adv: Tensor, x: Tensor) -> None:
    with torch.no_grad():
        st["max_linf"] = max(st["max_linf"], float((adv - x).abs().max()))
        st["x_min"] = min(st["x_min"], float(adv.min()))
        st["x_max"] = max(st["x_max"], float(adv.max()))


DEFAULT_EOT = 8


def evaluate_config_attacks(model: nn.Module, test_ds, cfg, out_dir=None, progress: bool = False,
                            eot: int = DEFAULT_EOT) -> dict:
    """The end-of-training evaluation hook of :func:`spikeguard.experiment.run_experiment`.

    Runs ``cfg.eval.attacks`` (names or suite names) at ``cfg.eval.eps`` on ``test_ds``,
    judging a stochastic model over ``cfg.eval.passes`` passes and attacking it with EoT
    over ``eot`` passes; writes ``out_dir/robustness.json`` when ``out_dir`` is given and
    returns the report's summary (no per-sample lists). The caller sets the model's mode.
    """
    from pathlib import Path

    from ..attacks import check_eps, parse_attacks
    from ..utils import parse_eps

    names = parse_attacks(",".join(cfg.eval.attacks))
    eps = check_eps(parse_eps(cfg.eval.eps) if isinstance(cfg.eval.eps, str) else cfg.eval.eps)
    report = evaluate_robustness(model, test_ds.float_images(), test_ds.labels, names, eps=eps, eot=eot,
                                 passes=max(1, int(cfg.eval.passes)), batch_size=int(cfg.eval.batch_size),
                                 seed=int(cfg.seed), progress=progress)
    summary = report.to_dict(per_sample=False)
    if out_dir is not None:
        from .results import provenance, write_robustness

        data = {"name": test_ds.name, "split": "test", "n_samples": len(test_ds)}
        prov = provenance(command="spikeguard train (eval.attacks)", checkpoint=out_dir, report=report, attacks=names,
                          data=data, alpha=0.01, batch_size=int(cfg.eval.batch_size))
        tgo = getattr(cfg, "tgo", None)
        write_robustness(Path(out_dir) / "robustness.json", report, prov, command="train (eval.attacks)", data=data,
                         lambda_max=tgo.lambda_max if tgo is not None and tgo.enabled else None)
    return summary
