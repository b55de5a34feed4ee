"""Typed exceptions. The CLI turns every :class:`SeennError` into one line on stderr and exit code 2."""


class SeennError(Exception):
    """Base class for user-facing errors (bad input, missing files, impossible arguments)."""


class DataError(SeennError):
    """A dataset is missing, corrupt, or of the wrong shape."""


class CheckpointError(SeennError):
    """A run directory or checkpoint is missing, corrupt, or inconsistent."""


class ConfigError(SeennError):
    """An argument or configuration value is impossible."""
