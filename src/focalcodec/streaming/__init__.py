"""Streaming: one engine runs every causal stream; chunked pseudo-streaming for the others.

Causal models (``codec.causal``) stream in chunks of ``codec.chunk_size`` = 1280 samples
(80 ms, 4 tokens); 4 tokens give 1920 samples at 24 kHz. Outputs equal the reference's
streaming loop (SPEC §3.5). Map, from the bottom up:

- :mod:`.layers` - how each layer streams: the causal convs (:class:`~.layers.StreamingConv`)
  and the WavLM attention (:class:`~.layers.StreamingTransformer`, :class:`~.layers.CachedAttention`,
  a key/value ring with per-row positions) own fixed-shape state for ``capacity`` rows, with
  per-row reset and per-row valid frames (0: the row is left exactly as it was);
- :mod:`.kernels` - few-frame CPU kernels and reduced precisions (float16 / int8 weights),
  built as new modules sharing the weights;
- :mod:`.state` - :class:`~.state.PartStream`: one streaming part of a codec (encoder, compressor,
  decompressor, decoder) with its state and row operations (run, reset, move, resize,
  snapshot / load);
- :mod:`.engine` - :class:`StreamEngine`: streams open, push any amount, flush and close at
  any time; each step codes one chunk of every stream that has one, in one batch
  (:class:`~.engine.Side`: the encode and decode halves; ``graph="compile"`` / ``"cuda"``
  for ``torch.compile`` and CUDA graphs);
- :mod:`.streams` - adapters: :class:`StreamEncoder`, :class:`StreamDecoder`,
  :class:`StreamCodec` (a ``(B, n)`` push drives ``B`` engine streams in lock step) and the
  reference's positional-state API of :class:`~focalcodec.FocalCodec` (``sig_to_toks(chunk,
  enc_state, comp_state, return_state=True)``; a state may be passed again: it is copied);
- :mod:`.export` - :class:`~.export.ExportStep`: the engine's step with explicit state
  tensors, exported to ONNX / TorchScript by :mod:`focalcodec.export`;
- :mod:`.chunked` - :class:`ChunkedStream`: non-causal models resynthesised in 500 ms chunks
  with 3 s of left context and a 20 ms cross-fade (540 ms algorithmic latency).

::

    enc, dec = StreamEncoder(codec), StreamDecoder(codec)
    for piece in pieces:                  # (n,) or (B, n) at 16 kHz, any n >= 0
        toks = enc.push(piece)            # (B, 4 * complete chunks) int64
        audio = dec.push(toks)            # (B, 1920 * complete groups) at 24 kHz
    toks = enc.flush()                    # the zero-padded last chunk; the stream restarts
    audio = dec.push(toks) ; tail = dec.flush()
"""

from .chunked import ChunkedStream
from .engine import EngineFull, StreamEngine, StreamOutput
from .state import PRECISIONS, PartState
from .streams import StreamCodec, StreamDecoder, StreamEncoder

__all__ = [
    "PRECISIONS",
    "ChunkedStream",
    "EngineFull",
    "PartState",
    "StreamCodec",
    "StreamDecoder",
    "StreamEncoder",
    "StreamEngine",
    "StreamOutput",
]
