"""What an attack needs from the model, and whether a model has it.

An attack lists its needs in its ``requires`` attribute; :func:`unmet` turns the ones a
model does not meet into reasons, which the evaluation reports as skipped attacks (so a
plain ``nn.Module`` gets every attack that applies to it and a list of the others).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..adapters import foreign_neurons
from ..neurons import is_stochastic, spiking_neurons
from .events import model_frame_norm


@dataclass(frozen=True)
class ModelTraits:
    """The facts about a target that decide which attacks apply.

    Attributes:
        stochastic: the evaluation treats the model as stochastic (detected or overridden).
        switchable_noise: its randomness includes Noisy-LIF noise, which can be switched off
            (the noise-free twin).
        surrogate_neurons: spiking neurons whose surrogate gradient can be swapped
            (spikeguard's own, SpikingJelly's, snnTorch's).
        has_source: a source model for the transfer attack was given.
        event_frames: the model takes event frame sequences (built for an event data set).
    """

    stochastic: bool = False
    switchable_noise: bool = False
    surrogate_neurons: int = 0
    has_source: bool = False
    event_frames: bool = False


def model_traits(model: nn.Module, stochastic: bool, source: nn.Module | None = None) -> ModelTraits:
    """The :class:`ModelTraits` of ``model`` (``stochastic`` comes from the randomness detection)."""
    return ModelTraits(
        stochastic=bool(stochastic),
        switchable_noise=is_stochastic(model),
        surrogate_neurons=len(spiking_neurons(model)) + len(foreign_neurons(model)),
        has_source=source is not None,
        event_frames=bool(model_frame_norm(model)),
    )


#: requirement -> (test on the model's traits, reason given when it fails)
REQUIREMENTS: dict[str, tuple[Callable[[ModelTraits], bool], str]] = {
    "surrogate": (
        lambda t: t.surrogate_neurons > 0,
        "needs spiking neurons whose surrogate gradient it can swap (spikeguard, SpikingJelly or "
        "snnTorch neurons); the model has none",
    ),
    "fixable-noise": (
        lambda t: t.stochastic,
        "needs a stochastic model whose noise it can fix; no randomness was found (or --deterministic was given)",
    ),
    "switchable-noise": (
        lambda t: t.switchable_noise and t.stochastic,
        "needs Noisy-LIF noise it can switch off (a noise-free twin); the model has none",
    ),
    "source": (
        lambda t: t.has_source or (t.switchable_noise and t.stochastic),
        "needs a source model (--source RUN_DIR), or Noisy-LIF noise to build the noise-free twin from",
    ),
    "event-frames": (
        lambda t: t.event_frames,
        "needs a model on event frame sequences (built for an event data set); this one takes images",
    ),
}


def unmet(attack: type | object, traits: ModelTraits) -> list[str]:
    """Reasons why ``attack`` (class or instance) does not apply to a model with ``traits``."""
    out = []
    for key in getattr(attack, "requires", ()):
        if key not in REQUIREMENTS:
            raise ValueError(f"unknown attack requirement {key!r}; known: {', '.join(REQUIREMENTS)}")
        test, reason = REQUIREMENTS[key]
        if not test(traits):
            out.append(reason)
    return out


__all__ = ["ModelTraits", "REQUIREMENTS", "model_traits", "unmet"]
