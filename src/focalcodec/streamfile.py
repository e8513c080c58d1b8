"""The streamable ``.fc`` variant: a header first, then fixed-size frames, one per 80 ms chunk.

A ``.fc`` file (:mod:`focalcodec.bitstream`) needs the token count and a payload checksum in
its header, so it can only be written once the utterance is over. The streamable variant is
written as the audio arrives, for pipes and sockets (``focalcodec stream-encode`` /
``stream-decode``)::

    header  (the .fc prefix with flags bit 1 set, the model's identity: name, config fingerprint
             and (version 2) weights digest; rates, K; CRC32)
    frame 0 (K tokens of D bits, most significant bit first, zero-padded to whole bytes)
    frame 1
    ...

For the causal 4k model K = 4 and D = 12: 6 bytes per 80 ms, 600 bit/s on the wire, exactly
the nominal bitrate. There is no length, no end marker and no per-frame checksum (each would
cost bits on a 600 bit/s link; integrity is the transport's job): a stream cut anywhere
decodes every complete frame (:attr:`FrameReader.trailing` tells how many bytes of a cut frame
were left over). A frame whose padding bits are not zero raises :class:`CorruptFileError`.
docs/bitstream.md has the byte layout.

    header = StreamHeader.for_model(codec)
    writer = FrameWriter(f, header)        # writes the header
    writer.write(tokens)                   # (K * n,) tokens -> n frames
    reader = FrameReader(f)                # reads and checks the header
    for tokens in reader: ...              # (K,) int64 per complete frame
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from .bitstream import (
    _CRC,
    _PREFIX,
    FINGERPRINT_BYTES,
    FLAG_STREAM,
    MAGIC,
    MAX_CODE_DIM,
    BitstreamError,
    CorruptFileError,
    CorruptHeaderError,
    ForeignFileError,
    TruncatedFileError,
    UnsupportedVersionError,
    _fingerprint_bytes,
    check_architecture,
    check_weights_digest,
    pack_tokens,
    unpack_tokens,
)

__all__ = ["STREAM_SUFFIX", "STREAM_VERSION", "FrameReader", "FrameWriter", "StreamHeader"]

STREAM_SUFFIX = ".fcs"
STREAM_VERSION = 2
# After the name: config fingerprint, (version >= 2) weights digest, rate in, rate out, samples
# per token, original rate, tokens per frame; then the header CRC32.
_STREAM_FIELDS = {
    1: struct.Struct(f"<{FINGERPRINT_BYTES}sIIIIH"),
    2: struct.Struct(f"<{FINGERPRINT_BYTES}s{FINGERPRINT_BYTES}sIIIIH"),
}
MAX_TOKENS_PER_FRAME = 256


@dataclass(frozen=True)
class StreamHeader:
    """What a streamable ``.fc`` says about itself: the model, the rates, ``K`` tokens per frame."""

    model_name: str
    fingerprint: str  # hex, the first 8 bytes of the model's config SHA-256
    code_dim: int
    sample_rate_input: int
    sample_rate_output: int
    samples_per_token: int
    original_rate: int
    tokens_per_frame: int
    weights: str = ""  # hex, the first 8 bytes of the weights' SHA-256 (version 2); "" in version 1

    @property
    def version(self) -> int:
        """2 when the header carries the weights digest, else 1."""
        return 2 if self.weights else 1

    @classmethod
    def for_model(cls, model: Any, original_rate: int | None = None) -> StreamHeader:
        """The header of a stream of ``model``'s tokens, one frame per streaming chunk."""
        spt = int(model.hop_length)
        return cls(
            model_name=model.model_id,
            fingerprint=_fingerprint_bytes(model.fingerprint).hex(),
            code_dim=int(model.code_dim),
            sample_rate_input=int(model.sample_rate_input),
            sample_rate_output=int(model.sample_rate_output),
            samples_per_token=spt,
            original_rate=int(original_rate or model.sample_rate_input),
            tokens_per_frame=int(model.chunk_size) // spt,
            weights=_fingerprint_bytes(model.weights_sha256).hex(),
        )

    @property
    def frame_bytes(self) -> int:
        """``ceil(K * D / 8)``."""
        return (self.tokens_per_frame * self.code_dim + 7) // 8

    @property
    def frame_seconds(self) -> float:
        return self.tokens_per_frame * self.samples_per_token / self.sample_rate_input

    @property
    def bitrate(self) -> float:
        """Bits per second on the wire (frames only): 600 for the causal 4k model."""
        return 8 * self.frame_bytes / self.frame_seconds

    @property
    def size(self) -> int:
        return _PREFIX.size + len(self.model_name.encode("utf-8")) + _STREAM_FIELDS[self.version].size + _CRC.size

    def to_bytes(self) -> bytes:
        name = self.model_name.encode("utf-8")
        if not 1 <= len(name) <= 255:
            raise BitstreamError(f"model name must be 1-255 UTF-8 bytes, got {len(name)}; rename the checkpoint folder")
        head = _PREFIX.pack(MAGIC, self.version, FLAG_STREAM, self.code_dim, len(name)) + name
        identity = [bytes.fromhex(self.fingerprint)] + ([bytes.fromhex(self.weights)] if self.weights else [])
        head += _STREAM_FIELDS[self.version].pack(
            *identity,
            self.sample_rate_input,
            self.sample_rate_output,
            self.samples_per_token,
            self.original_rate,
            self.tokens_per_frame,
        )
        return head + _CRC.pack(zlib.crc32(head))

    @classmethod
    def read(cls, f: IO[bytes], source: str = "stream") -> StreamHeader:
        """Read exactly the header from ``f`` and check it; a :class:`BitstreamError` subclass
        names what is wrong."""
        prefix = _read_exact(f, _PREFIX.size)
        if not prefix:
            raise TruncatedFileError(f"{source} is empty: no stream header")
        if len(prefix) < len(MAGIC) or prefix[: len(MAGIC)] != MAGIC:
            if len(prefix) < len(MAGIC) and MAGIC.startswith(prefix):
                raise TruncatedFileError(f"{source} ended after {len(prefix)} bytes, inside the stream header")
            raise ForeignFileError(
                f"{source} is not a FocalCodec stream (it does not start with {MAGIC!r}); "
                "pass the output of `focalcodec stream-encode`"
            )
        if len(prefix) < _PREFIX.size:
            raise TruncatedFileError(f"{source} ended after {len(prefix)} bytes, inside the stream header")
        _, version, flags, code_dim, name_len = _PREFIX.unpack(prefix)
        if not flags & FLAG_STREAM:
            raise BitstreamError(
                f"{source} is a .fc file, not a streamable one; decode it with `focalcodec decode`, "
                "or make a stream with `focalcodec stream-encode`"
            )
        if version > STREAM_VERSION or flags != FLAG_STREAM:
            raise UnsupportedVersionError(
                f"{source} uses stream format version {version} (flags {flags:#04x}), newer than this focalcodec "
                f"reads; upgrade focalcodec (pip install -U focalcodec)"
            )
        if version < 1:
            raise CorruptHeaderError(f"{source}: invalid format version {version}; the header is damaged")
        fields = _STREAM_FIELDS[version]
        rest = _read_exact(f, name_len + fields.size + _CRC.size)
        if len(rest) < name_len + fields.size + _CRC.size:
            raise TruncatedFileError(f"{source} ended inside the stream header")
        head, (crc,) = prefix + rest[: -_CRC.size], _CRC.unpack(rest[-_CRC.size :])
        if zlib.crc32(head) != crc:
            raise CorruptHeaderError(f"{source}: stream header checksum mismatch; the stream is damaged")
        *identity, rate_in, rate_out, spt, orig_rate, per_frame = fields.unpack_from(head, _PREFIX.size + name_len)
        fp, weights = identity[0], (identity[1] if len(identity) > 1 else b"")
        try:
            name = head[_PREFIX.size : _PREFIX.size + name_len].decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptHeaderError(f"{source}: the model name is not valid UTF-8; the header is damaged") from None
        problems = []
        if not 1 <= code_dim <= MAX_CODE_DIM:
            problems.append(f"bits per token {code_dim} not in [1, {MAX_CODE_DIM}]")
        if name_len == 0:
            problems.append("empty model name")
        if 0 in (rate_in, rate_out, spt, orig_rate):
            problems.append("a sample rate or the token hop is 0")
        if not 1 <= per_frame <= MAX_TOKENS_PER_FRAME:
            problems.append(f"tokens per frame {per_frame} not in [1, {MAX_TOKENS_PER_FRAME}]")
        if problems:
            raise CorruptHeaderError(f"{source}: invalid stream header ({'; '.join(problems)})")
        return cls(name, fp.hex(), code_dim, rate_in, rate_out, spt, orig_rate, per_frame, weights.hex())

    def check_model(self, model: Any, check_weights: bool = True) -> None:
        """Raise :class:`ModelMismatchError` unless ``model`` (a FocalCodec) made this stream: the
        same architecture (config fingerprint) and, unless ``check_weights=False`` (CLI
        ``--allow-other-weights``), the same weights (version 2: the weights digest; version 1:
        the model name), as :meth:`focalcodec.bitstream.CompressedAudio.check_model`."""
        check_architecture(model, self.model_name, self.fingerprint)
        if check_weights:
            check_weights_digest(model, self.model_name, self.weights)

    def info(self) -> dict:
        return {
            "format": "streamable",
            "format_version": self.version,
            "model": self.model_name,
            "config_fingerprint": self.fingerprint,
            "weights_digest": self.weights or None,
            "code_dim": self.code_dim,
            "sample_rate_input": self.sample_rate_input,
            "sample_rate_output": self.sample_rate_output,
            "samples_per_token": self.samples_per_token,
            "original_sample_rate": self.original_rate,
            "tokens_per_frame": self.tokens_per_frame,
            "frame_bytes": self.frame_bytes,
            "header_bytes": self.size,
            "wire_bitrate_bps": self.bitrate,
        }


def _read_exact(f: IO[bytes], n: int) -> bytes:
    """Up to ``n`` bytes: fewer only at the end of the input (pipes return short reads)."""
    parts, got = [], 0
    while got < n:
        part = f.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


class FrameWriter:
    """Writes the header, then frames of ``K`` tokens, flushing after each write (so a pipe or
    socket carries every frame as soon as it exists)."""

    def __init__(self, f: IO[bytes], header: StreamHeader) -> None:
        self.f, self.header = f, header
        self.frames = 0
        f.write(header.to_bytes())
        f.flush()

    def write(self, tokens: np.ndarray) -> None:
        """``(K * n,)`` tokens -> ``n`` frames."""
        toks = np.asarray(tokens).reshape(-1)
        k = self.header.tokens_per_frame
        if toks.size % k:
            raise BitstreamError(f"a frame holds {k} tokens; got {toks.size}, not a multiple of {k}")
        if not toks.size:
            return
        blob = b"".join(pack_tokens(toks[i : i + k], self.header.code_dim) for i in range(0, toks.size, k))
        self.f.write(blob)
        self.f.flush()
        self.frames += toks.size // k

    @property
    def bytes_written(self) -> int:
        return self.header.size + self.frames * self.header.frame_bytes


class FrameReader:
    """Reads the header on construction; iterating yields ``(K,)`` int64 tokens per complete
    frame. A cut stream ends after its last complete frame; :attr:`trailing` is then the
    number of bytes of the incomplete one (0 for a stream that ends on a frame boundary)."""

    def __init__(self, f: IO[bytes], source: str = "stream") -> None:
        self.f, self.source = f, source
        self.header = StreamHeader.read(f, source)
        self.frames = 0
        self.trailing = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        h = self.header
        size, k, d = h.frame_bytes, h.tokens_per_frame, h.code_dim
        spare = 8 * size - k * d
        while True:
            frame = _read_exact(self.f, size)
            if len(frame) < size:
                self.trailing = len(frame)
                return
            if spare and frame[-1] & ((1 << spare) - 1):
                raise CorruptFileError(
                    f"{self.source}: frame {self.frames} (byte {h.size + self.frames * size}) has non-zero padding "
                    "bits; the stream is damaged or out of step"
                )
            self.frames += 1
            yield unpack_tokens(frame, k, d)
