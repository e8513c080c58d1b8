"""Bounds that every input is checked against before any work, so that what a file or an
argument *declares* (a sample rate, a length, a shape) cannot decide how much memory or time
a run takes. Torch-free, so the CLI can use it while parsing arguments."""

from __future__ import annotations

import math

from .errors import InputError

__all__ = ["AUDIO_EXTENSIONS", "SAMPLE_RATE_RANGE", "check_sample_rate", "check_seconds"]

# Suffixes of the audio files that folders are searched for.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".caf")

# Audio files, arrays, bitstream headers and --output-rate: 1 kHz (below any speech
# recording) to 768 kHz (the highest rate audio interfaces offer).
SAMPLE_RATE_RANGE = (1000, 768000)


def check_sample_rate(rate: object, what: str = "sample rate") -> int:
    """``rate`` as an int in :data:`SAMPLE_RATE_RANGE`, else :class:`InputError`."""
    lo, hi = SAMPLE_RATE_RANGE
    try:
        value = int(rate)  # type: ignore[call-overload]
        ok = value == rate or (isinstance(rate, str) and str(value) == rate.strip())
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok or not lo <= value <= hi:
        raise InputError(f"{what} must be a whole number of Hz in [{lo}, {hi}], got {rate!r}")
    return value


def check_seconds(value: object, what: str, minimum: float = 0.0, strict: bool = True) -> float:
    """A finite number of seconds above ``minimum`` (or at least it, ``strict=False``)."""
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x) or x < minimum or (strict and x == minimum):
        bound = f"more than {minimum:g}" if strict else f"at least {minimum:g}"
        raise InputError(f"{what} must be a finite number {bound}, got {value!r}")
    return x
