"""Errors that reach the user as one clear line, never a traceback."""


class DiagnoseError(Exception):
    """Base class: the message is shown to the user as is."""


class InputError(DiagnoseError):
    """A run file or log that cannot be read (missing, empty, not a known format)."""


class ConfigError(DiagnoseError):
    """A bad option, rule code or threshold override."""
