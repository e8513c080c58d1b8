"""STAND-IN for the batched streaming engine of issue 13 (``focalcodec.streaming.StreamEngine``).

The serving code (:mod:`focalcodec.serve.server`, :mod:`focalcodec.serve.bench` users) depends
only on the engine's API, which is this module's API exactly::

    engine = StreamEngine(codec, max_streams=64, precision="float32", decoder_precision=None)
    sid = engine.open(mode="resynth", matching_set=None, topk=4)   # EngineFull when full
    engine.push(sid, x)      # encode/resynth: (n,) float samples at 16 kHz; decode: (k,) int tokens
    engine.flush(sid)        # end of utterance; the stream restarts fresh and stays open
    engine.close(sid)        # free the slot
    engine.ready()           # whether step() has work
    outputs = engine.step()  # {sid: StreamOutput}: at most one chunk per stream per step

It is honest but not batched: every stream owns a :class:`~focalcodec.streaming.StreamEncoder`
and/or :class:`~focalcodec.streaming.StreamDecoder`, and :meth:`StreamEngine.step` runs the
ready streams one after the other. Each stream's output is therefore exactly what
:class:`~focalcodec.streaming.StreamCodec` gives on the same input. When the real engine lands
on ``main`` (``focalcodec.streaming.StreamEngine``), :mod:`focalcodec.serve.engine` imports it
instead and this file is deleted.

Not thread-safe: one thread calls it (the server's engine worker).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..streaming import PRECISIONS, StreamDecoder, StreamEncoder

__all__ = ["MODES", "EngineFull", "StreamEngine", "StreamOutput"]

MODES = ("encode", "decode", "resynth")


class EngineFull(InputError):
    """``max_streams`` streams are open: no slot for another one."""


@dataclass
class StreamOutput:
    """What one step gave one stream: ``tokens (k,)`` int64 and ``audio (m,)`` float32 at
    ``sample_rate_out`` (either may be empty). ``flushed``: this output ends an utterance
    asked for with :meth:`StreamEngine.flush`; then ``tokens_total`` (tokens of the utterance:
    produced, or consumed in decode mode) and ``samples_total`` (audio samples produced) are set."""

    tokens: Tensor
    audio: Tensor
    flushed: bool = False
    tokens_total: int | None = None
    samples_total: int | None = None


@dataclass
class _Segment:
    """Input of one utterance: pieces not yet coded, and whether it was flushed."""

    pieces: list[Tensor] = field(default_factory=list)
    size: int = 0
    ended: bool = False

    def take(self, n: int) -> Tensor:
        """Remove and return the first ``n <= size`` steps."""
        buf = torch.cat(self.pieces) if len(self.pieces) != 1 else self.pieces[0]
        head, rest = buf[:n], buf[n:]
        self.pieces = [rest] if rest.numel() else []
        self.size -= n
        return head


class _Stream:
    def __init__(self, mode: str, encoder: StreamEncoder | None, decoder: StreamDecoder | None) -> None:
        self.mode = mode
        self.encoder, self.decoder = encoder, decoder
        self.segments = [_Segment()]
        self.tokens_total = 0
        self.samples_total = 0
        self.started = False  # the coders hold state of the current utterance


class StreamEngine:
    """Many independent streams of one causal codec (stand-in; see the module doc).

    ``precision`` / ``decoder_precision``: as :class:`~focalcodec.streaming.StreamCodec`
    (``"float16"`` and ``"int8"`` on CPU only).
    """

    def __init__(
        self,
        codec: nn.Module,
        max_streams: int = 64,
        precision: str = "float32",
        decoder_precision: str | None = None,
    ) -> None:
        if not getattr(codec, "causal", False):
            raise InputError(
                f"streaming needs a causal model (e.g. focalcodec_50hz_4k_causal); "
                f"{getattr(codec, 'model_id', 'this model')} is not causal"
            )
        if max_streams < 1:
            raise InputError(f"max_streams must be at least 1, got {max_streams}")
        for p in (precision, decoder_precision or precision):
            if p not in PRECISIONS:
                raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {p!r}")
        device = next(codec.parameters()).device
        if device.type != "cpu" and "float32" not in {precision} | {decoder_precision or precision}:
            raise InputError("reduced precisions (float16, int8) run on CPU only; use float32 on a GPU")
        self.codec = codec
        self.max_streams = int(max_streams)
        self.precision = precision
        self.decoder_precision = decoder_precision or precision
        self.chunk_samples = int(codec.chunk_size)
        self.sample_rate_in = int(codec.sample_rate_input)
        self.sample_rate_out = int(codec.sample_rate_output)
        hop = int(codec.encoder.downsample_factor * codec.compressor.downsample_factor)
        self.tokens_per_chunk = self.chunk_samples // hop
        self.samples_per_chunk_out = self.chunk_samples * self.sample_rate_out // self.sample_rate_in
        self.codebook_size = int(codec.codebook_size)
        self.latency_ms = 1000.0 * self.chunk_samples / self.sample_rate_in
        self._streams: dict[int, _Stream] = {}
        self._next_id = 0

    @property
    def num_open(self) -> int:
        return len(self._streams)

    def open(self, mode: str = "resynth", matching_set: Tensor | None = None, topk: int = 4) -> int:
        """A new stream; returns its id. ``matching_set (M, C)``: kNN voice conversion."""
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if len(self._streams) >= self.max_streams:
            raise EngineFull(f"all {self.max_streams} streams are in use; try again later")
        encoder = StreamEncoder(self.codec, precision=self.precision) if mode != "decode" else None
        decoder = (
            StreamDecoder(self.codec, matching_set=matching_set, topk=topk, precision=self.decoder_precision)
            if mode != "encode"
            else None
        )
        sid = self._next_id
        self._next_id += 1
        self._streams[sid] = _Stream(mode, encoder, decoder)
        return sid

    def _get(self, sid: int) -> _Stream:
        try:
            return self._streams[sid]
        except KeyError:
            raise InputError(f"no open stream {sid}") from None

    def push(self, sid: int, x: Tensor) -> None:
        """Queue input: 1-D float samples (encode, resynth) or 1-D integer tokens (decode)."""
        stream = self._get(sid)
        x = torch.as_tensor(x)
        if x.ndim != 1:
            raise InputError(f"push takes a 1-D array, got shape {tuple(x.shape)}")
        if stream.mode == "decode":
            if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
                raise InputError(f"tokens must be integers, got {x.dtype}")
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.codebook_size):
                raise InputError(f"tokens must lie in [0, {self.codebook_size}) for this model")
            x = x.long()
        else:
            if not x.dtype.is_floating_point:
                raise InputError(f"audio must be floating point samples, got {x.dtype}")
            x = x.float()
            if x.numel() and not torch.isfinite(x).all():
                raise InputError("audio contains NaN or infinite samples")
        if x.numel():
            seg = stream.segments[-1]
            seg.pieces.append(x)
            seg.size += x.numel()

    def flush(self, sid: int) -> None:
        """End the current utterance: its remainder is coded at the coming steps, then the
        stream restarts fresh (input pushed after this call belongs to the next utterance)."""
        stream = self._get(sid)
        stream.segments[-1].ended = True
        stream.segments.append(_Segment())

    def close(self, sid: int) -> None:
        """Free the stream's slot; its buffered input and pending output are dropped."""
        self._streams.pop(sid, None)

    def _group(self, stream: _Stream) -> int:
        return self.tokens_per_chunk if stream.mode == "decode" else self.chunk_samples

    def _has_work(self, stream: _Stream) -> bool:
        seg = stream.segments[0]
        return seg.ended or seg.size >= self._group(stream)

    def ready(self) -> bool:
        return any(self._has_work(s) for s in self._streams.values())

    @torch.inference_mode()
    def step(self) -> dict[int, StreamOutput]:
        """One chunk (or an utterance's end) for every stream that has one."""
        outputs = {}
        for sid, stream in self._streams.items():
            if self._has_work(stream):
                outputs[sid] = self._step_one(stream)
        return outputs

    def _step_one(self, stream: _Stream) -> StreamOutput:
        seg = stream.segments[0]
        group = self._group(stream)
        last = seg.ended and seg.size <= group
        x = seg.take(min(seg.size, group)) if seg.size else torch.zeros(0)
        no_tokens = torch.zeros(0, dtype=torch.long)
        if stream.mode == "decode":
            toks, audio = no_tokens, torch.zeros(0)
            if x.numel():
                audio = stream.decoder.push(x)
                stream.started = True
            if last and stream.started:
                audio = torch.cat([audio, stream.decoder.flush()])
            stream.tokens_total += x.numel()
        else:
            toks = no_tokens
            if x.numel():
                toks = stream.encoder.push(x)
                stream.started = True
            if last and stream.started:
                toks = torch.cat([toks, stream.encoder.flush()])
            audio = torch.zeros(0)
            if stream.decoder is not None:
                if toks.numel():
                    audio = stream.decoder.push(toks)
                if last and stream.started:  # the decoder has had tokens: end its utterance too
                    audio = torch.cat([audio, stream.decoder.flush()])
            stream.tokens_total += toks.numel()
        stream.samples_total += audio.numel()
        out = StreamOutput(tokens=toks.cpu(), audio=audio.float().cpu())
        if last:
            stream.segments.pop(0)
            out.flushed = True
            out.tokens_total, out.samples_total = stream.tokens_total, stream.samples_total
            stream.tokens_total = stream.samples_total = 0
            stream.started = False
        return out
