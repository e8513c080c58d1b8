"""Adapters over the engine: the stream classes and the reference's positional-state API.

- :class:`StreamEncoder` / :class:`StreamDecoder` / :class:`StreamCodec`: a ``(B, n)`` push drives
  ``B`` streams of a :class:`~focalcodec.streaming.engine.StreamEngine` in lock step;
- :func:`run_part`: one part of ``codec.sig_to_toks(chunk, enc_state, comp_state,
  return_state=True)`` and the other reference-named methods, on a :class:`~focalcodec.streaming.state.PartStream`
  kept per codec. States are :class:`~focalcodec.streaming.state.PartState` values, copied in
  and out of the part stream: the same state passed twice gives the same result.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..audio import as_tensor, check_signal, check_token_ids
from ..errors import InputError
from .engine import StreamEngine
from .state import PartState, PartStream, out_length

__all__ = ["StreamCodec", "StreamDecoder", "StreamEncoder", "as_batch", "run_part"]


def as_batch(x: Tensor, what: str, batch_size: int | None) -> tuple[Tensor, bool]:
    """``(n,)`` or ``(B, n)`` -> ``(B, n)`` and whether the input was 1-D."""
    x = as_tensor(x, what)
    if x.ndim not in (1, 2):
        raise InputError(f"{what} must be 1-D (one stream) or 2-D (streams, time), got shape {tuple(x.shape)}")
    one = x.ndim == 1
    x = x[None] if one else x
    if batch_size is not None and x.shape[0] != batch_size:
        raise InputError(
            f"{what} has {x.shape[0]} streams but this stream was started with {batch_size}; "
            "call reset() to start a new batch"
        )
    return x, one


class _Lockstep:
    """``B`` streams of one mode of an engine, pushed together (subclasses set the mode)."""

    mode = "resynth"
    what = "audio"

    def __init__(
        self,
        codec: nn.Module,
        optimize: bool = True,
        precision: str = "float32",
        decode_precision: str | None = None,
        matching_set: Tensor | None = None,
        topk: int = 4,
        num_splits: int = 1,
    ) -> None:
        self.codec = codec
        self._args = dict(precision=precision, decode_precision=decode_precision, optimize=optimize)
        self._knn = {} if matching_set is None else dict(matching_set=matching_set, topk=topk, num_splits=num_splits)
        probe = StreamEngine(codec, 1, **self._args)  # checks the codec, the precisions and the matching set now
        if matching_set is not None:
            probe.check_matching_set(matching_set, topk)
        self.chunk_size, self.group = probe.chunk_samples, probe.group
        self.hop = probe.chunk_samples // probe.tokens_per_chunk
        self.engine: StreamEngine | None = None
        self.sids: list[int] = []
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next push starts new streams (of any batch size)."""
        if self.engine is not None:
            for sid in self.sids:
                self.engine.close(sid)
        self.sids = []
        self.batch_size: int | None = None
        self._one = False
        self.steps_in = 0

    def _push(self, x: Tensor) -> tuple[list[list], bool]:
        x, one = as_batch(x, self.what, self.batch_size)
        if self.what == "tokens":  # the whole batch is checked before any row is queued
            x = check_token_ids(x, self.codec.codebook_size, allow_empty=True)
        else:
            x = check_signal(x, self.what, (2,), allow_empty=True)
        if self.batch_size is None:
            if self.engine is None or self.engine.max_streams < x.shape[0]:
                self.engine = StreamEngine(self.codec, x.shape[0], **self._args)
            self.sids = [self.engine.open(self.mode, **self._knn) for _ in range(x.shape[0])]
            self.batch_size, self._one = x.shape[0], one
        for sid, row in zip(self.sids, x, strict=True):
            self.engine.push(sid, row)
        self.steps_in += x.shape[1]
        return self._drain(), self._one

    def _flush(self, pad: bool = True) -> tuple[list[list], bool]:
        if self.batch_size is None:
            raise InputError("flush() before any push(): nothing to flush")
        for sid in self.sids:
            self.engine.flush(sid, pad)
        outs, one = self._drain(), self._one
        self.reset()
        return outs, one

    def _drain(self) -> list[list]:
        """``[tokens pieces, audio pieces]`` per row, over every step that has work."""
        outs: list[list] = [[[], []] for _ in self.sids]
        while self.engine.ready():
            step = self.engine.step()
            for row, sid in enumerate(self.sids):
                if sid in step:
                    outs[row][0].append(step[sid].tokens)
                    outs[row][1].append(step[sid].audio)
        return outs

    def _stack(self, got: tuple[list[list], bool], which: int) -> Tensor:
        outs, one = got
        dtype = torch.long if which == 0 else torch.float32
        out = torch.stack([torch.cat(o[which]) if o[which] else torch.zeros(0, dtype=dtype) for o in outs])
        out = out.to(self.engine.device)
        return out[0] if one else out


class StreamEncoder(_Lockstep):
    """16 kHz audio in chunks of any size -> tokens, one 4-token group per 1280 samples.

    ``push(sig)``: ``(n,)`` or ``(B, n)`` float -> ``(T,)`` or ``(B, T)`` int64 tokens with
    ``T = 4 * (chunks completed by this push)`` (possibly 0). ``flush()`` zero-pads the
    buffered remainder to a whole chunk (as the reference demo), returns its tokens and restarts
    the stream; ``flush(pad=False)`` masks that padding instead: the stream's tokens are then
    those of one offline pass (``num_valid_tokens`` of them). ``reset()`` drops the buffer and
    the state.
    """

    mode = "encode"

    def __init__(self, codec: nn.Module, optimize: bool = True, precision: str = "float32") -> None:
        super().__init__(codec, optimize, precision)

    @property
    def samples_in(self) -> int:
        return self.steps_in

    @property
    def buffered(self) -> int:
        """Samples waiting for their chunk to complete."""
        return self.steps_in % self.chunk_size

    @property
    def num_valid_tokens(self) -> int:
        """Tokens an offline pass over the unpadded samples seen so far gives (``ceil(n/320)``)."""
        return -(-self.steps_in // self.hop)

    def push(self, sig: Tensor) -> Tensor:
        return self._stack(self._push(sig), 0)

    def flush(self, pad: bool = True) -> Tensor:
        return self._stack(self._flush(pad), 0)


class StreamDecoder(_Lockstep):
    """Tokens, any number per call -> audio at ``codec.sample_rate_output`` (24 kHz).

    ``push(toks)``: ``(k,)`` or ``(B, k)`` int -> ``(M,)`` or ``(B, M)`` float32 with
    ``M = 1920 * (4-token groups completed)``: the decompressor's refiner mixes each group of
    4 tokens, so audio for a token comes out once its group is complete. ``flush()`` decodes a
    trailing partial group (as an offline pass does) and restarts the stream.
    ``matching_set (M, C)``: kNN voice conversion of every frame before the decoder (SPEC §3.4,
    :mod:`focalcodec.vc`), with ``topk`` and ``num_splits``.
    """

    mode = "decode"
    what = "tokens"

    def __init__(
        self,
        codec: nn.Module,
        matching_set: Tensor | None = None,
        topk: int = 4,
        num_splits: int = 1,
        optimize: bool = True,
        precision: str = "float32",
    ) -> None:
        super().__init__(codec, optimize, "float32", precision, matching_set, topk, num_splits)

    @property
    def buffered(self) -> int:
        """Tokens waiting for their group to complete."""
        return self.steps_in % self.group

    def push(self, toks: Tensor) -> Tensor:
        return self._stack(self._push(toks), 1)

    def flush(self) -> Tensor:
        return self._stack(self._flush(), 1)


class StreamCodec(_Lockstep):
    """Encoder and decoder streams chained: 16 kHz audio in, tokens and 24 kHz audio out.

    ``push(sig) -> (toks, audio)``; ``flush()`` ends both (audio past the input is not trimmed:
    ``output_length`` tells how many output samples the input corresponds to).
    ``precision`` applies to both sides unless ``decode_precision`` (the decode side: decompressor
    and decoder) is given: e.g. ``precision="float16", decode_precision="int8"`` keeps the tokens
    of float16 weights and synthesises with int8 weights (docs/streaming.md).
    """

    def __init__(
        self,
        codec: nn.Module,
        matching_set: Tensor | None = None,
        topk: int = 4,
        num_splits: int = 1,
        optimize: bool = True,
        precision: str = "float32",
        decode_precision: str | None = None,
    ) -> None:
        super().__init__(codec, optimize, precision, decode_precision, matching_set, topk, num_splits)

    @property
    def latency_ms(self) -> float:
        """Algorithmic latency: one chunk (80 ms for the official causal models)."""
        return 1000.0 * self.chunk_size / self.codec.sample_rate_input

    @property
    def output_length(self) -> int:
        """Output samples that correspond to the input pushed so far."""
        return self.steps_in * self.codec.sample_rate_output // self.codec.sample_rate_input

    def push(self, sig: Tensor) -> tuple[Tensor, Tensor]:
        got = self._push(sig)
        return self._stack(got, 0), self._stack(got, 1)

    def flush(self) -> tuple[Tensor, Tensor]:
        got = self._flush()
        return self._stack(got, 0), self._stack(got, 1)


# -- the positional-state API ------------------------------------------------------------------
_PARTS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, PartStream]] = weakref.WeakKeyDictionary()


@torch.no_grad()
def run_part(codec: nn.Module, part: str, x: Tensor, state: PartState | None) -> tuple[Tensor, PartState]:
    """``codec.<part>`` over ``x (B, ...)`` continuing the streams of ``state`` (None: new
    streams) -> the output and the new state. The encoder takes whole chunks; the other parts
    any number of frames (the decompressor's refiner blocks start at the call, as the reference's)."""
    part_streams = _PARTS.setdefault(codec, {})
    # one part stream per mode: state made in inference mode can only be changed in it
    key = (part, codec.device, torch.is_inference_mode_enabled())
    part_stream = part_streams.get(key)
    if part_stream is None:
        part_stream = part_streams[key] = PartStream(codec, part, fast=False)
    B = x.shape[0]
    if state is not None:
        if isinstance(state, PartState) and state.batch_size != B:
            raise InputError(f"the {part} state holds {state.batch_size} streams, the input {B}")
    if part_stream.capacity < B:
        part_stream.resize(B)
    if state is None:
        part_stream.reset(range(B))
    else:
        part_stream.load(state)
    (step, *_), frames = part_stream.input_shape, part_stream.step_frames
    n = x.shape[1]
    if part == "encoder" and (n == 0 or n % step):
        raise InputError(
            f"a streaming call of the encoder takes whole chunks of {step} samples, got {n}: zero-pad the last "
            "chunk, or use focalcodec.streaming.StreamEncoder, which buffers input of any size"
        )
    outs = []
    for start in range(0, n, step):
        piece = x[:, start : start + step]
        valid = piece.shape[1] * frames // step
        piece = F.pad(piece, (0, 0) * (piece.ndim - 2) + (0, step - piece.shape[1]))
        outs.append(part_stream.run(piece, [valid] * B))
    if not outs:
        return x.new_zeros(B, 0, *x.shape[2:]), part_stream.snapshot(B)
    y = torch.cat(outs, dim=1)
    return y[:, : out_length(n, step, y.shape[1] // len(outs))], part_stream.snapshot(B)
