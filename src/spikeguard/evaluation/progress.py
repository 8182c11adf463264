"""Progress and cost of a robustness evaluation: what it will take, and how far it is.

* :class:`EvalProgress`: one bar over the evaluation's work (each sample judged clean, then
  once per attack it is run on), each attack weighted by its cost per sample (measured once it
  has run, estimated from its cost rank before), updated after every attack on every batch; it
  shows the samples done of the current attack, the batch and the ETA (the work left, which
  shrinks as a cascade's samples break).
* :func:`estimate_cost`: the forward and forward+backward passes a suite will take (from the
  attacks' settings: steps, restarts, EoT, targets, ensemble members, queries) and their time,
  measured on the model now; printed by ``spikeguard evaluate`` before it starts.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..attacks import build_attack
from ..attacks.requirements import model_traits, unmet
from ..neurons import is_stochastic


class EvalProgress:
    """A progress bar over the work of (clean + attacks) x samples, weighted by cost.

    Each attack's share of the work is its measured seconds per attacked sample (before it has
    run: its cost rank times the seconds per cost unit measured on the attacks that ran, from
    :func:`~spikeguard.evaluation.engine.attack_cost`); samples an attack is not run on (clean
    mistakes; in cascade mode the samples broken before it) take no work, so the remaining work
    shrinks as samples break. The ETA is that remaining work.

    Args:
        n_samples: samples this bar covers (all batches of the evaluation).
        desc: the bar's label (``evaluate``, ``audit``, ...).
        enabled: False gives a silent object with the same methods.
    """

    RESOLUTION = 1000

    def __init__(self, n_samples: int, desc: str = "evaluate", enabled: bool = True) -> None:
        self.n_samples = int(n_samples)
        self.desc = desc
        self.labels: list[str] = []
        self.cost: dict[str, float] = {}
        self.done: dict[str, int] = {}
        self.attacked: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.batches = (0, 0)
        self._bar = None
        if enabled:
            self._bar = tqdm(
                total=self.RESOLUTION,
                desc=desc,
                leave=False,
                dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}",
            )

    def set_attacks(
        self, labels: Sequence[str], costs: dict[str, float] | None = None, clean_cost: float = 1 / 3
    ) -> None:
        """The attacks that will run (after skips), in run order, with their cost per sample
        (``costs``, cost rank units; default 1) and the clean judging's (``clean_cost``)."""
        if "clean" not in self.cost:
            self.labels.append("clean")
        self.cost["clean"] = float(clean_cost)
        for k in labels:
            if k not in self.labels:
                self.labels.append(k)
            self.cost[k] = float((costs or {}).get(k, 1.0))

    def batch(self, index: int, total: int) -> None:
        """Now on batch ``index`` (0-based) of ``total``."""
        self.batches = (index + 1, total)

    def step(self, label: str, n: int, attacked: int | None = None, seconds: float | None = None) -> None:
        """Batch of ``n`` samples done for ``label`` (``clean`` or an attack): ``attacked`` of them
        were run (default all) in ``seconds``."""
        self.done[label] = self.done.get(label, 0) + int(n)
        self.attacked[label] = self.attacked.get(label, 0) + int(n if attacked is None else attacked)
        self.seconds[label] = self.seconds.get(label, 0.0) + float(seconds or 0.0)
        if self._bar is not None:
            done, left = self.work()
            b, nb = self.batches
            eta = f", ETA {format_seconds(left)}" if left is not None else ""
            self._bar.set_postfix_str(
                f"batch {b}/{nb}, {label} {self.done[label]}/{self.n_samples}{eta}", refresh=False
            )
            frac = done / (done + left) if left is not None and done + left > 0 else 0.0
            self._bar.n = min(self.RESOLUTION, int(round(self.RESOLUTION * frac)))
            self._bar.refresh()

    def work(self) -> tuple[float, float | None]:
        """``(seconds of work done, seconds of work left)`` (left: None before anything is measured)."""
        done = sum(self.seconds.values())
        units = sum(self.attacked.get(k, 0) * self.cost.get(k, 1.0) for k in self.seconds)
        per_unit = done / units if units > 0 and done > 0 else None
        left, frac = 0.0, 1.0
        for k in self.labels:
            if self.done.get(k):
                frac = self.attacked[k] / self.done[k]  # in cascade the survivors only shrink
            rest = max(self.n_samples - self.done.get(k, 0), 0)
            if not rest:
                continue
            if self.attacked.get(k) and self.seconds.get(k):
                per_sample = self.seconds[k] / self.attacked[k]
            elif per_unit is not None:
                per_sample = per_unit * self.cost.get(k, 1.0)
            else:
                return done, None
            left += rest * frac * per_sample
        return done, left

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def as_progress(progress: Any, n_samples: int, desc: str = "evaluate") -> tuple[EvalProgress, bool]:
    """``(bar, owned)`` for the ``progress`` argument of the engine: an :class:`EvalProgress` is
    used as given (``owned`` False: its creator closes it), a string is a label, else a bool."""
    if isinstance(progress, EvalProgress):
        return progress, False
    if isinstance(progress, str):
        return EvalProgress(n_samples, progress, enabled=True), True
    return EvalProgress(n_samples, desc, enabled=bool(progress)), True


# ------------------------------------------------------------------------------------- cost
def attack_passes(atk: Any) -> tuple[int, int]:
    """``(forward+backward, forward-only)`` passes of the model per attacked sample for one run of ``atk``.

    Read from the attack's settings: ``steps`` (event attacks: ``max_steps``) x ``restarts`` x EoT
    x targets (MTPGD) x ensemble members or surrogate candidates, ``queries`` x restarts x EoT for
    score-based attacks and ``trials`` x EoT for random search (one forward each). Attacks that
    wrap another (``pgd``, ``inner``) are read through it. An estimate: early stopping and
    the samples a clean pass already gets wrong make the real count smaller.
    """
    inner = getattr(atk, "pgd", None) or getattr(atk, "inner", None)
    src = inner if inner is not None and hasattr(inner, "steps") else atk
    eot = int(getattr(atk, "eot", 1) or 1)
    queries = getattr(atk, "queries", None)
    if queries:
        return 0, int(queries) * max(1, int(getattr(atk, "restarts", 1) or 1)) * eot
    if getattr(atk, "trials", None) and not hasattr(atk, "steps"):  # random search (random-flip): forwards only
        return 0, int(atk.trials) * eot
    steps = int(getattr(src, "steps", None) or getattr(src, "max_steps", None) or 1)
    restarts = int(getattr(src, "restarts", 1) or 1)
    targets = int(getattr(atk, "n_targets", 1) or 1)
    members = len(getattr(atk, "members", None) or getattr(atk, "candidates", None) or [None])
    return steps * restarts * eot * targets * members, 0


@dataclass
class Cost:
    """What a suite will take: passes of one batch and their measured times."""

    batch: int
    batches: int
    grad_passes: int
    fwd_passes: int
    seconds_grad: float
    seconds_fwd: float
    per_attack: dict[str, tuple[int, int]] = field(default_factory=dict)

    cascade: bool = False

    @property
    def seconds(self) -> float:
        return self.batches * (self.grad_passes * self.seconds_grad + self.fwd_passes * self.seconds_fwd)

    def format(self) -> str:
        less = (
            "at most that: in the cascade each attack runs only on the samples still robust after the cheaper ones"
            if self.cascade
            else "less where samples are misclassified clean (they are not attacked)"
        )
        return (
            f"cost estimate: {self.batches} batch(es) of {self.batch} images, each about {self.grad_passes:,} "
            f"forward+backward and {self.fwd_passes:,} forward passes (measured now: {self.seconds_grad:.3g} s "
            f"and {self.seconds_fwd:.3g} s per pass): {approximately(self.seconds)} here, {less}"
        )


def approximately(s: float) -> str:
    """``about 5 min`` / ``less than 1 s``: a duration estimate as a phrase."""
    text = format_seconds(s)
    return text if text in ("?", "less than 1 s") else f"about {text}"


def format_seconds(s: float) -> str:
    """A duration for humans: ``less than 1 s``, ``42 s``, ``12 min``, ``1.5 h``."""
    if not math.isfinite(s):
        return "?"
    if s < 1:
        return "less than 1 s"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _time(fn, repeats: int = 2) -> float:
    fn()  # warm-up (kernel builds, caches)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def estimate_cost(
    model: nn.Module,
    attacks: Sequence[tuple[str, Any]],
    x: Tensor,
    y: Tensor,
    n: int,
    batch_size: int,
    passes: int,
    cascade: bool = False,
) -> Cost:
    """Passes and time of evaluating ``attacks`` (``(label, Attack)``) on ``n`` samples.

    ``x, y``: one batch (at most ``batch_size``) on the model's device, used to time one
    forward and one input-gradient forward+backward pass. Judging adds ``passes`` forwards per
    attack and for the clean images.
    """
    b = min(batch_size, n, len(x))
    xb, yb = x[:b], y[:b]

    def fwd() -> None:
        with torch.inference_mode():
            model(xb)

    def grad() -> None:
        xi = xb.detach().clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(xi), yb)
        torch.autograd.grad(loss, xi)

    t_fwd, t_grad = _time(fwd), _time(grad)
    per = {label: attack_passes(atk) for label, atk in attacks}
    g = sum(v[0] for v in per.values())
    f = sum(v[1] for v in per.values()) + passes * (1 + len(per))
    return Cost(b, math.ceil(n / b), g, f, t_grad, t_fwd, per, cascade)


def suite_cost(
    model: nn.Module,
    names: Sequence[str],
    x: Tensor,
    y: Tensor,
    n: int,
    *,
    eps: float,
    eot: int,
    passes: int,
    alpha: float | str,
    batch_size: int,
    source: nn.Module | None = None,
    attack_kw: dict | None = None,
    cascade: bool = False,
) -> Cost:
    """:func:`estimate_cost` of ``n`` samples for attack names as ``spikeguard evaluate`` takes them
    (attacks that will be skipped on this model are left out); ``x, y``: one batch to time.
    ``cascade``: the estimate is an upper bound (every attack on every sample)."""
    stochastic = is_stochastic(model)
    traits = model_traits(model, stochastic, source)
    built = []
    for name in names:
        try:
            atk = build_attack(
                name,
                model,
                eps=eps,
                eot=eot if stochastic else 1,
                alpha=alpha,
                source=source,
                **((attack_kw or {}).get(name, {})),
            )
        except Exception:  # noqa: BLE001 - the evaluation itself reports (or skips) it
            continue
        if unmet(atk, traits):  # skipped by the evaluation: no cost
            continue
        built.append((name, atk))
    return estimate_cost(model, built, x, y, n, batch_size, passes if stochastic else 1, cascade)


__all__ = [
    "suite_cost",
    "EvalProgress",
    "as_progress",
    "attack_passes",
    "estimate_cost",
    "Cost",
    "format_seconds",
    "approximately",
]
