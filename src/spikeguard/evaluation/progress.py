"""Progress and cost of a robustness evaluation: what it will take, and how far it is.

* :class:`EvalProgress`: one bar over *sample-attacks* (each sample judged clean, then once per
  attack), updated after every attack on every batch, so a long suite moves even within one
  batch; it shows the samples done of the current attack, the batch, the rate and the ETA.
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


class EvalProgress:
    """A progress bar over (clean + attacks) x samples.

    Args:
        n_samples: samples this bar covers (all batches of the evaluation).
        desc: the bar's label (``evaluate``, ``audit``, ...).
        enabled: False gives a silent object with the same methods.
    """

    def __init__(self, n_samples: int, desc: str = "evaluate", enabled: bool = True) -> None:
        self.n_samples = int(n_samples)
        self.desc = desc
        self.labels: list[str] = []
        self.done: dict[str, int] = {}
        self.batches = (0, 0)
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.n_samples, desc=desc, unit="sample-attack", unit_scale=False, leave=False,
                             dynamic_ncols=True)

    def set_attacks(self, labels: Sequence[str]) -> None:
        """The attacks that will run (after skips): the total becomes ``n_samples * (1 + len(labels))``."""
        for k in labels:
            if k not in self.labels:
                self.labels.append(k)
        if self._bar is not None:
            self._bar.total = self.n_samples * (1 + len(self.labels))
            self._bar.refresh()

    def batch(self, index: int, total: int) -> None:
        """Now on batch ``index`` (0-based) of ``total``."""
        self.batches = (index + 1, total)

    def step(self, label: str, n: int) -> None:
        """``n`` samples done for ``label`` (``clean`` or an attack) on the current batch."""
        self.done[label] = self.done.get(label, 0) + int(n)
        if self._bar is not None:
            b, nb = self.batches
            self._bar.set_postfix_str(f"batch {b}/{nb}, {label} {self.done[label]}/{self.n_samples}", refresh=False)
            self._bar.update(int(n))

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

    Read from the attack's settings: ``steps`` x ``restarts`` x EoT x targets (MTPGD) x ensemble
    members or surrogate candidates, and ``queries`` for score-based attacks (one forward each).
    Attacks that wrap another (``pgd``) are read through it. An estimate: early stopping and
    the samples a clean pass already gets wrong make the real count smaller.
    """
    inner = getattr(atk, "pgd", None)
    src = inner if inner is not None and hasattr(inner, "steps") else atk
    queries = getattr(atk, "queries", None)
    if queries:
        return 0, int(queries) * max(1, int(getattr(atk, "restarts", 1) or 1))
    steps = int(getattr(src, "steps", 1) or 1)
    restarts = int(getattr(src, "restarts", 1) or 1)
    eot = int(getattr(atk, "eot", 1) or 1)
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

    @property
    def seconds(self) -> float:
        return self.batches * (self.grad_passes * self.seconds_grad + self.fwd_passes * self.seconds_fwd)

    def format(self) -> str:
        return (f"cost estimate: {self.batches} batch(es) of {self.batch} images, each about {self.grad_passes:,} "
                f"forward+backward and {self.fwd_passes:,} forward passes (measured now: {self.seconds_grad:.3g} s "
                f"and {self.seconds_fwd:.3g} s per pass) = about {format_seconds(self.seconds)} here, less where "
                f"samples are misclassified clean (they are not attacked)")


def format_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    if s < 1:
        return "under 1 s"
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


def estimate_cost(model: nn.Module, attacks: Sequence[tuple[str, Any]], x: Tensor, y: Tensor, n: int,
                  batch_size: int, passes: int) -> Cost:
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
    return Cost(b, math.ceil(n / b), g, f, t_grad, t_fwd, per)


def suite_cost(model: nn.Module, names: Sequence[str], x: Tensor, y: Tensor, n: int, *, eps: float, eot: int,
               passes: int, alpha: float, batch_size: int, source: nn.Module | None = None,
               attack_kw: dict | None = None) -> Cost:
    """:func:`estimate_cost` of ``n`` samples for attack names as ``spikeguard evaluate`` takes them
    (attacks that will be skipped on this model are left out); ``x, y``: one batch to time."""
    from ..attacks import build_attack
    from ..neurons import is_stochastic

    stochastic = is_stochastic(model)
    built = []
    for name in names:
        try:
            atk = build_attack(name, model, eps=eps, eot=eot if stochastic else 1, alpha=alpha, source=source,
                               **((attack_kw or {}).get(name, {})))
        except Exception:  # noqa: BLE001 - the evaluation itself reports (or skips) it
            continue
        if getattr(atk, "stochastic_only", False) and not stochastic:
            continue
        built.append((name, atk))
    return estimate_cost(model, built, x, y, n, batch_size, passes if stochastic else 1)


__all__ = ["suite_cost", "EvalProgress", "as_progress", "attack_passes", "estimate_cost", "Cost", "format_seconds"]
