"""Event-stream attacks: perturbations that are still valid event streams.

The input is a frame sequence whose values lie on the lattice of its
:class:`~spikeguard.data.event_frames.FrameNorm` (``model.frame_norm``, or ``norm=``); one
*flip* moves one cell (frame, polarity, y, x) one count level up (an event added) or down
(an event removed). The budget ``k`` bounds the number of changed cells (L0 over cells, each
cell changed by one level), so the output decodes to counts and, through
:func:`~spikeguard.data.event_frames.frames_to_events`, to an event stream that integrates
back to exactly the attacked frames.

* :class:`EventFlip` (``event-flipK``): the gradient of the margin loss is taken at the
  current, always valid (rounded) input; the candidate flips are ranked by their first-order
  gain, the top ones are applied and kept only if the margin actually rises (greedy
  verification: a rejected step is retried with fewer flips); the number of flips per step
  grows with the flips already made (so small budgets get single-flip precision); a sample
  stops as soon as it is misclassified. On a stochastic model (``eot > 1``, or Noisy-LIF
  noise) the verification compares expected margins with common random numbers: the current
  point and the proposal are both evaluated, as EoT means, under the same freshly seeded noise
  draw, so a step is kept when it raises the expected margin, not when its draw was lucky.
* :class:`RandomFlip` (``random-flipK``): ``k`` random flips, best of ``trials`` draws; the
  baseline an informed attack must beat.
* :class:`EventSTE` (``event-steK``): targeted, in the spirit of the sparse event attacks the
  paper cites: every cell holds three states (delete / keep / add) with learned logits; the
  forward pass uses the hard states (the ``k`` most confident changes), the backward pass the
  softmax (straight-through); Adam maximises the target class with a sparsity penalty.

Each attack leaves ``last_l0`` (changed cells per sample) and ``last_fooled`` after a call.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import SpikeguardError
from ..neurons import is_stochastic
from .adaptive import fixed_randomness
from .base import Attack, margin_loss
from .registry import register_attack
from ..data.event_frames import FrameNorm


def model_frame_norm(model: nn.Module) -> str:
    """The FrameNorm spec of the (possibly wrapped) model's frame input, or ``""``."""
    for m in model.modules():
        spec = getattr(m, "frame_norm", "")
        if isinstance(spec, str) and spec:
            return spec
    return ""


class EventAttack(Attack):
    """Base of the attacks on the event lattice (``eps`` is 1: the L0 budget ``k`` is what binds).

    Args:
        model: a model on frame sequences (built for an event data set).
        k: budget, the number of cells changed by one count level.
        norm: FrameNorm spec of the input (default: the model's ``frame_norm``).
    """

    threat = "white-box"
    requires = ("event-frames",)

    def __init__(
        self,
        model: nn.Module,
        eps: float = 1.0,
        k: int = 50,
        norm: str | None = None,
        eot: int = 1,
        eot_batched: bool = True,
    ) -> None:
        super().__init__(model, 1.0, eot=eot, eot_batched=eot_batched)

        if int(k) < 0:
            raise SpikeguardError(f"the event budget k must be >= 0, got {k}")
        self.k = int(k)
        spec = norm or model_frame_norm(model)
        if not spec:
            raise SpikeguardError(
                f"{type(self).__name__} needs event frames: the model was not built for an event "
                f"data set (no frame_norm); pass norm='clip:4' or similar"
            )
        self.norm = FrameNorm.parse(spec)
        self.last_l0: Tensor | None = None
        self.last_fooled: Tensor | None = None

    def levels_of(self, images: Tensor) -> Tensor:
        """Count levels of ``images``; an error if they are not on the event lattice."""
        lv = self.norm.decode(images)
        if (self.norm.encode(lv) - images).abs().max() > 1e-5:
            raise SpikeguardError(
                f"{type(self).__name__}: the input is not on the {self.norm.spec} event lattice "
                f"(attack clean event frames, not already perturbed ones)"
            )
        return lv

    def step_values(self, levels: Tensor) -> tuple[Tensor, Tensor]:
        """Value change of one level up and one level down per cell (0 where impossible)."""
        v, top = self.norm.values(levels.device), self.norm.levels
        up = torch.where(levels < top, v[(levels + 1).clamp(max=top)] - v[levels], torch.zeros(()))
        down = torch.where(levels > 0, v[(levels - 1).clamp(min=0)] - v[levels], torch.zeros(()))
        return up, down

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k}, norm={self.norm.spec})"


@register_attack("event-flip", pattern=r"event-flip(?P<k>\d+)?", defaults={"k": 50}, example="event-flipK")
class EventFlip(EventAttack):
    """Gradient-ranked, verified greedy event flips (see the module docstring).

    Args:
        growth: flips per step as a share of the flips already made (at least 1).
        max_steps: cap on gradient steps, accepted or rejected (default ``4 * k + 20``).
    """

    name = "event-flip"

    def __init__(
        self,
        model: nn.Module,
        eps: float = 1.0,
        k: int = 50,
        norm: str | None = None,
        growth: float = 0.25,
        max_steps: int | None = None,
        **kw,
    ) -> None:
        super().__init__(model, eps, k, norm, **kw)
        if not growth > 0:
            raise SpikeguardError(f"growth must be > 0, got {growth}")
        self.growth = float(growth)
        self.max_steps = 4 * self.k + 20 if max_steps is None else int(max_steps)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        b, dev = images.shape[0], images.device
        cur = self.levels_of(images)
        changed = torch.zeros_like(cur, dtype=torch.bool)
        banned = torch.zeros_like(changed)
        n_used = torch.zeros(b, dtype=torch.long, device=dev)
        rate = torch.full((b,), self.growth, device=dev)
        # stochastic model: verify with common random numbers (see the module docstring); a
        # deterministic model keeps the cheaper, bit-identical comparison with the stored margin
        crn = self.eot > 1 or is_stochastic(self.model)
        grad, margin, _ = self.loss_grad(self.norm.encode(cur), labels, margin_loss)
        active = (margin <= 0) & (self.k > 0)
        for _ in range(self.max_steps):
            a = active.nonzero().squeeze(1)  # only the samples still being attacked cost a pass
            if a.numel() == 0:
                break
            lv, g = cur[a], grad[a]
            up, down = self.step_values(lv)
            gain_up, gain_down = up * g, down * g
            go_up = gain_up >= gain_down
            gain = torch.where(go_up, gain_up, gain_down)
            gain = gain.masked_fill(changed[a] | banned[a] | (gain <= 0), float("-inf")).flatten(1)
            take = torch.ceil(rate[a] * n_used[a].clamp(min=4).float()).long().clamp(min=1)
            take = torch.minimum(take, self.k - n_used[a])
            m = int(take.max())
            vals, idx = gain.topk(m, dim=1)
            sel = (torch.arange(m, device=dev)[None] < take[:, None]) & torch.isfinite(vals)
            has = sel.any(1)  # no flip the gradient says would help: the sample is done
            mask = torch.zeros_like(gain, dtype=torch.bool).scatter_(1, idx, sel).view_as(lv)
            proposal = lv + mask.long() * torch.where(go_up, 1, -1)
            if crn:
                seed = int(torch.randint(0, 2**62, (1,)).item())
                with fixed_randomness(self.model, seed, dev):
                    m_old = self.mean_margin(self.norm.encode(lv), labels[a])
                with fixed_randomness(self.model, seed, dev):
                    g_new, m_new, _ = self.loss_grad(self.norm.encode(proposal), labels[a], margin_loss)
            else:
                g_new, m_new, _ = self.loss_grad(self.norm.encode(proposal), labels[a], margin_loss)
                m_old = margin[a]
            accept = has & (m_new > m_old)
            acc4 = accept.view(-1, *[1] * (lv.dim() - 1))
            cur[a] = torch.where(acc4, proposal, lv)
            changed[a] |= mask & acc4
            n_used[a] += torch.where(accept, sel.sum(1), 0)
            grad[a] = torch.where(acc4, g_new, g)
            margin[a] = torch.where(accept, m_new, m_old)
            # a rejected step is retried with half the flips; a rejected single flip is banned
            reject = has & ~accept
            single = reject & (sel.sum(1) == 1)
            first = torch.zeros_like(gain, dtype=torch.bool).scatter_(1, idx[:, :1], single[:, None]).view_as(lv)
            banned[a] |= first
            rate[a] = torch.where(reject, rate[a] / 2, torch.clamp(rate[a] * 2, max=self.growth))
            active[a] = has & (margin[a] <= 0) & (n_used[a] < self.k)
        self.last_l0 = n_used.cpu()
        self.last_fooled = (margin > 0).cpu()
        return self.norm.encode(cur)

    @torch.no_grad()
    def mean_margin(self, x: Tensor, labels: Tensor) -> Tensor:
        """Margin loss averaged over the ``eot`` passes, ``[B]``: the loss :meth:`loss_grad`
        returns, from forward passes that draw their noise in the same order (same batch
        shape, same loop), so both see the same sample under one seed."""
        k, b = self.eot, x.shape[0]
        if k == 1 or self.eot_batched:
            xs = x if k == 1 else x.expand(k, *x.shape).reshape(k * b, *x.shape[1:])
            ys = labels if k == 1 else labels.repeat(k)
            return margin_loss(self.model(xs), ys).view(k, b).mean(0)
        return sum(margin_loss(self.model(x), labels) for _ in range(k)) / k  # type: ignore[return-value]  # a sum of k >= 1 tensors


@register_attack("random-flip", pattern=r"random-flip(?P<k>\d+)?", defaults={"k": 50}, example="random-flipK")
class RandomFlip(EventAttack):
    """``k`` random flips per sample (each cell one level, in a feasible direction), best of ``trials``."""

    name = "random-flip"

    def __init__(
        self, model: nn.Module, eps: float = 1.0, k: int = 50, norm: str | None = None, trials: int = 10, **kw
    ) -> None:
        super().__init__(model, eps, k, norm, **kw)
        if int(trials) < 1:
            raise SpikeguardError(f"trials must be >= 1, got {trials}")
        self.trials = int(trials)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        cur = self.levels_of(images)
        best = cur.clone()
        best_margin = margin_loss(self.logits(images), labels)
        n_cells = cur[0].numel()
        k = min(self.k, n_cells)
        for _ in range(self.trials if k else 0):
            idx = torch.rand(cur.shape[0], n_cells, device=cur.device).argsort(1)[:, :k]
            mask = torch.zeros(cur.shape[0], n_cells, dtype=torch.bool, device=cur.device).scatter_(1, idx, True)
            mask = mask.view_as(cur)
            up = (torch.rand_like(cur, dtype=torch.float) < 0.5) | (cur == 0)
            up &= cur < self.norm.levels
            proposal = cur + mask.long() * torch.where(up, 1, -1)
            m = margin_loss(self.logits(self.norm.encode(proposal)), labels)
            better = m > best_margin
            best = torch.where(better.view(-1, *[1] * (cur.dim() - 1)), proposal, best)
            best_margin = torch.where(better, m, best_margin)
        self.last_l0 = (best != cur).flatten(1).sum(1).cpu()
        self.last_fooled = (best_margin > 0).cpu()
        return self.norm.encode(best)

    def __repr__(self) -> str:
        return f"RandomFlip(k={self.k}, trials={self.trials}, norm={self.norm.spec})"


@register_attack("event-ste", pattern=r"event-ste(?P<k>\d+)?", defaults={"k": 50}, example="event-steK")
class EventSTE(EventAttack):
    """Targeted add / delete / keep optimisation through a straight-through relaxation.

    Args:
        steps: Adam steps.
        lr: Adam learning rate on the state logits.
        sparsity: weight of the expected number of changes in the loss.
        target: ``"second"`` (the clean input's most likely wrong class) or ``"random"``.
    """

    name = "event-ste"

    def __init__(
        self,
        model: nn.Module,
        eps: float = 1.0,
        k: int = 50,
        norm: str | None = None,
        steps: int = 50,
        lr: float = 0.2,
        sparsity: float = 1e-3,
        target: str = "second",
        **kw,
    ) -> None:
        super().__init__(model, eps, k, norm, **kw)
        if int(steps) < 1 or not lr > 0 or sparsity < 0 or target not in ("second", "random"):
            raise SpikeguardError("event-ste needs steps >= 1, lr > 0, sparsity >= 0, target 'second' or 'random'")
        self.steps, self.lr, self.sparsity, self.target = int(steps), float(lr), float(sparsity), target

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        cur = self.levels_of(images)
        b = cur.shape[0]
        up, down = self.step_values(cur)
        clean = self.logits(images)
        if self.target == "second":
            targets = clean.scatter(1, labels[:, None], float("-inf")).argmax(1)
        else:
            off = torch.randint(1, clean.shape[1], (b,), device=labels.device)
            targets = (labels + off) % clean.shape[1]
        # logits of (delete, keep, add); impossible moves are masked out
        logit = torch.zeros(*cur.shape, 3, device=cur.device)
        logit[..., 1] = 2.0
        logit.requires_grad_(True)
        impossible = torch.stack([down == 0, torch.zeros_like(up, dtype=torch.bool), up == 0], -1)
        opt = torch.optim.Adam([logit], lr=self.lr)
        best = cur.clone()
        best_l0 = torch.full((b,), -1, dtype=torch.long, device=cur.device)
        for _ in range(self.steps):
            probs = logit.masked_fill(impossible, float("-inf")).softmax(-1)
            change = 1 - probs[..., 1]
            # hard states: the k most confident changes whose argmax is not "keep"
            hard_state = probs.argmax(-1)
            score = torch.where(hard_state != 1, change, torch.zeros_like(change)).flatten(1)
            kk = min(self.k, score.shape[1])
            keep_mask = torch.zeros_like(score, dtype=torch.bool)
            if kk:
                top = score.topk(kk, dim=1)
                keep_mask.scatter_(1, top.indices, top.values > 0)
            hard = torch.nn.functional.one_hot(torch.where(keep_mask.view_as(cur), hard_state, 1), 3).float()
            st = hard + probs - probs.detach()
            x = self.norm.encode(cur) + st[..., 2] * up + st[..., 0] * down
            logits = self.model(x)
            tgt = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
            loss = tgt.sum() + self.sparsity * change.flatten(1).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                levels = cur + (hard[..., 2] - hard[..., 0]).long()
                fooled = logits.argmax(1) != labels
                l0 = (levels != cur).flatten(1).sum(1)
                better = fooled & ((best_l0 < 0) | (l0 < best_l0))
                best = torch.where(better.view(-1, *[1] * (cur.dim() - 1)), levels, best)
                best_l0 = torch.where(better, l0, best_l0)
        self.last_l0 = torch.where(best_l0 < 0, 0, best_l0).cpu()
        self.last_fooled = (best_l0 >= 0).cpu()
        return self.norm.encode(best)

    def __repr__(self) -> str:
        return f"EventSTE(k={self.k}, steps={self.steps}, lr={self.lr}, target={self.target}, norm={self.norm.spec})"
