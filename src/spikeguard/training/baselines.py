"""Strategies of published baseline defences: SR (sparse gradients) and StoG (stochastic gating).

* ``sr`` (Liu et al., ICML 2024): ``CE + lam * SR`` where SR is the finite-difference estimate of
  the squared L1 norm of the input gradient of the two-class probability (see
  :func:`~spikeguard.training.regularizers.sparsity_penalty`). ``adversarial=True`` (or the
  name ``sr_at``) computes both terms on adversarial examples, as the reference's SR+AT does.
* ``stog`` (Ding et al., AAAI 2024): wraps any strategy and adds the StoG prior
  ``gamma * 1/2 sum q^2`` on the keep parameters of the model's
  :class:`~spikeguard.neurons.baselines.StoGLIF` neurons; the gates themselves are a neuron
  choice (``neuron = "stog_lif"``). As in the reference, the keep parameters are trained only
  during the first ``prior_epochs`` epochs and frozen afterwards.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..neurons import is_stochastic, noise_seed
from ..neurons.baselines import gate_parameters, gate_prior, mean_keep_probability, stog_neurons
from .adversarial import LOSSES, AdversarialTraining, task_loss
from .regularizers import sparsity_penalty
from .strategies import Forward, StepOutput, Strategy, create_strategy, register_strategy


@register_strategy("sr")
class SparsityRegularization(Strategy):
    """SR: gradient-sparsity regularisation (Liu et al., ICML 2024).

    Args:
        lam: weight of the SR term. The reference code takes it from the command line without a
            usable default; 0.002 here is spikeguard's default, not a value from the paper; set it
            per experiment.
        h: finite-difference step (reference: 0.01).
        adversarial: compute the loss on adversarial examples (SR+AT).
        loss: ``ce`` (T-averaged logits, as in the reference) or ``tet``.
        **attack_kw: :class:`~spikeguard.training.adversarial.AdversarialTraining` crafting
            arguments used when ``adversarial`` (eps, attack, steps, alpha, random_start, ...).
    """

    def __init__(
        self, lam: float = 0.002, h: float = 0.01, adversarial: bool = False, loss: str = "ce", **attack_kw
    ) -> None:
        if not (lam >= 0 and math.isfinite(lam)):
            raise ConfigError(f"lam must be a finite number >= 0, got {lam}")
        if not (h > 0 and math.isfinite(h)):
            raise ConfigError(f"h must be > 0, got {h}")
        if loss not in LOSSES:
            raise ConfigError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.lam = float(lam)
        self.h = float(h)
        self.loss = loss
        self.adversarial = bool(adversarial)
        attack_kw.pop("adv_ratio", None)
        self.at = AdversarialTraining(adv_ratio=1.0, **attack_kw) if self.adversarial else None
        if not self.adversarial and attack_kw:
            raise ConfigError(f"attack arguments {sorted(attack_kw)} need adversarial = true (or strategy sr_at)")

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor, forward: Forward) -> StepOutput:
        x = self.at.craft(model, images, labels) if self.at is not None else images
        x = x.detach().requires_grad_(True)
        # A stochastic model (Noisy-LIF, StoG) must see the same noise at x and at x + h v, or the
        # finite difference measures the noise (divided by h) instead of the gradient.
        seed = int(torch.randint(0, 2**31 - 1, ())) if is_stochastic(model) else None
        with noise_seed(model, seed) if seed is not None else contextlib.nullcontext():
            steps = forward(x)  # the recorded pass: the TGO term sees it
        logits = steps.mean(0)
        ce = task_loss(steps, labels, self.loss)
        metrics: dict[str, float] = {}
        if self.lam:

            def shifted(z: Tensor) -> Tensor:
                # the bare model: not recorded for TGO, but graph-connected to the parameters
                with noise_seed(model, seed) if seed is not None else contextlib.nullcontext():
                    return model(z)

            pen, est = sparsity_penalty(model, x, labels, self.h, logits=logits, perturbed_logit_fn=shifted)
            loss = ce + self.lam * pen
            metrics["sr"] = float(pen.detach())
            metrics["grad_l1_est"] = float(est.detach().abs().mean())
        else:
            loss = ce
        if self.at is not None:
            metrics["adv_linf"] = float((x.detach() - images).abs().flatten(1).amax(1).mean())
        return StepOutput(loss, logits, metrics)

    def __repr__(self) -> str:
        at = f", at={self.at!r}" if self.at is not None else ""
        return f"SparsityRegularization(lam={self.lam:g}, h={self.h:g}{at})"


@register_strategy("sr_at")
class SparsityRegularizedAT(SparsityRegularization):
    """SR + adversarial training (``sr`` with ``adversarial=True``)."""

    def __init__(self, **kw) -> None:
        kw.setdefault("adversarial", True)
        super().__init__(**kw)


@register_strategy("stog")
class StochasticGating(Strategy):
    """StoG (Ding et al., AAAI 2024): the gate prior on top of a base strategy.

    The model must use ``neuron = "stog_lif"`` (spikes pass a learnable Bernoulli gate).

    Args:
        base: name of the wrapped strategy (``bptt``, ``tet``, ``at``, ``rat``, ...).
        base_kw: its keyword arguments.
        gamma: prior weight (reference: 5e-6).
        prior: ``l2`` (``1/2 sum q^2``, reference default) or ``l1``.
        prior_epochs: epochs during which the keep parameters are trained (reference: 100 of
            200, i.e. the first half); ``None`` = all of training.
    """

    def __init__(
        self,
        base: str = "bptt",
        base_kw: dict | None = None,
        gamma: float = 5e-6,
        prior: str = "l2",
        prior_epochs: float | None = None,
    ) -> None:
        if base == "stog":
            raise ConfigError("stog cannot wrap itself")
        try:
            self.base = create_strategy(base, **(base_kw or {}))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if not (gamma >= 0 and math.isfinite(gamma)):
            raise ConfigError(f"gamma must be a finite number >= 0, got {gamma}")
        if prior not in ("l1", "l2"):
            raise ConfigError(f"prior must be 'l1' or 'l2', got {prior!r}")
        self.gamma = float(gamma)
        self.prior = prior
        self.prior_epochs = None if prior_epochs is None else float(prior_epochs)

    def begin_step(self, model: nn.Module, epoch: float) -> None:
        if not stog_neurons(model):
            raise ConfigError("strategy 'stog' needs a model built with neuron = 'stog_lif'")
        train_gates = self.prior_epochs is None or epoch < self.prior_epochs
        for q in gate_parameters(model):
            q.requires_grad_(train_gates)
        self.base.begin_step(model, epoch)

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor, forward: Forward) -> StepOutput:
        out = self.base(model, images, labels, forward)
        if self.gamma and any(q.requires_grad for q in gate_parameters(model)):
            out.loss = out.loss + self.gamma * gate_prior(model, self.prior).to(out.loss.device)
        out.metrics["keep_probability"] = mean_keep_probability(model)
        return out

    def after_step(self, model: nn.Module) -> dict[str, float]:
        return self.base.after_step(model)

    def __repr__(self) -> str:
        return f"StochasticGating(base={self.base!r}, gamma={self.gamma:g}, prior={self.prior}, prior_epochs={self.prior_epochs})"


__all__ = ["SparsityRegularization", "SparsityRegularizedAT", "StochasticGating"]
