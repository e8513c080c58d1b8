"""A part that streams: one part of a causal codec with the streaming state of ``capacity`` rows.

:class:`PartStream` owns a streaming copy of one part (``"encoder"``, ``"compressor"``,
``"decompressor"`` or ``"decoder"``, built once per codec and kind by :func:`part_template`
and copied per part stream, sharing the weights), its :class:`~focalcodec.streaming.layers.Control`
and the row operations the engine needs: :meth:`PartStream.run` (one step of every row),
:meth:`PartStream.reset` (rows start new streams), :meth:`PartStream.move` (a row takes another's
state), :meth:`PartStream.resize`, and :meth:`PartStream.snapshot` / :meth:`PartStream.load`
(:class:`PartState`, the opaque states of the positional API).
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..errors import InputError
from .kernels import fast_kernels, finish_linears, reduce_precision
from .layers import Control, StreamingLayer, StreamingTransformer, streaming_tree

__all__ = ["PARTS", "PRECISIONS", "PartStream", "PartState", "part_template"]

PARTS = ("encoder", "compressor", "decompressor", "decoder")
PRECISIONS = ("float32", "float16", "int8")


class PartState(NamedTuple):
    """The streaming state of one part for a batch of streams (opaque to callers): ``part``
    names it, ``tensors`` hold every row's state (never modified once made)."""

    part: str
    batch_size: int
    tensors: dict[str, Tensor]


def step_shape(codec: nn.Module, part: str) -> tuple[tuple[int, ...], int]:
    """``(input shape, frames)`` of one step of ``part`` for one row: its input (samples for the
    encoder, ``(frames, width)`` otherwise) and the frames it brings at the part's counter rate."""
    chunk = int(codec.encoder.chunk_frames)
    refiner = getattr(codec.decompressor, "refiner", None)
    group = int(refiner.chunk) if refiner is not None else chunk
    if part == "encoder":
        return (int(codec.chunk_size),), chunk
    if part == "compressor":
        return (chunk, int(codec.encoder.dim)), chunk
    if part == "decompressor":
        return (group, int(codec.code_dim)), group
    frames = group * int(codec.frames_per_token)
    return (frames, int(codec.feature_dim)), frames


class _Template(nn.Module):
    def __init__(self, model: nn.Module, control: Control) -> None:
        super().__init__()
        self.model = model
        self.control = control


_TEMPLATES: weakref.WeakKeyDictionary[nn.Module, dict[tuple, _Template]] = weakref.WeakKeyDictionary()


def part_template(codec: nn.Module, part: str, precision: str, fast: bool, capturable: bool) -> _Template:
    """The streaming copy of ``codec.<part>`` (cached per codec): weights shared with ``codec``
    (except reduced-precision layers, which hold their own), the few-frame CPU kernels when
    ``fast``, streaming layers without state yet."""
    device = codec.device
    key = (part, precision, fast, capturable, device)
    per_codec = _TEMPLATES.setdefault(codec, {})
    if key not in per_codec:
        source = getattr(codec, part)
        memo = {id(t): t for t in list(source.parameters()) + list(source.buffers())}
        control = Control(step_shape(codec, part)[1], capturable)
        model = streaming_tree(copy.deepcopy(source, memo), control).eval()
        fast = fast and device.type == "cpu"
        if fast:
            fast_kernels(model)
        if precision != "float32":
            reduce_precision(model, precision)
        if fast:
            finish_linears(model)
        per_codec[key] = _Template(model, control)
    return per_codec[key]


def _stateful(module: nn.Module) -> bool:
    return any(isinstance(m, (StreamingLayer, StreamingTransformer)) for m in module.modules())


class PartStream:
    """One streaming part of a codec for ``capacity`` rows (see the module doc).

    ``run(x, valid)``: ``x (rows, step_inputs, ...)`` for rows ``[0, rows)`` (every live row),
    ``valid``: frames that count per row (host ints; eager) -> the part's output for the step.
    """

    def __init__(
        self,
        codec: nn.Module,
        part: str,
        capacity: int = 1,
        precision: str = "float32",
        fast: bool = True,
        capturable: bool = False,
        inplace: bool = True,
    ) -> None:
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        device = codec.device
        if precision != "float32" and device.type != "cpu":
            raise InputError(f"{precision} streaming runs on CPU only; use precision='float32' on {device.type}")
        template = part_template(codec, part, precision, fast, capturable)
        memo = {id(t): t for t in list(template.parameters()) + list(template.buffers())}
        memo.update({id(m): m for m in template.modules() if not _stateful(m)})
        own = copy.deepcopy(template, memo)
        self.part, self.model, self.control = part, own.model, own.control
        self.control.inplace = inplace
        self.input_shape, self.step_frames = step_shape(codec, part)
        self.device = device
        self.layers = [m for m in self.model.modules() if isinstance(m, StreamingLayer)]
        self.names = {id(m): name for name, m in self.model.named_modules()}
        self.frames_host: list[int] = []
        self.resize(capacity)
        dtype = codec.dtype
        with torch.no_grad():  # allocates every layer's state; a step with no valid frame changes nothing
            self.run(torch.zeros((1,) + self.input_shape, dtype=dtype, device=device), [0])

    @property
    def capacity(self) -> int:
        return self.control.capacity

    def resize(self, capacity: int) -> None:
        """Hold ``capacity`` rows (the first rows keep their state)."""
        c = self.control
        keep = min(c.capacity, capacity)
        frames = torch.zeros(capacity, dtype=torch.long, device=self.device)
        frames[:keep] = c.frames[:keep]
        c.frames, c.capacity = frames, capacity
        self.frames_host = (self.frames_host + [0] * capacity)[:capacity]
        for layer in self.layers:
            for name in layer.state_names:
                old = getattr(layer, name)
                if old is not None:
                    new = old.new_zeros((capacity,) + old.shape[1:])
                    new[:keep] = old[:keep]
                    setattr(layer, name, new)

    def reset(self, rows: Sequence[int]) -> None:
        """Rows ``rows`` start new streams at their next valid frame."""
        for row in rows:
            self.frames_host[row] = 0
        self.control.frames[list(rows)] = 0

    def move(self, src: int, dst: int) -> None:
        """Row ``dst`` takes row ``src``'s state (``src`` is then free)."""
        for layer in self.layers:
            for name in layer.state_names:
                t = getattr(layer, name)
                if t is not None:
                    t[dst] = t[src]
        self.control.frames[dst] = self.control.frames[src]
        self.frames_host[dst] = self.frames_host[src]

    def snapshot(self, rows: int) -> PartState:
        """A copy of the state of rows ``[0, rows)``."""
        tensors = {"frames": self.control.frames[:rows].clone()}
        for layer in self.layers:
            for name, view in layer.state_views(rows).items():
                tensors[f"{self.names[id(layer)]}.{name}"] = view.clone()
        return PartState(self.part, rows, tensors)

    def load(self, state: PartState) -> None:
        """Rows ``[0, batch)`` take the state ``state`` (copied: ``state`` is not kept)."""
        if not isinstance(state, PartState) or state.part != self.part:
            raise InputError(
                f"the {self.part} state must be one returned for the {self.part} by a previous call "
                f"(or () for a new stream), got {type(state).__name__}"
                + (f" of the {state.part}" if isinstance(state, PartState) else "")
            )
        rows = state.batch_size
        self.reset(range(rows))
        self.control.frames[:rows] = state.tensors["frames"]
        self.frames_host[:rows] = state.tensors["frames"].tolist()
        for layer in self.layers:
            views = layer.state_views(rows)
            for name in layer.state_names:
                key = f"{self.names[id(layer)]}.{name}"
                views[name].copy_(state.tensors[key])

    def run(self, x: Tensor, valid: Sequence[int] | Tensor) -> Tensor:
        """One step of rows ``[0, x.shape[0])`` (see the class doc)."""
        c, n = self.control, x.shape[0]
        if isinstance(valid, Tensor):
            c.valid = valid
        else:
            c.valid = torch.tensor(list(valid), dtype=torch.long, device=self.device)
            c.fresh_rows = [b for b in range(n) if self.frames_host[b] == 0]
            c.lag_rows = [b for b in range(n) if valid[b] < self.step_frames]
            c.all_active = min(valid) > 0
            c.max_frames = max(self.frames_host[:n])
            for b in range(n):
                self.frames_host[b] += int(valid[b])
        # The decompressor's refiner zero-pads its block past the valid frames, as offline.
        if self.part == "decompressor" and (c.capturable or c.lag_rows):
            y = self.model(x, lengths=c.valid)
        else:
            y = self.model(x)
        if c.inplace:
            (c.frames if n == c.capacity else c.frames[:n]).add_(c.valid)
        else:
            c.frames = c.frames + c.valid
        return y


def out_length(total_in: int, step_in: int, step_out: int) -> int:
    """Outputs of ``total_in`` valid inputs for a part making ``step_out`` per ``step_in``."""
    return math.ceil(total_in * step_out / step_in)
