"""The .fc format: packing at exactly D bits, the size formula, and one specific error per
kind of bad file, plus a fuzz test over mutated streams."""

from __future__ import annotations

import math
import random
import struct
import zlib

import numpy as np
import pytest
from conftest import fixture_model

from focalcodec.bitstream import (
    FORMAT_VERSION,
    BitstreamError,
    ChecksumError,
    CompressedAudio,
    CorruptFileError,
    CorruptHeaderError,
    ForeignFileError,
    ModelMismatchError,
    TruncatedFileError,
    UnsupportedVersionError,
    pack_tokens,
    payload_size,
    unpack_tokens,
)
from focalcodec.errors import OutputError

DOCUMENTED = (
    ForeignFileError,
    TruncatedFileError,
    CorruptFileError,
    CorruptHeaderError,
    ChecksumError,
    UnsupportedVersionError,
)


def make_stream(
    num_samples: int = 160000,
    code_dim: int = 13,
    spt: int = 320,
    seed: int = 0,
    name: str = "focalcodec_50hz",
    weights: str = "cd" * 8,
) -> CompressedAudio:
    """A stream as the 50 Hz model writes it for ``num_samples`` samples at 16 kHz (format
    version 2; ``weights=""`` gives a version-1 stream)."""
    num_tokens = (num_samples - 400) // 320 + 1 if spt == 320 else math.ceil(num_samples / spt)
    toks = np.random.default_rng(seed).integers(0, 1 << code_dim, num_tokens)
    return CompressedAudio(
        tokens=toks,
        model_name=name,
        fingerprint="ab" * 32,
        code_dim=code_dim,
        sample_rate_input=16000,
        sample_rate_output=16000,
        samples_per_token=spt,
        original_rate=16000,
        num_samples=num_samples,
        weights=weights,
    )


def header_size(name: str = "focalcodec_50hz", version: int = FORMAT_VERSION) -> int:
    return (56 if version == 1 else 64) + len(name)


def refresh_header_crc(data: bytearray, name_len: int) -> bytearray:
    """Recompute the header CRC after editing header fields (as a buggy writer would)."""
    end = (56 if data[4] == 1 else 64) + name_len - 4
    data[end : end + 4] = struct.pack("<I", zlib.crc32(bytes(data[:end])))
    return data


@pytest.mark.parametrize("code_dim", [1, 2, 7, 8, 11, 12, 13, 16, 17, 31, 32])
def test_pack_round_trip_every_width(code_dim: int) -> None:
    rng = np.random.default_rng(code_dim)
    for n in (1, 2, 3, 7, 8, 9, 100):
        toks = rng.integers(0, 1 << code_dim, n, dtype=np.int64)
        toks[0] = (1 << code_dim) - 1  # all ones
        packed = pack_tokens(toks, code_dim)
        assert len(packed) == math.ceil(n * code_dim / 8) == payload_size(n, code_dim)
        np.testing.assert_array_equal(unpack_tokens(packed, n, code_dim), toks)


def test_packing_is_msb_first() -> None:
    assert pack_tokens(np.array([1]), 13) == bytes([0b00000000, 0b00001000])
    assert pack_tokens(np.array([4096, 1]), 13) == bytes([0x80, 0x00, 0x00, 0x40])


def test_pack_rejects_out_of_range_tokens() -> None:
    with pytest.raises(ValueError, match="2\\^13"):
        pack_tokens(np.array([8192]), 13)
    with pytest.raises(ValueError):
        pack_tokens(np.array([-1]), 13)


def test_ten_seconds_at_50hz_is_header_plus_ceil_13_times_499_over_8() -> None:
    stream = make_stream(160000)
    data = stream.to_bytes()
    assert stream.num_tokens == 499
    assert len(data) == header_size() + math.ceil(13 * 499 / 8) == header_size() + 811
    assert stream.size == len(data) and stream.header_size == header_size()


def test_round_trip_keeps_every_field() -> None:
    stream = make_stream(12345, code_dim=16, spt=320)
    back = CompressedAudio.from_bytes(stream.to_bytes())
    assert back == stream
    np.testing.assert_array_equal(back.tokens, stream.tokens)
    assert back.info()["num_samples"] == 12345 and back.version == FORMAT_VERSION
    assert back.fingerprint == "ab" * 8 and back.weights == "cd" * 8
    assert back.nominal_bitrate == 16 * 50


def test_version_1_files_still_read_and_round_trip() -> None:
    """Files of format version 1 (no weights digest, 8 bytes shorter) are read and
    re-serialised unchanged."""
    old = make_stream(16000, weights="")
    data = old.to_bytes()
    assert data[4] == 1 and len(data) == header_size(version=1) + payload_size(49, 13)
    back = CompressedAudio.from_bytes(data)
    assert back.version == 1 and back.weights == "" and back.to_bytes() == data
    assert back.info()["weights_digest"] is None


def test_save_and_load(tmp_path) -> None:
    stream = make_stream(16000)
    path = stream.save(tmp_path / "a.fc")
    assert CompressedAudio.load(path) == stream
    with pytest.raises(OutputError, match="overwrite"):
        stream.save(path)
    stream.save(path, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["a.fc"]  # no temporary left behind


def test_truncated_files_at_every_length() -> None:
    data = make_stream(16000).to_bytes()
    for n in range(0, len(data)):
        with pytest.raises(TruncatedFileError, match="cut off|empty"):
            CompressedAudio.from_bytes(data[:n])


def test_corrupted_header_byte() -> None:
    data = make_stream(16000).to_bytes()
    for pos in range(5, header_size()):  # every byte after magic and version
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises((CorruptHeaderError, TruncatedFileError, UnsupportedVersionError)):
            CompressedAudio.from_bytes(bytes(bad))
    bad = bytearray(data)
    bad[20] ^= 1  # inside the name: caught by the header CRC
    with pytest.raises(CorruptHeaderError, match="header checksum"):
        CompressedAudio.from_bytes(bytes(bad))


def test_flipped_payload_bit_fails_the_crc() -> None:
    data = make_stream(16000).to_bytes()
    for bit in range(0, 8 * (len(data) - header_size()), 7):
        bad = bytearray(data)
        bad[header_size() + bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ChecksumError, match="CRC32"):
            CompressedAudio.from_bytes(bytes(bad))


def test_foreign_files(tmp_path) -> None:
    import soundfile as sf

    sf.write(str(tmp_path / "x.wav"), np.zeros(100, dtype=np.float32), 16000)
    for data in ((tmp_path / "x.wav").read_bytes(), b"hello world\n", b"\x00" * 100, b"PK\x03\x04" + b"\x00" * 60):
        with pytest.raises(ForeignFileError, match="not a FocalCodec file"):
            CompressedAudio.from_bytes(data)


def test_newer_version_and_unknown_flags() -> None:
    data = bytearray(make_stream(16000).to_bytes())
    data[4] = FORMAT_VERSION + 1
    with pytest.raises(UnsupportedVersionError, match="upgrade"):
        CompressedAudio.from_bytes(bytes(data))
    data = bytearray(make_stream(16000).to_bytes())
    data[5] = 0x01
    with pytest.raises(UnsupportedVersionError, match="upgrade"):
        CompressedAudio.from_bytes(bytes(refresh_header_crc(data, len("focalcodec_50hz"))))
    data = bytearray(make_stream(16000).to_bytes())
    data[4] = 0
    with pytest.raises(CorruptHeaderError, match="version 0"):
        CompressedAudio.from_bytes(bytes(data))


def test_trailing_bytes_and_padding_bits() -> None:
    data = make_stream(16000).to_bytes()
    with pytest.raises(CorruptFileError, match="unexpected bytes"):
        CompressedAudio.from_bytes(data + b"\x00")
    stream = make_stream(16000)  # 49 tokens * 13 bits: 3 padding bits
    bad = bytearray(stream.to_bytes())
    bad[-1] |= 1
    payload = bytes(bad[header_size() :])
    bad[header_size() - 8 : header_size() - 4] = struct.pack("<I", zlib.crc32(payload))
    with pytest.raises(CorruptFileError, match="padding"):
        CompressedAudio.from_bytes(bytes(refresh_header_crc(bad, len("focalcodec_50hz"))))


def test_impossible_header_fields_with_a_valid_crc() -> None:
    name_len = len("focalcodec_50hz")
    fields_at = 8 + name_len + 8  # the weights digest; the rates follow it
    base = make_stream(16000).to_bytes()
    cases = [
        (6, "<B", 0),  # code_dim 0
        (6, "<B", 40),  # code_dim 40
        (fields_at + 8, "<I", 0),  # rate_in 0
        (fields_at + 16, "<I", 0),  # samples per token 0
        (fields_at + 20, "<I", 0),  # original rate 0
        (fields_at + 24, "<Q", 0),  # no samples
        (fields_at + 32, "<Q", 0),  # no tokens
        (fields_at + 20, "<I", 1),  # original rate 1 Hz
        (fields_at + 8, "<I", 2**31),  # rate_in 2^31 Hz
        (fields_at + 12, "<I", 999),  # rate_out below 1 kHz
    ]
    for pos, fmt, value in cases:
        bad = bytearray(base)
        struct.pack_into(fmt, bad, pos, value)
        with pytest.raises(CorruptHeaderError, match="invalid header"):
            CompressedAudio.from_bytes(bytes(refresh_header_crc(bad, name_len)))
    bad = bytearray(base)  # token count far from what the length implies
    struct.pack_into("<Q", bad, fields_at + 32, 10**6)
    with pytest.raises(CorruptHeaderError, match="cannot describe"):
        CompressedAudio.from_bytes(bytes(refresh_header_crc(bad, name_len)))


def test_model_mismatch() -> None:
    model = fixture_model("tiny_50hz")
    other = fixture_model("tiny_25hz")
    stream = CompressedAudio.describe(model, np.zeros(49, dtype=np.int64), 16000, 16000)
    stream.check_model(model)
    with pytest.raises(ModelMismatchError, match="tiny_50hz"):
        stream.check_model(other)
    renamed = CompressedAudio(**{**stream.__dict__, "fingerprint": "00" * 8})
    with pytest.raises(ModelMismatchError, match="--model"):
        renamed.check_model(model)


def test_constructor_validates() -> None:
    with pytest.raises(ValueError, match="code_dim"):
        make_stream(16000, code_dim=33)
    with pytest.raises(ValueError, match="num_samples"):
        CompressedAudio(**{**make_stream(16000).__dict__, "num_samples": 0})


def _mutate(rng: random.Random, data: bytes, name_len: int) -> bytes:
    """One random mutation of a valid stream."""
    buf = bytearray(data)
    kind = rng.randrange(9)
    if kind == 0:  # flip one bit anywhere
        pos = rng.randrange(len(buf))
        buf[pos] ^= 1 << rng.randrange(8)
    elif kind == 1:  # random bytes anywhere
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
    elif kind == 2:  # truncate
        del buf[rng.randrange(len(buf)) :]
    elif kind == 3:  # append
        buf += bytes(rng.randrange(256) for _ in range(rng.randint(1, 9)))
    elif kind == 4:  # delete a run
        pos = rng.randrange(len(buf))
        del buf[pos : pos + rng.randint(1, 5)]
    elif kind == 5:  # insert a run
        pos = rng.randrange(len(buf))
        buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 5)))
    elif kind in (6, 7):  # header field edits with a recomputed header CRC (a buggy writer)
        version = buf[4]
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(4, header_size(version=version) - 4)
            buf[pos] = rng.choice((0, 1, 255, rng.randrange(256)))
        if buf[7] == name_len and buf[4] == version:
            refresh_header_crc(buf, name_len)
    else:  # payload edit with both CRCs recomputed: must decode to other valid tokens
        hs = header_size(version=buf[4])
        if len(buf) > hs:
            buf[rng.randrange(hs, len(buf))] ^= 1 << rng.randrange(8)
            buf[hs - 8 : hs - 4] = struct.pack("<I", zlib.crc32(bytes(buf[hs:])))
            refresh_header_crc(buf, name_len)
    return bytes(buf)


def test_fuzz_only_documented_errors() -> None:
    rng = random.Random(1234)
    seeds = [
        make_stream(n, code_dim=d, seed=n, weights=w).to_bytes()
        for n, d, w in (
            (16000, 13, "cd" * 8),
            (5000, 12, ""),
            (1000, 16, "01" * 8),
            (400, 11, ""),
            (3333, 13, "ff" * 8),
        )
    ]
    name_len = len("focalcodec_50hz")
    seen = {}
    valid = 0
    for case in range(12000):
        data = _mutate(rng, seeds[case % len(seeds)], name_len)
        try:
            parsed = CompressedAudio.from_bytes(data)
        except DOCUMENTED as exc:
            seen[type(exc).__name__] = seen.get(type(exc).__name__, 0) + 1
            assert str(exc)
            continue
        except BitstreamError as exc:  # pragma: no cover - an undocumented subclass
            pytest.fail(f"undocumented error {type(exc).__name__}: {exc}")
        valid += 1
        assert parsed.to_bytes() == data  # anything accepted is a canonical, valid stream
    assert set(seen) >= {
        "ForeignFileError",
        "TruncatedFileError",
        "CorruptHeaderError",
        "ChecksumError",
        "UnsupportedVersionError",
        "CorruptFileError",
    }
    assert valid > 0
