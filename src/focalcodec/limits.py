"""Bounds that every input is checked against before any work, so that what a file or an
argument *declares* (a sample rate, a length, a shape) cannot decide how much memory or time
a run takes. Torch-free, so the CLI can use it while parsing arguments."""

from __future__ import annotations

import math
from pathlib import Path

from .errors import InputError

__all__ = [
    "AUDIO_EXTENSIONS",
    "SAMPLE_RATE_RANGE",
    "check_input_file",
    "check_sample_rate",
    "check_seconds",
    "read_text_input",
]

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


def check_input_file(path: str | Path, what: str = "file", error: type[Exception] = InputError) -> Path:
    """``path`` as a :class:`~pathlib.Path` when it is an existing file; else ``error`` saying
    that it is missing or that it is a folder (where one file is expected)."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path} is a folder, not a {what}; give a {what}")
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    return path


def read_text_input(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of an input file (a manifest, a list of ids), else :class:`InputError`
    naming the file and, for other encodings, where the first bad byte is."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{what} {path} is a folder, not a file") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{what} {path} is not UTF-8 text (byte {exc.start}, line {line}); save it as UTF-8") from None
