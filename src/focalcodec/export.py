"""Export the codec's offline graphs to ONNX (for onnxruntime) and TorchScript.

Two graphs per model, with dynamic batch and time axes:

- ``encode``: ``sig (B, N) float32 @ 16 kHz -> toks (B, T') int64`` (the reference's
  ``sig_to_toks``; items of a batch share one length, no padding masks);
- ``decode``: ``toks (B, T') int64 -> sig (B, M) float32`` at the model's output rate
  (``toks_to_sig`` at natural length ``M = T' * upsampling * hop``).

Inputs must hold at least 400 samples (the feature extractor's receptive field) for
non-causal models. Both exports are traced; the tests check onnxruntime and TorchScript
against PyTorch on the fixtures for lengths other than the tracing example.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Union

import torch
from torch import Tensor, nn

from .codec import FocalCodec
from .errors import FocalCodecError

__all__ = ["GRAPHS", "export_onnx", "export_torchscript"]

GRAPHS = ("encode", "decode")
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


def _graph(codec: FocalCodec, graph: str) -> tuple:
    if graph not in GRAPHS:
        raise ExportError(f"unknown graph {graph!r}; choose one of: {', '.join(GRAPHS)}")
    codec = copy.deepcopy(codec).eval()
    head = getattr(codec.decoder, "head", None)
    if hasattr(head, "real_idft"):
        head.real_idft = True
    device = next(codec.parameters()).device
    n = int(EXAMPLE_SECONDS * codec.sample_rate_input)
    if graph == "encode":
        example = 0.1 * torch.randn(2, n, generator=torch.Generator().manual_seed(0)).to(device)
        return _Encode(codec), example, "sig", "toks"
    t = int(codec.num_tokens(n))
    example = torch.randint(0, codec.codebook_size, (2, t), generator=torch.Generator().manual_seed(0)).to(device)
    return _Decode(codec), example, "toks", "sig"


def export_onnx(codec: FocalCodec, path: Union[str, Path], graph: str = "encode", opset: int = 18) -> Path:
    """Write ``graph`` ("encode" or "decode") as an ONNX model with dynamic batch/time axes."""
    module, example, in_name, out_name = _graph(codec, graph)
    path = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            input_names=[in_name],
            output_names=[out_name],
            dynamic_axes={in_name: {0: "batch", 1: "time"}, out_name: {0: "batch", 1: "time_out"}},
            opset_version=opset,
        )
    return path


def export_torchscript(codec: FocalCodec, path: Union[str, Path], graph: str = "encode") -> Path:
    """Write ``graph`` as a traced TorchScript module (load with ``torch.jit.load``)."""
    module, example, _, _ = _graph(codec, graph)
    path = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (example,), check_trace=False)
    traced.save(str(path))
    return path
