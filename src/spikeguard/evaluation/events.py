"""Measurements of event attacks: success rate vs budget k, and what rounding to events leaves.

* :func:`event_attack_curve`: attack success rate over the originally correct samples and
  accuracy as functions of the event budget ``k``. For ``event-flip`` one run at the largest
  ``k`` records the number of flips at which each sample was first misclassified, so the
  curve is non-decreasing in ``k`` by construction (the attack never un-fools a sample);
  ``random-flip`` and ``event-ste`` run once per ``k``.
* :func:`rounding_check`: a continuous (frame) attack, e.g. PGD on the normalised frames, is
  not an event stream. Rounding its output to the event lattice is what an attacker who must
  emit events gets; if rounding erases most of the attack, robustness measured with rounded
  attacks would be false robustness, and the check says so (use an event attack instead).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor, nn

from ..attacks import build_attack
from ..attacks.events import model_frame_norm
from ..errors import SpikeguardError
from ..data.event_frames import FrameNorm
from ..neurons import is_stochastic


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


@dataclass
class EventCurve:
    """Success rate and accuracy of one event attack at each budget ``k``."""

    attack: str
    ks: list[int]
    n: int
    n_correct: int
    clean_accuracy: float
    success_rate: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    mean_l0: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def event_attack_curve(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    ks: Sequence[int],
    attack: str = "event-flip",
    batch_size: int = 128,
    seed: int = 0,
    **attack_kw,
) -> EventCurve:
    """Success rate (over the samples the model gets right) and accuracy of ``attack`` at each k."""
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 0:
        raise SpikeguardError(f"event budgets must be >= 0, got {ks}")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x, y = images.to(device), labels.to(device)
    correct = _predict(model, x, batch_size) == y
    n, nc = len(y), int(correct.sum())
    xs, ys = x[correct], y[correct]
    curve = EventCurve(attack, ks, n, nc, nc / max(n, 1))
    single_run = attack == "event-flip"
    runs = [ks[-1]] if single_run else ks
    fooled_at: dict[int, tuple[Tensor, Tensor]] = {}
    for k in runs:
        atk = build_attack(attack, model, **(attack_kw | {"k": k}))  # k = 0 is a valid budget here
        fooled, l0 = [], []
        for i in range(0, len(ys), batch_size):
            adv = atk(xs[i : i + batch_size], ys[i : i + batch_size])
            fooled.append(_predict(model, adv, batch_size) != ys[i : i + batch_size])
            l0.append(atk.last_l0.to(device))  # type: ignore[attr-defined]  # event attacks record last_l0
        fooled_at[k] = (
            torch.cat(fooled) if fooled else torch.zeros(0, dtype=torch.bool, device=device),
            torch.cat(l0) if l0 else torch.zeros(0, dtype=torch.long, device=device),
        )
    for k in ks:
        f, l0k = fooled_at[ks[-1]] if single_run else fooled_at[k]
        hit = f & (l0k <= k) if single_run else f
        s = float(hit.float().mean()) if nc else 0.0
        curve.success_rate.append(s)
        curve.accuracy.append((nc - int(hit.sum())) / max(n, 1))
        curve.mean_l0.append(float(l0k[hit].float().mean()) if hit.any() else 0.0)
    curve.seconds = time.perf_counter() - t0
    return curve


@dataclass
class RoundingCheck:
    """A continuous attack before and after rounding its output back to events."""

    attack: str
    eps: float
    n_correct: int
    success_continuous: float
    success_rounded: float
    mean_cells_changed: float
    erased_share: float
    false_robustness: bool

    def warning(self) -> str:
        if not self.false_robustness:
            return ""
        return (
            f"WARNING: rounding {self.attack} (eps {self.eps:.4g}) back to events erases {self.erased_share:.0%} "
            f"of its successes (success {self.success_continuous:.1%} on frames, {self.success_rounded:.1%} as "
            f"events): robustness against rounded frame attacks is false robustness for event data; measure "
            f"event attacks (event-flipK) instead"
        )

    def to_dict(self) -> dict:
        return dict(self.__dict__) | {"warning": self.warning()}


def rounding_check(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attack: str = "pgd10",
    eps: float = 8 / 255,
    norm: str | None = None,
    batch_size: int = 128,
    seed: int = 0,
    threshold: float = 0.5,
    **attack_kw,
) -> RoundingCheck:
    """Run ``attack`` on the frames, round its output to the event lattice and compare success rates.

    ``false_robustness`` is set when rounding erases more than ``threshold`` of the
    continuous attack's successes.
    """
    spec = norm or model_frame_norm(model)
    if not spec:
        raise SpikeguardError("rounding_check needs a model on event frames (or norm='clip:4')")
    fn = FrameNorm.parse(spec)
    torch.manual_seed(seed)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x, y = images.to(device), labels.to(device)
    correct = _predict(model, x, batch_size) == y
    xs, ys = x[correct], y[correct]
    atk = build_attack(attack, model, eps=eps, **attack_kw)
    cont, rnd, cells = [], [], []
    for i in range(0, len(ys), batch_size):
        xb, yb = xs[i : i + batch_size], ys[i : i + batch_size]
        adv = atk(xb, yb)
        q = fn.quantize(adv)
        cont.append(_predict(model, adv, batch_size) != yb)
        rnd.append(_predict(model, q, batch_size) != yb)
        cells.append((fn.decode(q) != fn.decode(xb)).flatten(1).sum(1).float())
    nc = len(ys)
    c = torch.cat(cont) if cont else torch.zeros(0, dtype=torch.bool)
    r = torch.cat(rnd) if rnd else torch.zeros(0, dtype=torch.bool)
    sc = float(c.float().mean()) if nc else 0.0
    sr = float(r.float().mean()) if nc else 0.0
    erased = float((c & ~r).sum()) / max(int(c.sum()), 1)
    return RoundingCheck(
        attack,
        float(eps),
        nc,
        sc,
        sr,
        float(torch.cat(cells).mean()) if cells else 0.0,
        erased,
        bool(sc > 0 and erased > threshold),
    )


def event_report(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    ks: Sequence[int],
    eps: float = 8 / 255,
    eot: int = 1,
    batch_size: int = 128,
    seed: int = 0,
    rounding_attack: str = "pgd10",
    alpha: float | str = 0.01,
) -> tuple[dict, str]:
    """EventFlip and random-flip curves over ``ks`` plus the rounding check: ``(json dict, text table)``."""
    eot = eot if is_stochastic(model) else 1
    flip = event_attack_curve(model, images, labels, ks, "event-flip", batch_size, seed, eot=eot)
    rand = event_attack_curve(model, images, labels, ks, "random-flip", batch_size, seed)
    rc = rounding_check(
        model, images, labels, rounding_attack, eps=eps, batch_size=batch_size, seed=seed, eot=eot, alpha=alpha
    )
    lines = [
        f"event attacks (success rate over the {flip.n_correct} originally correct of {flip.n} samples; "
        f"k = event cells flipped)",
        f"{'k':>6}  {'event-flip':>10}  {'random-flip':>11}  {'accuracy (event-flip)':>21}",
    ]
    for i, k in enumerate(flip.ks):
        lines.append(f"{k:>6}  {flip.success_rate[i]:>10.1%}  {rand.success_rate[i]:>11.1%}  {flip.accuracy[i]:>21.1%}")
    lines.append(
        f"rounding {rc.attack} (eps {rc.eps:.4g}) to events: success {rc.success_continuous:.1%} on frames, "
        f"{rc.success_rounded:.1%} as events ({rc.mean_cells_changed:.1f} cells changed on average)"
    )
    if rc.warning():
        lines.append(rc.warning())
    doc = {"event_flip": flip.to_dict(), "random_flip": rand.to_dict(), "rounding": rc.to_dict()}
    return doc, "\n".join(lines)
