"""Where a model's randomness comes from, and how to repeat it.

An evaluation must know whether a model is stochastic (then it is attacked with EoT and
judged over several passes) and must be able to repeat each pass's randomness for the
clean images and for every attack (common random numbers: "robust on pass p" means robust
against every attack under the same draw). Two sources are told apart:

* ``noisy-lif``: spikeguard's Noisy-LIF-type neurons, whose noise has its own generators
  (:func:`spikeguard.neurons.noise_seed`);
* ``global``: anything else that draws from the global generators (torch CPU and CUDA,
  NumPy, Python's ``random``): a random input transform, dropout left on, another
  library's stochastic neuron. These are repeated by seeding the global generators per
  pass inside :func:`seeded_rng`, which restores them afterwards.

:func:`detect_randomness` finds both the way AutoAttack's ``check_randomized`` does:
several forward passes on the same batch, compared.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from .errors import SpikeguardError

#: Accepted overrides of the detection.
MODES = ("auto", "deterministic", "stochastic")
#: Outputs that differ by more than this (relative to their size) count as different.
REL_TOL = 1e-5


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Seed torch (CPU and ``device``'s CUDA generator), NumPy and ``random`` with ``seed``
    inside the block; their states outside the block are restored on exit."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    cuda = [dev] if dev.type == "cuda" else []
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(int(seed) % 2**63)
        random.seed(int(seed))
        np.random.seed(int(seed) % 2**32)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@dataclass(frozen=True)
class Randomness:
    """What :func:`detect_randomness` found, and what the evaluation does about it.

    Attributes:
        stochastic: the evaluation treats the model as stochastic (EoT, several passes).
        sources: where the randomness was found: ``noisy-lif`` and/or ``global``.
        detected: the detection's own answer (``stochastic`` may differ by ``override``).
        override: ``deterministic`` / ``stochastic`` when the user overrode the detection.
        trials: forward passes compared.
        max_difference: largest difference between their outputs.
    """

    stochastic: bool
    sources: tuple[str, ...] = ()
    detected: bool = False
    override: str | None = None
    trials: int = 0
    max_difference: float = 0.0

    @property
    def global_rng(self) -> bool:
        """The model draws from the global generators (they are seeded per pass)."""
        return "global" in self.sources

    @property
    def seeding(self) -> str:
        """How each evaluation pass's randomness is made repeatable."""
        if not self.stochastic:
            return "none (deterministic)"
        parts = []
        if "noisy-lif" in self.sources:
            parts.append("Noisy-LIF generators seeded per pass")
        if self.global_rng:
            parts.append("global generators (torch, NumPy, random) seeded per pass")
        return "; ".join(parts) or "global generators (torch, NumPy, random) seeded per pass"

    def to_dict(self) -> dict:
        return {"stochastic": self.stochastic, "detected": self.detected, "sources": list(self.sources),
                "override": self.override, "seeding": self.seeding, "trials": self.trials,
                "max_difference": self.max_difference}


def _differ(a: Tensor, b: Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def detect_randomness(model: nn.Module, x: Tensor, trials: int = 3, mode: str = "auto",
                      seed: int = 0) -> Randomness:
    """Run ``model`` ``trials`` times on ``x`` and compare the outputs.

    Noisy-LIF noise is recognised from the neurons (``noisy-lif``); any other randomness
    from outputs that still differ with that noise switched off (``global``). The global
    generators are forked, so the caller's random stream is not advanced.

    Args:
        model: the classifier (its mode is left as it is).
        x: a batch of inputs it takes (a few images are enough).
        trials: forward passes to compare (>= 2).
        mode: ``auto`` (use the detection), ``deterministic`` or ``stochastic`` (override it).
        seed: seed of the detection's own draws.
    """
    from .neurons import is_stochastic, noise_enabled

    if mode not in MODES:
        raise SpikeguardError(f"randomness mode must be one of {', '.join(MODES)}, got {mode!r}")
    if trials < 2:
        raise SpikeguardError(f"randomness detection needs >= 2 forward passes, got {trials}")
    sources = ["noisy-lif"] if is_stochastic(model) else []
    diff = 0.0
    with torch.inference_mode(), seeded_rng(seed, x.device), noise_enabled(model, False):
        outs = [model(x) for _ in range(trials)]
    scale = max(1.0, float(outs[0].float().abs().max()))
    diff = max(_differ(outs[0], o) for o in outs[1:])
    if diff > REL_TOL * scale:
        sources.append("global")
    detected = bool(sources)
    stochastic = detected if mode == "auto" else mode == "stochastic"
    return Randomness(stochastic=stochastic, sources=tuple(sources), detected=detected,
                      override=None if mode == "auto" else mode, trials=trials, max_difference=diff)


def declared_randomness(model: nn.Module, mode: str = "auto") -> Randomness:
    """The randomness known without running the model: spikeguard's Noisy-LIF noise only."""
    from .neurons import is_stochastic

    if mode not in MODES:
        raise SpikeguardError(f"randomness mode must be one of {', '.join(MODES)}, got {mode!r}")
    sources = ("noisy-lif",) if is_stochastic(model) else ()
    stochastic = bool(sources) if mode == "auto" else mode == "stochastic"
    return Randomness(stochastic=stochastic, sources=sources, detected=bool(sources),
                      override=None if mode == "auto" else mode)


__all__ = ["MODES", "Randomness", "declared_randomness", "detect_randomness", "seeded_rng"]
