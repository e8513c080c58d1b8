"""focalcodec.compress / decompress on real speech with the fixture models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import FIXTURE_NAMES, FIXTURES, SPEECH, fixture_model

import focalcodec
from focalcodec import CompressedAudio, InputError
from focalcodec.bitstream import ModelMismatchError
from focalcodec.compression import encode_audio
from focalcodec.errors import OutputError

CLIP = SPEECH / "eval" / "s2i_9944c8ee.flac"  # 1.61 s, the shortest utterance


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_round_trip_real_speech_every_config(name: str, tmp_path) -> None:
    codec = fixture_model(name)
    n = sf.info(str(CLIP)).frames
    out = tmp_path / "clip.fc"
    data = focalcodec.compress(CLIP, codec, out)
    assert out.read_bytes() == data
    stream = CompressedAudio.from_bytes(data)
    assert stream.num_tokens == int(codec.num_tokens(n))
    assert len(data) == stream.header_size + math.ceil(codec.code_dim * stream.num_tokens / 8)
    assert stream.model_name == name and stream.original_rate == 16000 and stream.num_samples == n
    assert stream.nominal_bitrate == codec.bitrate
    sig = focalcodec.audio.load_audio(CLIP)
    np.testing.assert_array_equal(stream.tokens, codec.encode(sig).tokens.numpy())
    audio, rate = focalcodec.decompress(out, codec)
    assert rate == codec.sample_rate_output
    assert audio.shape == (n * rate // 16000,) and audio.dtype == torch.float32
    with torch.no_grad():  # the reference's one-pass synthesis of the same tokens
        ref = codec.toks_to_sig(torch.from_numpy(stream.tokens)[None], output_length=audio.shape[0])[0]
    torch.testing.assert_close(audio, ref, atol=1e-4, rtol=0)
    back, rate = focalcodec.decompress(data, codec, output_rate="input")
    assert rate == 16000 and back.shape == (n,)


def test_tokens_match_the_model() -> None:
    codec = fixture_model("tiny_25hz")
    sig = focalcodec.audio.load_audio(CLIP)
    stream = encode_audio(CLIP, codec)
    np.testing.assert_array_equal(stream.tokens, codec.encode(sig).tokens.numpy())


def test_arrays_int16_and_channels_first() -> None:
    codec = fixture_model("tiny_50hz")
    x = 0.3 * np.sin(np.arange(12000) / 7.0).astype(np.float32)
    a = focalcodec.compress(x, codec)
    b = focalcodec.compress(torch.from_numpy(x), codec)
    assert a == b
    pcm = (x * 32767).astype(np.int16)
    s16 = CompressedAudio.from_bytes(focalcodec.compress(pcm, codec))
    assert s16.num_samples == 12000
    with pytest.warns(UserWarning, match="2 channels mixed down"):
        st = CompressedAudio.from_bytes(focalcodec.compress(np.stack([x, x]), codec))
    np.testing.assert_array_equal(st.tokens, CompressedAudio.from_bytes(a).tokens)
    at48 = CompressedAudio.from_bytes(focalcodec.compress(x, codec, sample_rate=48000))
    assert at48.original_rate == 48000 and at48.num_samples == 12000 and at48.model_num_samples == 4000
    audio, rate = focalcodec.decompress(at48, codec, output_rate="input")
    assert (rate, audio.shape) == (48000, (12000,))
    audio, rate = focalcodec.decompress(at48, codec, output_rate=22050)
    assert (rate, audio.shape) == (22050, (12000 * 22050 // 48000,))


def test_outputs_are_not_overwritten(tmp_path) -> None:
    codec = fixture_model("tiny_50hz")
    out = tmp_path / "x.fc"
    out.write_bytes(b"keep")
    with pytest.raises(OutputError, match="overwrite"):
        focalcodec.compress(CLIP, codec, out)
    assert out.read_bytes() == b"keep"
    data = focalcodec.compress(CLIP, codec, out, overwrite=True)
    wav = tmp_path / "x.wav"
    wav.write_bytes(b"keep")
    with pytest.raises(OutputError):
        focalcodec.decompress(data, codec, wav)
    focalcodec.decompress(data, codec, wav, overwrite=True)
    assert sf.info(str(wav)).frames == sf.info(str(CLIP)).frames
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.fc", "x.wav"]


def test_model_identity_is_enforced() -> None:
    data = focalcodec.compress(CLIP, fixture_model("tiny_50hz"))
    with pytest.raises(ModelMismatchError, match="tiny_50hz"):
        focalcodec.decompress(data, fixture_model("tiny_12_5hz"))
    with pytest.raises(InputError, match="not a published preset"):
        focalcodec.decompress(data)  # no model: the header names a non-preset model
    audio, _ = focalcodec.decompress(data, FIXTURES / "tiny_50hz")  # a checkpoint directory
    assert audio.shape[0] == sf.info(str(CLIP)).frames


def test_bad_arguments() -> None:
    codec = fixture_model("tiny_50hz")
    with pytest.raises(InputError, match="sample_rate is only for arrays"):
        focalcodec.compress(CLIP, codec, sample_rate=8000)
    with pytest.raises(InputError, match="not bytes"):
        focalcodec.compress(b"RIFF", codec)
    with pytest.raises(InputError, match="too short"):
        focalcodec.compress(np.zeros(2, dtype=np.float32), codec, sample_rate=48000)
    with pytest.raises(InputError, match="output rate"):
        focalcodec.decompress(focalcodec.compress(np.zeros(500, dtype=np.float32), codec), codec, output_rate="fast")


@pytest.mark.parametrize("output_rate", [None, "input", 44100])
def test_streamed_file_equals_in_memory_decode(output_rate, tmp_path) -> None:
    from focalcodec.compression import decompress_to_file
    from focalcodec.longform import Windowing

    codec = fixture_model("tiny_25hz")
    x = 0.2 * np.sin(np.arange(30000) / 13.0).astype(np.float32)
    data = focalcodec.compress(x, codec, sample_rate=22050)
    small = Windowing(window=1.0, context=0.25, lookahead=0.25, crossfade=0.1)  # several windows
    audio, rate = focalcodec.decompress(data, codec, output_rate=output_rate, windowing=small)
    path, num, rate2 = decompress_to_file(data, codec, tmp_path / "s.wav", output_rate=output_rate, windowing=small)
    assert (num, rate2) == (audio.shape[0], rate) == (30000 * rate // 22050, rate)
    written, file_rate = sf.read(str(path), dtype="float32")
    assert file_rate == rate and written.shape == (num,)
    np.testing.assert_allclose(written, np.clip(audio.numpy(), -1, 1), atol=1 / 32768 + 1e-6)
    with pytest.raises(OutputError):
        decompress_to_file(data, codec, path)


def test_failed_streamed_write_leaves_nothing(tmp_path) -> None:
    from focalcodec.compression import decompress_to_file

    codec = fixture_model("tiny_50hz")
    data = focalcodec.compress(np.zeros(4000, dtype=np.float32), codec)
    with pytest.raises(focalcodec.audio.AudioError, match=".wav or .flac"):
        decompress_to_file(data, codec, tmp_path / "x.mp3")
    with pytest.raises(ModelMismatchError):
        decompress_to_file(data, fixture_model("tiny_25hz"), tmp_path / "x.wav")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("suffix", "fmt", "subtype", "rate"),
    [("ogg", "OGG", "VORBIS", 44100), ("mp3", "MP3", "MPEG_LAYER_III", 48000), ("wav", "WAV", "PCM_24", 22050)],
)
def test_compressed_formats_and_integer_pcm(suffix: str, fmt: str, subtype: str, rate: int, tmp_path) -> None:
    codec = fixture_model("tiny_50hz")
    path = tmp_path / f"x.{suffix}"
    sf.write(str(path), 0.3 * np.sin(np.arange(rate // 2) / 9.0), rate, format=fmt, subtype=subtype)
    n = sf.info(str(path)).frames
    stream = CompressedAudio.from_bytes(focalcodec.compress(path, codec))
    assert (stream.original_rate, stream.num_samples) == (rate, n)
    audio, out_rate = focalcodec.decompress(stream, codec, output_rate="input")
    assert (out_rate, audio.shape) == (rate, (n,))
