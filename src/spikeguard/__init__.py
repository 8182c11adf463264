"""spikeguard: adversarially robust spiking neural networks.

Threshold Guarding Optimization (TGO), Noisy-LIF neurons, SNN training strategies and a
trustworthy attack suite (Wang et al., "Robust Spiking Neural Networks Against
Adversarial Attacks", ICLR 2026).
"""

__version__ = "0.1.0"

from .errors import CheckpointError, ConfigError, DataError, SpikeguardError  # noqa: E402
from .models import create_model, list_models  # noqa: E402

__all__ = ["__version__", "create_model", "list_models", "SpikeguardError", "ConfigError", "DataError", "CheckpointError"]
