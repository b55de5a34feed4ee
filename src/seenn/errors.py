"""Typed exceptions. The CLI turns every :class:`SeennError` into one line on stderr and exit code 2.

A library error about one argument names the *parameter* (``max_accuracy_drop must be in (0, 1), got 2``) and
carries it as ``param``; the command line shows the flag the user typed instead (``--max-accuracy-drop must
be ...``: :meth:`SeennError.for_cli`)."""


class SeennError(Exception):
    """Base class for user-facing errors (bad input, missing files, impossible arguments). ``param``: the parameter
    the message starts with, where it is about one."""

    def __init__(self, *args, param: str | None = None):
        super().__init__(*args)
        self.param = param

    def for_cli(self) -> str:
        """The message with its parameter written as the command line's flag (``max_accuracy_drop`` ->
        ``--max-accuracy-drop``)."""
        text = str(self)
        if self.param and text.startswith(self.param):
            return "--" + self.param.replace("_", "-") + text[len(self.param):]
        return text


class DataError(SeennError):
    """A dataset is missing, corrupt, or of the wrong shape."""


class CheckpointError(SeennError):
    """A run directory or checkpoint is missing, corrupt, or inconsistent."""


class ConfigError(SeennError):
    """An argument or configuration value is impossible."""
