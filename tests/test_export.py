"""ONNX (onnxruntime) and TorchScript exports equal PyTorch: tokens identical, signals
within 1e-4, at batch sizes and lengths other than the tracing example."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest
import torch
from conftest import FIXTURE_NAMES, FIXTURES, fixture_io, fixture_model

from focalcodec.cli import main
from focalcodec.export import ExportError, export_onnx, export_torchscript


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in ("tiny_50hz", "tiny_25hz") else n for n in FIXTURE_NAMES],
)
def test_onnx_and_torchscript_match_pytorch(name: str, tmp_path: Path) -> None:
    codec = fixture_model(name)
    sig = fixture_io(name)["sig"]
    cases = [sig, torch.cat([sig[:, :20001], 0.5 * sig[:, 5000:25001]]), 0.1 * torch.randn(3, 16640)]
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # tiny graphs (tests/conftest.py)
    enc = ort.InferenceSession(str(export_onnx(codec, tmp_path / "e.onnx", "encode")), options)
    dec = ort.InferenceSession(str(export_onnx(codec, tmp_path / "d.onnx", "decode")), options)
    jenc = torch.jit.load(str(export_torchscript(codec, tmp_path / "e.pt", "encode")))
    jdec = torch.jit.load(str(export_torchscript(codec, tmp_path / "d.pt", "decode")))
    for x in cases:
        with torch.no_grad():
            toks = codec.sig_to_toks(x)
            audio = codec.toks_to_sig(toks)
            assert torch.equal(jenc(x), toks)
            torch.testing.assert_close(jdec(toks), audio, atol=1e-4, rtol=0)
        assert torch.equal(torch.from_numpy(enc.run(None, {"sig": x.numpy()})[0]), toks)
        onnx_audio = torch.from_numpy(dec.run(None, {"toks": toks.numpy()})[0])
        torch.testing.assert_close(onnx_audio, audio, atol=1e-4, rtol=0)
    assert torch.equal(torch.from_numpy(enc.run(None, {"sig": sig.numpy()})[0]), fixture_io(name)["toks"])


def test_export_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = str(FIXTURES / "tiny_25hz")
    assert main(["export", "--model", model, "-o", str(tmp_path), "--graphs", "encode"]) == 0
    assert (tmp_path / "encode.onnx").is_file() and not (tmp_path / "decode.onnx").exists()
    assert main(["export", "--model", model, "-o", str(tmp_path), "--graphs", "encode"]) == 1
    assert "use --force" in capsys.readouterr().err
    assert main(["export", "--model", model, "-o", str(tmp_path), "--format", "torchscript", "--graphs", "decode"]) == 0
    assert (tmp_path / "decode.pt").is_file()


def test_opsets_the_graphs_cannot_use_are_refused_before_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--opset below what the graphs need (18: bitwise token unpacking, attention) or above
    what this torch writes is one error line naming the range, before the model loads."""
    for opset in ("5", "17", "99"):
        argv = ["export", "--model", str(tmp_path / "none"), "-o", str(tmp_path / "out"), "--opset", opset]
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: --opset {opset}") and "18" in err[0], err
    with pytest.raises(ExportError, match="opset 17"):
        export_onnx(fixture_model("tiny_50hz"), tmp_path / "d.onnx", "decode", opset=17)
    assert not (tmp_path / "out").exists() and not (tmp_path / "d.onnx").exists()
