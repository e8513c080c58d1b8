"""Chunked pseudo-streaming for non-causal models (any model works): :class:`ChunkedStream`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..audio import check_signal
from ..errors import InputError
from .streams import as_batch

__all__ = ["ChunkedStream"]


class ChunkedStream:
    """Chunked pseudo-streaming resynthesis for non-causal models (any model works).

    Each ``chunk_ms`` of input is coded together with up to ``context_ms`` of past input as
    left context, plus ``overlap_ms`` of look-ahead; consecutive outputs are joined by a
    linear cross-fade over the overlap. Defaults follow the paper: 500 ms chunks, 3 s of
    context, 20 ms (4 %) overlap. One more token hop (20 ms at 50 Hz) of input is read past
    the overlap because a window's last output samples are edge-padded by the model, so the
    algorithmic latency is 540 ms at 50 Hz (:attr:`latency_ms`), plus the compute time of
    one window.

    ``push(sig)``: ``(n,)`` or ``(B, n)`` at 16 kHz -> audio at ``codec.sample_rate_output``
    for every completed chunk; ``flush()`` processes the remainder and restarts. The output
    has exactly as many samples as the input (times the rate ratio). ``matching_set``
    turns it into streaming voice conversion.
    """

    def __init__(
        self,
        codec: nn.Module,
        chunk_ms: float = 500.0,
        context_ms: float = 3000.0,
        overlap_ms: float = 20.0,
        matching_set: Tensor | None = None,
        topk: int = 4,
        num_splits: int = 1,
    ) -> None:
        self.codec = codec
        sr = codec.sample_rate_input
        hop = codec.hop_length
        # Whole token hops keep every window aligned to the same frame grid.
        self.chunk = max(hop, int(round(chunk_ms * sr / 1000 / hop)) * hop)
        self.context = int(round(context_ms * sr / 1000 / hop)) * hop
        self.overlap = int(round(overlap_ms * sr / 1000 / hop)) * hop
        if self.overlap >= self.chunk:
            raise InputError("overlap_ms must be shorter than chunk_ms")
        # One more token hop of input past the overlap: the last output samples of a window
        # are edge-padded by the model, so they are never used.
        self.margin = hop
        self.ratio = (codec.sample_rate_output, sr)
        self.matching_set = matching_set
        self.topk = topk
        self.num_splits = num_splits
        self.reset()

    @property
    def latency_ms(self) -> float:
        return 1000.0 * (self.chunk + self.overlap + self.margin) / self.codec.sample_rate_input

    def reset(self) -> None:
        self._history: Tensor | None = None  # input samples from _hist_start on
        self._hist_start = 0
        self._done = 0  # input samples whose output has been emitted
        self._tail: Tensor | None = None  # previous window's output over the overlap
        self._one = False
        self.batch_size: int | None = None

    def _out(self, n: int) -> int:
        return n * self.ratio[0] // self.ratio[1]

    @torch.inference_mode()
    def _window(self, start: int, end: int) -> Tensor:
        """Output for input ``[start, end)`` (absolute samples, within the history)."""
        assert self._history is not None
        x = self._history[:, start - self._hist_start : end - self._hist_start]
        toks = self.codec.sig_to_toks(x)
        out_len = self._out(x.shape[1])
        return self.codec.toks_to_sig(
            toks, matching_set=self.matching_set, topk=self.topk, num_splits=self.num_splits, output_length=out_len
        ).float()

    def _step(self, end_in: int, final: bool) -> Tensor:
        """Emit output for input ``[_done, end_in)``, using input up to ``end_in + overlap``
        (or the end of the history when ``final``)."""
        assert self._history is not None
        total = self._hist_start + self._history.shape[1]
        look = total if final else end_in + self.overlap + self.margin
        start = max(0, self._done - self.context)
        y = self._window(start, look)
        offset = self._out(self._done - start)
        body = y[:, offset:]
        if self._tail is not None and self._tail.shape[1] > 0:
            n = min(self._tail.shape[1], body.shape[1])
            fade = torch.linspace(0.0, 1.0, n + 2, device=body.device)[1:-1]
            body = torch.cat([self._tail[:, :n] * (1 - fade) + body[:, :n] * fade, body[:, n:]], dim=1)
        emit = self._out(end_in) - self._out(self._done)
        out, self._tail = body[:, :emit], body[:, emit : emit + self._out(self.overlap)]
        self._done = end_in
        keep_from = max(0, self._done - self.context)
        self._history = self._history[:, keep_from - self._hist_start :]
        self._hist_start = keep_from
        return out

    def push(self, sig: Tensor) -> Tensor:
        x, one = as_batch(sig, "audio", self.batch_size)
        x = check_signal(x, "audio", (2,), allow_empty=True)  # int16 / int32 PCM scaled, NaN refused
        if self.batch_size is None:
            self.batch_size, self._one = x.shape[0], one
        x = x.to(self.codec.device, torch.float32)
        self._history = x if self._history is None else torch.cat([self._history, x], dim=1)
        total = self._hist_start + self._history.shape[1]
        outs = [self._history.new_zeros(x.shape[0], 0)]
        while total - self._done >= self.chunk + self.overlap + self.margin:
            outs.append(self._step(self._done + self.chunk, final=False))
        out = torch.cat(outs, dim=1)
        return out[0] if self._one else out

    def flush(self) -> Tensor:
        if self.batch_size is None or self._history is None:
            raise InputError("flush() before any push(): nothing to flush")
        total = self._hist_start + self._history.shape[1]
        outs = [self._history.new_zeros(self.batch_size, 0)]
        while self._done < total:
            outs.append(self._step(min(self._done + self.chunk, total), final=True))
        out = torch.cat(outs, dim=1)
        one = self._one
        self.reset()
        return out[0] if one else out
