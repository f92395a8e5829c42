"""The project's exceptions: one base class, so a caller of the Python API can catch them all.

Library code raises these (or ValueError / OSError where nothing more specific is meant); only
the command line (`co_settle_hf.cli.main`) turns them into a message and an exit status. Each
class also derives from the built-in exception it refines, so `except ValueError` keeps working.
"""

from __future__ import annotations


class CoSettleError(Exception):
    """Base class of every error co-settle-hf raises on purpose; its message names the file or argument."""


class SettingsError(CoSettleError, ValueError):
    """A setting or command-line argument is invalid or contradicts another."""


class DataSourceError(CoSettleError, ValueError):
    """Training or evaluation data that cannot be used: missing, empty or unreadable as a whole."""


class RunFolderError(CoSettleError, OSError):
    """An output folder that another run holds or has filled."""


class CheckpointError(CoSettleError, ValueError):
    """A checkpoint, cache file or published model cannot be used: missing, unsafe or made with other settings."""


__all__ = ["CheckpointError", "CoSettleError", "DataSourceError", "RunFolderError", "SettingsError"]
