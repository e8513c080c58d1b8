"""Window geometry for long inputs (see :mod:`focalcodec.longform`), torch-free so that the
CLI can use its defaults while parsing arguments."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InputError

__all__ = ["DEFAULT", "Windowing"]


@dataclass(frozen=True)
class Windowing:
    """Window geometry in seconds (see :mod:`focalcodec.longform`).

    ``window`` >= 1 s of kept output per non-causal window; ``context`` / ``lookahead``
    seconds of left / right context; ``crossfade`` seconds of linear overlap between decoded
    windows (at most twice the smaller context); ``chunk`` seconds per causal call.
    """

    window: float = 60.0
    context: float = 3.0
    lookahead: float = 1.0
    crossfade: float = 0.1
    chunk: float = 2.56

    def __post_init__(self) -> None:
        values = (self.window, self.context, self.lookahead, self.crossfade, self.chunk)
        if not all(math.isfinite(float(v)) for v in values):
            raise InputError(f"window sizes must be finite numbers of seconds, got {values}")
        if not self.window >= 1.0:
            raise InputError(f"window must be at least 1 s, got {self.window}")
        if not (self.context >= 0 and self.lookahead >= 0 and self.crossfade >= 0 and self.chunk > 0):
            raise InputError("context, lookahead and crossfade must be >= 0 and chunk > 0")
        if self.crossfade > min(2 * self.context, 2 * self.lookahead, self.window / 2):
            raise InputError(
                f"crossfade ({self.crossfade} s) must not exceed twice the context ({self.context} s), twice the "
                f"lookahead ({self.lookahead} s) or half the window ({self.window} s)"
            )

    def causal_step(self, chunk_size: int, sample_rate: int) -> int:
        """Input samples per causal call: ``chunk`` seconds as a whole number (at least one) of
        ``chunk_size``-sample chunks."""
        return chunk_size * max(1, int(round(self.chunk * sample_rate / chunk_size)))

    def tokens_per_call(self, codec) -> int:
        """The most tokens one call decodes: a causal call's, or one window with its context."""
        if codec.causal:
            return self.causal_step(codec.chunk_size, codec.sample_rate_input) // codec.hop_length
        return sum(self.token_geometry(codec.token_rate))

    def token_geometry(self, token_rate: float) -> tuple[int, int, int]:
        """(core, left, right) window sizes in tokens."""
        core = max(1, int(round(self.window * token_rate)))
        return core, int(math.ceil(self.context * token_rate)), int(math.ceil(self.lookahead * token_rate))


DEFAULT = Windowing()
