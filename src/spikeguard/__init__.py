"""spikeguard: adversarially robust spiking neural networks.

Threshold Guarding Optimization (TGO), Noisy-LIF neurons, SNN training strategies and a
trustworthy attack suite (Wang et al., "Robust Spiking Neural Networks Against
Adversarial Attacks", ICLR 2026).
"""

__version__ = "0.2.0"

from .errors import CheckpointError, ConfigError, DataError, SpikeguardError
from .models import create_model, list_models


def load(path, device="cpu"):
    """Load a trained model from a run folder (``spikeguard train --out``), in eval mode.

    Same as :func:`spikeguard.checkpoint.load_model`; raises ``CheckpointError`` on a
    missing, corrupt or mismatched checkpoint.
    """
    from .checkpoint import load_model

    return load_model(path, device=device)


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
