"""CLI round trips on real speech with a fixture model (passed as --model DIR)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import FIXTURES, SPEECH

from focalcodec import CompressedAudio
from focalcodec.cli import main

TINY = str(FIXTURES / "tiny_50hz")
CAUSAL = str(FIXTURES / "tiny_causal_4k")
CLIPS = ["s2i_9944c8ee.flac", "ravdess_03-01-06-02-01-01-14.flac", "ravdess_03-01-08-02-02-01-13.flac"]


@pytest.fixture
def speech_dir(tmp_path):
    """Three short real utterances, one of them in a sub-folder."""
    root = tmp_path / "speech"
    (root / "sub").mkdir(parents=True)
    shutil.copy(SPEECH / "eval" / CLIPS[0], root / CLIPS[0])
    shutil.copy(SPEECH / "eval" / CLIPS[1], root / CLIPS[1])
    shutil.copy(SPEECH / "eval" / CLIPS[2], root / "sub" / CLIPS[2])
    return root


def frames(path) -> int:
    return sf.info(str(path)).frames


def test_encode_decode_directory_round_trip(speech_dir, tmp_path, capsys) -> None:
    enc = tmp_path / "enc"
    assert main(["encode", str(speech_dir), "-o", str(enc), "--model", TINY]) == 0
    made = sorted(p.relative_to(enc).as_posix() for p in enc.rglob("*.fc"))
    assert made == sorted(
        [CLIPS[0].replace(".flac", ".fc"), CLIPS[1].replace(".flac", ".fc"), "sub/" + CLIPS[2].replace(".flac", ".fc")]
    )
    for fc in enc.rglob("*.fc"):
        src = next(speech_dir.rglob(fc.stem + ".flac"))
        n = frames(src)
        tokens = (n - 400) // 320 + 1
        assert fc.stat().st_size == 64 + len("tiny_50hz") + math.ceil(13 * tokens / 8)  # header + ceil(D*T/8)
    dec = tmp_path / "dec"
    assert main(["decode", str(enc), "-o", str(dec), "--model", TINY, "--format", "flac"]) == 0
    for wav in dec.rglob("*.flac"):
        src = next(speech_dir.rglob(wav.stem + ".flac"))
        assert frames(wav) == frames(src) and sf.info(str(wav)).samplerate == 16000
    assert "Traceback" not in capsys.readouterr().err


def test_single_file_info_and_output_rate(speech_dir, tmp_path, capsys) -> None:
    src = speech_dir / CLIPS[0]
    fc = tmp_path / "one.fc"
    assert main(["encode", str(src), "-o", str(fc), "--model", CAUSAL]) == 0
    assert "bit/s" in capsys.readouterr().out
    assert main(["info", str(fc)]) == 0
    info = json.loads(capsys.readouterr().out)
    n = frames(src)
    assert info["model"] == "tiny_causal_4k" and info["code_dim"] == 12 and info["num_samples"] == n
    assert info["num_tokens"] == math.ceil(n / 320) and info["file_bytes"] == fc.stat().st_size
    assert info["nominal_bitrate_bps"] == 600.0 and info["duration_s"] == pytest.approx(n / 16000)
    out = tmp_path / "one.wav"
    assert main(["decode", str(fc), "-o", str(out), "--model", CAUSAL]) == 0
    assert (sf.info(str(out)).samplerate, frames(out)) == (24000, n * 3 // 2)
    assert main(["decode", str(fc), "-o", str(out), "--model", CAUSAL, "--force", "--output-rate", "input"]) == 0
    assert (sf.info(str(out)).samplerate, frames(out)) == (16000, n)
    assert main(["decode", str(fc), "-o", str(out), "--model", CAUSAL, "--force", "--output-rate", "44100"]) == 0
    assert (sf.info(str(out)).samplerate, frames(out)) == (44100, n * 44100 // 16000)


def test_info_model_and_audio(speech_dir, capsys) -> None:
    assert main(["info", "--model", TINY]) == 0
    assert json.loads(capsys.readouterr().out)["model_id"] == "tiny_50hz"
    assert main(["info", str(speech_dir / CLIPS[1])]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["type"] == "audio" and info["sample_rate"] == 16000 and info["channels"] == 1


def test_refuses_to_overwrite_without_force(speech_dir, tmp_path, capsys) -> None:
    out = tmp_path / "x.fc"
    out.write_bytes(b"precious")
    assert main(["encode", str(speech_dir / CLIPS[0]), "-o", str(out), "--model", TINY]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--force" in err[0]
    assert out.read_bytes() == b"precious"
    assert main(["encode", str(speech_dir / CLIPS[0]), "-o", str(out), "--model", TINY, "--force"]) == 0
    CompressedAudio.load(out)


def test_npy_tokens_for_researchers(speech_dir, tmp_path) -> None:
    src = speech_dir / CLIPS[0]
    npy = tmp_path / "toks.npy"
    fc = tmp_path / "toks.fc"
    assert main(["encode", str(src), "-o", str(npy), "--model", TINY]) == 0
    assert main(["encode", str(src), "-o", str(fc), "--model", TINY]) == 0
    toks = np.load(npy)
    assert toks.dtype == np.int64 and toks.ndim == 1
    np.testing.assert_array_equal(toks, CompressedAudio.load(fc).tokens)
    out = tmp_path / "from_npy.wav"
    assert main(["decode", str(npy), "-o", str(out), "--model", TINY]) == 0
    assert frames(out) == toks.size * 320  # no header: natural length


def test_resynth(speech_dir, tmp_path) -> None:
    out = tmp_path / "re.wav"
    assert main(["resynth", str(speech_dir / CLIPS[1]), "-o", str(out), "--model", TINY]) == 0
    assert frames(out) == frames(speech_dir / CLIPS[1])


def test_errors_are_one_line(tmp_path, capsys) -> None:
    for argv in (
        ["encode", str(tmp_path / "missing.wav"), "-o", str(tmp_path / "x.fc"), "--model", TINY],
        ["decode", str(tmp_path), "-o", str(tmp_path / "o"), "--model", TINY],  # no .fc files
        ["info", str(tmp_path / "missing.fc")],
        ["encode", str(SPEECH / "eval" / CLIPS[0]), "-o", str(tmp_path / "x.fc"), "--model", str(tmp_path)],
    ):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_module_entry_point(tmp_path) -> None:
    bad = tmp_path / "bad.fc"
    bad.write_bytes(b"FCDC\x09")
    proc = subprocess.run([sys.executable, "-m", "focalcodec", "info", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error:") and "newer" not in proc.stderr and "Traceback" not in proc.stderr


def test_encode_to_stdout_is_only_the_stream(speech_dir, capsysbinary) -> None:
    """`encode X -o -` writes exactly the .fc bytes to standard output (the summary line goes to
    standard error), so `focalcodec encode x.wav -o - | ...` carries a valid stream."""
    src = speech_dir / CLIPS[0]
    assert main(["encode", str(src), "-o", "-", "--model", TINY]) == 0
    out, err = capsysbinary.readouterr()
    assert CompressedAudio.from_bytes(out).num_tokens == (frames(src) - 400) // 320 + 1
    assert b"tokens" in err


def test_stdout_refused_where_it_cannot_work(speech_dir, tmp_path, capsys) -> None:
    """Audio commands cannot write WAV/FLAC to a pipe, and several inputs cannot share one
    stream: each is one error line before any work, naming what to do (no --raw: these
    commands have none)."""
    for argv in (
        ["decode", str(tmp_path / "x.fc"), "-o", "-"],
        ["resynth", str(speech_dir / CLIPS[0]), "-o", "-"],
        ["encode", str(speech_dir), "-o", "-"],
    ):
        (tmp_path / "x.fc").write_bytes(b"")
        assert main([*argv, "--model", str(tmp_path / "no-model")]) == 1  # refused before the model loads
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "standard output" in err[0] and "add --raw" not in err[0], (argv, err)
    assert not (tmp_path / "-").exists() and not (speech_dir / "-").exists()
