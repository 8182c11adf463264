"""Where a model's randomness comes from, and how to repeat it.

An evaluation must know whether a model is stochastic (then it is attacked with EoT and
judged over several passes) and must be able to repeat each pass's randomness for the
clean images and for every attack (common random numbers: "robust on pass p" means robust
against every attack under the same draw). Where randomness can live, and how each source is repeated:

* ``noisy-lif``: spikeguard's Noisy-LIF-type neurons, whose noise has its own generators
  (:func:`spikeguard.neurons.noise_seed`);
* ``module-generator``: a ``torch.Generator`` held as an attribute of one of the model's
  modules (found by walking ``model.modules()`` and their ``__dict__``; e.g. a random shift
  layer that owns its generator): seeded per pass by :func:`seeded_rng` with ``model=``,
  its state restored afterwards;
* ``global``: anything else that draws from the global generators (torch CPU and every CUDA
  device, NumPy, Python's ``random``): a random input transform, dropout left on, another
  library's stochastic neuron. These are repeated by seeding the global generators per
  pass inside :func:`seeded_rng`, which restores them afterwards;
* ``uncontrolled``: randomness still left when all of the above are seeded alike (a
  generator kept in a list, an OS entropy source, a non-deterministic kernel). Passes of
  such a model cannot be repeated: the evaluation then judges clean and attacked images over
  independent passes (see ``spikeguard.evaluation.engine``) and says so.

:func:`detect_randomness` finds them the way AutoAttack's ``check_randomized`` does:
several forward passes on the same batch, compared; then twice more under identical
seeding, to see whether the seeding repeats the draw.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from .errors import SpikeguardError
from .neurons import is_stochastic, noise_enabled, noise_seed

#: Accepted overrides of the detection.
MODES = ("auto", "deterministic", "stochastic")
#: Outputs that differ by more than this (relative to their size) count as different.
REL_TOL = 1e-5


def module_generators(model: nn.Module | None) -> list[tuple[str, torch.Generator]]:
    """``(module.attribute, generator)`` for every ``torch.Generator`` held as an attribute of
    one of ``model``'s modules (Noisy-LIF ``generator`` slots included when set)."""
    if model is None:
        return []
    out, seen = [], set()
    for name, mod in model.named_modules():
        for attr, value in vars(mod).items():
            if isinstance(value, torch.Generator) and id(value) not in seen:
                seen.add(id(value))
                out.append((f"{name or type(mod).__name__}.{attr}", value))
    return out


def _cuda_devices(device: torch.device | str | None) -> list[int | torch.device]:
    """Every CUDA device whose generator a forward may draw from (all that are initialised)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return [dev] if dev.type == "cuda" else []


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device | str | None = None, model: nn.Module | None = None) -> Iterator[None]:
    """Seed torch (the CPU generator and every CUDA device's), NumPy, ``random`` and, with
    ``model``, every generator its modules hold (:func:`module_generators`, each from ``seed``
    and its position) inside the block; their states outside the block are restored on exit."""
    py_state, np_state = random.getstate(), np.random.get_state()
    owned = module_generators(model)
    saved = [g.get_state() for _, g in owned]
    with torch.random.fork_rng(devices=_cuda_devices(device)):
        torch.manual_seed(int(seed) % 2**63)
        random.seed(int(seed))
        np.random.seed(int(seed) % 2**32)
        for i, (_, g) in enumerate(owned):
            g.manual_seed((int(seed) * 1_000_003 + 7_919 * (i + 1)) % 2**63)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
            for (_, g), st in zip(owned, saved, strict=True):
                g.set_state(st)


def capture_rng(generator: torch.Generator) -> dict:
    """The Python, NumPy, torch (and CUDA) random states plus ``generator``'s (the data order).

    What a training checkpoint saves to resume a run exactly (:class:`~spikeguard.training.TrainState`)."""
    st: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "data": generator.get_state(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def restore_rng(st: dict, generator: torch.Generator) -> None:
    """Undo :func:`capture_rng`: put every stream back where it was."""
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    generator.set_state(st["data"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


@dataclass(frozen=True)
class Randomness:
    """What :func:`detect_randomness` found, and what the evaluation does about it.

    Attributes:
        stochastic: the evaluation treats the model as stochastic (EoT, several passes).
        sources: where the randomness was found: ``noisy-lif``, ``module-generator``,
            ``global``, ``uncontrolled`` (see the module docstring).
        generators: the module generators found (``module.attribute``).
        detected: the detection's own answer (``stochastic`` may differ by ``override``).
        override: ``deterministic`` / ``stochastic`` when the user overrode the detection.
        trials: forward passes compared.
        max_difference: largest difference between their outputs.
    """

    stochastic: bool
    sources: tuple[str, ...] = ()
    generators: tuple[str, ...] = ()
    detected: bool = False
    override: str | None = None
    trials: int = 0
    max_difference: float = 0.0

    @property
    def global_rng(self) -> bool:
        """Randomness other than Noisy-LIF noise: repeated pass by pass through :func:`seeded_rng`
        (the global generators and the module generators)."""
        return bool({"global", "module-generator", "uncontrolled"} & set(self.sources))

    @property
    def controlled(self) -> bool:
        """Every source found is repeated by the per-pass seeding (clean and attacked images of a
        pass share one draw); False: at least one is not, and passes are independent draws."""
        return "uncontrolled" not in self.sources

    @property
    def seeding(self) -> str:
        """How each evaluation pass's randomness is made repeatable."""
        if not self.stochastic:
            return "none (deterministic)"
        parts = []
        if "noisy-lif" in self.sources:
            parts.append("Noisy-LIF generators seeded per pass")
        if "module-generator" in self.sources:
            parts.append(f"module generators ({', '.join(self.generators)}) seeded per pass")
        if self.global_rng:
            parts.append("global generators (torch CPU and CUDA, NumPy, random) seeded per pass")
        if not self.controlled:
            parts.append(
                "some randomness is not repeated by that seeding: clean and attacked images are judged "
                "over independent passes (per-sample worst of the pass-averaged rates)"
            )
        return "; ".join(parts) or "global generators (torch, NumPy, random) seeded per pass"

    def to_dict(self) -> dict:
        return {
            "stochastic": self.stochastic,
            "detected": self.detected,
            "sources": list(self.sources),
            "generators": list(self.generators),
            "controlled": self.controlled,
            "override": self.override,
            "seeding": self.seeding,
            "trials": self.trials,
            "max_difference": self.max_difference,
        }


def _differ(a: Tensor, b: Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def detect_randomness(model: nn.Module, x: Tensor, trials: int = 3, mode: str = "auto", seed: int = 0) -> Randomness:
    """Run ``model`` ``trials`` times on ``x`` and compare the outputs.

    Noisy-LIF noise is recognised from the neurons (``noisy-lif``) and module generators from
    the modules' attributes (``module-generator``); any other randomness from outputs that
    still differ with the noise switched off and the module generators reseeded alike before
    every pass (``global``). Two more passes under identical per-pass seeding (noise on) must
    agree; where they do not, the source is ``uncontrolled``. The global generators are
    forked, so the caller's random stream is not advanced.

    Args:
        model: the classifier (its mode is left as it is).
        x: a batch of inputs it takes (a few images are enough).
        trials: forward passes to compare (>= 2).
        mode: ``auto`` (use the detection), ``deterministic`` or ``stochastic`` (override it).
        seed: seed of the detection's own draws.
    """
    if mode not in MODES:
        raise SpikeguardError(f"randomness mode must be one of {', '.join(MODES)}, got {mode!r}")
    if trials < 2:
        raise SpikeguardError(f"randomness detection needs >= 2 forward passes, got {trials}")
    sources = ["noisy-lif"] if is_stochastic(model) else []
    gens = tuple(n for n, _ in module_generators(model))
    if gens:
        sources.append("module-generator")
    diff = 0.0
    with torch.inference_mode(), seeded_rng(seed, x.device), noise_enabled(model, False):
        outs = []
        for _ in range(trials):  # module generators restart alike: what still differs is global
            with _reseed_modules(model, seed):
                outs.append(model(x))
    scale = max(1.0, float(outs[0].float().abs().max()))
    diff = max(_differ(outs[0], o) for o in outs[1:])
    if diff > REL_TOL * scale:
        sources.append("global")
    if sources and not _repeatable(model, x, seed, scale):
        sources.append("uncontrolled")
    detected = bool(sources)
    stochastic = detected if mode == "auto" else mode == "stochastic"
    return Randomness(
        stochastic=stochastic,
        sources=tuple(sources),
        generators=gens,
        detected=detected,
        override=None if mode == "auto" else mode,
        trials=trials,
        max_difference=diff,
    )


@contextlib.contextmanager
def _reseed_modules(model: nn.Module, seed: int) -> Iterator[None]:
    owned = module_generators(model)
    saved = [g.get_state() for _, g in owned]
    for i, (_, g) in enumerate(owned):
        g.manual_seed(int(seed) + i)
    try:
        yield
    finally:
        for (_, g), st in zip(owned, saved, strict=True):
            g.set_state(st)


def _repeatable(model: nn.Module, x: Tensor, seed: int, scale: float) -> bool:
    """Two forwards under the evaluation's per-pass seeding (Noisy-LIF generators, global and
    module generators) give the same output."""
    outs = []
    with torch.inference_mode():
        for _ in range(2):
            with seeded_rng(seed, x.device, model), noise_seed(model, seed):
                outs.append(model(x))
    return _differ(outs[0], outs[1]) <= REL_TOL * scale


def declared_randomness(model: nn.Module, mode: str = "auto") -> Randomness:
    """The randomness known without running the model: spikeguard's Noisy-LIF noise only."""
    if mode not in MODES:
        raise SpikeguardError(f"randomness mode must be one of {', '.join(MODES)}, got {mode!r}")
    sources = ("noisy-lif",) if is_stochastic(model) else ()
    stochastic = bool(sources) if mode == "auto" else mode == "stochastic"
    return Randomness(
        stochastic=stochastic, sources=sources, detected=bool(sources), override=None if mode == "auto" else mode
    )


__all__ = [
    "MODES",
    "Randomness",
    "capture_rng",
    "restore_rng",
    "declared_randomness",
    "detect_randomness",
    "module_generators",
    "seeded_rng",
]
