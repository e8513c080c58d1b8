"""Every baseline codec runs through the common interface and spends about its nominal bitrate."""

from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest
from conftest import FIXTURES, SPEECH, fixture_model

from focalcodec.audio import load_audio, resample
from focalcodec.errors import InputError
from focalcodec.eval.baselines import (
    Codec,
    Codec2Codec,
    CodecUnavailable,
    FocalCodecCodec,
    Reconstruction,
    build_codec,
    codec_names,
    ogg_packet_sizes,
    register_codec,
)
from focalcodec.eval.metrics import build_metric

CLIP = SPEECH / "eval" / "ls_devclean_84-121123-0009.flac"


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return load_audio(CLIP).numpy()[:32000]  # 2 s


@pytest.fixture(scope="module")
def stoi():
    return build_metric("stoi")


# name -> (nominal bit/s, lowest acceptable STOI)
CLASSIC = {
    "codec2-700c": (700, 0.4),
    "codec2-1200": (1200, 0.45),
    "codec2-2400": (2400, 0.5),
    "codec2-3200": (3200, 0.5),
    "opus-6": (6000, 0.7),
    "opus-8": (8000, 0.75),
}


@pytest.mark.parametrize("name", sorted(CLASSIC))
def test_classic_baseline_runs_at_its_bitrate(name, clip, stoi):
    codec = build_codec(name)
    nominal, min_stoi = CLASSIC[name]
    assert codec.name == name and codec.nominal_bitrate == nominal
    rec = codec.roundtrip(clip)
    assert isinstance(rec, Reconstruction) and rec.audio.dtype == np.float32
    y = resample(rec.audio, rec.sample_rate, 16000)
    assert abs(y.shape[0] - clip.shape[0]) <= 2 and np.isfinite(y).all()
    bitrate = rec.num_bits / (clip.shape[0] / 16000)
    if name.startswith("codec2"):
        assert nominal <= bitrate <= nominal * 1.05  # whole frames of exactly the mode's bits
    else:
        assert 0.5 * nominal <= bitrate <= 1.3 * nominal  # VBR around the target
    assert rec.file_bits >= rec.num_bits
    assert stoi(clip, y, 16000)["stoi"] > min_stoi


def test_codec2_modes_order_by_quality(clip):
    pesq = build_metric("pesq_nb")
    low = build_codec("codec2-700c").roundtrip(clip)
    high = build_codec("codec2-3200").roundtrip(clip)
    score = lambda r: pesq(clip, resample(r.audio, r.sample_rate, 16000), 16000)["pesq_nb"]  # noqa: E731
    assert score(high) > score(low)


def test_codec2_command_line_backend_matches_library(clip):
    assert shutil.which("c2enc"), "apt-get install codec2"
    cli = Codec2Codec("1200", backend="cli").roundtrip(clip)
    lib = Codec2Codec("1200", backend="pycodec2").roundtrip(clip)
    assert cli.sample_rate == lib.sample_rate == 8000
    assert cli.audio.shape == lib.audio.shape
    # both are the same codec: the same bits and the same audio up to the build's float rounding
    # (identical here: correlation 1.0, max difference 0)
    assert cli.num_bits == lib.num_bits
    corr = np.corrcoef(cli.audio, lib.audio)[0, 1]
    assert corr > 0.99
    with pytest.raises(InputError):
        Codec2Codec("999")


def test_identity_is_lossless(clip):
    rec = build_codec("identity").roundtrip(clip)
    assert np.array_equal(rec.audio, clip) and rec.num_bits == 16 * clip.shape[0]


def test_focalcodec_baseline_with_fixture(clip):
    model = fixture_model("tiny_50hz")
    codec = FocalCodecCodec(model)
    rec = codec.roundtrip(clip)
    toks, _ = model.encode(clip)
    assert np.array_equal(rec.tokens, toks.numpy())
    assert rec.num_bits == toks.numel() * model.code_dim
    assert codec.nominal_bitrate == model.bitrate and codec.codebook_size == model.codebook_size
    assert rec.sample_rate == model.sample_rate_output
    from focalcodec.bitstream import CompressedAudio

    blob = CompressedAudio.describe(model, toks.numpy(), 16000, clip.shape[0]).to_bytes()
    assert rec.file_bits == 8 * len(blob) > rec.num_bits
    by_name = build_codec(f"focalcodec:{FIXTURES / 'tiny_50hz'}")
    assert np.array_equal(by_name.roundtrip(clip).tokens, rec.tokens)


def test_focalcodec_voice_conversion_uses_target_features(clip):
    codec = FocalCodecCodec(fixture_model("tiny_50hz"))
    other = load_audio(SPEECH / "eval" / "ls_testother_2414-128291-0009.flac").numpy()
    a = codec.convert(clip, [other])
    b = codec.convert(clip, [clip])
    assert a.audio.shape == b.audio.shape and not np.allclose(a.audio, b.audio)
    assert np.array_equal(a.tokens, b.tokens)  # the source's tokens do not depend on the target
    with pytest.raises(InputError):
        codec.convert(clip, [])


def test_ogg_packet_sizes_parses_pages():
    def page(segments, seq):
        table = bytes(segments)
        head = struct.pack("<4sBBqIII", b"OggS", 0, 0, 0, 1, seq, 0) + bytes([len(table)]) + table
        return head + bytes(sum(segments))

    data = page([19], 0) + page([255, 45, 10], 1) + page([255], 2) + page([1], 3)
    assert ogg_packet_sizes(data) == [19, 300, 10, 256]
    with pytest.raises(InputError):
        ogg_packet_sizes(b"junk")


def test_registry_and_errors(clip, monkeypatch, tmp_path):
    assert {"codec2-700c", "codec2-3200", "opus-6", "opus-8", "focalcodec", "identity"} <= set(codec_names())
    assert build_codec("opus-12").nominal_bitrate == 12000
    with pytest.raises(InputError, match="unknown codec"):
        build_codec("mp3-128")
    with pytest.raises(InputError):
        build_codec("opus-x")
    with pytest.raises(InputError):
        build_codec("no_such_module_xyz:factory")

    class Halver(Codec):
        name = "halver"
        nominal_bitrate = 1.0

        def roundtrip(self, audio):
            return Reconstruction(np.asarray(audio, np.float32) * 0.5, 16000, num_bits=1)

    register_codec("halver", lambda **kw: Halver())
    assert np.allclose(build_codec("halver").roundtrip(clip).audio, clip * 0.5)
    with pytest.raises(CodecUnavailable):
        build_codec("halver").convert(clip, [clip])

    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.delenv("FOCALCODEC_REFERENCE_DIR", raising=False)
    monkeypatch.delenv("FOCALCODEC_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(CodecUnavailable, match="FOCALCODEC_REFERENCE_DIR"):
        build_codec("reference:focalcodec_50hz")


def test_empty_or_nan_input_is_rejected():
    for name in ("codec2-1200", "opus-6", "identity"):
        with pytest.raises(InputError):
            build_codec(name).roundtrip(np.zeros(0, np.float32))
        with pytest.raises(InputError):
            build_codec(name).roundtrip(np.full(100, np.nan, np.float32))


def test_reference_hook_loads_a_local_hub_repo(clip, tmp_path, monkeypatch):
    """The reference hook loads ``hubconf.focalcodec`` from a local copy; here a stand-in
    repository whose entry point returns the fixture model (same API as the reference)."""
    (tmp_path / "hubconf.py").write_text(
        "dependencies = ['torch']\n\n"
        "def focalcodec(config='lucadellalib/focalcodec_50hz', pretrained=True, overrides=None, **kw):\n"
        "    from focalcodec import FocalCodec\n"
        f"    return FocalCodec.from_pretrained({str(FIXTURES / 'tiny_50hz')!r})\n"
    )
    monkeypatch.setenv("FOCALCODEC_REFERENCE_DIR", str(tmp_path))
    codec = build_codec("reference:focalcodec_50hz")
    assert codec.name == "reference:focalcodec_50hz" and codec.codebook_size == 2**13
    rec = codec.roundtrip(clip)
    model = fixture_model("tiny_50hz")
    assert np.array_equal(rec.tokens, model.encode(clip)[0].numpy())
    assert codec.nominal_bitrate == pytest.approx(model.bitrate, rel=0.05)
    assert codec.convert(clip, [clip]).audio.shape[0] > 0
