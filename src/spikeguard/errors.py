"""User-facing errors.

Anything raised as :class:`SpikeguardError` is a problem with the user's input (a file,
a flag, a config value) and is reported by the CLI as one line with a non-zero exit,
never as a traceback.
"""

from __future__ import annotations


class SpikeguardError(Exception):
    """A user-facing error: the message alone must say what is wrong and how to fix it."""


class ConfigError(SpikeguardError):
    """A malformed, unknown or out-of-range configuration value."""


class DataError(SpikeguardError):
    """A missing, corrupt or malformed dataset or input tensor."""


class CheckpointError(SpikeguardError):
    """A missing, corrupt, incompatible or unsafe checkpoint."""
