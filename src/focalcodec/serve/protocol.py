"""The WebSocket protocol of ``focalcodec serve`` (``/v1/stream`` and ``/v1/link/ROOM``):
message kinds, limits, close codes and the checks both ends share. docs/serve.md describes it.

``/v1/stream``: the client's first message is ``{"type": "start", "mode": MODE}`` (text JSON,
optional ``"speaker_set": NAME``); the server answers ``{"type": "ready", ...}``. Then binary
messages carry little-endian float32 mono PCM at ``sample_rate_in`` (modes ``resynth`` and
``encode``) or little-endian uint16 token ids (mode ``decode``); the server sends tokens as
``{"type": "tokens", "tokens": [...]}`` and audio as binary little-endian float32 at
``sample_rate_out``. ``{"type": "flush"}`` ends an utterance: what is left is coded and sent,
then ``{"type": "flushed", "tokens": N, "samples": M}``. Any problem: ``{"type": "error",
"message": ...}`` and the connection is closed with one of the close codes below.
"""

from __future__ import annotations

import json

import numpy as np

from ..errors import FocalCodecError

__all__ = [
    "CLOSE_INTERNAL",
    "CLOSE_INVALID",
    "CLOSE_OUT_OF_ORDER",
    "CLOSE_POLICY",
    "CLOSE_TOO_BIG",
    "CLOSE_TRY_LATER",
    "MAX_MESSAGE_BYTES",
    "MAX_TEXT_BYTES",
    "MODES",
    "ProtocolError",
    "audio_from_bytes",
    "audio_to_bytes",
    "error_message",
    "parse_control",
    "tokens_from_bytes",
    "tokens_to_bytes",
]

MODES = ("resynth", "encode", "decode")

# Limits: a binary message holds at most 1 MiB (16 s of float32 audio at 16 kHz); control
# messages (text JSON) at most 4 KiB. Larger messages close the connection (1009).
MAX_MESSAGE_BYTES = 1 << 20
MAX_TEXT_BYTES = 4096

# WebSocket close codes (RFC 6455) the server uses after an error message.
CLOSE_OUT_OF_ORDER = 1002  # protocol error: audio or flush before start, start mid-utterance
CLOSE_INVALID = 1007  # malformed JSON, wrong field types or values, bad audio or token bytes
CLOSE_POLICY = 1008  # too slow to read its output, no start in time, link room full
CLOSE_TOO_BIG = 1009  # a message over the limits above
CLOSE_INTERNAL = 1011  # a server-side failure
CLOSE_TRY_LATER = 1013  # every stream slot is taken (--max-streams)


class ProtocolError(FocalCodecError):
    """A message that breaks the protocol: ``str(exc)`` is sent to the client as the error
    message, then the connection is closed with ``code``."""

    def __init__(self, message: str, code: int = CLOSE_INVALID) -> None:
        super().__init__(message)
        self.code = code


def error_message(text: str) -> str:
    return json.dumps({"type": "error", "message": text})


def parse_control(text: str) -> dict:
    """A text message as a dict with a string ``"type"``; :class:`ProtocolError` otherwise."""
    if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
        raise ProtocolError(f"control message too big: at most {MAX_TEXT_BYTES} bytes", CLOSE_TOO_BIG)
    try:
        msg = json.loads(text)
    except ValueError as exc:
        raise ProtocolError(f"malformed JSON in a text message ({exc})") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"a text message must be a JSON object, got {type(msg).__name__}")
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise ProtocolError('a text message needs a string "type" field, e.g. {"type": "start", "mode": "resynth"}')
    return msg


def audio_from_bytes(data: bytes) -> np.ndarray:
    """Little-endian float32 PCM -> ``(n,)`` float32; :class:`ProtocolError` if the length is
    not a multiple of 4 or a sample is NaN or infinite."""
    if len(data) % 4:
        raise ProtocolError(f"audio messages hold float32 samples (4 bytes each), got {len(data)} bytes")
    x = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if x.size and not np.isfinite(x).all():
        raise ProtocolError("audio contains NaN or infinite samples")
    return x


def audio_to_bytes(x: np.ndarray) -> bytes:
    return np.ascontiguousarray(x, dtype="<f4").tobytes()


def tokens_from_bytes(data: bytes, codebook_size: int) -> np.ndarray:
    """Little-endian uint16 token ids -> ``(k,)`` int64; :class:`ProtocolError` if the length
    is odd or an id is not below ``codebook_size``."""
    if len(data) % 2:
        raise ProtocolError(f"token messages hold uint16 ids (2 bytes each), got {len(data)} bytes")
    t = np.frombuffer(data, dtype="<u2").astype(np.int64)
    if t.size and int(t.max()) >= codebook_size:
        raise ProtocolError(f"token {int(t.max())} out of range: this model's tokens lie in [0, {codebook_size})")
    return t


def tokens_to_bytes(t: np.ndarray) -> bytes:
    t = np.asarray(t)
    if t.size and (t.min() < 0 or t.max() >= 1 << 16):
        raise ValueError("token ids must fit in 16 bits for the wire format")
    return np.ascontiguousarray(t, dtype="<u2").tobytes()
