"""Errors a user can cause. The CLI catches `CharRNNError` in one place and prints one line."""

from __future__ import annotations


class CharRNNError(Exception):
    """Base class of every failure the user can fix; `exit_code` is what the process returns."""

    exit_code = 1


class UsageError(CharRNNError):
    """A wrong argument, option or configuration value (exit code 2, like Click's usage errors)."""

    exit_code = 2


class CorpusError(CharRNNError):
    """A corpus that cannot be read or used for training."""


class CheckpointError(CharRNNError):
    """A checkpoint that is missing, corrupt, unsafe or from an incompatible version."""


class TrainingError(CharRNNError):
    """Training cannot go on (non-finite losses, a failed save, a locked run directory)."""


class WriteError(CharRNNError):
    """A file could not be written (a full disk, no permission); the previous file is unchanged."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path, self.reason = path, reason


class ServeError(CharRNNError):
    """The server cannot start: its address is taken, or not one of this machine's."""


class MissingExtraError(CharRNNError):
    """A command needs an optional dependency that is not installed; the message says how."""
