"""Attacks adapted to stochastic, surrogate-gradient spiking networks.

A Noisy-LIF network can look robust because its gradients are noisy, and any SNN can
look robust because one surrogate gradient happens to be flat where the attack needs
it. These attacks remove those two excuses:

* :class:`Transfer`: craft on a source model, evaluate on the target (an independently
  trained model, or the target's own noise-free twin: :class:`NoiseFreeTransfer`);
* :class:`FixedNoise`: the attacker knows the Noisy-LIF noise sample; the attack and the
  evaluation forward use the same one (a stronger threat model than fresh noise);
* :class:`SurrogateEnsemble`: PGD once per surrogate gradient (triangle, sigmoid, atan,
  rectangle, straight-through at several widths), per sample the strongest result;
* :class:`AdaptiveSurrogate`: a simple, clearly-named stand-in for ASSG (Wang et al.,
  "Towards reliable evaluation of adversarial robustness for SNNs"): at every PGD step
  and for every sample, the surrogate width whose step raises the loss most is taken.

EoT over stochastic passes is the base class's ``eot`` argument.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

from ..errors import SpikeguardError
from ..neurons import Surrogate, noise_enabled, noise_seed, spiking_neurons
from .base import Attack, ce_loss, check_eps, keep_better
from .gradient import PGD, _restart_score


# -- model views ---------------------------------------------------------------------------
class NoiseFreeTwin(nn.Module):
    """The model with Noisy-LIF noise switched off (sigma = 0): a deterministic attack source.

    Shares the wrapped model's weights and mode; nothing is copied.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        with noise_enabled(self.model, False):
            return self.model(x)


class FixedNoiseModel(nn.Module):
    """The model with its Noisy-LIF noise frozen to the sample drawn from ``seed``.

    Every forward re-seeds the noise, so two forwards of batches of the same shape see the
    very same noise sample (what the fixed-noise attack and its evaluation need).
    """

    def __init__(self, model: nn.Module, seed: int) -> None:
        super().__init__()
        self.model = model
        self.seed = int(seed)

    def forward(self, x: Tensor) -> Tensor:
        with noise_seed(self.model, self.seed):
            return self.model(x)


@contextlib.contextmanager
def attack_surrogate(model: nn.Module, surrogate: str | Surrogate, width: float = 1.0) -> Iterator[None]:
    """Use ``surrogate`` for the backward of every spiking neuron inside the block.

    Unlike :func:`spikeguard.neurons.use_surrogate` this also makes Noisy-LIF neurons built
    with ``noisy_grad="expected"`` use it (they otherwise ignore their surrogate).
    """
    sg = surrogate if isinstance(surrogate, Surrogate) else Surrogate(surrogate, width)
    mods = [m for _, m in spiking_neurons(model)]
    if not mods:
        raise SpikeguardError("surrogate-gradient attacks need a model with spikeguard spiking neurons")
    saved = [(m.surrogate, getattr(m, "noisy_grad", None)) for m in mods]
    try:
        for m in mods:
            m.surrogate = sg
            if hasattr(m, "noisy_grad"):  # Noisy-LIF, StoG with membrane noise
                m.noisy_grad = "surrogate"
        yield
    finally:
        for m, (s, g) in zip(mods, saved):
            m.surrogate = s
            if hasattr(m, "noisy_grad"):
                m.noisy_grad = g


# -- transfer --------------------------------------------------------------------------------
class Transfer(Attack):
    """Craft adversarial examples on ``source`` and hand them to the target ``model``.

    Args:
        model: the target (only evaluated, never differentiated).
        source: the model the attack's gradients come from.
        alpha, steps, restarts: the PGD run on the source.
        attack: a ready attack on the source to use instead of PGD.
        eot: EoT passes on the source (only useful if the source is stochastic).
    """

    name = "transfer"
    threat = "transfer"

    def __init__(self, model: nn.Module, source: nn.Module, eps: float = 8 / 255, alpha: float = 0.01,
                 steps: int = 20, restarts: int = 1, attack: Attack | None = None, **kw) -> None:
        super().__init__(model, eps, **kw)
        self.source = source
        self.inner = attack if attack is not None else PGD(source, eps, alpha=alpha, steps=steps,
                                                           restarts=restarts, eot=self.eot,
                                                           eot_batched=self.eot_batched)
        if abs(self.inner.eps - self.eps) > 1e-12:
            raise SpikeguardError(f"the source attack's eps {self.inner.eps:.4g} differs from {self.eps:.4g}")

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        return self.inner(images, labels)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps:.5g}, via={self.inner!r})"


class NoiseFreeTransfer(Transfer):
    """PGD on the target's own noise-free twin (same weights, sigma = 0), evaluated with noise."""

    name = "noise-free"
    stochastic_only = True

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 0.01, steps: int = 20,
                 restarts: int = 1, **kw) -> None:
        kw["eot"] = 1  # the twin is deterministic: more passes would repeat the same one
        super().__init__(model, NoiseFreeTwin(model), eps, alpha=alpha, steps=steps, restarts=restarts, **kw)


# -- fixed noise --------------------------------------------------------------------------------
class FixedNoise(Attack):
    """PGD against one known Noisy-LIF noise sample, judged under that same sample.

    ``attack(images, labels)`` uses ``seed``; :mod:`spikeguard.evaluation` instead calls
    :meth:`craft` once per evaluation pass with that pass's noise seed and judges the result
    with :meth:`judge_model` of the same seed, so "robust on pass i" means: robust even
    though the attacker knew pass i's noise. This is a stronger threat model than fresh
    noise (reported separately as ``threat = "known-noise"``).
    """

    name = "fixed-noise"
    threat = "known-noise"
    stochastic_only = True

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 0.01, steps: int = 20,
                 restarts: int = 1, seed: int = 0, **kw) -> None:
        kw["eot"] = 1  # the noise is fixed: every pass would be the same
        super().__init__(model, eps, **kw)
        self.alpha = check_eps(alpha, "alpha")
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.seed = int(seed)

    def judge_model(self, seed: int) -> nn.Module:
        """The target with its noise frozen to ``seed`` (the attacker's view of it)."""
        return FixedNoiseModel(self.model, seed)

    def craft(self, images: Tensor, labels: Tensor, seed: int) -> Tensor:
        pgd = PGD(self.judge_model(seed), self.eps, alpha=self.alpha, steps=self.steps, restarts=self.restarts)
        return pgd(images, labels)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        return self.craft(images, labels, self.seed)

    def __repr__(self) -> str:
        return f"FixedNoise(eps={self.eps:.5g}, alpha={self.alpha:.5g}, steps={self.steps}, seed={self.seed})"


# -- surrogate gradients at attack time -----------------------------------------------------------
DEFAULT_ENSEMBLE: tuple[tuple[str, float], ...] = tuple(
    [(name, w) for name in ("triangle", "sigmoid", "atan", "rectangle") for w in (0.5, 1.0, 2.0)] + [("ste", 1.0)])


class SurrogateEnsemble(Attack):
    """PGD once per attack-time surrogate gradient; per sample the strongest result.

    The forward pass is the model's own (spikes are Heaviside whatever the surrogate), so
    every member attacks the same function; only the gradient estimate differs. A model
    that is robust only against its training surrogate is not robust.

    Args:
        members: ``(surrogate name, width)`` pairs (default: triangle, sigmoid, atan,
            rectangle at widths 0.5/1/2 and straight-through).
        alpha, steps, restarts, loss: the PGD run per member.
    """

    name = "sg-ensemble"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 0.01, steps: int = 10,
                 members: Sequence[tuple[str, float]] = DEFAULT_ENSEMBLE, restarts: int = 1, loss: str = "ce",
                 **kw) -> None:
        super().__init__(model, eps, **kw)
        if not members:
            raise SpikeguardError("the surrogate ensemble needs at least one member")
        try:
            self.members = [Surrogate(n, float(w)) for n, w in members]
        except ValueError as e:
            raise SpikeguardError(str(e)) from None
        self.pgd = PGD(model, eps, alpha=alpha, steps=steps, restarts=restarts, loss=loss, eot=self.eot,
                       eot_batched=self.eot_batched)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        best, best_score = None, None
        for sg in self.members:
            with attack_surrogate(self.model, sg):
                adv = self.pgd(images, labels)
            score = _restart_score(self.logits(adv), labels, self.pgd.loss_fn)
            if best is None:
                best, best_score = adv, score
                continue
            best, best_score = keep_better(best, best_score, adv, score)
        return best

    def __repr__(self) -> str:
        names = ",".join(f"{m.name}:{m.width:g}" for m in self.members)
        return f"SurrogateEnsemble(eps={self.eps:.5g}, steps={self.pgd.steps}, members=[{names}], eot={self.eot})"


class AdaptiveSurrogate(Attack):
    """Greedy per-sample surrogate sharpness ("sg-adaptive"): a simpler variant of ASSG.

    ASSG (Wang et al., 2025) evolves each neuron's surrogate shape from the distribution
    of its inputs during the attack; its exact update rule is not reproduced here. This
    attack keeps the idea that the best sharpness depends on the sample and on the
    iterate: at every PGD step it computes one gradient per candidate width, takes the
    signed step for each, and keeps per sample the candidate with the highest loss (a
    misclassifying one first). The best iterate over all steps is returned.

    Args:
        surrogate: surrogate family (default: the model's own, from its first neuron).
        widths: candidate widths as multiples of the model's width (default 0.25..4).
        alpha, steps: PGD step size and iterations.
    """

    name = "sg-adaptive"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 0.01, steps: int = 20,
                 surrogate: str | None = None, widths: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
                 random_start: bool = True, **kw) -> None:
        super().__init__(model, eps, **kw)
        neurons = spiking_neurons(model)
        if not neurons:
            raise SpikeguardError("sg-adaptive needs a model with spikeguard spiking neurons")
        base = neurons[0][1].surrogate
        family = surrogate or base.name
        if not widths:
            raise SpikeguardError("sg-adaptive needs at least one candidate width")
        try:
            self.candidates = [Surrogate(family, base.width * float(w)) for w in widths]
        except ValueError as e:
            raise SpikeguardError(str(e)) from None
        self.alpha = check_eps(alpha, "alpha")
        self.steps = int(steps)
        self.random_start = bool(random_start)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        b = images.shape[0]
        n = len(self.candidates)
        adv = self.uniform_start(images) if self.random_start else images.clone()
        best = adv.clone()
        best_score = _restart_score(self.logits(adv), labels, ce_loss)
        for _ in range(self.steps):
            steps = []
            for sg in self.candidates:
                with attack_surrogate(self.model, sg):
                    grad, _ = self.input_grad(adv, labels)
                steps.append(self.project(adv + self.alpha * grad.sign(), images))
            cand = torch.stack(steps)                                          # [n, B, ...]
            scores = _restart_score(self.logits(cand.flatten(0, 1)), labels.repeat(n), ce_loss).view(n, b)
            pick = scores.argmax(0)
            adv = cand[pick, torch.arange(b, device=images.device)]
            score = scores.max(0).values
            best, best_score = keep_better(best, best_score, adv, score)
        return best

    def __repr__(self) -> str:
        ws = ",".join(f"{c.width:g}" for c in self.candidates)
        return (f"AdaptiveSurrogate(eps={self.eps:.5g}, alpha={self.alpha:.5g}, steps={self.steps}, "
                f"surrogate={self.candidates[0].name}, widths=[{ws}], eot={self.eot})")
