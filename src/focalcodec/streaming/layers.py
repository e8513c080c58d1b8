"""How each layer of a causal model streams: the layers that own streaming state.

A part (encoder, compressor, decompressor, decoder) streams as a copy of its module tree
that shares the weights and in which three kinds of module are replaced (:func:`streaming_tree`):

- every causal :class:`~focalcodec.nn.layers.Conv` with context by a :class:`StreamingConv`,
  which keeps the last ``k - 1`` input frames of every row;
- the causal WavLM transformer by a :class:`StreamingTransformer` (per-row frame positions,
  relative-position bias and key mask per cache slot), its attentions by :class:`CachedAttention`
  (a fixed-capacity key/value ring per layer).

State tensors are allocated once for ``capacity`` rows (batch first) and updated in place.
Every step brings ``step_frames`` frames per row, of which ``valid[b]`` count (0: the row is
left exactly as it was; fewer than ``step_frames``: the row advances by that many). A row
whose frame counter is 0 is a new stream: replicate (or, for WaveNeXt, zero) padding from its
first frame and an empty cache. The :class:`Control` of a part stream carries the counters and the
step's per-row inputs to its layers.

Two ways of running: eager (host-side hints skip work: long contexts slide in a buffer with a
shared phase and only rows that lag are moved) and capturable (tensor operations only, no
host branch, fixed addresses: for ``torch.compile``, CUDA graphs and exported graphs).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..nn.layers import Conv
from ..nn.wavlm import SelfAttention, TransformerEncoder, relative_position_bucket

__all__ = ["CachedAttention", "Control", "StreamingConv", "StreamingTransformer", "streaming_tree"]

# Contexts of at least this many frames slide in a longer buffer (eager runs): a step then
# writes its new frames instead of copying the whole context; the buffer holds this many steps.
SLIDE_MIN_FRAMES = 64
SLIDE_STEPS = 16


class Control:
    """The per-row frame counters of one part stream (state) and the current step's per-row inputs.

    ``frames (capacity,) int64``: frames seen per row (0: a new stream). For a step of ``rows``
    rows: ``valid (rows,) int64`` frames that count (of ``step_frames``); eager runs also set
    the host hints ``fresh_rows`` (rows with ``frames == 0``), ``lag_rows`` (rows with
    ``valid < step_frames``), ``all_active`` and ``max_frames``. ``inplace=False`` (exports): layers rebind
    their state tensors instead of writing into them.
    """

    def __init__(self, step_frames: int, capturable: bool, inplace: bool = True) -> None:
        self.step_frames = step_frames
        self.capturable = capturable
        self.inplace = inplace
        self.capacity = 0
        self.frames: Tensor = torch.zeros(0, dtype=torch.long)
        self.valid: Tensor = torch.zeros(0, dtype=torch.long)
        self.fresh_rows: list[int] = []
        self.lag_rows: list[int] = []
        self.all_active = True
        self.max_frames: int | None = None  # eager hint: the most frames a row has seen
        # set by StreamingTransformer for its attentions: where the new frames go (row, head,
        # slot indices) and how many slots they attend to
        self.kv_index: tuple[Tensor, ...] = ()
        self.span = 0

    @property
    def rows(self) -> int:
        return int(self.valid.shape[0])

    def fresh(self) -> Tensor:
        """``(rows,) bool``: rows that start a new stream at this step."""
        return self.frames[: self.rows] == 0


class StreamingLayer(nn.Module):
    """A layer with streaming state: ``state_names`` attributes, tensors with the batch first
    (None until the first step allocates them for ``control.capacity`` rows)."""

    state_names: tuple[str, ...] = ()

    def __init__(self, control: Control) -> None:
        super().__init__()
        self.control = control
        for name in self.state_names:
            setattr(self, name, None)

    def state_views(self, rows: int) -> dict[str, Tensor]:
        """The state of rows ``[0, rows)`` as views, in a layout that does not depend on how it
        is stored (what snapshots hold)."""
        return {name: getattr(self, name)[:rows] for name in self.state_names if getattr(self, name) is not None}

    def _store(self, name: str, new: Tensor) -> None:
        if self.control.inplace:
            getattr(self, name)[: new.shape[0]].copy_(new)
        else:
            setattr(self, name, new)


class StreamingConv(StreamingLayer):
    """A causal :class:`~focalcodec.nn.layers.Conv` that carries its ``k - 1`` frames of context
    per row: ``(rows, T, C_in) -> (rows, T', C_out)``. ``kernel``: the unpadded convolution
    (None: the conv's own); ``slide``: keep a long context in a sliding buffer (eager only)."""

    state_names = ("ctx",)

    def __init__(self, conv: Conv, control: Control, slide: bool = False) -> None:
        super().__init__(control)
        self.conv = conv
        self.kernel: nn.Module | None = None
        self.slide = slide and not control.capturable
        self.phase = 0  # sliding buffer: the context of every row starts here

    def state_views(self, rows: int) -> dict[str, Tensor]:
        if self.ctx is None:
            return {}
        return {"ctx": self.ctx[:rows, self.phase : self.phase + self.conv.context]}

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``lengths`` is ignored, as by a causal conv: later frames never reach earlier ones."""
        c, (T, C) = self.control, x.shape[1:]
        K = self.conv.context
        if self.ctx is None:
            length = K + (SLIDE_STEPS * T if self.slide else 0)
            self.ctx = x.new_zeros(c.capacity, length, C)
        window = self._slide(x) if self.slide else self._concat(x)
        y = self.conv.convolve(window) if self.kernel is None else self.kernel(window)
        if self.slide:
            self._after_slide(window, T)
        return y

    def _new_context_index(self, rows: int, T: int) -> Tensor:
        """``(rows, k - 1, 1)`` positions in the window of each row's next context."""
        c = self.control
        valid = c.valid[:rows] * T // c.step_frames
        return (valid[:, None] + torch.arange(self.conv.context, device=valid.device))[:, :, None]

    def _concat(self, x: Tensor) -> Tensor:
        c, n, T = self.control, x.shape[0], x.shape[1]
        whole = n == self.ctx.shape[0]  # every row steps: the state may be replaced, not written
        ctx = self.ctx if whole else self.ctx[:n]
        if c.capturable:
            ctx = torch.where(c.fresh()[:, None, None], self.conv.start_context(x).to(ctx.dtype), ctx)
        elif c.fresh_rows:
            rows = torch.tensor(c.fresh_rows, device=x.device)
            ctx = ctx.index_copy(0, rows, self.conv.start_context(x[rows]).to(ctx.dtype))
        window = torch.cat([ctx, x.to(ctx.dtype)], dim=1)
        if c.capturable or c.lag_rows:
            index = self._new_context_index(n, T).expand(-1, -1, window.shape[2])
            self._store("ctx", window.gather(1, index))
        elif whole:
            self.ctx = window[:, T:]  # eager: a view of this step's window, as a plain causal pad keeps it
        else:
            self._store("ctx", window[:, T:])
        return window

    def _slide(self, x: Tensor) -> Tensor:
        c, n, T = self.control, x.shape[0], x.shape[1]
        K, p = self.conv.context, self.phase
        if p + K + T > self.ctx.shape[1]:  # the buffer is full: move the contexts back to its start
            self.ctx[:n, :K] = self.ctx[:n, p : p + K].clone()
            self.phase = p = 0
        window = self.ctx[:n, p : p + K + T]
        if c.fresh_rows:
            rows = torch.tensor(c.fresh_rows, device=x.device)
            window[rows, :K] = self.conv.start_context(x[rows]).to(window.dtype)
        window[:, K:] = x
        return window

    def _after_slide(self, window: Tensor, T: int) -> None:
        """Advance the shared phase by ``T``; rows that brought fewer frames get their context
        moved to the new phase."""
        c, K, p = self.control, self.conv.context, self.phase
        if c.lag_rows:
            rows = torch.tensor(c.lag_rows, device=window.device)
            index = self._new_context_index(window.shape[0], T)[rows].expand(-1, -1, window.shape[2])
            self.ctx[rows, p + T : p + T + K] = window[rows].gather(1, index)
        self.phase = p + T


class CachedAttention(StreamingLayer):
    """A WavLM :class:`~focalcodec.nn.wavlm.SelfAttention` whose keys and values go to a ring of
    ``slots`` per row (``keys``/``values (capacity, H, slots, d)``) at the slots the part stream's
    :class:`StreamingTransformer` chose; the queries attend to every slot (key order does not
    matter given the bias and mask per slot). Rows with no valid frame write nothing."""

    state_names = ("keys", "values")

    def __init__(self, attention: SelfAttention, control: Control, slots: int) -> None:
        super().__init__(control)
        self.attention = attention
        self.slots = slots

    def forward(self, x: Tensor, bias: Tensor, mask: Tensor) -> Tensor:
        c = self.control
        q, k, v = self.attention.project(x)
        n, H, T, d = k.shape
        if self.keys is None:
            self.keys = k.new_zeros(c.capacity, H, self.slots, d)
            self.values = k.new_zeros(c.capacity, H, self.slots, d)
        index = c.kv_index
        keys, values = (self.keys, self.values) if n == self.keys.shape[0] else (self.keys[:n], self.values[:n])
        if c.capturable or not c.all_active:
            active = (c.valid[:n] > 0)[:, None, None, None]
            k, v = torch.where(active, k, keys[index]), torch.where(active, v, values[index])
        if c.inplace:
            keys.index_put_(index, k)
            values.index_put_(index, v)
        else:
            self.keys = keys = keys.index_put(index, k)
            self.values = values = values.index_put(index, v)
        if c.span < self.slots:
            keys, values = keys[:, :, : c.span], values[:, :, : c.span]
        return self.attention.attend(x, q, keys, values, bias, mask)


class StreamingTransformer(nn.Module):
    """The causal WavLM transformer over one chunk of ``T = chunk_frames`` frames per row:
    ``(rows, T, dim) -> (rows, T, dim)``. Each row's keys are the last ``window_size`` frames of
    its stream (in a ring of ``window_size + T`` slots); a slot's bias follows from its frame's age."""

    def __init__(self, encoder: TransformerEncoder, control: Control) -> None:
        super().__init__()
        self.control = control
        self.positional_embedding = encoder.positional_embedding
        self.relative_embedding = encoder.relative_embedding
        # A chunk may end a stream early (fewer valid frames): its frames still see window_size
        # keys back from the last valid one, so the ring keeps chunk_frames more.
        self.window, T = encoder.window_size, encoder.chunk_frames
        self.slots = S = encoder.window_size + T
        self.layers = encoder.layers
        for layer in self.layers:
            layer.attention = CachedAttention(layer.attention, control, self.slots)
        # key - query offsets of slot j for query i: T - 1 - i - age[j], in [-(S + T - 2), T - 1]
        device = encoder.relative_embedding.weight.device
        offsets = torch.arange(-(S + T - 2), T, device=device)
        self.buckets = relative_position_bucket(offsets, encoder.num_buckets, encoder.max_distance)
        self.query_index = torch.arange(T - 1, -1, -1, device=device) + (S + T - 2)  # offsets - age, as indices
        self.slot_index = torch.arange(S, device=device)
        self.head_index = torch.arange(self.layers[0].attention.attention.num_heads, device=device)[None, :, None]

    def forward(self, x: Tensor, frame_lengths: Tensor | None = None) -> Tensor:
        c, S = self.control, self.slots
        x = x + self.positional_embedding(x)
        n, T, _ = x.shape
        frames = c.frames if n == c.frames.shape[0] else c.frames[:n]
        end = (frames + T)[:, None]
        slots = (end - T + self.slot_index[:T]) % S
        c.kv_index = (torch.arange(n, device=x.device)[:, None, None], self.head_index, slots[:, None])
        # A lone row attends to the slots filled so far ([0, frames + T) until the ring wraps);
        # rows of a batch attend to all, so that no row's arithmetic depends on the others'.
        c.span = S if c.capturable or n > 1 or c.max_frames is None else min(S, c.max_frames + T)
        age = (end - 1 - self.slot_index[: c.span]) % S  # (n, span): 0 = the newest frame
        lost = T - c.valid[:n, None]  # padded new frames of a chunk that ends a stream
        # written, not a padded new frame, and within window_size of the last valid frame
        ok = (age < end) & (age >= lost) & (age < self.window + lost)
        table = self.relative_embedding(self.buckets)  # (S + 2T - 2, H)
        bias = table[self.query_index[None, :, None] - age[:, None, :]].permute(0, 3, 1, 2)  # (n, H, T, span)
        mask = torch.where(ok, 0.0, float("-inf"))[:, None, None]
        for layer in self.layers:
            x = layer(x, bias, mask)
        return x


def streaming_tree(part: nn.Module, control: Control) -> nn.Module:
    """Replace, in ``part`` (a copy sharing the weights), the causal convs with context and the
    causal WavLM transformer by their streaming layers (see the module doc)."""
    from .kernels import replace

    def make(name: str, m: nn.Module) -> nn.Module | None:
        if isinstance(m, TransformerEncoder) and m.causal:
            return StreamingTransformer(m, control)
        if isinstance(m, Conv) and m.causal and m.context > 0:
            return StreamingConv(m, control, slide=m.context >= SLIDE_MIN_FRAMES)
        return None

    replace(part, make)
    return part
