"""The ``.fc`` compressed-file format: a small header, the tokens bit-packed at exactly D bits
each, two CRC32 checksums. See ``docs/bitstream.md`` for the byte layout.

    >>> blob = CompressedAudio(tokens=toks, ...).to_bytes()      # doctest: +SKIP
    >>> CompressedAudio.from_bytes(blob).tokens                   # doctest: +SKIP

Every way a file can be wrong maps to one :class:`BitstreamError` subclass:

==========================  =========================================================
:class:`ForeignFileError`   not a FocalCodec file (wrong magic bytes, too short)
:class:`TruncatedFileError` the file ends before the header or the payload does
:class:`CorruptFileError`   bytes after the stream, non-zero padding bits; parent of:
:class:`CorruptHeaderError` header checksum mismatch, impossible field values
:class:`ChecksumError`      the payload (tokens) does not match its CRC32
:class:`UnsupportedVersionError` written by a newer format version than this reader knows
:class:`ModelMismatchError` made by a different model than the one asked to decode it
==========================  =========================================================
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FocalCodecError
from .limits import SAMPLE_RATE_RANGE

__all__ = [
    "BitstreamError",
    "ChecksumError",
    "CompressedAudio",
    "CorruptFileError",
    "CorruptHeaderError",
    "FORMAT_VERSION",
    "ForeignFileError",
    "MAGIC",
    "ModelMismatchError",
    "SUFFIX",
    "TruncatedFileError",
    "UnsupportedVersionError",
    "header_size",
    "pack_tokens",
    "payload_size",
    "unpack_tokens",
]

MAGIC = b"FCDC"
FORMAT_VERSION = 2
SUFFIX = ".fc"
MAX_CODE_DIM = 32
FINGERPRINT_BYTES = 8
# Sample rates a header may declare (the model's, the original audio's): the bounds of every
# other input (focalcodec.limits), so a header cannot ask for 1 Hz or 4 GHz.
RATE_RANGE = SAMPLE_RATE_RANGE
MAX_SAMPLES_PER_TOKEN = 1 << 16
# Flags bit 1: the streamable variant (header, then fixed-size frames; focalcodec.streamfile),
# which this module's whole-file reader refuses with a pointer to `focalcodec stream-decode`.
FLAG_STREAM = 0x02

# After the name: config fingerprint, (version >= 2) weights digest, rate_in, rate_out,
# samples per token, original rate, original length, token count, payload CRC32; then the
# header CRC32.
_PREFIX = struct.Struct("<4sBBBB")  # magic, version, flags, code_dim, name length
_FIELDS = {
    1: struct.Struct(f"<{FINGERPRINT_BYTES}sIIIIQQI"),
    2: struct.Struct(f"<{FINGERPRINT_BYTES}s{FINGERPRINT_BYTES}sIIIIQQI"),
}
_CRC = struct.Struct("<I")


def header_size(name_len: int, version: int = FORMAT_VERSION) -> int:
    """Bytes of a header with an ``name_len``-byte model name: 56 + n (v1), 64 + n (v2)."""
    return _PREFIX.size + name_len + _FIELDS[version].size + _CRC.size


class BitstreamError(FocalCodecError, ValueError):
    """A ``.fc`` file (or bytes) that cannot be decoded, or a stream that cannot be written."""


class ForeignFileError(BitstreamError):
    """Not a FocalCodec bitstream at all."""


class TruncatedFileError(BitstreamError):
    """The data ends early (an interrupted download or copy)."""


class CorruptFileError(BitstreamError):
    """The file is damaged: bytes after the stream, non-zero padding bits."""


class CorruptHeaderError(CorruptFileError):
    """The header is damaged (checksum mismatch) or describes an impossible stream."""


class ChecksumError(CorruptFileError):
    """The token payload was altered (its CRC32 does not match)."""


class UnsupportedVersionError(BitstreamError):
    """Written with a newer format version than this package reads."""


class ModelMismatchError(BitstreamError):
    """The stream was made by another model (architecture or weights) than the one decoding it."""


def payload_size(num_tokens: int, code_dim: int) -> int:
    """Bytes taken by ``num_tokens`` tokens of ``code_dim`` bits: ``ceil(T * D / 8)``."""
    return (int(num_tokens) * int(code_dim) + 7) // 8


def pack_tokens(tokens: np.ndarray, code_dim: int) -> bytes:
    """``tokens: (T,)`` integers in ``[0, 2^D)`` -> ``ceil(T*D/8)`` bytes, most significant bit
    first, the last byte zero-padded."""
    toks = np.asarray(tokens).reshape(-1)
    if toks.size == 0:
        return b""
    if not np.issubdtype(toks.dtype, np.integer):
        raise BitstreamError(f"tokens must be integers, got {toks.dtype}")
    toks = toks.astype(np.int64)
    if toks.min() < 0 or toks.max() >= (1 << code_dim):
        raise BitstreamError(f"tokens must lie in [0, 2^{code_dim}), got range [{toks.min()}, {toks.max()}]")
    shifts = np.arange(code_dim - 1, -1, -1, dtype=np.int64)
    bits = ((toks[:, None] >> shifts[None]) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(-1)).tobytes()


def unpack_tokens(payload: bytes, num_tokens: int, code_dim: int) -> np.ndarray:
    """Inverse of :func:`pack_tokens`: ``(T,)`` int64. ``payload`` must hold exactly
    ``payload_size(T, D)`` bytes."""
    if payload_size(num_tokens, code_dim) != len(payload):
        raise BitstreamError(f"{num_tokens} tokens of {code_dim} bits take {payload_size(num_tokens, code_dim)} bytes")
    out = np.empty(num_tokens, dtype=np.int64)
    weights = 1 << np.arange(code_dim - 1, -1, -1, dtype=np.int64)
    raw = np.frombuffer(payload, dtype=np.uint8)
    step = 8192  # tokens per block (a multiple of 8: whole bytes); scratch memory stays small
    for t in range(0, num_tokens, step):
        count = min(step, num_tokens - t)
        block = raw[t * code_dim // 8 : payload_size(t + count, code_dim)]
        bits = np.unpackbits(block, count=count * code_dim)
        out[t : t + count] = bits.reshape(count, code_dim).astype(np.int64) @ weights
    return out


def _fingerprint_bytes(fingerprint: str | bytes) -> bytes:
    if isinstance(fingerprint, bytes):
        raw = fingerprint
    else:
        try:
            raw = bytes.fromhex(fingerprint)
        except ValueError:
            raise BitstreamError(f"fingerprint must be hex digits, got {fingerprint!r}") from None
    if len(raw) < FINGERPRINT_BYTES:
        raise BitstreamError(f"fingerprint needs at least {FINGERPRINT_BYTES} bytes, got {len(raw)}")
    return raw[:FINGERPRINT_BYTES]


def check_architecture(model: Any, model_name: str, fingerprint: str) -> str:
    """The model's name; :class:`ModelMismatchError` unless ``model`` has the architecture
    (config fingerprint, hex) a header names. Shared by ``.fc`` and streamable headers."""
    name = getattr(model, "model_id", "?")
    fp = _fingerprint_bytes(getattr(model, "fingerprint", "00" * FINGERPRINT_BYTES)).hex()
    if fp != fingerprint:
        raise ModelMismatchError(
            f"this stream was made by model {model_name!r} (architecture {fingerprint}) but is being "
            f"decoded with {name!r} (architecture {fp}); decode it with --model set to the {model_name!r} checkpoint"
        )
    return name


def check_weights_digest(model: Any, model_name: str, weights: str) -> None:
    """:class:`ModelMismatchError` unless ``model`` has the weights a header names: its digest
    (``weights``, hex; version 2) or, in version 1 (``weights == ""``), its model name."""
    name = getattr(model, "model_id", "?")
    if weights:
        mine = _fingerprint_bytes(model.weights_sha256).hex()
        if mine != weights:
            raise ModelMismatchError(
                f"this stream was made by other weights ({model_name!r}, weights {weights}) than "
                f"{name!r} (weights {mine}); decode it with --model set to the checkpoint that made it, or "
                "pass --allow-other-weights (Python: check_weights=False) to decode it with these weights anyway"
            )
    elif name != model_name:
        raise ModelMismatchError(
            f"this version-1 stream names model {model_name!r} but is being decoded with {name!r}; "
            f"decode it with --model set to the {model_name!r} checkpoint, or pass --allow-other-weights "
            "(Python: check_weights=False) if these are the same weights"
        )


@dataclass(frozen=True, eq=False)
class CompressedAudio:
    """One compressed utterance: what a ``.fc`` file holds.

    ``tokens``: (T,) int64 in ``[0, 2^code_dim)``. ``num_samples`` is the length of the
    original audio at ``original_rate`` (what decoding restores exactly); the model saw
    ``model_num_samples`` samples at ``sample_rate_input``. The model is identified by its
    weights (``weights``: the first 8 bytes of ``FocalCodec.weights_sha256``, format version
    2) and its architecture (``fingerprint``: of the config); ``model_name`` is for people.
    Version-1 files carry no weights digest (``weights == ""``).
    """

    tokens: np.ndarray
    model_name: str
    fingerprint: str  # hex, the first 8 bytes of the model's config SHA-256
    code_dim: int
    sample_rate_input: int
    sample_rate_output: int
    samples_per_token: int
    original_rate: int
    num_samples: int
    weights: str = ""  # hex, the first 8 bytes of the weights' SHA-256 ("" in version 1)
    version: int | None = None  # None: 2 with a weights digest, else 1

    def __post_init__(self) -> None:
        toks = np.ascontiguousarray(np.asarray(self.tokens).reshape(-1))
        if toks.size and not np.issubdtype(toks.dtype, np.integer):
            raise BitstreamError(f"tokens must be integers, got {toks.dtype}")
        object.__setattr__(self, "tokens", toks.astype(np.int64, copy=False))
        object.__setattr__(self, "fingerprint", _fingerprint_bytes(self.fingerprint).hex())
        if self.weights:
            object.__setattr__(self, "weights", _fingerprint_bytes(self.weights).hex())
        version = self.version if self.version is not None else (2 if self.weights else 1)
        if version not in _FIELDS:
            raise BitstreamError(f"format version must be one of {sorted(_FIELDS)}, got {version}")
        if version >= 2 and not self.weights:
            raise BitstreamError("format version 2 needs the weights digest of the model (weights=...)")
        if version == 1 and self.weights:
            raise BitstreamError("format version 1 cannot hold a weights digest; use version 2")
        object.__setattr__(self, "version", version)
        name = self.model_name.encode("utf-8")
        if not 1 <= len(name) <= 255:
            raise BitstreamError(f"model name must be 1-255 UTF-8 bytes, got {len(name)}; rename the checkpoint folder")
        if not 1 <= self.code_dim <= MAX_CODE_DIM:
            raise BitstreamError(f"code_dim must lie in [1, {MAX_CODE_DIM}], got {self.code_dim}")
        for what in ("sample_rate_input", "sample_rate_output", "original_rate"):
            if not RATE_RANGE[0] <= int(getattr(self, what)) <= RATE_RANGE[1]:
                raise BitstreamError(
                    f"{what} must lie in [{RATE_RANGE[0]}, {RATE_RANGE[1]}] Hz, got {getattr(self, what)}"
                )
        if not 1 <= self.samples_per_token <= MAX_SAMPLES_PER_TOKEN:
            raise BitstreamError(
                f"samples_per_token must lie in [1, {MAX_SAMPLES_PER_TOKEN}], got {self.samples_per_token}"
            )
        if not 1 <= self.num_samples < 2**64:
            raise BitstreamError(f"num_samples must be positive, got {self.num_samples}")

    # -- derived facts -----------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        """Tokens in the stream: ``T`` of ``tokens (T,)``."""
        return int(self.tokens.size)

    @property
    def token_rate(self) -> float:
        """Tokens per second."""
        return self.sample_rate_input / self.samples_per_token

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return self.num_samples / self.original_rate

    @property
    def model_num_samples(self) -> int:
        """Input length at the model's rate: ``floor(num_samples * rate_in / original_rate)``."""
        return self.num_samples * self.sample_rate_input // self.original_rate

    @property
    def nominal_bitrate(self) -> float:
        """Bits per second of the token stream, ``D * token_rate`` (no header)."""
        return self.code_dim * self.token_rate

    @property
    def header_size(self) -> int:
        """Bytes of the header, CRC included: 56 + n (version 1) or 64 + n (version 2) for an
        n-byte UTF-8 model name."""
        return header_size(len(self.model_name.encode("utf-8")), self.version)

    @property
    def payload_size(self) -> int:
        """Bytes of the packed tokens after the header: ``ceil(T * D / 8)`` (``D = code_dim``)."""
        return payload_size(self.num_tokens, self.code_dim)

    @property
    def size(self) -> int:
        """Bytes of the whole file: header + ``ceil(T * D / 8)``."""
        return self.header_size + self.payload_size

    @property
    def bitrate(self) -> float:
        """Bits per second of the whole file, header included."""
        return 8 * self.size / self.duration

    def output_samples(self, rate: int) -> int:
        """Samples the decoded audio has at ``rate``: ``floor(num_samples * rate / original_rate)``."""
        return self.num_samples * int(rate) // self.original_rate

    def check_model(self, model: Any, check_weights: bool = True) -> None:
        """Check, before any decoding work, that ``model`` (a FocalCodec) made this stream.

        - another architecture (config fingerprint): :class:`ModelMismatchError`;
        - other weights (version 2: the weights digest; version 1: the model name):
          :class:`ModelMismatchError`, unless ``check_weights=False`` (CLI
          ``--allow-other-weights``), which decodes with the given weights anyway;
        - header fields that contradict the model (bits per token, sample rates, token hop, a
          token count other than the model's for the stated duration): :class:`CorruptHeaderError`.
          These bound what decoding produces: the output length follows from the tokens.
        """
        name = check_architecture(model, self.model_name, self.fingerprint)
        expected = {
            "bits per token": (self.code_dim, int(model.code_dim)),
            "input sample rate": (self.sample_rate_input, int(model.sample_rate_input)),
            "output sample rate": (self.sample_rate_output, int(model.sample_rate_output)),
            "samples per token": (self.samples_per_token, int(model.hop_length)),
        }
        wrong = [f"{k} {got} (the model has {want})" for k, (got, want) in expected.items() if got != want]
        if wrong:
            raise CorruptHeaderError(f"the header contradicts model {name!r}: {'; '.join(wrong)}; the file is damaged")
        tokens = int(model.num_tokens(self.model_num_samples)) if self.model_num_samples else 0
        if tokens != self.num_tokens:
            raise CorruptHeaderError(
                f"the header says {self.num_samples} samples at {self.original_rate} Hz, which take {tokens} tokens "
                f"with model {name!r}, but the stream holds {self.num_tokens}; the file is damaged"
            )
        if check_weights:
            check_weights_digest(model, self.model_name, self.weights)

    def info(self) -> dict:
        """Header fields and derived facts, for ``focalcodec info``."""
        return {
            "format_version": self.version,
            "model": self.model_name,
            "config_fingerprint": self.fingerprint,
            "weights_digest": self.weights or None,
            "code_dim": self.code_dim,
            "codebook_size": 1 << self.code_dim,
            "sample_rate_input": self.sample_rate_input,
            "sample_rate_output": self.sample_rate_output,
            "token_rate": self.token_rate,
            "original_sample_rate": self.original_rate,
            "num_samples": self.num_samples,
            "num_tokens": self.num_tokens,
            "duration_s": round(self.duration, 6),
            "header_bytes": self.header_size,
            "payload_bytes": self.payload_size,
            "file_bytes": self.size,
            "nominal_bitrate_bps": self.nominal_bitrate,
            "file_bitrate_bps": round(self.bitrate, 3),
        }

    # -- serialisation -----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The ``.fc`` file contents (see docs/bitstream.md), in this stream's format version."""
        payload = pack_tokens(self.tokens, self.code_dim)
        name = self.model_name.encode("utf-8")
        head = _PREFIX.pack(MAGIC, self.version, 0, self.code_dim, len(name)) + name
        ids = (bytes.fromhex(self.fingerprint),) + ((bytes.fromhex(self.weights),) if self.version >= 2 else ())
        head += _FIELDS[self.version].pack(
            *ids,
            self.sample_rate_input,
            self.sample_rate_output,
            self.samples_per_token,
            self.original_rate,
            self.num_samples,
            self.num_tokens,
            zlib.crc32(payload),
        )
        return head + _CRC.pack(zlib.crc32(head)) + payload

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "bitstream") -> CompressedAudio:
        """Parse and validate a ``.fc`` file's contents; raise a :class:`BitstreamError`
        subclass naming the problem. Nothing is allocated from what the header says before
        the fields are checked (the tokens come from the bytes actually present)."""
        data = bytes(data)
        n = len(data)
        if n == 0:
            raise TruncatedFileError(f"{source} is empty (0 bytes); encode the audio again")
        if n < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
            if n < len(MAGIC) and MAGIC.startswith(data):
                raise TruncatedFileError(f"{source}: only {n} bytes, the file was cut off; copy or download it again")
            raise ForeignFileError(
                f"{source} is not a FocalCodec file (it does not start with {MAGIC!r}); "
                "pass a .fc file written by `focalcodec encode`"
            )
        if n < _PREFIX.size:
            raise TruncatedFileError(f"{source}: only {n} bytes, the header was cut off; copy or download it again")
        _, version, flags, code_dim, name_len = _PREFIX.unpack_from(data)
        if version > FORMAT_VERSION:
            raise UnsupportedVersionError(
                f"{source} uses bitstream format version {version}, but this focalcodec reads versions up to "
                f"{FORMAT_VERSION}; upgrade focalcodec (pip install -U focalcodec)"
            )
        if version < 1:
            raise CorruptHeaderError(f"{source}: invalid format version {version}; the header is damaged")
        if flags == FLAG_STREAM:
            raise UnsupportedVersionError(
                f"{source} is a streamable .fc stream (written by `focalcodec stream-encode`), not a whole "
                "file; decode it with `focalcodec stream-decode`"
            )
        size = header_size(name_len, version)
        if n < size:
            raise TruncatedFileError(
                f"{source}: only {n} bytes but the header alone takes {size}; "
                "the file was cut off, copy or download it again"
            )
        (header_crc,) = _CRC.unpack_from(data, size - _CRC.size)
        if zlib.crc32(data[: size - _CRC.size]) != header_crc:
            raise CorruptHeaderError(f"{source}: header checksum mismatch; the file is damaged")
        fields = _FIELDS[version].unpack_from(data, _PREFIX.size + name_len)
        if version >= 2:
            fp, weights, *fields = fields
        else:
            (fp, *fields), weights = fields, b""
        rate_in, rate_out, spt, orig_rate, num_samples, num_tokens, payload_crc = fields
        if flags != 0:
            raise UnsupportedVersionError(
                f"{source} uses format features (flags {flags:#04x}) this focalcodec does not know; upgrade focalcodec"
            )
        try:
            name = data[_PREFIX.size : _PREFIX.size + name_len].decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptHeaderError(f"{source}: the model name is not valid UTF-8; the header is damaged") from None
        problems = []
        if not 1 <= code_dim <= MAX_CODE_DIM:
            problems.append(f"bits per token {code_dim} not in [1, {MAX_CODE_DIM}]")
        if name_len == 0:
            problems.append("empty model name")
        lo, hi = RATE_RANGE
        rates = {"model input rate": rate_in, "model output rate": rate_out, "original rate": orig_rate}
        problems += [f"{k} {v} Hz not in [{lo}, {hi}]" for k, v in rates.items() if not lo <= v <= hi]
        if not 1 <= spt <= MAX_SAMPLES_PER_TOKEN:
            problems.append(f"token hop {spt} not in [1, {MAX_SAMPLES_PER_TOKEN}]")
        if num_samples == 0:
            problems.append("zero samples")
        elif not problems:
            model_samples = num_samples * rate_in // orig_rate
            if (
                model_samples == 0
                or num_tokens > model_samples // spt + 2
                or num_tokens < model_samples // spt - 2
                or num_tokens == 0
            ):
                problems.append(f"{num_tokens} tokens cannot describe {num_samples} samples at {orig_rate} Hz")
        if problems:
            raise CorruptHeaderError(f"{source}: invalid header ({'; '.join(problems)})")
        expected = size + payload_size(num_tokens, code_dim)
        if n < expected:
            raise TruncatedFileError(
                f"{source}: {n} bytes but the header announces {expected} ({num_tokens} tokens); "
                "the file was cut off, copy or download it again"
            )
        if n > expected:
            raise CorruptFileError(f"{source}: {n - expected} unexpected bytes after the {expected}-byte stream")
        payload = data[size:]
        if zlib.crc32(payload) != payload_crc:
            raise ChecksumError(f"{source}: token data checksum (CRC32) mismatch; the file is damaged")
        spare = 8 * len(payload) - num_tokens * code_dim
        if spare and payload[-1] & ((1 << spare) - 1):
            raise CorruptFileError(f"{source}: the padding bits after the last token are not zero; the file is damaged")
        tokens = unpack_tokens(payload, num_tokens, code_dim)
        return cls(
            tokens=tokens,
            model_name=name,
            fingerprint=fp.hex(),
            code_dim=code_dim,
            sample_rate_input=rate_in,
            sample_rate_output=rate_out,
            samples_per_token=spt,
            original_rate=orig_rate,
            num_samples=num_samples,
            weights=weights.hex(),
            version=version,
        )

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the ``.fc`` file atomically; refuse to replace an existing file unless ``overwrite``."""
        from .outputs import write_bytes

        return write_bytes(path, self.to_bytes(), force=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> CompressedAudio:
        """Read and validate a ``.fc`` file."""
        from .limits import check_input_file

        path = check_input_file(path, "bitstream file", BitstreamError)
        return cls.from_bytes(path.read_bytes(), source=str(path))

    @classmethod
    def describe(cls, model: Any, tokens: np.ndarray, original_rate: int, num_samples: int) -> CompressedAudio:
        """The stream of ``tokens`` made by ``model`` (a FocalCodec) from ``num_samples``
        samples at ``original_rate``."""
        spt = model.sample_rate_input / model.token_rate
        if not math.isclose(spt, round(spt)):
            raise BitstreamError(f"the model's token hop {spt} is not a whole number of samples")
        return cls(
            tokens=np.asarray(tokens),
            model_name=model.model_id,
            fingerprint=model.fingerprint,
            code_dim=model.code_dim,
            sample_rate_input=model.sample_rate_input,
            sample_rate_output=model.sample_rate_output,
            samples_per_token=int(round(spt)),
            original_rate=int(original_rate),
            num_samples=int(num_samples),
            weights=model.weights_sha256,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompressedAudio):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    def __repr__(self) -> str:
        return (
            f"CompressedAudio(model={self.model_name!r}, tokens={self.num_tokens}, D={self.code_dim}, "
            f"duration={self.duration:.3f}s, bytes={self.size})"
        )
