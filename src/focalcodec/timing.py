"""The one definition of the real-time factor used by every command and report.

RTF = processing time / audio time: 0.1 means ten times faster than real time, above 1 means
slower than real time (a live stream falls behind). Torch-free."""

from __future__ import annotations

import math

__all__ = ["real_time_factor"]


def real_time_factor(*, processing_seconds: float, audio_seconds: float) -> float:
    """``processing_seconds / audio_seconds`` (lower is faster); NaN without audio. Keyword
    arguments only, so the two durations cannot be swapped by accident."""
    audio, busy = float(audio_seconds), float(processing_seconds)
    if not audio > 0 or not math.isfinite(audio) or not math.isfinite(busy) or busy < 0:
        return float("nan")
    return busy / audio
