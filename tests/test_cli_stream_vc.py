"""CLI: ``focalcodec stream`` and ``focalcodec vc`` run end to end on the fixture models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from conftest import FIXTURES, fixture_model, speech_files

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


def test_vc_speaker_set_from_another_features_model_is_refused(short_files, tmp_path, capsys) -> None:
    """--speaker-set is checked against the features model (--features-model, or --model): before,
    a set built by another model converted silently into garbage."""
    import torch

    from focalcodec import FocalCodec

    src, ref = short_files
    spk = tmp_path / "voice.safetensors"
    assert main(["vc", "--reference", str(ref), "--save-speaker-set", str(spk), "--model", OFFLINE, "-q"]) == 0
    capsys.readouterr()
    argv = ["vc", str(src), "--speaker-set", str(spk), "-o", str(tmp_path / "x.wav"), "--model", CAUSAL, "-q"]
    # The causal model's features differ from the 50 Hz model that built the set.
    assert main([*argv, "--features-model", CAUSAL]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: speaker set") and "architecture" in err[0], err
    assert "tiny_causal_4k" in err[0] and "tiny_50hz" in err[0] and "--save-speaker-set" in err[0]
    # Same architecture, other weights: refused unless --allow-other-weights.
    model = FocalCodec.from_pretrained(OFFLINE)
    with torch.no_grad():
        model.decoder.backbone.embedding.weight.mul_(1.5)
    other = tmp_path / "other" / "tiny_50hz"
    model.save_pretrained(other)
    assert main([*argv, "--features-model", str(other)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other weights" in err[0] and "--allow-other-weights" in err[0], err
    assert not (tmp_path / "x.wav").exists()
    assert main([*argv, "--features-model", str(other), "--allow-other-weights"]) == 0
    assert (tmp_path / "x.wav").is_file()


def test_info_describes_a_speaker_set(short_files, tmp_path, capsys) -> None:
    """`info SET.safetensors` describes the set (before: 'cannot read ... as audio')."""
    from focalcodec import FocalCodec

    _, ref = short_files
    spk = tmp_path / "voice.safetensors"
    assert main(["vc", "--reference", str(ref), "--save-speaker-set", str(spk), "--model", OFFLINE, "-q"]) == 0
    capsys.readouterr()
    assert main(["info", str(spk)]) == 0
    info = json.loads(capsys.readouterr().out)
    speaker, model = SpeakerSet.load(spk), FocalCodec.from_pretrained(OFFLINE)
    assert info["type"] == "speaker set" and info["num_frames"] == speaker.num_frames > 0
    assert info["feature_dim"] == speaker.dim == model.feature_dim
    assert info["model_id"] == "tiny_50hz" and info["model_fingerprint"] == model.fingerprint
    assert info["model_weights_sha256"] == model.weights_sha256
    assert info["sources"] == [str(ref)] and info["frames_per_source"] == [speaker.num_frames]
    model_file = FIXTURES / "tiny_50hz" / "model.safetensors"  # a safetensors file that is not a set
    assert main(["info", str(model_file)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a speaker set" in err[0], err


def test_vc_stream_reads_the_source_piece_by_piece(short_files, tmp_path, monkeypatch) -> None:
    """vc --stream holds one block of the source at a time (it used to load the whole file):
    the source is never read whole, and no push carries more than one block of samples."""
    import focalcodec.audio
    from focalcodec.cli.vc import STREAM_BLOCK_CHUNKS
    from focalcodec.streaming import StreamCodec

    src, ref = short_files
    sig, rate = sf.read(str(src), dtype="float32")
    long_src = tmp_path / "long.wav"
    sf.write(str(long_src), np.tile(sig, 1 + 8 * rate // len(sig)), rate)  # over 8 s
    n = sf.info(str(long_src)).frames
    spk = tmp_path / "voice.safetensors"
    assert main(["vc", "--reference", str(ref), "--save-speaker-set", str(spk), "--model", OFFLINE, "-q"]) == 0

    def whole(*args, **kwargs):
        raise AssertionError("the source was read whole")

    pushed = []
    push = StreamCodec.push
    monkeypatch.setattr(StreamCodec, "push", lambda self, x: pushed.append(x.shape[-1]) or push(self, x))
    monkeypatch.setattr(focalcodec.audio, "load_audio", whole)
    monkeypatch.setattr(focalcodec.audio, "read_audio", whole)
    out = tmp_path / "out.wav"
    argv = ["vc", str(long_src), "--speaker-set", str(spk), "-o", str(out), "--stream", "-q"]
    assert main([*argv, "--model", CAUSAL, "--features-model", OFFLINE]) == 0
    block = STREAM_BLOCK_CHUNKS * fixture_model("tiny_causal_4k").chunk_size
    assert sum(pushed) == n and len(pushed) >= n // block and max(pushed) <= block, pushed
    assert sf.info(str(out)).frames == n * 3 // 2
