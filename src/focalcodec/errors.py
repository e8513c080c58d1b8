"""Exception classes. Every error a user can cause is one of these, with a message that
names the problem and what to do about it. The CLI prints it on one line."""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "FocalCodecError",
    "HubError",
    "InputError",
    "OutputError",
]


class FocalCodecError(Exception):
    """Base class of every error raised on purpose by this package."""


class ConfigError(FocalCodecError, ValueError):
    """A config name, file or field that cannot be used."""


class CheckpointError(FocalCodecError, ValueError):
    """Weights that do not fit the model (missing, unexpected or mis-shaped tensors)."""


class HubError(FocalCodecError, OSError):
    """The Hugging Face Hub could not be reached or lacks the files asked for."""


class InputError(FocalCodecError, ValueError):
    """Audio, tokens or lengths that cannot be processed (empty, NaN, wrong rank, ...)."""


class OutputError(FocalCodecError, OSError):
    """An output that cannot be written: it exists (and no ``--force``), it is an input, or
    its folder cannot be written."""
