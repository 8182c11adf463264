"""spikeguard: adversarially robust spiking neural networks.

Threshold Guarding Optimization (TGO), Noisy-LIF neurons, SNN training strategies and a
trustworthy attack suite (Wang et al., "Robust Spiking Neural Networks Against
Adversarial Attacks", ICLR 2026).
"""

from ._version import __version__
from . import adapters as _adapters  # noqa: F401  (hands its foreign-neuron recording hook to neurons)
from .errors import CheckpointError, ConfigError, DataError, SpikeguardError
from .models import create_model, list_models
from .checkpoint import load_model as _load_model


def load(path, device="cpu"):
    """Load a trained model from a run folder (``spikeguard train --out``), in eval mode.

    Same as :func:`spikeguard.checkpoint.load_model`; raises ``CheckpointError`` on a
    missing, corrupt or mismatched checkpoint.
    """
    return _load_model(path, device=device)


__all__ = [
    "__version__",
    "create_model",
    "list_models",
    "load",
    "SpikeguardError",
    "ConfigError",
    "DataError",
    "CheckpointError",
]
