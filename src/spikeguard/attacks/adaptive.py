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
* :class:`AdaptiveSurrogate`: a greedy search over surrogate widths: at every PGD step and
  for every sample, the width whose step raises the loss most is taken (ASSG itself, whose
  sharpness follows the potentials' statistics, is :mod:`spikeguard.attacks.assg`).

EoT over stochastic passes is the base class's ``eot`` argument.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..errors import SpikeguardError
from ..neurons import Surrogate, is_stochastic, noise_enabled, noise_seed, spiking_neurons
from ..randomness import seeded_rng
from .base import Attack, ce_loss, check_eps, keep_better
from .gradient import PGD, _restart_score
from .registry import register_attack
from ..adapters import base_surrogate, foreign_neurons, foreign_surrogate
from ..neurons.surrogate import surrogate_members


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
    """The model with its randomness frozen to the sample drawn from ``seed``.

    Every forward re-seeds the Noisy-LIF noise generators and the global generators (the
    source of any other randomness: a random input transform, another library's noisy
    neuron), so two forwards of batches of the same shape see the very same draw (what the
    fixed-noise attack and its evaluation need). The global generators' state outside the
    forward is left as it was.
    """

    def __init__(self, model: nn.Module, seed: int) -> None:
        super().__init__()
        self.model = model
        self.seed = int(seed)

    def forward(self, x: Tensor) -> Tensor:
        with fixed_randomness(self.model, self.seed, x.device):
            return self.model(x)


@contextlib.contextmanager
def fixed_randomness(model: nn.Module, seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Inside the block, ``model``'s randomness is the sample drawn from ``seed``: the Noisy-LIF
    generators and the global generators are seeded (the global ones restored on exit), so
    entering it twice with the same seed and batch shape reproduces the same draw."""
    with noise_seed(model, seed), seeded_rng(seed, device):
        yield


@contextlib.contextmanager
def attack_surrogate(model: nn.Module, surrogate: str | Surrogate, width: float = 1.0) -> Iterator[None]:
    """Use ``surrogate`` for the backward of every spiking neuron inside the block.

    Unlike :func:`spikeguard.neurons.use_surrogate` this also makes Noisy-LIF neurons built
    with ``noisy_grad="expected"`` use it (they otherwise ignore their surrogate), and it
    reaches SpikingJelly and snnTorch neurons through :mod:`spikeguard.adapters`.
    """
    sg = surrogate if isinstance(surrogate, Surrogate) else Surrogate(surrogate, width)
    mods = [m for _, m in spiking_neurons(model)]
    if not mods and not foreign_neurons(model):
        raise SpikeguardError(
            "surrogate-gradient attacks need a model with spiking neurons (spikeguard, SpikingJelly or snnTorch)"
        )
    saved = [(m.surrogate, getattr(m, "noisy_grad", None)) for m in mods]
    try:
        for m in mods:
            m.surrogate = sg
            if hasattr(m, "noisy_grad"):  # Noisy-LIF, StoG with membrane noise
                m.noisy_grad = "surrogate"  # type: ignore[assignment]  # a plain str attribute of noisy neurons
        with foreign_surrogate(model, sg):
            yield
    finally:
        for m, (s, g) in zip(mods, saved, strict=True):
            m.surrogate = s
            if hasattr(m, "noisy_grad"):
                m.noisy_grad = g  # type: ignore[assignment]  # a plain str attribute of noisy neurons


# -- transfer --------------------------------------------------------------------------------
@register_attack("transfer")
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
    requires = ("source",)
    uses_step_size = True

    @classmethod
    def build(
        cls, model: nn.Module, eps: float, *, eot: int = 1, source: nn.Module | None = None, seed: int = 0, **kw
    ) -> Attack:
        """PGD-20 from ``source``, or from the target's noise-free twin when there is none."""
        if source is None:
            if not is_stochastic(model):
                raise SpikeguardError(
                    "the transfer attack needs a source model (--source RUN_DIR) for a "
                    "deterministic target; its noise-free twin would be the target itself"
                )
            return NoiseFreeTransfer(model, eps, **kw)
        src_eot = eot if is_stochastic(source) else 1
        return Transfer(model, source, eps, **(dict(steps=20) | kw | dict(eot=src_eot)))

    def __init__(
        self,
        model: nn.Module,
        source: nn.Module,
        eps: float = 8 / 255,
        alpha: float = 0.01,
        steps: int = 20,
        restarts: int = 1,
        attack: Attack | None = None,
        **kw,
    ) -> None:
        super().__init__(model, eps, **kw)
        self.source = source
        self.inner = (
            attack
            if attack is not None
            else PGD(
                source, eps, alpha=alpha, steps=steps, restarts=restarts, eot=self.eot, eot_batched=self.eot_batched
            )
        )
        if abs(self.inner.eps - self.eps) > 1e-12:
            raise SpikeguardError(f"the source attack's eps {self.inner.eps:.4g} differs from {self.eps:.4g}")

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        return self.inner(images, labels)

    def settings(self) -> dict:
        return {"eps": self.eps, "via": repr(self.inner)}


@register_attack("noise-free", aliases=("noisefree",))
class NoiseFreeTransfer(Transfer):
    """PGD on the target's own noise-free twin (same weights, sigma = 0), evaluated with noise."""

    name = "noise-free"
    requires = ("switchable-noise",)

    @classmethod
    def build(
        cls, model: nn.Module, eps: float, *, eot: int = 1, source: nn.Module | None = None, seed: int = 0, **kw
    ) -> Attack:
        return cls(model, eps, **kw)

    def __init__(
        self, model: nn.Module, eps: float = 8 / 255, alpha: float = 0.01, steps: int = 20, restarts: int = 1, **kw
    ) -> None:
        kw["eot"] = 1  # the twin is deterministic: more passes would repeat the same one
        super().__init__(model, NoiseFreeTwin(model), eps, alpha=alpha, steps=steps, restarts=restarts, **kw)


# -- fixed noise --------------------------------------------------------------------------------
@register_attack("fixed-noise", aliases=("fixednoise",))
class FixedNoise(Attack):
    """PGD against one known noise sample, judged under that same sample.

    The noise is the model's Noisy-LIF noise and anything else it draws from the global
    generators (see :class:`FixedNoiseModel`). ``attack(images, labels)`` uses ``seed``;
    :mod:`spikeguard.evaluation` instead runs :meth:`per_pass`: one :meth:`craft` per
    evaluation pass with that pass's seed, judged by :meth:`judge_model` of the same seed,
    so "robust on pass i" means: robust even though the attacker knew pass i's noise. This
    is a stronger threat model than fresh noise (reported separately as
    ``threat = "known-noise"``).
    """

    name = "fixed-noise"
    threat = "known-noise"
    requires = ("fixable-noise",)
    iterative = True
    uses_step_size = True

    @classmethod
    def build(
        cls, model: nn.Module, eps: float, *, eot: int = 1, source: nn.Module | None = None, seed: int = 0, **kw
    ) -> Attack:
        return cls(model, eps, **(dict(seed=seed) | kw))

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float = 0.01,
        steps: int = 20,
        restarts: int = 1,
        seed: int = 0,
        **kw,
    ) -> None:
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

    def per_pass(self, images: Tensor, labels: Tensor, passes: int, seed: int | None):
        """One attack per evaluation pass, each against (and judged under) that pass's noise."""
        base = self.seed if seed is None else seed
        for p in range(passes):
            ps = base + 100 * (p + 1)  # the evaluation's pass seeds (see evaluation.engine.pass_seed)
            yield self.craft(images, labels, ps), [p], self.judge_model(ps)


# -- surrogate gradients at attack time -----------------------------------------------------------
#: widths of the default ensemble: every registered surrogate kind at these (a kind's own
#: ``sweep_widths`` win, e.g. the straight-through estimator's single 1.0)
ENSEMBLE_WIDTHS: tuple[float, ...] = (0.5, 1.0, 2.0)


def default_ensemble(
    widths: Sequence[float] = ENSEMBLE_WIDTHS, kind_widths: Mapping[str, Sequence[float]] | None = None
) -> tuple[tuple[str, float], ...]:
    """``(surrogate, width)`` members: every registered surrogate kind at ``widths`` (``kind_widths``
    per kind where given)."""
    return surrogate_members(widths, kind_widths)


#: The default members with the built-in surrogates (:func:`default_ensemble` has later ones too).
DEFAULT_ENSEMBLE: tuple[tuple[str, float], ...] = default_ensemble()


@register_attack("sg-ensemble", aliases=("sg-ens",))
class SurrogateEnsemble(Attack):
    """PGD once per attack-time surrogate gradient; per sample the strongest result.

    The forward pass is the model's own (spikes are Heaviside whatever the surrogate), so
    every member attacks the same function; only the gradient estimate differs. A model
    that is robust only against its training surrogate is not robust.

    Args:
        members: ``(surrogate name, width)`` pairs (default: every registered surrogate kind at
            ``widths``; straight-through at 1 only).
        widths, kind_widths: the default members' widths, for every kind / per kind.
        alpha, steps, restarts, loss: the PGD run per member.
    """

    name = "sg-ensemble"
    requires = ("surrogate",)
    iterative = True
    uses_step_size = True

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float = 0.01,
        steps: int = 10,
        members: Sequence[tuple[str, float]] | None = None,
        restarts: int = 1,
        loss: str = "ce",
        widths: Sequence[float] = ENSEMBLE_WIDTHS,
        kind_widths: Mapping[str, Sequence[float]] | None = None,
        **kw,
    ) -> None:
        super().__init__(model, eps, **kw)
        if members is None:
            members = default_ensemble(widths, kind_widths)
        if not members:
            raise SpikeguardError("the surrogate ensemble needs at least one member")
        try:
            self.members = [Surrogate(n, float(w)) for n, w in members]
        except ValueError as e:
            raise SpikeguardError(str(e)) from None
        self.pgd = PGD(
            model,
            eps,
            alpha=alpha,
            steps=steps,
            restarts=restarts,
            loss=loss,
            eot=self.eot,
            eot_batched=self.eot_batched,
        )

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        best, best_score = None, None
        for sg in self.members:
            with attack_surrogate(self.model, sg):
                adv = self.pgd(images, labels)
            score = _restart_score(self.logits(adv), labels, self.pgd.loss_fn)
            if best is None:
                best, best_score = adv, score
                continue
            best, best_score = keep_better(best, best_score, adv, score)  # type: ignore[arg-type]  # best_score is set with best
        return best  # type: ignore[return-value]  # members is never empty

    def settings(self) -> dict:
        members = "[" + ",".join(f"{m.name}:{m.width:g}" for m in self.members) + "]"
        return {
            "eps": self.eps,
            "alpha": self.pgd.alpha,
            "steps": self.pgd.steps,
            "members": members,
            "restarts": self.pgd.restarts,
            "loss": self.pgd.loss,
            "eot": self.eot,
        }


@register_attack("sg-adaptive")
class AdaptiveSurrogate(Attack):
    """Greedy per-sample surrogate width ("sg-adaptive"): a loss-driven search over widths.

    Unlike ASSG (:class:`~spikeguard.attacks.assg.ASSG`), which sets one sharpness per
    neuron and time step from running statistics of the membrane potentials, this attack
    uses one width for the whole model per sample and step, chosen by the loss: at every
    PGD step it computes one gradient per candidate width, takes the signed step for each,
    and keeps per sample the candidate with the highest loss (a misclassifying one first).
    The best iterate over all steps is returned.

    Args:
        surrogate: surrogate family (default: the model's own, from its first neuron).
        widths: candidate widths as multiples of the model's width (default 0.25..4).
        alpha, steps: PGD step size and iterations.
    """

    name = "sg-adaptive"
    requires = ("surrogate",)
    iterative = True
    uses_step_size = True

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float = 0.01,
        steps: int = 20,
        surrogate: str | None = None,
        widths: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
        random_start: bool = True,
        **kw,
    ) -> None:
        super().__init__(model, eps, **kw)

        neurons = spiking_neurons(model)
        foreign = foreign_neurons(model)
        if not neurons and not foreign:
            raise SpikeguardError(
                "sg-adaptive needs a model with spiking neurons (spikeguard, SpikingJelly or snnTorch)"
            )
        base = neurons[0][1].surrogate if neurons else base_surrogate(foreign[0].module)
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
            cand = torch.stack(steps)  # [n, B, ...]
            scores = _restart_score(self.logits(cand.flatten(0, 1)), labels.repeat(n), ce_loss).view(n, b)
            pick = scores.argmax(0)
            adv = cand[pick, torch.arange(b, device=images.device)]
            score = scores.max(0).values
            best, best_score = keep_better(best, best_score, adv, score)
        return best

    def settings(self) -> dict:
        widths = "[" + ",".join(f"{c.width:g}" for c in self.candidates) + "]"
        return {
            "eps": self.eps,
            "alpha": self.alpha,
            "steps": self.steps,
            "surrogate": self.candidates[0].name,
            "widths": widths,
            "eot": self.eot,
        }
