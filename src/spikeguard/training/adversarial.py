"""Adversarial training strategies: AT (PGD/FGSM) and RAT (AT + orthogonality regularisation).

Crafting and BatchNorm
----------------------
Adversarial examples are crafted with the bare ``model`` (its forward passes are not recorded
for the TGO term). By default crafting runs in **eval mode** (``craft_mode="eval"``): BatchNorm
normalises with its running statistics and does not update them, so the attack's passes
neither pollute the running statistics nor see a batch-dependent network. This is what the
reference implementations of SNN-RAT, SR and StoG do (``set_training_mode(model_training=False,
batchnorm_training=False)``). ``craft_mode="train"`` crafts against the batch-statistics network
the loss is computed on instead; the running statistics are snapshotted and restored, so they
are not polluted either. Either way every module's ``training`` flag is restored afterwards.
Noisy-LIF noise and StoG gates are controlled by their own switch and stay on while crafting.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks import FGSM, PGD
from ..errors import ConfigError
from .regularizers import NeuronInput, mpp_penalty, orthogonal_retraction_, orthogonality_penalty
from .strategies import Forward, StepOutput, Strategy, register_strategy, tet_loss

CRAFT_MODES = ("eval", "train")
ATTACKS = ("pgd", "fgsm")
LOSSES = ("ce", "tet")

_BN = (nn.modules.batchnorm._BatchNorm,)


@contextlib.contextmanager
def crafting_mode(model: nn.Module, mode: str = "eval") -> Iterator[None]:
    """Put ``model`` in the crafting mode inside the block and restore it exactly afterwards.

    ``eval``: ``model.eval()``; ``train``: keep train mode but restore BatchNorm running
    statistics on exit. Every module's ``training`` flag is restored either way.
    """
    if mode not in CRAFT_MODES:
        raise ConfigError(f"craft_mode must be one of {CRAFT_MODES}, got {mode!r}")
    flags = [(m, m.training) for m in model.modules()]
    saved: list[tuple[Tensor, Tensor]] = []
    if mode == "train":
        for m in model.modules():
            if isinstance(m, _BN):
                for buf in (m.running_mean, m.running_var, m.num_batches_tracked):
                    if buf is not None:
                        saved.append((buf, buf.detach().clone()))
    else:
        model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag
        with torch.no_grad():
            for buf, copy in saved:
                buf.copy_(copy)


def _float(v: float | str, name: str) -> float:
    """Accept ``2/255``-style strings from configs as well as numbers."""
    if isinstance(v, str):
        try:
            num, _, den = v.partition("/")
            return float(num) / float(den) if den else float(num)
        except ValueError:
            raise ConfigError(f"{name} must be a number or a fraction like '2/255', got {v!r}") from None
    return float(v)


def task_loss(step_logits: Tensor, labels: Tensor, kind: str) -> Tensor:
    """``ce``: cross-entropy on T-averaged logits (BPTT); ``tet``: per-time-step cross-entropy."""
    if kind == "tet":
        return tet_loss(step_logits, labels)
    return F.cross_entropy(step_logits.mean(0), labels)


@register_strategy("at")
class AdversarialTraining(Strategy):
    """Adversarial training (Madry et al.; for SNNs Kundu et al., 2021).

    ``loss = (1 - adv_ratio) * L(clean) + adv_ratio * L(adversarial)``. When ``0 < adv_ratio < 1``
    clean and adversarial images go through **one** forward pass as a ``2B`` batch, so BatchNorm
    and the TGO term see both.

    Args:
        eps: L-inf budget on the [0, 1] scale (paper: 2/255); also accepts ``"2/255"``.
        attack: ``pgd`` (default) or ``fgsm``.
        steps: PGD iterations (default 2, the SNN-RAT reference's default).
        alpha: PGD step size (default ``eps / 2``, i.e. 1/255 at eps 2/255, as in SNN-RAT).
        random_start: PGD starts from a uniform point of the eps-ball (default True).
        rand_init: FGSM only: std of a Gaussian jitter added before the gradient step
            (RSSNN uses 0.001; 0 = plain FGSM).
        adv_ratio: weight of the adversarial loss in [0, 1] (default 1: adversarial only, as in
            SNN-RAT; RSSNN uses 0.5).
        loss: ``ce`` (T-averaged logits) or ``tet`` (per-time-step loss).
        craft_mode: BatchNorm mode while crafting, ``eval`` (default) or ``train`` (see module doc).
        eot: EoT samples for the crafting gradient of a stochastic model (default 1).
        mpp_weight: weight of RSSNN's membrane-perturbation term on the last spiking layer
            (needs ``0 < adv_ratio < 1``; default 0 = off).
        mpp_tau: leak of the perturbation dynamics (RSSNN: 0.99).
    """

    def __init__(
        self,
        eps: float | str = 2 / 255,
        attack: str = "pgd",
        steps: int = 2,
        alpha: float | str | None = None,
        random_start: bool = True,
        rand_init: float = 0.0,
        adv_ratio: float = 1.0,
        loss: str = "ce",
        craft_mode: str = "eval",
        eot: int = 1,
        mpp_weight: float = 0.0,
        mpp_tau: float = 0.99,
    ) -> None:
        self.eps = _float(eps, "eps")
        if not 0 < self.eps <= 1:
            raise ConfigError(f"eps must be in (0, 1] on the pixel scale (2/255 = {2 / 255:.4f}), got {self.eps}")
        if attack not in ATTACKS:
            raise ConfigError(f"attack must be one of {ATTACKS}, got {attack!r}")
        if int(steps) < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}")
        self.attack = attack
        self.steps = int(steps)
        self.alpha = self.eps / 2 if alpha is None else _float(alpha, "alpha")
        if not 0 < self.alpha <= 1:
            raise ConfigError(f"alpha must be in (0, 1], got {self.alpha}")
        self.random_start = bool(random_start)
        self.rand_init = float(rand_init)
        self.adv_ratio = float(adv_ratio)
        if not 0.0 <= self.adv_ratio <= 1.0:
            raise ConfigError(f"adv_ratio must be in [0, 1], got {adv_ratio}")
        if loss not in LOSSES:
            raise ConfigError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.loss = loss
        if craft_mode not in CRAFT_MODES:
            raise ConfigError(f"craft_mode must be one of {CRAFT_MODES}, got {craft_mode!r}")
        self.craft_mode = craft_mode
        if int(eot) < 1:
            raise ConfigError(f"eot must be >= 1, got {eot}")
        self.eot = int(eot)
        self.mpp_weight = float(mpp_weight)
        self.mpp_tau = float(mpp_tau)
        if self.mpp_weight and not 0 < self.adv_ratio < 1:
            raise ConfigError("mpp_weight needs clean and adversarial passes: set 0 < adv_ratio < 1 (RSSNN: 0.5)")

    # -- crafting -----------------------------------------------------------------------------
    def craft(self, model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
        """Adversarial examples for the batch (bare model, crafting mode, mode restored)."""
        with crafting_mode(model, self.craft_mode), torch.enable_grad():
            if self.attack == "fgsm":
                start = images
                if self.rand_init:
                    start = (images + self.rand_init * torch.randn_like(images)).clamp(0.0, 1.0)
                adv = FGSM(model, eps=self.eps, eot=self.eot)(start, labels)
                adv = torch.min(torch.max(adv, images - self.eps), images + self.eps).clamp(0.0, 1.0)
            else:
                adv = PGD(
                    model,
                    eps=self.eps,
                    alpha=self.alpha,
                    steps=self.steps,
                    random_start=self.random_start,
                    eot=self.eot,
                )(images, labels)
        return adv.detach()

    # -- loss ---------------------------------------------------------------------------------
    def adversarial_loss(
        self, model: nn.Module, images: Tensor, labels: Tensor, forward: Forward, adv: Tensor
    ) -> StepOutput:
        """The mixed clean/adversarial loss on already crafted ``adv``."""
        r = self.adv_ratio
        metrics: dict[str, float] = {"adv_linf": float((adv - images).abs().flatten(1).amax(1).mean())}
        if r == 0.0 or r == 1.0:
            x = adv if r == 1.0 else images
            steps = forward(x)
            return StepOutput(task_loss(steps, labels, self.loss), steps.mean(0), metrics)
        b = images.shape[0]
        probe = NeuronInput(model) if self.mpp_weight else contextlib.nullcontext()
        with probe:
            steps = forward(torch.cat([images, adv]))
        clean, advs = steps[:, :b], steps[:, b:]
        loss = (1 - r) * task_loss(clean, labels, self.loss) + r * task_loss(advs, labels, self.loss)
        metrics["clean_accuracy"] = float((clean.mean(0).argmax(1) == labels).float().mean())
        if self.mpp_weight:
            cur = probe.value  # type: ignore[union-attr]  # probe is a NeuronInput whenever mpp_weight
            mpp = mpp_penalty(cur[:, :b], cur[:, b:], self.mpp_tau)  # type: ignore[index]  # the probe saw this forward
            loss = loss + self.mpp_weight * mpp
            metrics["mpp"] = float(mpp.detach())
        return StepOutput(loss, advs.mean(0), metrics)

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor, forward: Forward) -> StepOutput:
        adv = self.craft(model, images, labels) if self.adv_ratio > 0 else images
        return self.adversarial_loss(model, images, labels, forward, adv)

    def __repr__(self) -> str:
        extra = f", alpha={self.alpha:.5g}, steps={self.steps}" if self.attack == "pgd" else ""
        return (
            f"{type(self).__name__}(attack={self.attack}, eps={self.eps:.5g}{extra}, adv_ratio={self.adv_ratio}, "
            f"loss={self.loss}, craft_mode={self.craft_mode})"
        )


RAT_MODES = ("retraction", "penalty")


@register_strategy("rat")
class RegularizedAdversarialTraining(AdversarialTraining):
    """RAT (Ding et al., NeurIPS 2022): adversarial training + Parseval/orthogonality regularisation.

    Args:
        beta: regularisation strength. ``retraction`` mode (the reference's): after every
            optimiser step ``W <- (1 + beta) W - beta W W^T W`` on every conv/linear weight;
            ``penalty`` mode: ``beta * sum_W 1/4 ||W W^T - I||_F^2`` is added to the loss.
            Default 0.002, the default of the reference's ``orthogonal_retraction``; the reference
            turns weight decay off in RAT mode, so RAT presets set ``weight_decay = 0``.
        mode: ``retraction`` (default) or ``penalty``.
        row_threshold, row_fraction: see :func:`~spikeguard.training.regularizers.orthogonal_retraction_`.
        **kw: the :class:`AdversarialTraining` arguments.
    """

    def __init__(
        self, beta: float = 0.002, mode: str = "retraction", row_threshold: int = 200, row_fraction: float = 0.3, **kw
    ) -> None:
        super().__init__(**kw)
        if not (beta >= 0 and math.isfinite(beta)):
            raise ConfigError(f"beta must be a finite number >= 0, got {beta}")
        if mode not in RAT_MODES:
            raise ConfigError(f"RAT mode must be one of {RAT_MODES}, got {mode!r}")
        self.beta = float(beta)
        self.mode = mode
        self.row_threshold = int(row_threshold)
        self.row_fraction = float(row_fraction)

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor, forward: Forward) -> StepOutput:
        out = super().__call__(model, images, labels, forward)
        if self.mode == "penalty" and self.beta:
            pen = orthogonality_penalty(model)
            out.loss = out.loss + self.beta * pen
            out.metrics["orthogonality"] = float(pen.detach())
        return out

    def after_step(self, model: nn.Module) -> dict[str, float]:
        if self.mode == "retraction" and self.beta:
            orthogonal_retraction_(model, self.beta, self.row_threshold, self.row_fraction)
        return {}

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", beta={self.beta:g}, mode={self.mode})"
