"""Spiking neurons: multi-step LIF / Noisy-LIF, surrogate gradients, potential recording."""

from .lif import LIF, MultiStepReLU, NoisyLIF
from .recording import (
    PotentialRecorder,
    is_stochastic,
    noise_enabled,
    noise_seed,
    noisy_neurons,
    record_potentials,
    spiking_neurons,
    use_surrogate,
)
from .surrogate import SURROGATES, Surrogate, spike

NEURONS = ("lif", "noisy_lif", "relu", "dlif", "stog_lif")


def _baseline_neurons() -> dict:
    from .baselines import DLIF, StoGLIF

    return {"dlif": DLIF, "stog_lif": StoGLIF, "stog": StoGLIF}


_BASELINE_NEURONS = _baseline_neurons()


def make_neuron(kind: str, **kw) -> "LIF | MultiStepReLU":
    """Build a neuron by name: ``lif``, ``noisy_lif``, ``relu`` (the ANN twin's activation), or the
    baselines ``dlif`` / ``stog_lif`` (see :mod:`spikeguard.neurons.baselines`)."""
    if kind == "lif":
        return LIF(**kw)
    if kind in ("noisy_lif", "nlif", "noisy"):
        return NoisyLIF(**kw)
    if kind == "relu":
        return MultiStepReLU()
    if kind in _BASELINE_NEURONS:  # published baselines (neurons/baselines.py)
        return _BASELINE_NEURONS[kind](**kw)
    raise ValueError(f"unknown neuron {kind!r}; choose one of {', '.join(NEURONS)}")


__all__ = [
    "LIF", "NoisyLIF", "MultiStepReLU", "Surrogate", "SURROGATES", "spike", "make_neuron", "NEURONS",
    "PotentialRecorder", "record_potentials", "spiking_neurons", "noisy_neurons", "is_stochastic",
    "noise_enabled", "noise_seed", "use_surrogate",
]
