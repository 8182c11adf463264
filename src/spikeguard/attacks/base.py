"""Attack base class (torchattacks-style: ``Attack(model, eps=...)(images, labels)``).

Conventions:

* images in ``[0, 1]``, ``eps`` and step sizes on that scale, L-infinity budget;
* the model's mode is never changed: Noisy-LIF noise is controlled by its own switch, and
  BatchNorm's mode is the caller's decision;
* gradients flow through the surrogate gradients of the model's neurons;
* ``eot=K`` averages the input gradient over K stochastic forward passes (Expectation over
  Transformation), computed as one batch of ``K * B`` unless ``eot_batched=False``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SpikeguardError


def check_eps(eps: float, name: str = "eps") -> float:
    """Validate a perturbation budget on the [0, 1] pixel scale."""
    eps = float(eps)
    if not math.isfinite(eps) or eps < 0 or eps > 1:
        raise SpikeguardError(
            f"{name} {eps:.6g} is outside [0, 1] (pixel scale; 8/255 = {8 / 255:.4f}; a decimal "
            f"is a fraction of the range, a whole number counts pixel levels: 8 = 8/255)"
        )
    return eps


def check_batch(images: Tensor, labels: Tensor) -> None:
    """Raise a one-line error for inputs an attack cannot work on."""
    if images.dim() != 4:
        raise SpikeguardError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise SpikeguardError(f"labels must be [B] with B={images.shape[0]}, got shape {tuple(labels.shape)}")
    if not torch.isfinite(images).all():
        raise SpikeguardError("images contain NaN or Inf")
    if images.min() < 0 or images.max() > 1:
        raise SpikeguardError(
            f"images must lie in [0, 1] (normalisation belongs inside the model), got range "
            f"[{float(images.min()):.3g}, {float(images.max()):.3g}]"
        )


def ce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample cross-entropy."""
    return F.cross_entropy(logits, labels, reduction="none")


def _other_max(logits: Tensor, labels: Tensor) -> Tensor:
    """Largest logit among the classes other than ``labels``, ``[B]``."""
    masked = logits.scatter(1, labels[:, None], float("-inf"))
    return masked.max(1).values


def margin_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample untargeted margin ``max_{i != y} z_i - z_y`` (> 0 exactly when misclassified).

    Unlike cross-entropy it does not saturate for confident predictions, so its gradient
    does not vanish in float32 when the softmax rounds to one.
    """
    return _other_max(logits, labels) - logits.gather(1, labels[:, None]).squeeze(1)


def dlr_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Difference of Logits Ratio (Croce & Hein, 2020), per sample, to be maximised:
    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`` with ``pi`` sorting the logits
    in decreasing order. Invariant to shifting and rescaling the logits; needs >= 3 classes."""
    if logits.shape[1] < 3:
        raise SpikeguardError(f"the DLR loss needs at least 3 classes, the model has {logits.shape[1]}")
    top = logits.topk(3, dim=1).values
    return margin_loss(logits, labels) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_margin_loss(logits: Tensor, targets: Tensor, labels: Tensor) -> Tensor:
    """Per-sample ``z_t - z_y``: pushing the target class ``t`` above the true class ``y``
    (the multi-targeted attack's objective, Gowal et al., 2019)."""
    return logits.gather(1, targets[:, None]).squeeze(1) - logits.gather(1, labels[:, None]).squeeze(1)


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"ce": ce_loss, "dlr": dlr_loss, "margin": margin_loss}


def get_loss(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """A per-sample loss to maximise by name: ``ce``, ``dlr`` or ``margin``."""
    if name not in LOSSES:
        raise SpikeguardError(f"unknown attack loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]


def _grad_or_zero(loss: Tensor, x: Tensor) -> Tensor:
    """``d loss.sum() / dx``; zeros where the model has no differentiable path to its input
    (a stop-gradient or rounding layer), so such a model is attacked, and audited, not crashed."""
    if not loss.requires_grad:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(loss.sum(), x, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


class Attack:
    """Base class of every L-infinity attack.

    Args:
        model: maps images ``[B, C, H, W]`` in [0, 1] to logits ``[B, K]``.
        eps: L-infinity budget on the [0, 1] scale.
        eot: number of stochastic forward passes the input gradient is averaged over.
        eot_batched: run the EoT passes as one ``eot * B`` batch (faster) instead of a loop.

    Class attributes used by :mod:`spikeguard.evaluation` (set them on a new attack class;
    register it with :func:`spikeguard.attacks.registry.register_attack`):

    * ``threat``: ``white-box`` (gradients of the evaluated model), ``black-box`` (scores
      only), ``transfer`` (crafted on another model) or ``known-noise`` (the attacker sees
      the noise sample the evaluation uses);
    * ``family``: its column family in the paper-style table (``fgsm``, ``rfgsm``, ``pgd``,
      ``apgd``, ``mtpgd``; None: listed after those, in run order); ``table_rank`` orders
      the families;
    * ``iterative``: a multi-step attack (the audit expects it to beat single-step ones);
    * ``requires``: what it needs from the model, keys of
      :data:`spikeguard.attacks.requirements.REQUIREMENTS` (``surrogate``, ``fixable-noise``,
      ``switchable-noise``, ``source``); the evaluation skips it, with the reason, where
      the model does not meet them;
    * ``uses_step_size``: it takes the shared PGD step ``alpha`` (and follows the
      ``alpha="eps"`` rule, ``2.5 * eps / steps``).
    """

    name = "attack"
    threat = "white-box"
    family: str | None = None
    table_rank: int | None = None
    iterative = False
    requires: tuple[str, ...] = ()
    uses_step_size = False
    batch_restarts = False  # run restarts as one batch (see best_of_restarts); set per instance

    def __init__(self, model: nn.Module, eps: float = 8 / 255, eot: int = 1, eot_batched: bool = True) -> None:
        self.model = model
        self.eps = check_eps(eps)
        if int(eot) < 1:
            raise SpikeguardError(f"eot must be >= 1, got {eot}")
        self.eot = int(eot)
        self.eot_batched = bool(eot_batched)

    def __call__(self, images: Tensor, labels: Tensor) -> Tensor:
        check_batch(images, labels)
        with torch.enable_grad():  # attacks need input gradients even when called under no_grad
            adv = self.forward(images.detach(), labels.detach())
        return adv.detach()

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError

    def project(self, adv: Tensor, images: Tensor) -> Tensor:
        """Clip to the eps-ball around ``images`` and to [0, 1]."""
        return torch.min(torch.max(adv, images - self.eps), images + self.eps).clamp(0.0, 1.0)

    def uniform_start(self, images: Tensor) -> Tensor:
        """A uniform random point of the eps-ball around ``images`` (clipped to [0, 1])."""
        return self.project(images + torch.empty_like(images).uniform_(-self.eps, self.eps), images)

    def input_grad(
        self, x: Tensor, labels: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor] = ce_loss
    ) -> tuple[Tensor, Tensor]:
        """Gradient of the summed per-sample loss w.r.t. ``x``, averaged over ``eot`` passes.

        Returns ``(grad [B, ...], per-sample loss [B])`` (loss averaged over the passes).
        """
        grad, loss, _ = self.loss_grad(x, labels, loss_fn)
        return grad, loss

    def loss_grad(
        self, x: Tensor, labels: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor] = ce_loss
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Like :meth:`input_grad`, and also the logits averaged over the ``eot`` passes.

        Returns ``(grad [B, ...], per-sample loss [B], mean logits [B, K])``; the logits come
        from the same forward passes as the gradient (no extra forward).
        """
        k, b = self.eot, x.shape[0]
        x = x.detach().requires_grad_(True)
        if k == 1 or self.eot_batched:
            xs = x if k == 1 else x.expand(k, *x.shape).reshape(k * b, *x.shape[1:])
            ys = labels if k == 1 else labels.repeat(k)
            logits = self.model(xs)
            loss = loss_fn(logits, ys).view(k, b).mean(0)
            grad = _grad_or_zero(loss, x)
            return grad, loss.detach(), logits.detach().view(k, b, -1).mean(0)
        grad = torch.zeros_like(x)
        total = torch.zeros(b, device=x.device)
        mean_logits = None
        for _ in range(k):
            logits = self.model(x)
            loss = loss_fn(logits, labels)
            grad += _grad_or_zero(loss, x) / k
            total += loss.detach() / k
            mean_logits = logits.detach() / k if mean_logits is None else mean_logits + logits.detach() / k
        return grad, total, mean_logits  # type: ignore[return-value]  # eot k >= 1: set in the loop

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """Logits averaged over ``eot`` passes, without building a graph (``[B, K]``)."""
        k, b = self.eot, x.shape[0]
        if k == 1:
            return self.model(x)
        if self.eot_batched:
            return self.model(x.expand(k, *x.shape).reshape(k * b, *x.shape[1:])).view(k, b, -1).mean(0)
        return sum(self.model(x) for _ in range(k)) / k

    # -- construction by name and per-pass evaluation (the registry and the engine call these) --
    @classmethod
    def build(
        cls, model: nn.Module, eps: float, *, eot: int = 1, source: nn.Module | None = None, seed: int = 0, **kw: Any
    ) -> Attack:
        """Construct from the registry's shared settings; an attack that needs ``source`` or
        ``seed`` overrides this (the default ignores both)."""
        return cls(model, eps, eot=eot, **kw)

    @classmethod
    def table_key(cls, args: dict) -> tuple | None:
        """Sort key of this attack among the paper-style table's columns, for a registry name
        implying constructor arguments ``args`` (None: not a paper column, listed after them)."""
        return None if cls.table_rank is None else (cls.table_rank, args.get("steps", 0))

    def per_pass(
        self, images: Tensor, labels: Tensor, passes: int, seed: int | None
    ) -> Iterator[tuple[Tensor, Sequence[int] | None, nn.Module | None]]:
        """The adversarial batches the evaluation judges, as ``(adv, passes judged, judge model)``.

        Default: one call, judged on every evaluation pass (``None``) by the evaluated model
        under that pass's randomness (``None``). An attack that needs to know the pass (the
        fixed-noise attack) yields one batch per pass with the model that judges it.
        ``seed`` is the evaluation's randomness seed of this batch (None: deterministic).
        """
        yield self(images, labels), None, None

    # -- description ---------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The attack's settings: eps, its constructor's scalar arguments as stored, and eot."""
        out: dict[str, Any] = {"eps": self.eps}
        for key, p in inspect.signature(type(self).__init__).parameters.items():
            if key in ("self", "model", "eps", "eot", "eot_batched") or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            value = getattr(self, key, None)
            if isinstance(value, (bool, int, float, str)):
                out[key] = value
        out["eot"] = self.eot
        return out

    def __repr__(self) -> str:
        def fmt(v: Any) -> str:
            return f"{v:.5g}" if isinstance(v, float) else str(v)

        return f"{type(self).__name__}(" + ", ".join(f"{k}={fmt(v)}" for k, v in self.settings().items()) + ")"


def best_of_restarts(
    run_once: Callable[[Tensor, Tensor], tuple[Tensor, Tensor | None]],
    images: Tensor,
    labels: Tensor,
    restarts: int,
    batched: bool | None = None,
) -> Tensor:
    """Call ``run_once`` ``restarts`` times; per sample keep the run with the highest score.

    ``batched`` (default: the attack's ``batch_restarts`` attribute, False): run all restarts
    as one batch of ``restarts * B`` (one pass per step instead of ``restarts``: faster on a
    GPU; the random starts are drawn in another order, so the numbers differ from the loop's
    like another seed's do).
    """
    if batched is None:
        batched = bool(getattr(getattr(run_once, "__self__", None), "batch_restarts", False))
    if batched and restarts > 1:
        b = images.shape[0]
        adv, score = run_once(images.repeat(restarts, *([1] * (images.dim() - 1))), labels.repeat(restarts))
        pick = score.view(restarts, b).argmax(0)  # type: ignore[union-attr]  # the first of equal scores, as the loop keeps it
        return adv.view(restarts, b, *images.shape[1:])[pick, torch.arange(b, device=pick.device)]
    best, best_score = run_once(images, labels)
    for _ in range(restarts - 1):
        best, best_score = keep_better(best, best_score, *run_once(images, labels))  # type: ignore[arg-type]  # run_once scores whenever restarts > 1
    return best


def keep_better(best: Tensor, best_score: Tensor, adv: Tensor, score: Tensor) -> tuple[Tensor, Tensor]:
    """Per sample, keep ``adv`` where its ``score`` beats ``best_score`` (updates ``best`` in place)."""
    better = score > best_score
    best[better] = adv[better]
    return best, torch.where(better, score, best_score)
