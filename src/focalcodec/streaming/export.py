"""The engine's step as a function of explicit state tensors, for ONNX / TorchScript export.

:class:`ExportStep` runs one step of a :class:`~focalcodec.streaming.engine.Side` of the engine
(the same streaming layers, run capturable: tensor operations only) with every piece of state
as an input and its new value as an output, all rows advancing by one step:

- ``side="encode"``: ``(chunk (B, chunk_size) float32, *state) -> (toks (B, chunk_frames) int64, *new_state)``;
- ``side="decode"``: ``(toks (B, group) int64, *state) -> (audio (B, group * hop) float32, *new_state)``.

State tensors have the batch first and a shape fixed by the config (``state_names``,
``state_shapes``); all zeros (:func:`initial_state`) is a new stream, and so is any row whose
``<part>.frames`` counter (e.g. ``encoder.frames``) is set to 0, whatever its other tensors hold.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..nn.vocos import ISTFTHead
from .engine import Side

__all__ = ["ExportStep", "initial_state", "matmul_istft"]

SIDES = ("encode", "decode")


def matmul_istft(model: nn.Module) -> None:
    """Give every ISTFT head of ``model`` its exportable variant (inverse DFT as matrices)."""
    for name, m in list(model.named_modules()):
        if isinstance(m, ISTFTHead) and m.dft != "matmul":
            head = ISTFTHead(m.proj.in_features, m.n_fft, m.hop_length, m.causal, dft="matmul").to(m.window.device)
            head.proj = m.proj
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, head)


class ExportStep(nn.Module):
    """One engine step of ``side`` with explicit state (see the module doc)."""

    def __init__(self, codec: nn.Module, side: str) -> None:
        super().__init__()
        if side not in SIDES:
            raise InputError(f"side must be one of {SIDES}, got {side!r}")
        if not getattr(codec, "causal", False):
            raise InputError(
                f"a stream step needs a causal model (e.g. focalcodec_50hz_4k_causal); "
                f"{getattr(codec, 'model_id', 'this model')} is not causal"
            )
        self.side = Side(codec, side, capacity=1, fast=False, inplace=False)
        self.parts = nn.ModuleList(part.model for part in self.side.parts)
        for part in self.side.parts:
            matmul_istft(part.model)
        self.refs: list[tuple[object, str]] = []
        self.state_names: list[str] = []
        for part in self.side.parts:
            self.refs.append((part.control, "frames"))
            self.state_names.append(f"{part.part}.frames")
            for layer in part.layers:
                for name in layer.state_names:
                    self.refs.append((layer, name))
                    self.state_names.append(f"{part.part}.{part.names[id(layer)]}.{name}")
        first = self.side.parts[0]
        self.input_shape = first.input_shape if side == "encode" else (first.step_frames,)
        self.step_frames = first.step_frames
        tensors = [getattr(obj, attr) for obj, attr in self.refs]
        self.state_shapes = [tuple(t.shape[1:]) for t in tensors]
        self.state_dtypes = [t.dtype for t in tensors]
        self.device = first.device

    def initial_state(self, batch_size: int = 1) -> list[Tensor]:
        """The state of ``batch_size`` new streams: zeros, in :attr:`state_names` order."""
        return [
            torch.zeros((batch_size,) + shape, dtype=dtype, device=self.device)
            for shape, dtype in zip(self.state_shapes, self.state_dtypes, strict=True)
        ]

    def forward(self, x: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        if x.ndim != 2 or tuple(x.shape[1:]) != self.input_shape:
            raise InputError(f"the step takes (B, {self.input_shape[0]}), got shape {tuple(x.shape)}")
        if len(state) != len(self.refs):
            raise InputError(f"the step takes {len(self.refs)} state tensors, got {len(state)}")
        for (obj, attr), t in zip(self.refs, state, strict=True):
            setattr(obj, attr, t)
        valid = state[0] * 0 + self.step_frames  # every row advances one step
        y = self.side.run(x, valid)
        return (y, *[getattr(obj, attr) for obj, attr in self.refs])


def initial_state(codec_or_step: nn.Module, side: str = "encode", batch_size: int = 1) -> OrderedDict[str, Tensor]:
    """Names and zero tensors of the state of ``batch_size`` new streams of a step (``side`` is
    used when a codec is given)."""
    step = codec_or_step if isinstance(codec_or_step, ExportStep) else ExportStep(codec_or_step, side)
    return OrderedDict(zip(step.state_names, step.initial_state(batch_size), strict=True))
