"""The one output writer (focalcodec.outputs) and the one CLI error path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from focalcodec import outputs
from focalcodec.cli import main, message
from focalcodec.errors import InputError, OutputError
from focalcodec.outputs import check_targets, open_output, output_path, write_bytes, write_text


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_refuses_existing_without_force_and_replaces_with_force(tmp_path):
    target = tmp_path / "a.bin"
    write_bytes(target, b"one")
    with pytest.raises(OutputError, match="exists; use --force"):
        write_bytes(target, b"two")
    assert target.read_bytes() == b"one"
    write_bytes(target, b"two", force=True)
    assert target.read_bytes() == b"two"
    assert _leftovers(tmp_path) == []


def test_never_replaces_an_input_even_with_force(tmp_path):
    src = tmp_path / "in.wav"
    src.write_bytes(b"audio")
    for target in (src, tmp_path / "." / "in.wav"):
        with pytest.raises(OutputError, match="is the input"):
            write_bytes(target, b"x", force=True, inputs=[src])
    assert src.read_bytes() == b"audio"
    link = tmp_path / "link.wav"
    link.symlink_to(src)
    with pytest.raises(OutputError, match="is the input"):
        check_targets([link], inputs=[src], force=True)


def test_duplicates_and_unwritable_folders_are_refused_before_work(tmp_path):
    with pytest.raises(OutputError, match="several outputs"):
        check_targets([tmp_path / "x.wav", tmp_path / "sub" / ".." / "x.wav"])
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_targets([blocker / "out.wav"])


def test_failure_leaves_nothing_behind(tmp_path):
    target = tmp_path / "new" / "deeper" / "out.txt"
    with pytest.raises(RuntimeError), output_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert not (tmp_path / "new").exists()
    assert _leftovers(tmp_path) == []


def test_nothing_written_is_an_error(tmp_path):
    with pytest.raises(OutputError, match="nothing was written"), output_path(tmp_path / "x.txt"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_race_for_one_new_path_has_one_winner(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(OutputError, match="exists"), output_path(target) as first:
        first.write_text("first")
        with output_path(target) as second:  # two runs racing for one new path
            assert second != first
            second.write_text("second")
        # the second run published first; the first now loses cleanly
    assert target.read_text() == "second"
    with pytest.raises(OutputError, match="exists"):
        with output_path(target) as third:
            third.write_text("late")
    assert target.read_text() == "second"
    assert _leftovers(tmp_path) == []


def test_temp_keeps_the_suffix_and_folder_outputs_publish_whole(tmp_path):
    with output_path(tmp_path / "x.flac") as tmp:
        assert tmp.suffix == ".flac" and tmp.name.startswith(".") and tmp.parent == tmp_path
        tmp.write_bytes(b"1")
    with output_path(tmp_path / "ckpt", folder=True) as tmp:
        (tmp / "a").write_text("a")
    assert (tmp_path / "ckpt" / "a").read_text() == "a"
    with output_path(tmp_path / "ckpt", force=True, folder=True) as tmp:
        (tmp / "b").write_text("b")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["b"]
    assert _leftovers(tmp_path) == []


def test_stale_temporaries_of_dead_runs_are_swept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".out.{pid}.focalcodec-tmp.wav"
    stale.write_bytes(b"left by a killed run")
    alive = tmp_path / f".other.{os.getpid()}.focalcodec-tmp.wav"
    alive.write_bytes(b"ours")
    host = outputs._HOST
    stale_here = tmp_path / f".out2.{pid}@{host}.focalcodec-tmp.wav"
    stale_here.write_bytes(b"left by a killed run of this host")
    other_host = tmp_path / f".out3.{pid}@another-node.focalcodec-tmp.wav"
    other_host.write_bytes(b"being written by a torchrun rank on another node")
    write_text(tmp_path / "next.txt", "x")
    assert not stale.exists() and not stale_here.exists() and alive.exists()
    assert other_host.exists()  # a PID of another host says nothing about this one


def test_sigterm_removes_the_temporary(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        from focalcodec.outputs import output_path
        with output_path({str(tmp_path / "out.bin")!r}) as tmp:
            tmp.write_bytes(b"x" * 1000)
            print("ready", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


def test_open_output_dash_is_stdout(capsysbinary):
    with open_output("-", "wb") as f:
        f.write(b"raw")
    assert capsysbinary.readouterr().out == b"raw"


def test_cli_turns_any_exception_into_one_line(monkeypatch, capsys):
    import focalcodec.cli.info as info

    def broken(args):
        raise KeyError("surprise")

    monkeypatch.setattr(info, "run", broken)
    code = main(["info", "whatever.fc"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("error: internal error (KeyError") and "FOCALCODEC_DEBUG" in err[0]
    assert message(InputError("bad\ninput")) == "bad input"
    assert message(FileNotFoundError(2, "No such file or directory", "x.wav")) == "No such file or directory: x.wav"


def test_cuda_device_without_cuda_is_one_line(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "a.wav").write_bytes(b"")
    code = main(["encode", str(tmp_path / "a.wav"), "-o", str(tmp_path / "a.fc"), "--device", "cuda"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err == ["error: --device cuda: no CUDA device is available here; use --device cpu"]
