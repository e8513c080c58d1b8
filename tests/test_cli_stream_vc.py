"""CLI: ``focalcodec stream`` and ``focalcodec vc`` run end to end on the fixture models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from conftest import FIXTURES, speech_files

from focalcodec.cli import main
from focalcodec.vc import SpeakerSet

CAUSAL = str(FIXTURES / "tiny_causal_4k")
OFFLINE = str(FIXTURES / "tiny_50hz")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def short_files():
    return sorted(speech_files(), key=lambda f: sf.info(str(f)).frames)[:2]


def test_stream_file_report(short_files, tmp_path, capsys) -> None:
    src = short_files[0]
    out = tmp_path / "out.wav"
    assert main(["stream", str(src), "-o", str(out), "--model", CAUSAL, "--block-ms", "37", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mode"] == "stream" and report["algorithmic_latency_ms"] == 80.0
    assert report["chunks"] > 0 and report["latency_p99_ms"] >= report["latency_p50_ms"] > 0
    assert report["rtf"] > 0
    info = sf.info(str(out))
    assert info.samplerate == 24000 and info.frames == sf.info(str(src)).frames * 3 // 2


def test_stream_non_causal_and_int8(short_files, tmp_path, capsys) -> None:
    src = short_files[0]
    assert main(["stream", str(src), "-o", str(tmp_path / "a.wav"), "--model", OFFLINE]) == 0
    assert "pseudo-stream" in capsys.readouterr().out
    assert sf.info(str(tmp_path / "a.wav")).frames == sf.info(str(src)).frames
    assert main(["stream", str(src), "--model", CAUSAL, "--precision", "int8"]) == 0
    assert "int8" in capsys.readouterr().out
    args = ["stream", str(src), "--model", CAUSAL, "--precision", "float16", "--decode-precision", "int8", "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["precision"] == "float16" and report["decode_precision"] == "int8"


def test_stream_errors(short_files, capsys) -> None:
    assert main(["stream", "--model", CAUSAL]) == 1
    assert "--mic" in capsys.readouterr().err
    assert main(["stream", str(short_files[0]), "--model", OFFLINE, "--precision", "int8"]) == 1
    assert main(["stream", str(short_files[0]), "--model", OFFLINE, "--decode-precision", "int8"]) == 1


def test_vc_reference_save_and_reload(short_files, tmp_path) -> None:
    src, ref = short_files
    out1, out2, spk = tmp_path / "vc1.wav", tmp_path / "vc2.wav", tmp_path / "voice.safetensors"
    args = ["--model", CAUSAL, "--features-model", OFFLINE]
    assert main(["vc", str(src), "--reference", str(ref), "-o", str(out1), "--save-speaker-set", str(spk), *args]) == 0
    assert SpeakerSet.load(spk).sources == [str(ref)]
    assert main(["vc", str(src), "--speaker-set", str(spk), "-o", str(out2), *args]) == 0
    a, rate = sf.read(str(out1))
    b, _ = sf.read(str(out2))
    assert rate == 24000 and len(a) == sf.info(str(src)).frames * 3 // 2
    assert (a == b).all()  # the saved voice converts identically
    out3 = tmp_path / "vc3.wav"
    assert main(["vc", str(src), "--speaker-set", str(spk), "-o", str(out3), "--stream", *args]) == 0
    streamed, _ = sf.read(str(out3))
    assert streamed.shape == a.shape  # the streamed conversion is the offline one (16-bit WAVs: 1 step apart)
    np.testing.assert_allclose(streamed, a, atol=2 / 32768, rtol=0)


def test_vc_errors(short_files, tmp_path, capsys) -> None:
    src, ref = short_files
    assert main(["vc", str(src), "-o", str(tmp_path / "x.wav"), "--model", CAUSAL]) == 1
    assert "--reference" in capsys.readouterr().err
    assert main(["vc", "--reference", str(ref), "--model", OFFLINE]) == 1
    assert (
        main(
            [
                "vc",
                str(src),
                "--reference",
                str(tmp_path / "missing.wav"),
                "-o",
                str(tmp_path / "y.wav"),
                "--model",
                OFFLINE,
            ]
        )
        == 1
    )


def test_vc_saved_voice_uses_model_as_when_converting(short_files, tmp_path) -> None:
    """Without SOURCE, --model still makes the features (a non-causal model is its own features
    model), so saving a voice alone gives the set a conversion with --reference builds."""
    src, ref = short_files
    alone, with_source = tmp_path / "alone.safetensors", tmp_path / "with.safetensors"
    assert main(["vc", "--reference", str(ref), "--save-speaker-set", str(alone), "--model", OFFLINE, "-q"]) == 0
    argv = [
        "vc",
        str(src),
        "--reference",
        str(ref),
        "--save-speaker-set",
        str(with_source),
        "-o",
        str(tmp_path / "x.wav"),
    ]
    assert main([*argv, "--model", OFFLINE, "-q"]) == 0
    a, b = SpeakerSet.load(alone), SpeakerSet.load(with_source)
    assert a.model_weights == b.model_weights and (a.feats == b.feats).all()


def test_vc_topk_above_the_voice_is_one_actionable_line(short_files, tmp_path, capsys) -> None:
    src, ref = short_files
    argv = ["vc", str(src), "--reference", str(ref), "-o", str(tmp_path / "x.wav"), "--model", OFFLINE]
    assert main([*argv, "--topk", "100000", "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fewer than topk=100000" in err[0] and "--topk" in err[0], err
    assert list(tmp_path.iterdir()) == []
