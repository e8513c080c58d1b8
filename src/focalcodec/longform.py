"""Inputs of any length with bounded memory.

* **Non-causal models** (global context over the whole input): the token grid is cut into
  windows of ``window`` seconds. Each window is encoded together with ``context`` seconds
  of left context and ``lookahead`` seconds of right context, and only its own tokens are
  kept. Decoding runs the same windows over the tokens and joins the audio with a linear
  cross-fade of ``crossfade`` seconds centred on each window boundary (the paper's chunked
  inference: left context, overlap, linear cross-fade OLA). Window starts fall on token
  boundaries, so every window sees exactly the samples / tokens it would see in one pass.
* **Causal models**: chunk by chunk through the streaming states (``chunk`` seconds per
  call, a multiple of ``codec.chunk_size``); this equals one offline pass.

Inputs that fit in one window are processed in one pass, exactly as ``codec.encode`` /
``codec.decode``. Memory is the model, the input, the output and one window; with an
:class:`~focalcodec.audio.AudioFileSamples` as input (what :func:`focalcodec.compress` uses for
WAV/FLAC files at 16 kHz), the input is read window by window and not held at all.

    >>> toks = encode_long(codec, sig)                      # sig: (N,) @ 16 kHz -> (T',) int64
    >>> audio = decode_long(codec, toks, num_samples=N)     # -> (floor(N*sr_out/16k),) float32
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from .audio import AudioFileSamples, check_signal, crossfade, fit_length
from .errors import InputError
from .windowing import DEFAULT, Windowing

__all__ = ["Windowing", "decode_long", "encode_long", "iter_decode"]


Progress = Callable[[float], object]


def _report(progress: Progress | None, seconds: float) -> None:
    if progress is not None:
        progress(round(seconds, 3))


def _windows(num_tokens: int, core: int, left: int, right: int) -> list[tuple[int, int, int, int]]:
    """(start, a, b, end) token indices: window [start, end) keeps tokens [a, b)."""
    count = -(-num_tokens // core)
    base, extra = divmod(num_tokens, count)  # balanced: every window keeps >= core / 2 tokens
    out, a = [], 0
    for k in range(count):
        b = a + base + (1 if k < extra else 0)
        out.append((max(0, a - left), a, b, min(num_tokens, b + right)))
        a = b
    return out


@torch.inference_mode()
def encode_long(
    codec, sig: Tensor | AudioFileSamples, windowing: Windowing = DEFAULT, progress: Progress | None = None
) -> Tensor:
    """``sig: (N,)`` float at 16 kHz -> ``(codec.num_tokens(N),)`` int64 tokens (on CPU).

    Non-causal: one pass if the input fits in one window, else windows with context.
    Causal: streaming calls of ``windowing.chunk`` seconds. ``sig`` may also be an
    :class:`~focalcodec.audio.AudioFileSamples` at the model's rate: only the samples of the
    window being encoded are then in memory (same tokens as the loaded file).
    ``progress(seconds)`` is called with the seconds of input done after each window.
    """
    if isinstance(sig, AudioFileSamples):
        if sig.sample_rate != codec.sample_rate_input:
            raise InputError(
                f"{sig.path} is at {sig.sample_rate} Hz; the model reads {codec.sample_rate_input} Hz "
                "(load and resample it)"
            )
        n = len(sig)
    else:
        sig = check_signal(sig, "the signal")
        n = sig.shape[0]
    total = int(codec.num_tokens(n))
    if codec.causal:
        from .streaming import StreamEncoder

        step = windowing.causal_step(codec.chunk_size, codec.sample_rate_input)
        stream = StreamEncoder(codec, optimize=False)
        parts = []
        for s in range(0, n, step):
            chunk = sig[s : s + step].to(torch.float32)
            parts.append(stream.push(chunk).cpu())
            _report(progress, chunk.shape[-1] / codec.sample_rate_input)
        # the last chunk's padding masked: the tokens of one offline pass
        out = torch.cat(parts + [stream.flush(pad=False).cpu()])
    else:
        core, left, right = windowing.token_geometry(codec.token_rate)
        if total <= core + left + right:
            out = codec.encode(sig[0:n]).tokens.cpu()
            _report(progress, n / codec.sample_rate_input)
            return out
        spt = codec.hop_length
        # Token j depends on samples [spt*j, spt*(j+1) + tail): the last frame's window overhang.
        tail = codec.receptive_field - codec.feature_hop_length
        out = torch.empty(total, dtype=torch.long)
        for start, a, b, end in _windows(total, core, left, right):
            seg = sig[start * spt : min(n, end * spt + tail)]
            toks = codec.encode(seg).tokens.cpu()
            out[a:b] = toks[a - start : b - start]
            done = n if b == total else b * spt
            _report(progress, (done - min(n, a * spt)) / codec.sample_rate_input)
    if out.shape[0] != total:
        raise RuntimeError(f"internal error: {out.shape[0]} tokens for {total} expected")
    return out


@torch.inference_mode()
def iter_decode(
    codec,
    tokens: Tensor,
    windowing: Windowing = DEFAULT,
    progress: Progress | None = None,
    matching_set: Tensor | None = None,
    topk: int = 4,
    num_splits: int = 1,
) -> Iterator[Tensor]:
    """Yield consecutive ``(M_i,)`` float32 blocks of audio at ``sample_rate_output`` whose
    concatenation is the decoded ``tokens: (T',)``, of natural length ``T' * out_hop``.
    Only one window is in memory at a time. ``progress(seconds)`` is called with the seconds
    of audio in each block. With ``matching_set (M, C)`` every frame is replaced by the mean
    of its ``topk`` nearest matching frames before synthesis (kNN voice conversion, frame by
    frame, so windows do not change what a frame is matched to)."""
    toks = torch.as_tensor(tokens).reshape(-1).long().cpu()
    total = toks.shape[0]
    if total == 0:
        raise InputError("no tokens to decode")
    codec.check_tokens(toks)
    knn: dict = {}
    if matching_set is not None:
        knn = {"matching_set": matching_set.to(codec.device), "topk": topk, "num_splits": num_splits}
    if codec.causal:
        step = windowing.tokens_per_call(codec)
        dev = codec.device
        dec_state: object = ()
        voc_state: object = ()
        for s in range(0, total, step):
            audio, dec_state, voc_state = codec.toks_to_sig(
                toks[s : s + step].to(dev)[None], dec_state, voc_state, return_state=True, **knn
            )
            block = audio[0].float().cpu()
            _report(progress, block.shape[0] / codec.sample_rate_output)
            yield block
        return

    def synth(t: Tensor) -> Tensor:
        if matching_set is None:
            return codec.decode(t).audio.float().cpu()
        return codec.toks_to_sig(t.to(codec.device)[None], **knn)[0].float().cpu()

    core, left, right = windowing.token_geometry(codec.token_rate)
    if total <= core + left + right:
        block = synth(toks)
        _report(progress, block.shape[0] / codec.sample_rate_output)
        yield block
        return
    hop = codec.output_hop_length
    natural = total * hop
    half = int(round(windowing.crossfade * codec.sample_rate_output)) // 2
    pending: Tensor | None = None  # the previous window's audio at [boundary - half, boundary + half)
    for start, a, b, end in _windows(total, core, left, right):
        audio = synth(toks[start:end])
        base = start * hop
        lo = a * hop - half if a > 0 else 0
        hi = b * hop - half if b < total else natural
        block = audio[lo - base : hi - base].clone()
        if pending is not None and half:
            block[: 2 * half] = crossfade(pending, block[: 2 * half])
        _report(progress, block.shape[0] / codec.sample_rate_output)
        yield block
        if b < total:
            pending = audio[hi - base : hi - base + 2 * half].clone()


def decode_long(codec, tokens: Tensor, num_samples: int | None = None, windowing: Windowing = DEFAULT) -> Tensor:
    """``tokens: (T',)`` -> ``(M,)`` float32 audio at ``sample_rate_output``.

    With ``num_samples`` (the input length at 16 kHz) the audio has exactly
    ``floor(num_samples * sr_out / 16000)`` samples (truncated, or extended by repeating the
    last sample, as the reference's ``output_length``); else its natural length.
    """
    toks = torch.as_tensor(tokens).reshape(-1)
    natural = toks.shape[0] * codec.output_hop_length
    out = torch.empty(natural, dtype=torch.float32)
    pos = 0
    for block in iter_decode(codec, toks, windowing):
        out[pos : pos + block.shape[0]] = block
        pos += block.shape[0]
    if pos != natural:
        raise RuntimeError(f"internal error: decoded {pos} samples, expected {natural}")
    if num_samples is None:
        return out
    return fit_length(out, codec.num_output_samples(num_samples), "edge")
