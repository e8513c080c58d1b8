"""Raw token pipes: ``focalcodec stream-encode`` / ``stream-decode`` and the streamable
``.fc`` variant (streamfile.py) on real speech with the tiny causal fixture: exact tokens and
audio, a real pipe between two processes, a stream cut mid-frame, raw PCM, bad streams."""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import FIXTURES, ROOT, speech_files

from focalcodec import CompressedAudio, FocalCodec
from focalcodec.audio import load_audio
from focalcodec.bitstream import (
    CorruptFileError,
    CorruptHeaderError,
    ForeignFileError,
    ModelMismatchError,
    TruncatedFileError,
)
from focalcodec.cli import main
from focalcodec.streamfile import FrameReader, FrameWriter, StreamHeader
from focalcodec.streaming import StreamDecoder, StreamEncoder

pytestmark = pytest.mark.usefixtures("one_thread")
CAUSAL = str(FIXTURES / "tiny_causal_4k")
HEADER = 46 + len("tiny_causal_4k")  # the streamable header (version 2): 46 + n bytes


@pytest.fixture(scope="module")
def codec():
    from conftest import fixture_model

    return fixture_model("tiny_causal_4k")


@pytest.fixture(scope="module")
def clip():
    return sorted(speech_files(), key=lambda f: sf.info(str(f)).frames)[1]  # 1.8 s of speech


def reference(codec, x: np.ndarray):
    enc, dec = StreamEncoder(codec), StreamDecoder(codec)
    toks = torch.cat([enc.push(torch.from_numpy(x)), enc.flush()])
    audio = torch.cat([dec.push(toks), dec.flush()])
    return toks.numpy(), audio.numpy()


def test_encode_decode_files_exact(codec, clip, tmp_path, capsys) -> None:
    x = load_audio(clip, 16000).numpy()
    toks, audio = reference(codec, x)
    fcs, raw = tmp_path / "a.fcs", tmp_path / "a.f32"
    assert main(["stream-encode", str(clip), "-o", str(fcs), "--model", CAUSAL]) == 0
    assert "600 bit/s on the wire" in capsys.readouterr().err
    frames = math.ceil(x.size / 1280)
    assert fcs.stat().st_size == HEADER + 6 * frames  # 48 bits per 80 ms, nothing else
    with open(fcs, "rb") as f:
        reader = FrameReader(f)
        got = np.concatenate(list(reader))
    np.testing.assert_array_equal(got, toks)
    assert reader.trailing == 0 and reader.header.bitrate == 600.0
    assert main(["stream-decode", str(fcs), "-o", str(raw), "--raw", "--model", CAUSAL]) == 0
    out = np.fromfile(raw, dtype="<f4")
    assert out.size == frames * 1920
    np.testing.assert_allclose(out, audio, atol=1e-4, rtol=0)
    wav = tmp_path / "a.wav"
    assert main(["stream-decode", str(fcs), "-o", str(wav), "--model", CAUSAL, "--output-rate", "input"]) == 0
    assert sf.info(str(wav)).samplerate == 16000 and abs(sf.info(str(wav)).frames - frames * 1280) <= 1
    assert main(["info", str(fcs)]) == 0
    info = capsys.readouterr().out
    assert '"type": "focalcodec stream"' in info and f'"frames": {frames}' in info and '"frame_bytes": 6' in info


def test_pipe_between_processes_and_a_cut_stream(codec, clip, tmp_path) -> None:
    """Raw float32 on stdin -> stream-encode -> pipe -> stream-decode -> raw float32 on
    stdout, as in `arecord ... | focalcodec stream-encode - -o - | ...`; then the same bytes
    cut in the middle of a frame."""
    x = load_audio(clip, 16000).numpy()
    toks, audio = reference(codec, x)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    py = [sys.executable, "-m", "focalcodec"]
    enc = subprocess.Popen(
        [*py, "stream-encode", "-", "-o", "-", "--model", CAUSAL, "--quiet"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    dec = subprocess.Popen(
        [*py, "stream-decode", "-", "-o", "-", "--raw", "--model", CAUSAL],
        stdin=enc.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    enc.stdout.close()
    enc.stdin.write(x.astype("<f4").tobytes())
    enc.stdin.close()
    out, dec_err = dec.communicate(timeout=300)
    assert enc.wait(timeout=300) == 0, enc.stderr.read().decode()
    enc.stderr.close()
    assert dec.returncode == 0, dec_err.decode()
    np.testing.assert_allclose(np.frombuffer(out, dtype="<f4"), audio, atol=1e-4, rtol=0)
    assert f"{len(toks) // 4} frames" in dec_err.decode()

    stream = tmp_path / "full.fcs"
    assert main(["stream-encode", str(clip), "-o", str(stream), "--model", CAUSAL, "--quiet"]) == 0
    cut = tmp_path / "cut.fcs"
    cut.write_bytes(stream.read_bytes()[: HEADER + 6 * 10 + 3])  # 10 frames and half of one
    raw = tmp_path / "cut.f32"
    with pytest.warns(UserWarning, match="ends inside a frame: its last 3 byte"):
        assert main(["stream-decode", str(cut), "-o", str(raw), "--raw", "--model", CAUSAL]) == 0
    got = np.fromfile(raw, dtype="<f4")
    assert got.size == 10 * 1920
    dec10 = StreamDecoder(codec).push(torch.from_numpy(toks[:40])).numpy()
    np.testing.assert_allclose(got, dec10, atol=1e-4, rtol=0)


def test_raw_s16_and_other_rates(codec, clip, tmp_path, monkeypatch, capsysbinary) -> None:
    x = load_audio(clip, 8000).numpy()
    pcm = np.round(np.clip(x, -1, 1) * 32767).astype("<i2")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(pcm.tobytes())))
    assert main(["stream-encode", "-", "-o", "-", "--raw", "s16", "--rate", "8000", "--model", CAUSAL]) == 0
    data = capsysbinary.readouterr().out
    header = StreamHeader.read(io.BytesIO(data))
    assert header.original_rate == 8000 and header.tokens_per_frame == 4
    frames = (len(data) - HEADER) // 6
    assert len(data) == HEADER + 6 * frames and frames == math.ceil(x.size * 2 / 1280)
    (tmp_path / "s.fcs").write_bytes(data)
    out = tmp_path / "s.s16"
    assert main(["stream-decode", str(tmp_path / "s.fcs"), "-o", str(out), "--raw", "s16", "--model", CAUSAL]) == 0
    assert np.fromfile(out, dtype="<i2").size == frames * 1920


def test_streamfile_frames_and_damage() -> None:
    header = StreamHeader("m", "00" * 8, 11, 16000, 24000, 320, 16000, 4)  # 44 bits in 6 bytes
    buf = io.BytesIO()
    writer = FrameWriter(buf, header)
    toks = np.arange(12) * 170
    writer.write(toks)
    with pytest.raises(ValueError, match="multiple of 4"):
        writer.write(toks[:3])
    data = buf.getvalue()
    assert len(data) == header.size + 3 * 6 and writer.bytes_written == len(data)
    np.testing.assert_array_equal(np.concatenate(list(FrameReader(io.BytesIO(data)))), toks)
    bad = bytearray(data)
    bad[header.size + 6 + 5] |= 0x01  # a padding bit of frame 1
    reader = FrameReader(io.BytesIO(bytes(bad)))
    with pytest.raises(CorruptFileError, match="frame 1 .* non-zero padding"):
        list(reader)
    for n in range(header.size):  # cut inside the header
        with pytest.raises(TruncatedFileError):
            FrameReader(io.BytesIO(data[:n]))
    for pos in range(6, header.size):  # any damaged header byte after the flags
        bad = bytearray(data)
        bad[pos] ^= 0x04
        with pytest.raises((CorruptHeaderError, TruncatedFileError)):
            FrameReader(io.BytesIO(bytes(bad)))
    with pytest.raises(ForeignFileError):
        FrameReader(io.BytesIO(b"RIFF" + b"\x00" * 60))


def test_stream_identity_is_the_weights(codec, clip, tmp_path, capsys) -> None:
    """Version 2 carries the weights digest: the same weights in a renamed folder decode, other
    weights in a folder of the same name are refused unless --allow-other-weights; version-1
    streams (no digest) are still read and checked by name."""
    fcs = tmp_path / "a.fcs"
    assert main(["stream-encode", str(clip), "-o", str(fcs), "--model", CAUSAL, "--quiet"]) == 0
    header = StreamHeader.read(io.BytesIO(fcs.read_bytes()))
    assert header.version == 2 and header.weights == codec.weights_sha256[:16]
    assert header.info()["weights_digest"] == header.weights
    renamed = tmp_path / "renamed_copy"
    shutil.copytree(CAUSAL, renamed)
    assert main(["stream-decode", str(fcs), "-o", str(tmp_path / "r.wav"), "--model", str(renamed), "-q"]) == 0
    other = FocalCodec.from_pretrained(CAUSAL)
    with torch.no_grad():
        other.decoder.backbone.embedding.weight.mul_(1.5)
    other.save_pretrained(tmp_path / "other" / "tiny_causal_4k")
    argv = [
        "stream-decode",
        str(fcs),
        "-o",
        str(tmp_path / "o.wav"),
        "--model",
        str(tmp_path / "other" / "tiny_causal_4k"),
    ]
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other weights" in err[0] and "--allow-other-weights" in err[0]
    assert not (tmp_path / "o.wav").exists()
    assert main([*argv, "--allow-other-weights", "-q"]) == 0 and (tmp_path / "o.wav").is_file()
    v1 = StreamHeader(*[getattr(header, f) for f in list(header.__dataclass_fields__)[:-1]])  # no digest
    data = v1.to_bytes()
    assert v1.version == 1 and data[4] == 1 and len(data) == header.size - 8
    back = StreamHeader.read(io.BytesIO(data))
    assert back == v1 and back.weights == ""
    back.check_model(codec)  # same name: accepted
    with pytest.raises(ModelMismatchError, match="version-1 stream names model"):
        back.check_model(FocalCodec.from_pretrained(renamed))
    back.check_model(FocalCodec.from_pretrained(renamed), check_weights=False)


def test_bad_streams_and_options_are_one_line_errors(codec, clip, tmp_path, capsys) -> None:
    fcs, fc = tmp_path / "a.fcs", tmp_path / "a.fc"
    assert main(["stream-encode", str(clip), "-o", str(fcs), "--model", CAUSAL, "--quiet"]) == 0
    assert main(["encode", str(clip), "-o", str(fc), "--model", CAUSAL]) == 0
    capsys.readouterr()
    data = fcs.read_bytes()
    (tmp_path / "hdr.fcs").write_bytes(data[:20])
    flipped = bytearray(data)
    flipped[HEADER - 6] ^= 0x01
    (tmp_path / "flip.fcs").write_bytes(bytes(flipped))
    cases = [
        (["stream-decode", str(tmp_path / "hdr.fcs"), "-o", str(tmp_path / "x.wav"), "--model", CAUSAL], "header"),
        (["stream-decode", str(tmp_path / "flip.fcs"), "-o", str(tmp_path / "x.wav"), "--model", CAUSAL], "checksum"),
        (["stream-decode", str(fc), "-o", str(tmp_path / "x.wav"), "--model", CAUSAL], "focalcodec decode"),
        (["stream-decode", str(clip), "-o", str(tmp_path / "x.wav"), "--model", CAUSAL], "not a FocalCodec stream"),
        (["stream-decode", str(fcs), "-o", str(tmp_path / "x.wav"), "--model", str(FIXTURES / "tiny_50hz")], "model"),
        (["stream-decode", str(fcs), "-o", "-", "--model", CAUSAL], "--raw"),
        (["stream-decode", str(fcs), "-o", str(tmp_path / "x.mp3"), "--model", CAUSAL], ".wav or .flac"),
        (["stream-decode", str(fcs), "-o", str(fcs), "--model", CAUSAL, "-f"], "is the input"),
        (["stream-encode", str(clip), "-o", str(fcs), "--model", CAUSAL], "--force"),
        (["stream-encode", str(clip), "-o", str(tmp_path / "y.fcs"), "--model", str(FIXTURES / "tiny_50hz")], "causal"),
        (["decode", str(fcs), "-o", str(tmp_path / "x.wav"), "--model", CAUSAL], "stream-decode"),
    ]
    for argv, match in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and match in err[0], (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.fc", "a.fcs", "flip.fcs", "hdr.fcs"]
    with pytest.raises(Exception, match="stream-decode"):
        CompressedAudio.from_bytes(data)


def test_rate_is_for_raw_input_only(clip, tmp_path, capsys) -> None:
    """--rate describes headerless PCM; with an audio file (whose header has the rate) it would
    be silently ignored, so it is refused before any work; a bad value names what --rate takes."""
    out = tmp_path / "x.fcs"
    cases = [
        (["stream-encode", str(clip), "-o", str(out), "--rate", "8000"], "--raw"),
        (["stream-encode", "-", "-o", str(out), "--rate", "0"], "sample rate in Hz"),
    ]
    for argv, match in cases:
        assert main([*argv, "--model", str(tmp_path / "no-model")]) == 1, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0] and "'input'" not in err[0], (argv, err)
    assert not out.exists()


def test_stream_encode_says_when_it_mixes_channels_down(clip, tmp_path, capsys) -> None:
    x, rate = sf.read(str(clip), dtype="float32")
    stereo = tmp_path / "stereo.wav"
    sf.write(str(stereo), np.stack([x, 0.5 * x], axis=1), rate)
    with pytest.warns(UserWarning, match="2 channels mixed down to mono"):
        assert main(["stream-encode", str(stereo), "-o", str(tmp_path / "s.fcs"), "--model", CAUSAL, "-q"]) == 0
