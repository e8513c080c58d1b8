"""The rules every command follows (README, Rules): outputs checked before any work and
never replaced without -f/--force (never an input), one ``error:`` line per failure, the same
flag for the same idea, ``--help`` without torch, defaults shown, one RTF."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import FIXTURES, SPEECH

from focalcodec.cli import build_parser, main

TINY = str(FIXTURES / "tiny_50hz")
CAUSAL = str(FIXTURES / "tiny_causal_4k")
CLIP = SPEECH / "eval" / "s2i_9944c8ee.flac"
MISSING_MODEL = "/no/such/model/folder"  # loading it fails: an output error must come first
pytestmark = pytest.mark.usefixtures("one_thread")


def one_error_line(capsys, argv) -> str:
    """Run the CLI: exit code 1, exactly one ``error:`` line on stderr that is not an
    internal error (a crash turned into a line); return it."""
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    assert "internal error" not in err[0] and "Traceback" not in err[0], err
    return err[0]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


# -- flags, help --------------------------------------------------------------------------------
def test_same_flag_for_the_same_idea() -> None:
    from focalcodec.cli.common import window_seconds

    writes = {"encode", "decode", "resynth", "stream", "vc", "tokenize", "detokenize", "evaluate", "export", "prepare"}
    writes |= {"stream-encode", "stream-decode"}
    for name, p in subcommands().items():
        options = {s: a for a in p._actions for s in a.option_strings}
        assert p.description, f"{name} has no description"
        if name in writes:
            assert options.get("-o") is options.get("--output") is not None, name
            assert options.get("-f") is options.get("--force") is not None, name
        if "--quiet" in options:
            assert options["-q"] is options["--quiet"], name
        if "--window" in options:  # seconds of audio per window, everywhere
            assert options["--window"].type is window_seconds, name
        if "--output-rate" in options:
            rate = options["--output-rate"].type
            with pytest.raises(argparse.ArgumentTypeError):
                rate("0")
            assert options["--output-rate"].metavar in ("HZ", "HZ|input"), name  # cli.common's option
        for action in p._actions:  # every option says what it is for in --help
            if action.option_strings and action.help != argparse.SUPPRESS:
                assert action.help, f"{name} {action.option_strings[-1]} has no help text"
    assert "--force" in {s for a in subcommands()["train"]._actions for s in a.option_strings}


def test_help_shows_defaults_and_imports_no_torch() -> None:
    encode_help = subcommands()["encode"].format_help()
    assert "(default: 60.0)" in encode_help and "(default: lucadellalib/focalcodec_50hz)" in encode_help
    assert "(default: 1000)" in subcommands()["tokenize"].format_help()
    script = (
        "import sys\n"
        "from focalcodec.cli import main\n"
        "for argv in sys.argv[1:]:\n"
        "    try:\n"
        "        main(argv.split() + ['--help'])\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, argv\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'soundfile') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    names = ["encode", "decode", "resynth", "info", "stream", "vc", "tokenize", "detokenize"]
    names += ["evaluate", "export", "prepare", "train", "serve", "stream-encode", "stream-decode", "listen"]
    proc = subprocess.run(
        [sys.executable, "-c", script, "", *names], capture_output=True, text=True, env=_env(), timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_torch_free_copies_match_their_sources() -> None:
    """The CLI keeps two lists torch-free for --help; they must equal the originals."""
    from focalcodec.audio import RAW_FORMATS
    from focalcodec.cli import export as cli_export
    from focalcodec.cli import pipes
    from focalcodec.export import GRAPHS

    assert tuple(cli_export.GRAPHS) == tuple(GRAPHS)
    assert tuple(pipes.RAW_FORMATS) == tuple(RAW_FORMATS)


def _env() -> dict:
    import focalcodec

    src = str(Path(focalcodec.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize(
    "argv",
    [
        ["stream", "x.wav", "--block-ms", "nan"],
        ["stream", "x.wav", "--output-rate", "0"],
        ["decode", "x.fc", "-o", "y.wav", "--output-rate", "99999999999"],
        ["encode", "x.wav", "-o", "y.fc", "--window", "inf"],
        ["tokenize", "--data", "d", "-o", "o", "--batch-seconds", "-1"],
    ],
)
def test_bad_values_are_one_error_line(argv, capsys) -> None:
    line = one_error_line(capsys, argv)
    assert argv[-2] in line  # names the option


# -- outputs ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("in") / "short.wav"
    x, rate = sf.read(str(CLIP), dtype="float32")
    sf.write(str(path), x[: rate * 2], rate)
    return path


def _existing(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(b"precious")
    return path


def test_vc_refuses_existing_outputs_and_its_inputs_before_work(short_wav, tmp_path, capsys) -> None:
    out = _existing(tmp_path, "out.wav")
    base = ["vc", str(short_wav), "--reference", str(short_wav), "--model", MISSING_MODEL]
    assert "exists; use --force" in one_error_line(capsys, [*base, "-o", str(out)])
    spk = _existing(tmp_path, "voice.safetensors")
    line = one_error_line(capsys, [*base, "-o", str(tmp_path / "new.wav"), "--save-speaker-set", str(spk)])
    assert "voice.safetensors exists" in line
    assert "is the input" in one_error_line(capsys, [*base, "-o", str(short_wav), "--force"])
    assert out.read_bytes() == spk.read_bytes() == b"precious"
    assert not (tmp_path / "new.wav").exists()


def test_stream_refuses_existing_output_and_its_input(short_wav, tmp_path, capsys) -> None:
    out = _existing(tmp_path, "out.wav")
    assert "exists" in one_error_line(capsys, ["stream", str(short_wav), "-o", str(out), "--model", MISSING_MODEL])
    line = one_error_line(capsys, ["stream", str(short_wav), "-o", str(short_wav), "--force", "--model", CAUSAL])
    assert "is the input" in line
    assert out.read_bytes() == b"precious"
    assert main(["stream", str(short_wav), "-o", str(out), "--force", "--model", CAUSAL, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sf.info(str(out)).samplerate == 24000
    # RTF is defined once: processing time / audio time.
    assert report["rtf"] == pytest.approx(report["processing_seconds"] / report["audio_seconds"])


def test_prepare_export_and_train_export_refuse_before_work(short_wav, tmp_path, capsys) -> None:
    manifest = _existing(tmp_path, "train.jsonl")
    assert "exists" in one_error_line(capsys, ["prepare", str(short_wav.parent), "-o", str(manifest)])
    assert manifest.read_bytes() == b"precious"
    graphs = tmp_path / "graphs"
    graphs.mkdir()
    _existing(graphs, "encode.pt")
    argv = ["export", "--model", MISSING_MODEL, "-o", str(graphs), "--format", "torchscript"]
    assert "encode.pt exists" in one_error_line(capsys, argv)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    _existing(ckpt, "model.safetensors")
    argv = ["train", "--export", str(ckpt), "--model", "focalcodec_50hz", "all=" + MISSING_MODEL]
    assert "ckpt exists" in one_error_line(capsys, argv)


def test_detokenize_and_evaluate_refuse_before_work(tmp_path, capsys) -> None:
    pytest.importorskip("pyarrow")
    from focalcodec.corpus import tokenize_corpus

    data = tmp_path / "data"
    data.mkdir()
    x, rate = sf.read(str(CLIP), dtype="float32")
    sf.write(str(data / "a.wav"), x[: rate * 2], rate)
    tokenize_corpus(data, tmp_path / "tok", TINY, num_workers=0, progress=False)
    out = tmp_path / "audio"
    out.mkdir()
    _existing(out, "a.wav")
    argv = ["detokenize", str(tmp_path / "tok"), "--all", "-o", str(out), "--model", MISSING_MODEL]
    assert "a.wav exists" in one_error_line(capsys, argv)
    assert main(["detokenize", str(tmp_path / "tok"), "--all", "-o", str(out), "-f", "-q"]) == 0
    assert sf.info(str(out / "a.wav")).frames > 0  # replaced with --force
    report = tmp_path / "report"
    report.mkdir()
    _existing(report, "report.json")
    argv = ["evaluate", "--data", str(data), "-o", str(report), "--codec", "identity", "--no-plots"]
    assert "report.json exists" in one_error_line(capsys, argv)


def test_tokenize_force_and_window_are_part_of_the_run(tmp_path, capsys) -> None:
    pytest.importorskip("pyarrow")
    data = tmp_path / "data"
    data.mkdir()
    x, rate = sf.read(str(CLIP), dtype="float32")
    sf.write(str(data / "a.wav"), x[: rate * 2], rate)
    out = tmp_path / "tok"
    base = ["tokenize", "--data", str(data), "-o", str(out), "--model", TINY, "--workers", "0", "-q"]
    assert main(base) == 0
    capsys.readouterr()
    line = one_error_line(capsys, [*base, "--window", "5"])  # another geometry: another run
    assert "--force" in line and "its window was 60 s" in line and "pass --window 60 to resume it" in line
    assert main([*base, "--window", "5", "--force"]) == 0


# -- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["encode", "IN", "-o", "OUT/x.fc", "--model", TINY],
        ["vc", "IN", "--reference", "IN", "-o", "OUT/x.wav", "--model", TINY],
        ["stream", "IN", "--model", CAUSAL],
        ["export", "--model", TINY, "-o", "OUT", "--format", "torchscript"],
        ["info", "--model", TINY],
        ["vc", "--reference", "IN", "--save-speaker-set", "OUT/v.safetensors", "--features-model", TINY],
        ["evaluate", "--data", "IN", "-o", "OUT/r", "--codec", "identity", "--no-plots", "--metrics", "stoi"],
    ],
)
def test_cuda_without_cuda_is_one_line(argv, short_wav, tmp_path, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    argv = [str(short_wav) if a == "IN" else a.replace("OUT", str(tmp_path)) for a in argv]
    assert "CUDA" in one_error_line(capsys, [*argv, "--device", "cuda"])


@pytest.mark.parametrize("device", ["meta", "xla", "hpu", "tpu"])
def test_devices_that_cannot_run_the_model_are_one_line(device, short_wav, tmp_path, capsys) -> None:
    """torch knows "meta" (no data) and "xla" (needs torch_xla) as device names, but neither runs
    the codec here: refused by the --device check, before any work, like an unknown name."""
    line = one_error_line(
        capsys, ["encode", str(short_wav), "-o", str(tmp_path / "x.fc"), "--model", TINY, "--device", device]
    )
    assert line.startswith(f"error: --device {device}") or line.startswith(f"error: --device {device!r}"), line
    assert "internal error" not in line and list(tmp_path.iterdir()) == []


def test_missing_optional_packages_are_named_before_work(monkeypatch, tmp_path, capsys) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n in ("onnx", "matplotlib") else real(n, *a))
    line = one_error_line(capsys, ["export", "--model", MISSING_MODEL, "-o", str(tmp_path / "g")])
    assert "'onnx'" in line and "pip install" in line
    line = one_error_line(capsys, ["evaluate", "--data", str(tmp_path), "-o", str(tmp_path / "r"), "--codec", "x"])
    assert "'matplotlib'" in line and "--no-plots" in line


def test_file_names_are_not_doubled(tmp_path, capsys) -> None:
    bad = tmp_path / "garbage.wav"
    bad.write_bytes(b"not audio at all" * 10)
    line = one_error_line(capsys, ["encode", str(bad), "-o", str(tmp_path / "x.fc"), "--model", TINY])
    assert line.count("garbage.wav") == 1, line
    assert main(["encode", str(bad), str(CLIP), "-o", str(tmp_path / "out"), "--model", TINY, "-q"]) == 1
    err = capsys.readouterr().err
    assert [ln.count("garbage.wav") for ln in err.splitlines() if "garbage" in ln] == [1], err


def test_non_utf8_manifest_and_damaged_shard(tmp_path, capsys) -> None:
    pytest.importorskip("pyarrow")
    manifest = tmp_path / "list.tsv"
    manifest.write_bytes(b"path\n" + "caf\u00e9.wav\n".encode("latin-1"))
    line = one_error_line(capsys, ["tokenize", "--data", str(manifest), "-o", str(tmp_path / "t"), "--model", TINY])
    assert "not UTF-8" in line
    from focalcodec.corpus import tokenize_corpus

    data = tmp_path / "data"
    data.mkdir()
    x, rate = sf.read(str(CLIP), dtype="float32")
    sf.write(str(data / "a.wav"), x[:rate], rate)
    tokenize_corpus(data, tmp_path / "tok", TINY, num_workers=0, progress=False)
    shard = next((tmp_path / "tok" / "shards").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes()[:100])
    line = one_error_line(capsys, ["detokenize", str(tmp_path / "tok"), "--all", "-o", str(tmp_path / "o")])
    assert "damaged" in line and "rebuild" in line


def test_warnings_go_through_tqdm(tmp_path) -> None:
    """In a plain process (pytest records warnings itself, and the CLI then leaves them to it)."""
    stereo = tmp_path / "stereo.wav"
    x, rate = sf.read(str(CLIP), dtype="float32")
    sf.write(str(stereo), np.stack([x[:rate], x[:rate]], axis=1), rate)
    script = (
        "import sys, tqdm\n"
        "lines = []\n"
        "tqdm.tqdm.write = classmethod(lambda cls, s, file=None, **k: lines.append(s))\n"
        "from focalcodec.cli import main\n"
        "assert main(sys.argv[1:]) == 0\n"
        "print(repr(lines))\n"
    )
    argv = ["encode", str(stereo), "-o", str(tmp_path / "s.fc"), "--model", TINY, "-q"]
    proc = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, env=_env(), timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = eval(proc.stdout.strip().splitlines()[-1])  # noqa: S307 - our own repr of a list of str
    assert any(s.startswith("warning:") and "mixed down" in s for s in lines), (lines, proc.stderr)
    assert "mixed down" not in proc.stderr  # nothing printed past tqdm


def test_progress_in_audio_seconds_for_one_long_file(tmp_path, capsys) -> None:
    x, rate = sf.read(str(CLIP), dtype="float32")
    long = tmp_path / "long.wav"
    sf.write(str(long), np.tile(x, 1 + 5 * rate // len(x))[: 5 * rate], rate)
    assert main(["encode", str(long), "-o", str(tmp_path / "l.fc"), "--model", TINY, "--window", "1"]) == 0
    err = capsys.readouterr().err
    assert "/5.0 [" in err and "s/s]" in err, err  # a bar counting the 5.0 seconds of audio
    assert main(["encode", str(long), "-o", str(tmp_path / "q.fc"), "--model", TINY, "--window", "1", "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_tests_needing_shared_skip_with_a_message(tmp_path) -> None:
    env = {**_env(), "FOCALCODEC_SHARED": str(tmp_path / "nowhere")}
    tests = Path(__file__).resolve().parent
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tests / "test_config.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tests.parent,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "needs the shared test data" in proc.stdout and "FOCALCODEC_SHARED" in proc.stdout
    assert " passed" in proc.stdout  # the tests that need nothing still run
