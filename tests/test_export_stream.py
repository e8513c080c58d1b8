"""The engine's step with explicit fixed-shape state (focalcodec.streaming.export.ExportStep) and
its ONNX / TorchScript exports: a loop of steps equals StreamEncoder / StreamDecoder (tokens
identical, audio within 1e-4) past the point where the attention window and the 511-frame
contexts are full and slide; the zero state, per-row restarts and the errors."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES, ROOT, fixture_io, fixture_model

from focalcodec import FocalCodec, InputError
from focalcodec.cli import main
from focalcodec.export import ExportError, export_onnx, export_torchscript
from focalcodec.streaming import StreamDecoder, StreamEncoder
from focalcodec.streaming.export import ExportStep, initial_state

pytestmark = pytest.mark.usefixtures("one_thread")

SIG_ATOL = 1e-4
Step = Callable[..., Sequence]


def _loop(step: Step, inputs: torch.Tensor, size: int, state: list[torch.Tensor]) -> torch.Tensor:
    """Run ``step`` over consecutive ``size``-wide pieces of ``inputs``; concatenated outputs."""
    outs = []
    for i in range(0, inputs.shape[1], size):
        out, *state = step(inputs[:, i : i + size], *state)
        outs.append(out)
    return torch.cat(outs, 1)


def _onnx_step(path: Path, names: Sequence[str]) -> Step:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options)
    first = session.get_inputs()[0].name

    def step(x: torch.Tensor, *state: torch.Tensor) -> list:
        feeds = {first: x.numpy(), **{n: s.numpy() for n, s in zip(names, state, strict=False)}}
        return [torch.from_numpy(np.asarray(o)) for o in session.run(None, feeds)]

    return step


@functools.cache
def _long_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two streams of 148 chunks (the fixture's long stream and another signal), their
    StreamEncoder tokens and StreamDecoder audio."""
    codec, io = fixture_model("tiny_causal_4k"), fixture_io("tiny_causal_4k")
    long_sig = io["sig"].repeat(1, 5)
    chunk = codec.chunk_size
    n = -(-long_sig.shape[1] // chunk) * chunk
    sig = F.pad(torch.cat([long_sig, 0.5 * long_sig.flip(1)]), (0, n - long_sig.shape[1]))
    enc, dec = StreamEncoder(codec), StreamDecoder(codec)
    toks = enc.push(sig)
    assert toks.shape[1] // 4 > 129  # chunks past the 129 that fill the 516-slot ring
    assert torch.equal(toks[:1], io["long_stream_toks"])
    return sig, toks, dec.push(toks)


def _check_loops(
    enc: Step, dec: Step, enc_state: list[torch.Tensor], dec_state: list[torch.Tensor], chunks: int | None = None
) -> None:
    """The step loops over the long case (or its first ``chunks`` chunks) equal the streams."""
    codec = fixture_model("tiny_causal_4k")
    sig, toks, audio = _long_case()
    if chunks is not None:
        sig, toks, audio = sig[:, : chunks * codec.chunk_size], toks[:, : 4 * chunks], audio[:, : 1920 * chunks]
    with torch.no_grad():
        step_toks = _loop(enc, sig, codec.chunk_size, enc_state)
        assert torch.equal(step_toks, toks)
        step_audio = _loop(dec, toks, 4, dec_state)
    assert step_audio.shape == audio.shape
    torch.testing.assert_close(step_audio, audio, atol=SIG_ATOL, rtol=0)


def test_pytorch_step_loop_matches_streams() -> None:
    """The first 24 chunks in eager PyTorch (the sliding past the full ring, 148 chunks, is
    checked on the ONNX and TorchScript graphs traced from this very step, below)."""
    codec = fixture_model("tiny_causal_4k")
    enc, dec = ExportStep(codec, "encode"), ExportStep(codec, "decode")
    _check_loops(enc, dec, enc.initial_state(2), dec.initial_state(2), chunks=24)


def test_onnx_and_torchscript_step_loops_match_streams(tmp_path: Path) -> None:
    codec = fixture_model("tiny_causal_4k")
    enc_names = list(initial_state(codec, "encode"))
    dec_names = list(initial_state(codec, "decode"))
    enc = _onnx_step(export_onnx(codec, tmp_path / "se.onnx", "stream_encode"), enc_names)
    dec = _onnx_step(export_onnx(codec, tmp_path / "sd.onnx", "stream_decode"), dec_names)
    session = ort.InferenceSession(str(tmp_path / "se.onnx"))
    assert [i.name for i in session.get_inputs()] == ["chunk"] + enc_names
    assert [o.name for o in session.get_outputs()] == ["toks"] + [f"new_{n}" for n in enc_names]
    assert session.get_inputs()[-1].shape[0] == "batch"
    enc_state, dec_state = (
        list(initial_state(codec, "encode", 2).values()),
        list(initial_state(codec, "decode", 2).values()),
    )
    _check_loops(enc, dec, enc_state, dec_state)
    jenc = torch.jit.load(str(export_torchscript(codec, tmp_path / "se.pt", "stream_encode")))
    jdec = torch.jit.load(str(export_torchscript(codec, tmp_path / "sd.pt", "stream_decode")))
    _check_loops(jenc, jdec, enc_state, dec_state)
    # another batch size than the tracing example's 2
    io = fixture_io("tiny_causal_4k")
    sig = io["sig"][:, : 3 * codec.chunk_size]
    for step in (enc, jenc):
        assert torch.equal(
            _loop(step, sig, codec.chunk_size, list(initial_state(codec, "encode").values())), io["stream_toks"][:, :12]
        )
    # the onnxruntime loop of docs/streaming.md, as written
    text = (ROOT / "docs" / "streaming.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "stream_encode.onnx" in b)
    for graph, file in (("stream_encode", "se.onnx"), ("stream_decode", "sd.onnx")):
        block = block.replace(f'"exported/{graph}.onnx"', repr(str(tmp_path / file)))
    scope = {"chunks": list(sig.numpy().reshape(3, 1, codec.chunk_size))}
    exec(compile(block, "docs/streaming.md", "exec"), scope)
    doc_audio = torch.from_numpy(np.concatenate(scope["out"], 1))
    stream_toks = StreamEncoder(codec).push(sig)
    torch.testing.assert_close(doc_audio, StreamDecoder(codec).push(stream_toks), atol=SIG_ATOL, rtol=0)


def test_initial_state_and_restart() -> None:
    codec = fixture_model("tiny_causal_4k")
    enc, dec = ExportStep(codec, "encode"), ExportStep(codec, "decode")
    state = initial_state(codec, "encode", batch_size=3)
    assert list(state) == enc.state_names and list(initial_state(dec)) == dec.state_names
    assert all(t.shape[0] == 3 and not t.any() for t in state.values())
    assert state["encoder.frames"].dtype == torch.long and state["encoder.frames"].shape == (3,)
    assert state["encoder.encoder.layers.0.attention.keys"].shape == (3, 4, 512 + 4, 16)
    assert state["compressor.layers.0.focal_block.modulation.layers.2.0.ctx"].shape == (3, 511, 32)
    # a row restarts when its frame counters are set to 0, whatever the rest of its state holds
    sig = fixture_io("tiny_causal_4k")["sig"][:, : 6 * codec.chunk_size].repeat(2, 1)
    with torch.no_grad():
        _, *es = enc(sig[:, 3 * 1280 : 4 * 1280].flip(0), *enc.initial_state(2))
        _, *ds = dec(torch.randint(0, 4096, (2, 4)), *dec.initial_state(2))
        for states, step in ((es, enc), (ds, dec)):
            for i, name in enumerate(step.state_names):
                if name.endswith(".frames"):
                    states[i][1] = 0
        toks = _loop(enc, sig, 1280, es)
        audio = _loop(dec, toks, 4, ds)
        fresh = StreamEncoder(codec).push(sig[1])
    assert torch.equal(toks[1], fresh) and not torch.equal(toks[0], fresh)
    torch.testing.assert_close(audio[1], StreamDecoder(codec).push(fresh), atol=SIG_ATOL, rtol=0)


def test_4k_preset_state_shapes_and_steps() -> None:
    torch.manual_seed(0)
    codec = FocalCodec.from_config("focalcodec_50hz_4k_causal")
    enc, dec = ExportStep(codec, "encode"), ExportStep(codec, "decode")
    shapes = dict(zip(enc.state_names + dec.state_names, enc.state_shapes + dec.state_shapes, strict=True))
    assert shapes["encoder.frames"] == () and shapes["encoder.encoder.positional_embedding.conv.ctx"] == (127, 1024)
    assert [shapes[f"encoder.encoder.layers.{i}.attention.values"] for i in range(6)] == [(16, 516, 64)] * 6
    assert shapes["decompressor.layers.2.focal_block.modulation.layers.2.0.ctx"] == (511, 1024)
    assert shapes["decoder.backbone.layers.7.dwconv.ctx"] == (6, 1024) and len(dec.state_names) == 2 + 9 + 9
    assert (enc.input_shape, dec.input_shape) == ((1280,), (4,))
    sig = 0.1 * torch.randn(1, 2 * 1280, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        toks = _loop(enc, sig, 1280, enc.initial_state(1))
        audio = _loop(dec, toks, 4, dec.initial_state(1))
    ref = StreamEncoder(codec).push(sig)
    assert torch.equal(toks, ref)
    torch.testing.assert_close(audio, StreamDecoder(codec).push(ref), atol=SIG_ATOL, rtol=0)


def test_errors(tmp_path: Path) -> None:
    codec = fixture_model("tiny_50hz")
    with pytest.raises(InputError, match="causal"):
        ExportStep(codec, "encode")
    for graph in ("stream_encode", "stream_decode"):
        with pytest.raises(ExportError, match="not causal"):
            export_onnx(codec, tmp_path / "x.onnx", graph)
    with pytest.raises(InputError, match="side"):
        ExportStep(fixture_model("tiny_causal_4k"), "both")
    enc = ExportStep(fixture_model("tiny_causal_4k"), "encode")
    with pytest.raises(InputError, match=r"\(B, 1280\)"):
        enc(torch.zeros(1, 1000), *enc.initial_state())
    with pytest.raises(InputError, match="state tensors"):
        enc(torch.zeros(1, 1280))


def test_export_cli_stream_graphs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    causal = str(FIXTURES / "tiny_causal_4k")
    assert main(["export", "--model", causal, "-o", str(tmp_path), "--graph", "stream_decode"]) == 0
    assert (tmp_path / "stream_decode.onnx").is_file() and not (tmp_path / "decode.onnx").exists()
    assert (
        main(["export", "--model", str(FIXTURES / "tiny_25hz"), "-o", str(tmp_path / "x"), "--graph", "stream_decode"])
        == 1
    )
    assert "not causal" in capsys.readouterr().err
