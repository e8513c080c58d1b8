"""Export the codec's offline graphs to ONNX (for onnxruntime) and TorchScript.

Two graphs per model, with dynamic batch and time axes:

- ``encode``: ``sig (B, N) float32 @ 16 kHz -> toks (B, T') int64`` (the reference's
  ``sig_to_toks``; items of a batch share one length, no padding masks);
- ``decode``: ``toks (B, T') int64 -> sig (B, M) float32`` at the model's output rate
  (``toks_to_sig`` at natural length ``M = T' * upsampling * hop``).

Inputs must hold at least 400 samples (the feature extractor's receptive field) for
non-causal models. Both exports are traced; the tests check onnxruntime and TorchScript
against PyTorch on the fixtures for lengths other than the tracing example.

Two more for causal models: the streaming engine's step of each side with explicit
fixed-shape state tensors (:class:`focalcodec.streaming.export.ExportStep`; dynamic batch
axis only):

- ``stream_encode``: ``chunk (B, chunk_size), *state -> toks (B, chunk_frames), *new_state``;
- ``stream_decode``: ``toks (B, group), *state -> audio (B, group * samples_per_token), *new_state``.

State inputs are named as ``step.state_names`` (``focalcodec.streaming.export.initial_state``
gives them with their zero values), the outputs ``new_<name>``.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .codec import FocalCodec
from .errors import FocalCodecError
from .streaming.export import ExportStep, matmul_istft

__all__ = ["GRAPHS", "MIN_OPSET", "ExportError", "check_opset", "export_onnx", "export_torchscript"]

GRAPHS = ("encode", "decode", "stream_encode", "stream_decode")
EXAMPLE_SECONDS = 2.0


class ExportError(FocalCodecError):
    """A graph could not be exported."""


class _Encode(nn.Module):
    def __init__(self, codec: FocalCodec) -> None:
        super().__init__()
        self.codec = codec

    def forward(self, sig: Tensor) -> Tensor:
        return self.codec.sig_to_toks(sig)


class _Decode(nn.Module):
    def __init__(self, codec: FocalCodec) -> None:
        super().__init__()
        self.codec = codec

    def forward(self, toks: Tensor) -> Tensor:
        return self.codec.toks_to_sig(toks)


class _Graph(NamedTuple):
    module: nn.Module
    inputs: tuple[Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]


def _graph(codec: FocalCodec, graph: str) -> _Graph:
    if graph not in GRAPHS:
        raise ExportError(f"unknown graph {graph!r}; choose one of: {', '.join(GRAPHS)}")
    if graph.startswith("stream_"):
        return _stream_graph(codec, graph)
    codec = copy.deepcopy(codec).eval()
    matmul_istft(codec)
    device = codec.device
    n = int(EXAMPLE_SECONDS * codec.sample_rate_input)
    if graph == "encode":
        example = 0.1 * torch.randn(2, n, generator=torch.Generator().manual_seed(0)).to(device)
        module, in_name, out_name = _Encode(codec), "sig", "toks"
    else:
        t = int(codec.num_tokens(n))
        example = torch.randint(0, codec.codebook_size, (2, t), generator=torch.Generator().manual_seed(0)).to(device)
        module, in_name, out_name = _Decode(codec), "toks", "sig"
    axes = {in_name: {0: "batch", 1: "time"}, out_name: {0: "batch", 1: "time_out"}}
    return _Graph(module, (example,), [in_name], [out_name], axes)


def _stream_graph(codec: FocalCodec, graph: str) -> _Graph:
    if not getattr(codec, "causal", False):
        raise ExportError(
            f"{graph} is the streaming step of a causal model; "
            f"{getattr(codec, 'model_id', 'this model')} is not causal "
            "(export encode/decode instead, or use e.g. focalcodec_50hz_4k_causal)"
        )
    side = graph[len("stream_") :]
    step = ExportStep(codec, side)
    device = codec.device
    g = torch.Generator().manual_seed(0)
    if side == "encode":
        example = 0.1 * torch.randn(2, *step.input_shape, generator=g).to(device)
        in_name, out_name = "chunk", "toks"
    else:
        example = torch.randint(0, codec.codebook_size, (2, *step.input_shape), generator=g).to(device)
        in_name, out_name = "toks", "audio"
    input_names = [in_name] + step.state_names
    output_names = [out_name] + [f"new_{name}" for name in step.state_names]
    axes = {name: {0: "batch"} for name in input_names + output_names}
    return _Graph(step, (example, *step.initial_state(2)), input_names, output_names, axes)


# The lowest ONNX opset every graph exports at: token unpacking needs BitwiseAnd (opset 18),
# attention needs opset 14 (measured with torch 2.13: decode fails at 17, encode at 13).
MIN_OPSET = 18


def check_opset(opset: int) -> int:
    """``opset`` when every graph can be written at it, else :class:`ExportError` naming the
    range (:data:`MIN_OPSET` up to the newest opset this torch writes)."""
    from torch.onnx import _constants

    newest = int(getattr(_constants, "ONNX_MAX_OPSET", opset))
    if not MIN_OPSET <= opset <= newest:
        raise ExportError(
            f"--opset {opset}: the graphs export at ONNX opset {MIN_OPSET} to {newest} (torch {torch.__version__}); "
            f"the default {MIN_OPSET} is the one tested with onnxruntime"
        )
    return opset


def export_onnx(codec: FocalCodec, path: str | Path, graph: str = "encode", opset: int = MIN_OPSET) -> Path:
    """Write ``graph`` (one of :data:`GRAPHS`) as an ONNX model with dynamic batch (and, for
    ``encode``/``decode``, time) axes, at ONNX ``opset`` (:func:`check_opset`)."""
    check_opset(opset)
    g = _graph(codec, graph)
    path = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            g.module,
            g.inputs,
            str(path),
            dynamo=False,
            input_names=g.input_names,
            output_names=g.output_names,
            dynamic_axes=g.dynamic_axes,
            opset_version=opset,
        )
    return path


def export_torchscript(codec: FocalCodec, path: str | Path, graph: str = "encode") -> Path:
    """Write ``graph`` as a traced TorchScript module (load with ``torch.jit.load``); the
    stream graphs take and return the state tensors positionally, in ``state_names`` order."""
    g = _graph(codec, graph)
    path = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(g.module, g.inputs, check_trace=False)
    traced.save(str(path))
    return path
