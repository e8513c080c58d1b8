"""The streaming engine the server runs: the one import point for it.

Issue 13 brings the batched ``focalcodec.streaming.StreamEngine``; until it is on ``main``
this imports the stand-in with the same API (:mod:`focalcodec.serve.engine_standin`).
Everything in :mod:`focalcodec.serve` imports the engine from here, and only uses that API.
"""

from __future__ import annotations

from .engine_standin import EngineFull, StreamEngine, StreamOutput

__all__ = ["EngineFull", "StreamEngine", "StreamOutput"]
