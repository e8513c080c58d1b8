"""Every bad input of issue 3: correct output or a specific error, and never a file (or a
temporary) left behind on failure. Python API and CLI."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import FIXTURE_NAMES, FIXTURES, SPEECH, fixture_model

import focalcodec
from focalcodec import CompressedAudio, FocalCodec, InputError
from focalcodec.audio import AudioError
from focalcodec.bitstream import (
    FORMAT_VERSION,
    ChecksumError,
    CorruptHeaderError,
    ForeignFileError,
    ModelMismatchError,
    TruncatedFileError,
    UnsupportedVersionError,
)
from focalcodec.cli import main
from focalcodec.windowing import Windowing

TINY = str(FIXTURES / "tiny_50hz")
CLIP = SPEECH / "eval" / "s2i_9944c8ee.flac"


def cli_error(capsys, argv) -> str:
    """Run the CLI, expect exit code 1 and exactly one line on stderr; return that line."""
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "Traceback" not in err[0], err
    return err[0]


def assert_empty(folder) -> None:
    assert list(folder.iterdir()) == [], list(folder.iterdir())


@pytest.fixture(scope="module")
def stream_bytes() -> bytes:
    return focalcodec.compress(CLIP, fixture_model("tiny_50hz"))


# -- audio -----------------------------------------------------------------------------------
def test_empty_file(tmp_path, capsys) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AudioError, match="empty"):
        focalcodec.compress(empty, fixture_model("tiny_50hz"), out / "x.fc")
    assert "empty" in cli_error(capsys, ["encode", str(empty), "-o", str(out / "x.fc"), "--model", TINY])
    sf.write(str(tmp_path / "noframes.wav"), np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="no samples"):
        focalcodec.compress(tmp_path / "noframes.wav", fixture_model("tiny_50hz"))
    with pytest.raises(InputError, match="no samples"):
        focalcodec.compress(np.zeros(0, dtype=np.float32), fixture_model("tiny_50hz"))
    assert_empty(out)


@pytest.mark.parametrize("kind", ["zeros", "clipped"])
def test_silence_and_clipping_give_exact_lengths(kind: str) -> None:
    codec = fixture_model("tiny_50hz")
    n = 8000 + 17
    if kind == "zeros":
        x = np.zeros(n, dtype=np.float32)
    else:  # a loud sine hard-clipped at full scale
        x = np.clip(3.0 * np.sin(np.arange(n) / 5.0), -1.0, 1.0).astype(np.float32)
    data = focalcodec.compress(x, codec)
    audio, rate = focalcodec.decompress(data, codec)
    assert audio.shape == (n,) and rate == 16000 and torch.isfinite(audio).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf(bad: float, tmp_path, capsys) -> None:
    codec = fixture_model("tiny_50hz")
    x = np.zeros(4000, dtype=np.float32)
    x[1234] = bad
    with pytest.raises(InputError, match="NaN or infinite"):
        focalcodec.compress(x, codec)
    path = tmp_path / "bad.wav"
    sf.write(str(path), x, 16000, subtype="FLOAT")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError, match="NaN or infinite"):
        focalcodec.compress(path, codec, out / "bad.fc")
    assert "NaN" in cli_error(capsys, ["encode", str(path), "-o", str(out / "bad.fc"), "--model", TINY])
    assert_empty(out)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fewer_than_400_samples(name: str) -> None:
    codec = fixture_model(name)
    for n in (1, 100, 399):
        x = 0.1 * np.random.default_rng(n).standard_normal(n).astype(np.float32)
        stream = CompressedAudio.from_bytes(focalcodec.compress(x, codec))
        assert stream.num_tokens == int(codec.num_tokens(n)) >= 1
        audio, rate = focalcodec.decompress(stream, codec, output_rate="input")
        assert audio.shape == (n,) and rate == 16000


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_other_sample_rates(rate: int, tmp_path) -> None:
    codec = fixture_model("tiny_50hz")
    n = rate // 2 + 3
    path = tmp_path / f"x{rate}.flac"
    sf.write(str(path), 0.3 * np.sin(np.arange(n) / 9.0), rate)
    stream = CompressedAudio.from_bytes(focalcodec.compress(path, codec))
    assert stream.original_rate == rate and stream.num_samples == n
    assert stream.model_num_samples == n * 16000 // rate
    audio, out_rate = focalcodec.decompress(stream, codec)
    assert out_rate == 16000 and audio.shape == (n * 16000 // rate,)
    out = tmp_path / "back.wav"
    focalcodec.decompress(stream, codec, out, output_rate="input")
    info = sf.info(str(out))
    assert (info.samplerate, info.frames) == (rate, n)


@pytest.mark.parametrize("channels", [2, 6])
def test_stereo_and_six_channels(channels: int, tmp_path) -> None:
    codec = fixture_model("tiny_50hz")
    n = 9000
    x = np.stack([0.1 * np.sin(np.arange(n) / (3.0 + c)) for c in range(channels)], axis=1)
    path = tmp_path / "multi.wav"
    sf.write(str(path), x, 16000)
    with pytest.warns(UserWarning, match=f"{channels} channels mixed down to mono"):
        stream = CompressedAudio.from_bytes(focalcodec.compress(path, codec))
    assert stream.num_samples == n
    audio, _ = focalcodec.decompress(stream, codec)
    assert audio.shape == (n,)


@pytest.mark.parametrize("minutes", [pytest.param(60, marks=pytest.mark.slow), 10])
def test_one_hour_file(minutes: int, tmp_path) -> None:
    """A real 1-hour (and, in the fast suite, 10-minute) WAV through the whole file path, with
    the model's parts replaced by cheap stand-ins that record how much they are given at
    once: windows stay bounded."""
    codec = FocalCodec.from_pretrained(FIXTURES / "tiny_50hz")
    seen = {"encode": 0, "decode": 0}

    def encode(wav, lengths=None):  # token i = the staircase level under it
        wav = torch.as_tensor(wav)
        seen["encode"] = max(seen["encode"], wav.shape[-1])
        t = int(codec.num_tokens(wav.shape[-1]))
        toks = torch.round(wav[torch.arange(t) * 320 + 100] * 1024 / 0.9).long()
        return focalcodec.EncodeOutput(toks, torch.tensor([t]))

    def decode(toks, token_lengths=None):
        t = int(torch.as_tensor(toks).shape[-1])
        seen["decode"] = max(seen["decode"], t)
        return focalcodec.DecodeOutput(torch.full((t * 320,), 0.25), torch.tensor([t * 320]))

    codec.encode, codec.decode = encode, decode
    n = minutes * 60 * 16000
    t = (n - 400) // 320 + 1
    path = tmp_path / "hour.wav"
    with sf.SoundFile(str(path), "w", 16000, 1, "PCM_16") as f:
        steps = np.arange(16000 * 60) // 320  # a staircase: one level per token position
        for minute in range(minutes):
            f.write((((steps + minute * 3000) % 1024) * 0.9 / 1024).astype(np.float32))
    data = focalcodec.compress(path, codec, tmp_path / "hour.fc")
    stream = CompressedAudio.from_bytes(data)
    assert stream.num_tokens == t and (minutes != 60 or t == 179999)
    assert len(data) == stream.header_size + math.ceil(13 * t / 8)
    np.testing.assert_array_equal(stream.tokens, np.arange(t) % 1024)  # windows stitched in place
    one = Windowing()  # the default: one window with its context is 60 s + 3 s + 1 s
    seconds = one.window + one.context + one.lookahead
    assert 0 < seen["encode"] <= seconds * 16000 + 80
    audio, rate = focalcodec.decompress(stream, codec)
    assert audio.shape == (n,) and rate == 16000
    assert 0 < seen["decode"] <= seconds * 50
    np.testing.assert_allclose(audio[::100_000].numpy(), 0.25)  # the cross-fades sum to one


# -- bitstreams ------------------------------------------------------------------------------
def _other_model_stream(data: bytes) -> bytes:
    stream = CompressedAudio.from_bytes(data)
    other = CompressedAudio.describe(fixture_model("tiny_12_5hz"), stream.tokens[:13], 16000, 16000)
    return other.to_bytes()


def _with_version(data: bytes) -> bytes:
    bad = bytearray(data)
    bad[4] = FORMAT_VERSION + 1
    return bytes(bad)


def _flip_payload_bit(data: bytes) -> bytes:
    bad = bytearray(data)
    bad[-3] ^= 0x04
    return bytes(bad)


def _corrupt_header(data: bytes) -> bytes:
    bad = bytearray(data)
    struct.pack_into("<I", bad, 8 + len("tiny_50hz") + 8, 22050)  # rate_in, CRC left stale
    return bytes(bad)


def _foreign(data: bytes) -> bytes:
    return CLIP.read_bytes()


BAD_STREAMS = {
    "truncated": (lambda d: d[: len(d) - 10], TruncatedFileError, "cut off"),
    "truncated_header": (lambda d: d[:30], TruncatedFileError, "cut off"),
    "corrupted_header": (_corrupt_header, CorruptHeaderError, "header checksum"),
    "flipped_payload_bit": (_flip_payload_bit, ChecksumError, "CRC32"),
    "foreign": (_foreign, ForeignFileError, "not a FocalCodec file"),
    "other_model": (_other_model_stream, ModelMismatchError, "tiny_12_5hz"),
    "unknown_version": (_with_version, UnsupportedVersionError, "upgrade"),
}


@pytest.mark.parametrize("case", sorted(BAD_STREAMS))
def test_bad_bitstreams(case: str, stream_bytes: bytes, tmp_path, capsys) -> None:
    mutate, error, message = BAD_STREAMS[case]
    src = tmp_path / "in.fc"
    src.write_bytes(mutate(stream_bytes))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(error, match=message):
        focalcodec.decompress(src, fixture_model("tiny_50hz"), out / "x.wav")
    with pytest.raises(error):
        focalcodec.decompress(src.read_bytes(), fixture_model("tiny_50hz"))
    line = cli_error(capsys, ["decode", str(src), "-o", str(out / "x.wav"), "--model", TINY])
    assert message in line
    assert_empty(out)


def test_cli_batch_goes_on_past_a_bad_file(stream_bytes: bytes, tmp_path, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "good.fc").write_bytes(stream_bytes)
    (src / "bad.fc").write_bytes(stream_bytes[:-1])
    assert main(["decode", str(src), "-o", str(tmp_path / "out"), "--model", TINY, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "bad.fc" in err and "1 of 2 files failed" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.wav"]


def test_a_folder_where_a_file_is_expected(tmp_path, capsys) -> None:
    """A folder given as the one input file is named as a folder (not "not found", not a bare
    OS error); an input folder without a matching file is named with what was looked for."""
    causal = str(FIXTURES / "tiny_causal_4k")
    folder = tmp_path / "speech.wav"
    folder.mkdir()
    out = tmp_path / "out"
    for argv in (
        ["info", str(folder)],
        ["stream", str(folder), "--model", causal],
        ["stream-encode", str(folder), "-o", str(out / "x.fcs"), "--model", causal],
        ["stream-decode", str(folder), "-o", str(out / "x.wav"), "--model", causal],
        ["vc", str(folder), "--reference", str(CLIP), "-o", str(out / "x.wav"), "--model", TINY],
    ):
        line = cli_error(capsys, argv)
        assert f"{folder} is a folder" in line, (argv, line)
    line = cli_error(capsys, ["encode", str(folder), "-o", str(out), "--model", TINY])
    assert str(folder) in line and ".flac" in line, line
    line = cli_error(capsys, ["decode", str(folder), "-o", str(out), "--model", TINY])
    assert str(folder) in line and ".fc" in line, line
    with pytest.raises(focalcodec.bitstream.BitstreamError, match="is a folder"):
        CompressedAudio.load(folder)
    assert not out.exists()


# -- the Python API: the reference-named conversions and encode/decode -----------------------
def _api_cases():
    sig = torch.randn(1, 4000, generator=torch.Generator().manual_seed(0)) * 0.1
    toks = torch.randint(0, 8192, (1, 12), generator=torch.Generator().manual_seed(1))
    feats = torch.randn(1, 12, 64)
    codes = torch.full((1, 12, 13), 13**-0.5)
    return [
        ("sig_to_toks", (sig[0],), r"sig must be \(B, N\).*sig\[None\]"),
        ("sig_to_toks", (sig[None],), r"sig must be \(B, N\)"),
        ("sig_to_feats", (sig[:, :0],), "sig is empty"),
        ("sig_to_codes", (sig * float("nan"),), "NaN"),
        ("sig_to_sig", (sig.long(),), "floating point samples"),
        ("sig_to_toks", (sig.to("meta"),), "meta device"),
        ("sig_to_toks", (sig, (), (), torch.tensor([2.0])), r"relative lengths in \[0, 1\]"),
        ("sig_to_toks", (sig, (), (), torch.tensor([4000])), r"relative lengths.*lengths=\.\.\."),
        ("sig_to_toks", (sig, (), (), torch.tensor([1.0, 0.5])), r"length must be \(1,\)"),
        ("toks_to_sig", (toks[0],), r"toks must be \(B, T'\).*toks\[None\]"),
        ("toks_to_sig", (toks - 9000,), r"\[0, 8192\).*found -"),
        ("toks_to_qfeats", (toks + 8192,), r"\[0, 8192\)"),
        ("toks_to_codes", (toks.float(),), "must be integers"),
        ("toks_to_sig", (toks[:, :0],), "is empty"),
        ("toks_to_sig", (toks.to("meta"),), "meta device"),
        ("codes_to_sig", (codes[..., :5],), r"codes must be \(B, T, 13\)"),
        ("codes_to_toks", (codes * float("nan"),), "NaN"),
        ("codes_to_qfeats", (codes.long(),), "floating point"),
        ("feats_to_toks", (feats[0],), r"feats must be \(B, T, 64\)"),
        ("feats_to_sig", (feats[..., :5],), r"feats must be \(B, T, 64\)"),
        ("lats_to_toks", (codes[..., :5],), r"lats must be \(\.\.\., 13\)"),
        ("toks_to_sig", (toks,), r"topk must be at least 1", {"matching_set": feats[0], "topk": 0}),
        ("toks_to_sig", (toks,), r"output_length must be .* >= 0", {"output_length": -1}),
    ]


@pytest.mark.parametrize("case", _api_cases(), ids=lambda c: f"{c[0]}:{c[2][:24]}")
def test_reference_api_refuses_bad_input(tiny50, case) -> None:
    """The reference-named methods: one InputError naming the problem, never a shape error from
    deep inside nn/ nor silent garbage (out-of-range or float tokens, NaN, empty, relative
    lengths that are not)."""
    name, args, match, *kwargs = case
    with pytest.raises(InputError, match=match):
        getattr(tiny50, name)(*args, **(kwargs[0] if kwargs else {}))


def test_reference_api_accepts_arrays_and_other_dtypes(tiny50) -> None:
    """NumPy arrays, float64 / bfloat16 and int16 / int32 PCM work as ``encode`` takes them:
    same tokens as float32 (PCM scaled to [-1, 1)); tensors needing gradients keep them."""
    pcm = (torch.randn(1, 4000, generator=torch.Generator().manual_seed(2)) * 3000).to(torch.int16)
    sig = pcm.float() / 32768
    want = tiny50.sig_to_toks(sig)
    assert torch.equal(want[0], tiny50.encode(sig[0]).tokens)
    for x in (pcm, pcm.int() * 65536, sig.double(), sig.numpy()):
        assert torch.equal(tiny50.sig_to_toks(x), want), x.dtype
    assert tiny50.sig_to_toks(sig.bfloat16()).shape == want.shape
    toks = want.numpy().astype(np.int32)
    assert torch.equal(tiny50.toks_to_sig(toks), tiny50.toks_to_sig(want))
    feats = tiny50.sig_to_feats(sig.clone().requires_grad_())
    assert feats.requires_grad


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: m.encode(torch.randn(2, 800), lengths=torch.tensor([True, True])), "whole numbers.*bool"),
        (lambda m: m.encode(torch.randn(2, 800), lengths=["a", "b"]), "lengths must be a tensor or array"),
        (lambda m: m.encode(torch.randn(800, device="meta")), "meta device"),
        (lambda m: m.decode(torch.zeros(5, dtype=torch.long, device="meta")), "meta device"),
        (lambda m: m.decode(torch.zeros(2, 5, dtype=torch.long), torch.tensor([5, 2], device="meta")), "meta"),
    ],
    ids=["bool-lengths", "str-lengths", "meta-audio", "meta-tokens", "meta-lengths"],
)
def test_encode_decode_refuse_odd_inputs(tiny50, call, match) -> None:
    """Bool lengths were read as 1 sample each (silent garbage); meta tensors and text
    lengths failed deep inside torch."""
    with pytest.raises(InputError, match=match):
        call(tiny50)


# -- focalcodec.audio: save_audio / load_audio from Python -----------------------------------
def test_save_audio_scales_pcm_and_keeps_mono(tmp_path) -> None:
    """int16 PCM was written as floats (every sample clipped to ±1); a (1, N) row is one signal."""
    from focalcodec.audio import load_audio, save_audio

    x = torch.linspace(-0.5, 0.5, 1600)
    save_audio(tmp_path / "pcm.wav", (x * 32767).round().to(torch.int16), 16000)
    save_audio(tmp_path / "row.wav", x[None].clone().requires_grad_(), 16000)
    for name in ("pcm.wav", "row.wav"):
        back = load_audio(tmp_path / name)
        assert back.shape == (1600,)
        assert torch.allclose(back, x, atol=1e-4), name


@pytest.mark.parametrize(
    "audio, rate, match",
    [
        (torch.randn(2, 1600) * 0.1, 16000, r"one mono signal.*\(2, 1600\)"),
        (torch.randn(1, 1, 1600) * 0.1, 16000, r"\(N,\) or \(1, N\)"),
        (torch.full((1600,), float("nan")), 16000, "NaN"),
        (torch.zeros(1600, dtype=torch.long), 16000, "floating point samples"),
        (torch.zeros(1600, device="meta"), 16000, "meta device"),
        (torch.zeros(1600), 0, "sample rate must be a whole number of Hz"),
        (torch.zeros(1600), 16000.5, "sample rate must be a whole number of Hz"),
    ],
    ids=["batch", "3-D", "nan", "int64", "meta", "rate-0", "rate-fraction"],
)
def test_save_audio_refuses_bad_input(tmp_path, audio, rate, match) -> None:
    """Rows of a batch were written one after the other as one signal, NaN as noise, a rate of 0
    failed inside libsndfile: one InputError and no file."""
    from focalcodec.audio import save_audio

    with pytest.raises(InputError, match=match):
        save_audio(tmp_path / "x.wav", audio, rate)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("rate", [0, -16000, 8000.5])
def test_load_audio_refuses_bad_rate(tmp_path, rate) -> None:
    from focalcodec.audio import load_audio

    sf.write(tmp_path / "a.wav", np.zeros(800, dtype=np.float32), 16000)
    with pytest.raises(InputError, match="sample rate must be a whole number of Hz"):
        load_audio(tmp_path / "a.wav", rate)


@pytest.mark.parametrize("scale", [32767.0, 2147483647.0])
def test_integer_pcm_stored_as_floats_is_refused(tiny50, scale) -> None:
    """``np.int16`` samples cast to float (peak in the thousands) were coded as a signal
    thousands of times full scale: silent garbage. Loud but real float audio still works."""
    pcm = torch.linspace(-0.5, 0.5, 4000)
    with pytest.raises(InputError, match=r"peaks at .*\[-1, 1\].*32768"):
        tiny50.encode(pcm * scale)
    with pytest.raises(InputError, match="peaks at"):
        tiny50.sig_to_toks((pcm * scale)[None])
    assert tiny50.encode(pcm * 8).tokens.numel() == tiny50.num_tokens(4000)  # +18 dBFS: clipped audio, coded


@pytest.mark.parametrize("source", [TINY, "someone/nothing"])
def test_from_pretrained_refuses_unknown_keywords(source) -> None:
    """A misspelt keyword (``cachedir=``) was dropped without a word for a local folder and, for
    a repo id, reported as "could not fetch ... (no network? TypeError)"."""
    from focalcodec import ConfigError

    with pytest.raises(ConfigError, match=r"unknown keyword argument.*cachedir.*cache_dir"):
        FocalCodec.from_pretrained(source, cachedir="/tmp/x")


@pytest.mark.parametrize(
    "where, match",
    [("bogus", r"map_location='bogus' is not a torch device"), ("cuda:99", r"map_location='cuda:99': (no CUDA|only)")],
)
def test_from_pretrained_checks_map_location(where, match) -> None:
    """An unknown or absent device failed inside torch (RuntimeError / AssertionError) after the
    weights were read; now one InputError first, as ``--device`` gets."""
    with pytest.raises(InputError, match=match):
        FocalCodec.from_pretrained(TINY, map_location=where)
