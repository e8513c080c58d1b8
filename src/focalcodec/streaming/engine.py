"""The streaming engine: many independent streams of one causal codec in one batched step.

::

    engine = StreamEngine(codec, max_streams=64)       # precision="float16", decode_precision="int8" on CPU
    sid = engine.open(mode="resynth")                  # "encode" (audio -> tokens), "decode", "resynth"
    engine.push(sid, samples)                          # 1-D, any length (decode: 1-D integer tokens)
    engine.flush(sid)                                  # end of utterance; the stream then restarts fresh
    while engine.ready():
        for sid, out in engine.step().items():         # out.tokens (k,) int64, out.audio (m,) float32
            ...
    engine.close(sid)

Each side (:class:`Side`: the encode side audio -> tokens, the decode side tokens -> audio)
keeps the state of its streams in rows ``[0, live)`` of fixed-shape tensors (rows are
compacted when a stream closes: the last row moves into the hole); a step runs every live row,
the rows without a chunk with no valid frame (left exactly as they were). A stream's
concatenated outputs equal what it gets alone (:class:`~focalcodec.streaming.StreamCodec` on the
same input): tokens identical, audio equal to float rounding.

``graph="fixed"`` runs every part's step at the full ``max_streams`` rows with tensor-only
control (see :mod:`focalcodec.streaming.layers`), ``"compile"`` the same through
``torch.compile``, ``"cuda"`` as CUDA graphs captured once and replayed; the default runs
eagerly on the live rows only, with host-side shortcuts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..audio import check_signal, check_token_ids
from ..errors import InputError
from .state import PRECISIONS, PartStream

__all__ = ["MODES", "EngineFull", "Side", "StreamEngine", "StreamOutput"]

MODES = ("encode", "decode", "resynth")
GRAPHS = (None, "fixed", "compile", "cuda")


class EngineFull(InputError):
    """``max_streams`` streams are open: no slot for another one."""


@dataclass
class StreamOutput:
    """What one step gave one stream: ``tokens (k,)`` int64 and ``audio (m,)`` float32 at
    ``sample_rate_out`` (either may be empty). ``flushed``: this output ends an utterance asked for
    with :meth:`StreamEngine.flush`; ``tokens_total`` (tokens of the utterance: produced, or
    consumed in decode mode) and ``samples_total`` (audio samples produced) so far."""

    tokens: Tensor
    audio: Tensor
    flushed: bool = False
    tokens_total: int = 0
    samples_total: int = 0


class _Graph:
    """A part stream's step at its full capacity with fixed input buffers: compiled or CUDA-graphed."""

    def __init__(self, part: PartStream, kind: str) -> None:
        self.part, c = part, part.control
        decompressor = part.part == "decompressor"
        dtype = part.model.in_proj.weight.dtype if decompressor else torch.float32
        self.x = torch.zeros((part.capacity,) + part.input_shape, dtype=dtype, device=part.device)
        self.valid = c.valid = torch.zeros(part.capacity, dtype=torch.long, device=part.device)

        def step() -> Tensor:
            kwargs = {"lengths": self.valid} if decompressor else {}
            y = part.model(self.x, **kwargs)
            c.frames.add_(self.valid)
            return y

        if kind != "cuda":
            self.fn = torch.compile(step, dynamic=False) if kind == "compile" else step
            return
        side_stream = torch.cuda.Stream()
        side_stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side_stream):
            for _ in range(3):  # no valid frame: warms up without changing any state
                step()
        torch.cuda.current_stream().wait_stream(side_stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.y = step()
        self.fn = self._replay

    def _replay(self) -> Tensor:
        self.graph.replay()
        return self.y.clone()

    def __call__(self, x: Tensor, valid: list[int]) -> Tensor:
        n = x.shape[0]
        self.x[:n].copy_(x)
        self.x[n:].zero_()
        full = valid + [0] * (self.part.capacity - n)
        self.valid.copy_(torch.tensor(full, dtype=torch.long))
        for row, v in enumerate(full):
            self.part.frames_host[row] += v
        return self.fn()[:n]


class Side:
    """One half of a causal codec for up to ``capacity`` rows: ``"encode"`` (encoder, compressor,
    quantizer: ``(rows, chunk_size)`` audio -> ``(rows, chunk_frames)`` tokens) or ``"decode"``
    (quantizer, decompressor, decoder: ``(rows, group)`` tokens -> ``(rows, group * hop)`` audio).
    ``valid``: frames (tokens) that count per row."""

    def __init__(
        self,
        codec: nn.Module,
        side: str,
        capacity: int = 1,
        precision: str = "float32",
        fast: bool = True,
        graph: str | None = None,
        inplace: bool = True,
    ) -> None:
        names = ("encoder", "compressor") if side == "encode" else ("decompressor", "decoder")
        capturable = graph is not None or not inplace
        self.parts = [PartStream(codec, name, capacity, precision, fast, capturable, inplace) for name in names]
        self.side, self.quantizer = side, codec.quantizer
        self.upsample = int(codec.frames_per_token)
        self.graphs = [_Graph(part, graph) for part in self.parts] if graph else None

    @property
    def capacity(self) -> int:
        return self.parts[0].capacity

    def _run_part(self, i: int, x: Tensor, valid: list[int] | Tensor) -> Tensor:
        if self.graphs is not None:
            return self.graphs[i](x, list(valid))
        return self.parts[i].run(x, valid)

    def run(self, x: Tensor, valid: list[int] | Tensor, knn: dict[int, tuple] | None = None) -> Tensor:
        """One step of rows ``[0, x.shape[0])``; ``knn``: row -> ``(matching_set, topk, num_splits)``."""
        if self.side == "encode":
            lats = self._run_part(1, self._run_part(0, x, valid), valid)
            return self.quantizer.lats_to_toks(F.normalize(lats, dim=-1))
        codes = self.quantizer.toks_to_codes(x).to(self.parts[0].model.in_proj.weight.dtype)
        qfeats = self._run_part(0, codes, valid)
        for row, (matching_set, topk, num_splits) in (knn or {}).items():
            qfeats[row] = _knn(qfeats[row], matching_set, topk, num_splits)
        frames = valid * self.upsample if isinstance(valid, Tensor) else [v * self.upsample for v in valid]
        return self._run_part(1, qfeats, frames).float()

    def resize(self, capacity: int) -> None:
        for part in self.parts:
            part.resize(capacity)

    def reset(self, row: int) -> None:
        for part in self.parts:
            part.reset([row])

    def move(self, src: int, dst: int) -> None:
        for part in self.parts:
            part.move(src, dst)


def _knn(qfeats: Tensor, matching_set: Tensor, topk: int, num_splits: int) -> Tensor:
    from ..codec import FocalCodec

    return FocalCodec.knn(qfeats, matching_set.to(qfeats), topk, num_splits).mean(dim=-2)


@dataclass
class _Stream:
    mode: str
    knn: tuple | None
    rows: dict[str, int] = field(default_factory=dict)  # side -> row
    # utterances, the first being coded: [input pieces, ended by flush, flush(pad=...)]
    queue: list[list] = field(default_factory=lambda: [[[], False, True]])
    tokens_total: int = 0
    samples_total: int = 0

    @property
    def size(self) -> int:
        return sum(p.shape[0] for p in self.queue[0][0])

    def take(self, n: int) -> Tensor:
        """Remove and return the first ``n`` input steps of the current utterance."""
        pieces = self.queue[0][0]
        buf = torch.cat(pieces) if pieces else torch.zeros(0)
        self.queue[0][0] = [buf[n:]] if buf.shape[0] > n else []
        return buf[:n]


class StreamEngine:
    """Many independent streams of one causal codec, stepped together (see the module doc).

    ``precision`` / ``decode_precision``: as :class:`~focalcodec.streaming.StreamCodec`
    (``"float16"`` and ``"int8"`` on CPU only). ``optimize``: the few-frame CPU kernels
    (:mod:`focalcodec.streaming.kernels`). ``graph``: None, ``"fixed"``, ``"compile"`` or
    ``"cuda"`` (see the module doc).
    Not thread-safe: one thread calls it.
    """

    def __init__(
        self,
        codec: nn.Module,
        max_streams: int = 64,
        precision: str = "float32",
        decode_precision: str | None = None,
        optimize: bool = True,
        graph: str | None = None,
    ) -> None:
        if not getattr(codec, "causal", False):
            raise InputError(
                "streaming needs a causal model (e.g. focalcodec_50hz_4k_causal); "
                f"{getattr(codec, 'model_id', 'this model')} is not causal: use ChunkedStream for pseudo-streaming"
            )
        if max_streams < 1:
            raise InputError(f"max_streams must be at least 1, got {max_streams}")
        if graph not in GRAPHS:
            raise InputError(f"graph must be one of {GRAPHS}, got {graph!r}")
        if graph == "cuda" and codec.device.type != "cuda":
            raise InputError("graph='cuda' needs the codec on a CUDA device")
        self.decode_precision = decode_precision or precision
        device = codec.device
        for p in (precision, self.decode_precision):
            if p not in PRECISIONS:
                raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {p!r}")
            if p != "float32" and device.type != "cpu":
                raise InputError(f"{p} streaming runs on CPU only; use precision='float32' on {device.type}")
        self.codec, self.max_streams, self.precision = codec, int(max_streams), precision
        self.optimize, self.graph = optimize, graph
        self.chunk_samples = int(codec.chunk_size)
        self.sample_rate_in = int(codec.sample_rate_input)
        self.sample_rate_out = int(codec.sample_rate_output)
        self.tokens_per_chunk = int(codec.chunk_size // codec.hop_length)
        refiner = getattr(codec.decompressor, "refiner", None)
        self.group = int(refiner.chunk) if refiner is not None else self.tokens_per_chunk
        self.samples_per_token = int(codec.output_hop_length)
        self.samples_per_chunk_out = self.tokens_per_chunk * self.samples_per_token
        self.codebook_size = int(codec.codebook_size)
        self.latency_ms = 1000.0 * self.chunk_samples / self.sample_rate_in
        self.device = device
        self._sides: dict[str, Side] = {}
        self._live: dict[str, list[int]] = {"encode": [], "decode": []}  # side -> sid per row
        self._streams: dict[int, _Stream] = {}
        self._next = 0

    @property
    def num_open(self) -> int:
        return len(self._streams)

    # -- streams -----------------------------------------------------------------------------
    # (state tensors are made and changed in inference mode only: step() runs in it)
    @torch.inference_mode()
    def open(
        self, mode: str = "resynth", matching_set: Tensor | None = None, topk: int = 4, num_splits: int = 1
    ) -> int:
        """A new stream; returns its id. ``matching_set (M, C)``: kNN voice conversion of its
        decoded frames (decode and resynth modes; SPEC §3.4) with ``topk`` and ``num_splits``."""
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if len(self._streams) >= self.max_streams:
            raise EngineFull(f"all {self.max_streams} streams are in use; try again later")
        knn = None
        if matching_set is not None:
            if mode == "encode":
                raise InputError("a matching set converts decoded audio: use mode 'decode' or 'resynth'")
            knn = (self.check_matching_set(matching_set, topk), int(topk), max(1, int(num_splits)))
        sid, self._next = self._next, self._next + 1
        stream = _Stream(mode, knn)
        for side in ("encode", "decode"):
            if mode in (side, "resynth"):
                stream.rows[side] = self._add_row(side, sid)
        self._streams[sid] = stream
        return sid

    def check_matching_set(self, feats: Tensor, topk: int) -> Tensor:
        """``feats`` as a matching set on the codec's device; InputError when it cannot be one."""
        feats = torch.as_tensor(feats)
        width = int(self.codec.feature_dim)
        if feats.ndim != 2 or feats.shape[1] != width or feats.shape[0] < topk or not feats.dtype.is_floating_point:
            raise InputError(
                f"matching_set must be float (M, {width}) with M >= topk={topk}, got {feats.dtype} {tuple(feats.shape)}"
            )
        if not torch.isfinite(feats).all():
            raise InputError("matching_set contains NaN or infinite values")
        return feats.to(self.device)

    def _add_row(self, side: str, sid: int) -> int:
        live = self._live[side]
        if side not in self._sides:
            first = self.max_streams if self.graph else 1
            precision = self.precision if side == "encode" else self.decode_precision
            self._sides[side] = Side(self.codec, side, first, precision, self.optimize, self.graph)
        s = self._sides[side]
        if len(live) == s.capacity:
            s.resize(min(self.max_streams, 2 * s.capacity))
        live.append(sid)
        s.reset(len(live) - 1)
        return len(live) - 1

    def _stream(self, sid: int) -> _Stream:
        try:
            return self._streams[sid]
        except (KeyError, TypeError):
            raise InputError(f"no open stream {sid!r}") from None

    def push(self, sid: int, x: Tensor) -> None:
        """Queue input: 1-D samples at 16 kHz (encode, resynth: float, or int16 / int32 PCM,
        scaled as :meth:`FocalCodec.encode` does) or 1-D integer tokens (decode), a tensor on any
        device or an array. Nothing runs until :meth:`step`."""
        stream = self._stream(sid)
        if stream.mode == "decode":
            x = check_token_ids(x, self.codebook_size, "tokens", (1,), "1-D (k,) integers", allow_empty=True)
        else:
            x = check_signal(x, "audio", (1,), "1-D (n,) samples at 16 kHz", allow_empty=True).float()
        if x.numel():
            stream.queue[-1][0].append(x.cpu())

    def flush(self, sid: int, pad: bool = True) -> None:
        """End the current utterance: its remainder is coded at the coming steps (audio
        zero-padded to a whole chunk, as the reference demo; a partial token group decoded as
        offline), then the stream restarts fresh (its state reset, totals zeroed) and stays open.
        ``pad=False``: the padding of the last chunk is masked instead, so the utterance's tokens
        are those of one offline pass over its audio (``ceil(n / 320)`` of them)."""
        stream = self._stream(sid)
        stream.queue[-1][1:] = [True, pad]
        stream.queue.append([[], False, True])

    @torch.inference_mode()
    def close(self, sid: int) -> None:
        """Free the stream's slot at once; its buffered input and pending output are dropped."""
        stream = self._streams.pop(sid, None)
        if stream is None:
            return
        for side, row in stream.rows.items():
            live = self._live[side]
            last = len(live) - 1
            if row != last:  # compact: the last row moves into the hole
                self._sides[side].move(last, row)
                live[row] = live[last]
                self._streams[live[row]].rows[side] = row
            live.pop()

    def _group(self, stream: _Stream) -> int:
        return self.group if stream.mode == "decode" else self.chunk_samples

    def _has_work(self, stream: _Stream) -> bool:
        return stream.queue[0][1] or stream.size >= self._group(stream)

    def ready(self) -> bool:
        """Whether :meth:`step` has work."""
        return any(self._has_work(s) for s in self._streams.values())

    # -- the step ----------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> dict[int, StreamOutput]:
        """One batched step: a chunk (or an utterance's end) of every stream that has one."""
        work = {sid: s for sid, s in self._streams.items() if self._has_work(s)}
        rows = {side: len(live) for side, live in self._live.items()}
        x = {
            "encode": torch.zeros(rows["encode"], self.chunk_samples),
            "decode": torch.zeros(rows["decode"], self.group, dtype=torch.long),
        }
        valid = {side: [0] * n for side, n in rows.items()}
        last = {}
        for sid, s in work.items():
            size, group = s.size, self._group(s)
            last[sid] = s.queue[0][1] and size <= group
            piece = s.take(group)
            if piece.numel():
                side = "decode" if s.mode == "decode" else "encode"
                x[side][s.rows[side], : piece.shape[0]] = piece
                # tokens of a zero-padded last chunk: all (as the demo reads it) or the unpadded audio's
                frames = piece.shape[0] if side == "decode" else self.tokens_per_chunk
                if side == "encode" and last[sid] and not s.queue[0][2]:
                    frames = -(-piece.shape[0] * self.tokens_per_chunk // self.chunk_samples)
                valid[side][s.rows[side]] = frames
        toks = audio = None
        if any(valid["encode"]):
            toks = self._sides["encode"].run(x["encode"].to(self.device), valid["encode"]).cpu()
            for s in work.values():
                if s.mode == "resynth":
                    x["decode"][s.rows["decode"]] = toks[s.rows["encode"]]
                    valid["decode"][s.rows["decode"]] = valid["encode"][s.rows["encode"]]
        if any(valid["decode"]):
            knn = {s.rows["decode"]: s.knn for s in work.values() if s.knn and valid["decode"][s.rows["decode"]]}
            audio = self._sides["decode"].run(x["decode"].to(self.device), valid["decode"], knn).cpu()
        return {sid: self._output(s, toks, audio, valid, last[sid]) for sid, s in work.items()}

    def _output(self, s: _Stream, toks: Tensor | None, audio: Tensor | None, valid: dict, last: bool) -> StreamOutput:
        out = StreamOutput(torch.zeros(0, dtype=torch.long), torch.zeros(0), last)
        if "encode" in s.rows and valid["encode"][s.rows["encode"]]:
            out.tokens = toks[s.rows["encode"], : valid["encode"][s.rows["encode"]]].clone()
            s.tokens_total += out.tokens.numel()
        if "decode" in s.rows and valid["decode"][s.rows["decode"]]:
            n = valid["decode"][s.rows["decode"]]
            out.audio = audio[s.rows["decode"], : n * self.samples_per_token].clone()
            s.samples_total += out.audio.numel()
            s.tokens_total += n if s.mode == "decode" else 0
        out.tokens_total, out.samples_total = s.tokens_total, s.samples_total
        if last:  # the utterance ends: the next one starts a new stream
            s.queue.pop(0)
            s.tokens_total = s.samples_total = 0
            for side, row in s.rows.items():
                self._sides[side].reset(row)
        return out
