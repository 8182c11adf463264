"""Spiking neurons: multi-step LIF / Noisy-LIF, surrogate gradients, potential recording.

Neurons register themselves with :func:`register_neuron` where they are defined
(:mod:`.lif`, :mod:`.baselines`); :func:`make_neuron` builds any registered kind by name.
"""

from .registry import list_neurons, make_neuron, neuron_aliases, neuron_class, register_neuron
from .lif import LIF, MultiStepReLU, NoisyLIF
from .baselines import DLIF, StoGLIF  # registers dlif, stog_lif
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

# the built-in kinds (the registry, :func:`list_neurons`, also holds any registered later)
NEURONS = tuple(list_neurons())

__all__ = [
    "LIF",
    "NoisyLIF",
    "MultiStepReLU",
    "DLIF",
    "StoGLIF",
    "Surrogate",
    "SURROGATES",
    "spike",
    "make_neuron",
    "register_neuron",
    "list_neurons",
    "neuron_class",
    "neuron_aliases",
    "NEURONS",
    "PotentialRecorder",
    "record_potentials",
    "spiking_neurons",
    "noisy_neurons",
    "is_stochastic",
    "noise_enabled",
    "noise_seed",
    "use_surrogate",
]
