"""Streaming over the causal FocalCodec models, and chunked pseudo-streaming for the others.

Causal models (``codec.causal``): audio goes in as chunks of any size and tokens come out
as soon as each ``codec.chunk_size`` = 1280-sample (80 ms, 4-token) chunk is complete;
tokens go in one or more at a time and 24 kHz audio comes out per complete group of 4
tokens (the decompressor's refiner looks 3 tokens ahead). Concatenating the outputs gives
exactly what the reference's streaming loop gives (and, tokens included, what one offline
pass over the zero-padded signal gives)::

    enc, dec = StreamEncoder(codec), StreamDecoder(codec)
    for piece in pieces:                  # (n,) or (B, n) at 16 kHz, any n >= 0
        toks = enc.push(piece)            # (B, 4 * complete chunks) int64
        audio = dec.push(toks)            # (B, 1920 * complete groups) at 24 kHz
    toks = enc.flush()                    # the zero-padded last chunk; the stream restarts
    audio = dec.push(toks) ; tail = dec.flush()

A batch of ``B`` independent streams is a ``(B, n)`` push: every row has its own state
(the rows must advance together, by the same number of samples per push).

Speed: :func:`streaming_model` builds, once per codec, a copy that shares the weights and
swaps the modules that PyTorch runs slowly on 4-frame inputs for exact equivalents: the
grouped positional conv, 1x1 convs, kernel-1 transposed convs and the decoder's embedding
conv become unfold + matmul, small depthwise convs become window sums, and float32 linears
on few rows become ``W @ x^T`` (MKL's few-row ``x @ W^T`` streams weights at a third of the
memory bandwidth on some CPUs); the long causal contexts (the focal blocks' 511 frames, the
positional conv's 127) and the attention's key/value caches live in mirrored ring buffers,
so a chunk writes its new frames instead of copying every context. Every chunk still reads
every weight once, so the step is bound by memory bandwidth: ``precision="float16"`` stores
the linear layers' weights in half precision (float32 arithmetic; half the weight traffic,
tokens equal to float32 on real speech in our measurements), ``precision="int8"`` quantises
them to int8 with dynamically quantised activations (a quarter of the traffic, but outputs
differ noticeably). The encoder and decoder streams may use different precisions
(``StreamCodec(..., precision="float16", decoder_precision="int8")``: exact tokens, int8
synthesis). The stream classes use the copy unless ``optimize=False``.

Non-causal models: :class:`ChunkedStream` resynthesises 500 ms chunks with 3 s of left
context and a linear cross-fade over 20 ms (4 %); its algorithmic latency is 540 ms.
"""

from __future__ import annotations

import copy
import warnings
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import InputError
from .nn.layers import CausalPad, strided_conv_time_major
from .nn.wavlm import TransformerLayer

__all__ = [
    "ChunkedStream",
    "StreamCodec",
    "StreamDecoder",
    "StreamEncoder",
    "streaming_model",
]

PRECISIONS = ("float32", "float16", "int8")
# Chunks processed per model call when a push brings many at once (bounds memory; the
# result does not depend on it beyond float rounding).
MAX_CHUNKS_PER_CALL = 64


# -- fast equivalents of the convolutions, for short inputs ---------------------------------
def _group_linears(weight: Tensor, bias: Tensor | None, groups: int) -> nn.ModuleList:
    """One ``nn.Linear`` per group whose weights are views of a conv weight ``(C_out, C_in/g, k)``."""
    out_dim, in_g, k = weight.shape
    out_g = out_dim // groups
    linears = nn.ModuleList()
    for g in range(groups):
        lin = nn.Linear(in_g * k, out_g, bias=bias is not None)
        lin.weight = nn.Parameter(
            weight.detach()[g * out_g : (g + 1) * out_g].reshape(out_g, in_g * k), requires_grad=False
        )
        if bias is not None:
            lin.bias = nn.Parameter(bias.detach()[g * out_g : (g + 1) * out_g], requires_grad=False)
        linears.append(lin)
    return linears


class _FastConv1d(nn.Conv1d):
    """An unpadded (grouped) ``Conv1d`` computed as sliding windows times one linear layer
    per group. Exact up to float rounding and much faster than PyTorch's CPU convolution
    when only a few output frames are computed (no per-call weight reordering). It stays a
    ``Conv1d`` with the same weights, so any code path that reads ``weight`` still works.

    ``forward``: ``(B, C_in, L) -> (B, C_out, L')``; ``forward_time_major`` (used by the
    core's ``conv_time_major``): ``(B, L, C_in) -> (B, L', C_out)``.
    """

    def _prepare(self) -> None:
        self.group_linears = _group_linears(self.weight, self.bias, self.groups)

    def forward_time_major(self, x: Tensor, padding: tuple[int, int] = (0, 0)) -> Tensor:
        if padding != (0, 0):
            x = F.pad(x, (0, 0, padding[0], padding[1]))
        if self.groups == 1:
            windows = x.unfold(1, self.kernel_size[0], self.stride[0])  # (B, T, C_in, k)
            B, T, C, k = windows.shape
            return self.group_linears[0](windows.reshape(B, T, C * k))
        # Grouped: unfold a channel-major copy, so each group's windows are gathered in runs of
        # k contiguous samples (2.5x faster than gathering them across the time-major input).
        windows = x.transpose(1, 2).contiguous().unfold(2, self.kernel_size[0], self.stride[0])  # (B, C_in, T, k)
        B, C, T, k = windows.shape
        in_g = C // self.groups
        outs = [
            lin(windows[:, g * in_g : (g + 1) * in_g].permute(0, 2, 1, 3).reshape(B, T, in_g * k))
            for g, lin in enumerate(self.group_linears)
        ]
        return torch.cat(outs, dim=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_time_major(x.transpose(1, 2)).transpose(1, 2)


class _FastConvTranspose1d(nn.ConvTranspose1d):
    """A kernel-1, stride-1 ``ConvTranspose1d`` as a linear layer; ``(B, C_in, T) -> (B, C_out, T)``."""

    def _prepare(self) -> None:
        self.group_linears = _group_linears(self.weight.transpose(0, 1).contiguous(), self.bias, 1)

    def forward_time_major(self, x: Tensor, padding: tuple[int, int] = (0, 0)) -> Tensor:
        """``(B, T, C_in) -> (B, T, C_out)``."""
        return self.group_linears[0](x)

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:  # type: ignore[override]
        return self.group_linears[0](x.transpose(1, 2)).transpose(1, 2)


# Row counts up to which the CPU float32 linear is computed as ``W @ x^T``: MKL's kernel for
# a few-row ``x @ W^T`` reads the weights several times slower than memory allows on some
# CPUs (3-4 GB/s instead of 10-12 on the AMD EPYC of docs/benchmarks.md).
FEW_ROWS = 64
# Output frames up to which a small-kernel depthwise conv is a sliding-window multiply-add
# (oneDNN's per-call set-up costs ~100 us, more than the arithmetic on a few frames).
FEW_FRAMES = 32
SMALL_KERNEL = 64


class _FewRowsLinear(nn.Linear):
    """``nn.Linear`` that computes inputs of at most ``FEW_ROWS`` rows on CPU as
    ``(W @ x^T)^T`` (same weights, equal up to float rounding); ``(..., in) -> (..., out)``."""

    def forward(self, x: Tensor) -> Tensor:
        rows = x.numel() // self.in_features if self.in_features else 0
        if not (0 < rows <= FEW_ROWS and x.device.type == "cpu" and x.dtype == torch.float32 == self.weight.dtype):
            return F.linear(x, self.weight, self.bias)
        # MKL is fast here only with x row-major (so x^T is "transposed"): copy the few rows.
        flat = x.reshape(rows, self.in_features).contiguous().t()
        out = torch.mm(self.weight, flat) if self.bias is None else torch.addmm(self.bias[:, None], self.weight, flat)
        return out.t().contiguous().reshape(*x.shape[:-1], self.out_features)


class _FastDepthwiseConv1d(nn.Conv1d):
    """A small-kernel, unpadded depthwise ``Conv1d`` computed, for a few output frames, as a
    product of sliding windows with the kernel summed over taps (exact up to float rounding).

    ``forward_time_major``: ``(B, L, C) -> (B, L - k + 1, C)``; longer inputs use the
    regular convolution."""

    def _prepare(self) -> None:
        self.taps_time_major = self.weight.detach()[:, 0, :].t().contiguous()  # (k, C)

    def forward_time_major(self, x: Tensor, padding: tuple[int, int] = (0, 0)) -> Tensor:
        if padding != (0, 0):
            x = F.pad(x, (0, 0, padding[0], padding[1]))
        k = self.kernel_size[0]
        if x.shape[1] - k + 1 > FEW_FRAMES or x.device.type != "cpu":
            return strided_conv_time_major(x, self)
        windows = x.unfold(1, k, 1).transpose(-1, -2)  # (B, T, k, C)
        out = (windows * self.taps_time_major.to(x.dtype)).sum(2)
        return out if self.bias is None else out + self.bias.to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_time_major(x.transpose(1, 2)).transpose(1, 2)


# -- ring buffers for the long contexts and the key/value caches ------------------------------
# New frames a ring takes per call; a call with more (a push of many chunks at once) takes the
# regular path, which copies, and starts a new ring.
RING_NEW_FRAMES = 16
# Contexts shorter than this stay plain tensors (a small copy costs less than two writes).
RING_MIN_FRAMES = 64


class _Ring:
    """The newest frames of a time series (along ``dim``) in a mirrored ring buffer.

    Every frame is stored twice, ``capacity`` rows apart, so the newest ``n <= capacity``
    frames are always one contiguous slice: :meth:`append` writes only the new frames and
    returns a view of the retained ones followed by the new ones, instead of copying the
    whole context as ``torch.cat`` does. At most ``limit`` frames are retained.

    A ring is a mutable streaming state: it belongs to one stream and is advanced in place,
    so it is used only inside the streaming copies of :func:`streaming_model` (whose states
    the stream classes own); the views it returns are valid until the next append.
    """

    def __init__(self, frames: Tensor, dim: int, limit: int, max_new: int = RING_NEW_FRAMES) -> None:
        self.dim, self.limit, self.max_new = dim, limit, max_new
        self.capacity = limit + max_new
        shape = list(frames.shape)
        shape[dim] = 2 * self.capacity
        self.buffer = frames.new_empty(shape)
        self.end = 0
        self._write(frames.narrow(dim, max(0, frames.shape[dim] - limit), min(limit, frames.shape[dim])))
        self.length = min(limit, frames.shape[dim])

    @property
    def shape(self) -> torch.Size:
        """Shape of the retained frames (what an equivalent plain-tensor state would have)."""
        shape = list(self.buffer.shape)
        shape[self.dim] = self.length
        return torch.Size(shape)

    def _write(self, x: Tensor) -> None:
        n, cap, pos = x.shape[self.dim], self.capacity, self.end
        first = min(n, cap - pos)
        for base in (0, cap):
            self.buffer.narrow(self.dim, base + pos, first).copy_(x.narrow(self.dim, 0, first))
            if n > first:
                self.buffer.narrow(self.dim, base, n - first).copy_(x.narrow(self.dim, first, n - first))
        self.end = (pos + n) % cap

    def newest(self, n: int) -> Tensor:
        """A view of the newest ``n <= capacity`` frames."""
        start = self.end - n
        return self.buffer.narrow(self.dim, start + self.capacity if start < 0 else start, n)

    def append(self, x: Tensor) -> Tensor:
        """Add ``x`` (at most ``max_new`` frames); return a view of retained + new frames."""
        n = x.shape[self.dim]
        self._write(x)
        out = self.newest(self.length + n)
        self.length = min(self.limit, self.length + n)
        return out


class _RingCausalPad(CausalPad):
    """:class:`CausalPad` whose context is carried in a :class:`_Ring` (same results)."""

    def forward(self, x: Tensor, context: object | None = None) -> tuple[Tensor, object]:
        if isinstance(context, _Ring):
            if x.shape[1] <= context.max_new:
                return context.append(x), context
            context = context.newest(context.length)
        out, new_context = super().forward(x, context)
        return out, _Ring(new_context, dim=1, limit=self.size)


class _RingTransformerLayer(TransformerLayer):
    """WavLM layer whose key/value cache is a :class:`_Ring` (same results). ``ring_limit``:
    the most frames the encoder keeps (``window_size - chunk_frames``)."""

    ring_limit: int

    def join_cache(self, cache: object | None, k: Tensor, v: Tensor, keep: int) -> tuple[Tensor, Tensor, object | None]:
        if isinstance(cache, _Ring):
            new = k.shape[2]
            if new <= cache.max_new and keep == min(cache.limit, cache.length + new):
                kv = cache.append(torch.stack([k, v]))
                return kv[0], kv[1], cache
            cache = cache.newest(cache.length)
        k, v, new_cache = super().join_cache(cache, k, v, keep)
        if new_cache is None or keep > self.ring_limit:
            return k, v, new_cache
        return k, v, _Ring(new_cache, dim=3, limit=self.ring_limit)


def _use_rings(model: nn.Module) -> None:
    """Carry the long causal contexts and the key/value caches of ``model`` in ring buffers."""
    encoder = getattr(model, "encoder", None)
    if getattr(encoder, "causal", False) and hasattr(encoder, "window_size"):
        for layer in encoder.encoder.layers:
            if type(layer) is TransformerLayer:
                layer.__class__ = _RingTransformerLayer
                layer.ring_limit = encoder.window_size - encoder.chunk_frames
    for module in model.modules():
        if type(module) is CausalPad and module.size >= RING_MIN_FRAMES:
            module.__class__ = _RingCausalPad


def _swap_slow_convs(model: nn.Module) -> None:
    """Turn, in place, the convolutions that run slowly on a few frames into their fast
    equivalents: every unpadded, non-depthwise ``Conv1d`` with at least 64 inputs per output
    (positional conv, feature-extractor convs, 1x1 convs, the decoder's embedding), every
    kernel-1 ``ConvTranspose1d`` and every small-kernel (<= ``SMALL_KERNEL``) depthwise conv.
    The long depthwise convs (the focal blocks' 512-tap window) keep oneDNN's kernel, the
    fastest measured for them."""
    for module in list(model.modules()):
        if type(module) is nn.Conv1d:
            unpadded = module.padding in ((0,), 0) and module.dilation == (1,)
            depthwise = module.groups == module.in_channels and module.groups > 1
            if unpadded and depthwise and module.stride == (1,) and module.kernel_size[0] <= SMALL_KERNEL:
                module.__class__ = _FastDepthwiseConv1d
                module._prepare()
                continue
            if unpadded and not depthwise and module.in_channels // module.groups * module.kernel_size[0] >= 64:
                module.__class__ = _FastConv1d
                module._prepare()
        elif type(module) is nn.ConvTranspose1d:
            if module.kernel_size == (1,) and module.stride == (1,) and module.groups == 1 and module.padding == (0,):
                module.__class__ = _FastConvTranspose1d
                module._prepare()


def _swap_float_linears(model: nn.Module) -> None:
    """Turn, in place, every float ``nn.Linear`` left into a :class:`_FewRowsLinear`."""
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = _FewRowsLinear


# Linear layers whose float weights the codec reads (for its device and dtype): kept float.
_KEEP_FLOAT = ("encoder.feature_proj", "decompressor.in_proj")


# The sub-modules each stream runs (the quantizer has no weights).
PARTS = {"encode": ("encoder", "compressor"), "decode": ("decompressor", "decoder"), "all": ("",)}


def _quantize_linears(model: nn.Module, precision: str, part: str = "all") -> nn.Module:
    """Dynamic quantisation of the ``nn.Linear`` layers of ``PARTS[part]`` (fbgemm / qnnpack
    kernels): ``int8`` (per-channel int8 weights, activations quantised per call) or
    ``float16`` (half-precision weights, float32 activations)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import float16_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

        qconfig = per_channel_dynamic_qconfig if precision == "int8" else float16_dynamic_qconfig
        names = {
            name: qconfig
            for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and name not in _KEEP_FLOAT and name.startswith(PARTS[part])
        }
        dtype = torch.qint8 if precision == "int8" else torch.float16
        return quantize_dynamic(model, names, dtype=dtype, inplace=True)


_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, str], nn.Module]] = weakref.WeakKeyDictionary()


def streaming_model(codec: nn.Module, precision: str = "float32", part: str = "all") -> nn.Module:
    """A copy of ``codec`` tuned for streaming small chunks on CPU (cached per codec).

    ``precision="float32"``: the slow convolutions and few-row linears are replaced by exact
    equivalents that share the original weights (only the kernel-1 transposed convs are
    copied, a few MB; results equal to float rounding).
    ``precision="float16"`` / ``"int8"``: additionally the linear layers of ``part``
    (``"encode"``: encoder and compressor, ``"decode"``: decompressor and decoder, or
    ``"all"``) are quantised (dynamic, CPU only); the copy then holds its own quantised
    weights for them and its outputs differ from ``codec``'s (float16: by weight rounding;
    int8: more, activations are quantised too). The copy is frozen: later changes to
    ``codec``'s weights are not seen by it.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if part not in PARTS:
        raise InputError(f"part must be one of {tuple(PARTS)}, got {part!r}")
    key = (precision, "all" if precision == "float32" else part)
    per_codec = _CACHE.setdefault(codec, {})
    if key in per_codec:
        return per_codec[key]
    if precision != "float32" and next(codec.parameters()).device.type != "cpu":
        raise InputError(f"{precision} streaming runs on CPU only; use precision='float32' on GPU")
    # Share every parameter and buffer with the original: only the module tree is copied.
    memo = {id(t): t for t in list(codec.parameters()) + list(codec.buffers())}
    model = copy.deepcopy(codec, memo)
    _swap_slow_convs(model)
    _use_rings(model)
    if precision != "float32":
        model = _quantize_linears(model, precision, key[1])
    _swap_float_linears(model)
    model.eval()
    per_codec[key] = model
    return model


def _as_batch(x: Tensor, what: str, batch_size: int | None) -> tuple[Tensor, bool]:
    """``(n,)`` or ``(B, n)`` -> ``(B, n)`` and whether the input was 1-D."""
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{what} must be a tensor or array: {exc}") from None
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


def _check_codec(codec: nn.Module, what: str) -> None:
    if not getattr(codec, "causal", False):
        raise InputError(
            f"{what} needs a causal model (e.g. focalcodec_50hz_4k_causal); "
            f"{getattr(codec, 'model_id', 'this model')} is not causal: use ChunkedStream for chunked pseudo-streaming"
        )


class _GroupedStream:
    """Shared machinery of the two streams: inputs are buffered along time and handed to
    :meth:`_run` in whole groups of ``self.group`` steps, with the model state carried over.

    Subclasses set ``codec``, ``model`` and ``group`` and implement :meth:`_validate`,
    :meth:`_run` (``(B, k * group) -> (B, M)`` updating ``self._states``) and
    :meth:`_last` (what the buffered remainder becomes at ``flush``).
    """

    codec: nn.Module
    model: nn.Module
    group: int
    what: str = "input"

    def reset(self) -> None:
        """Forget everything: the next push starts new streams (of any batch size)."""
        self._buffer: Tensor | None = None
        self._states: list[list] = [[], []]
        self._one = False
        self.batch_size: int | None = None
        self.steps_in = 0
        self.steps_out = 0

    @property
    def buffered(self) -> int:
        """Input steps (samples or tokens) waiting for their group to complete."""
        return 0 if self._buffer is None else int(self._buffer.shape[1])

    def _validate(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _run(self, ready: Tensor) -> Tensor:
        raise NotImplementedError

    def _last(self, rest: Tensor) -> Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def push(self, x: Tensor) -> Tensor:
        """Append ``(k,)`` or ``(B, k)`` steps; return the output of every group completed."""
        x, one = _as_batch(x, self.what, self.batch_size)
        x = self._validate(x)
        if self.batch_size is None:
            self.batch_size, self._one = x.shape[0], one
        self.steps_in += x.shape[1]
        buf = x if self._buffer is None else torch.cat([self._buffer, x], dim=1)
        ready = buf.shape[1] // self.group * self.group
        self._buffer = buf[:, ready:]
        return self._emit(buf[:, :ready])

    @torch.inference_mode()
    def flush(self) -> Tensor:
        """Process the buffered remainder (see the class doc) and restart the stream."""
        if self.batch_size is None or self._buffer is None:
            raise InputError("flush() before any push(): nothing to flush")
        out = self._emit(self._last(self._buffer) if self._buffer.shape[1] else self._buffer)
        self.reset()
        return out

    def _emit(self, ready: Tensor) -> Tensor:
        step = MAX_CHUNKS_PER_CALL * self.group
        outs = [self._run(ready[:, start : start + step]) for start in range(0, ready.shape[1], step)]
        out = torch.cat(outs, dim=1) if outs else self._run_empty(ready.shape[0], ready.device)
        self.steps_out += out.shape[1]
        return out[0] if self._one else out

    def _run_empty(self, batch: int, device: torch.device) -> Tensor:
        raise NotImplementedError


class StreamEncoder(_GroupedStream):
    """16 kHz audio in chunks of any size -> tokens, one 4-token group per 1280 samples.

    ``push(sig)``: ``(n,)`` or ``(B, n)`` float -> ``(T,)`` or ``(B, T)`` int64 tokens with
    ``T = 4 * (chunks completed by this push)`` (possibly 0). ``flush()`` zero-pads the
    buffered remainder to a whole chunk, returns its tokens and restarts the stream.
    ``reset()`` drops the buffer and the model state.
    """

    what = "audio"

    def __init__(self, codec: nn.Module, optimize: bool = True, precision: str = "float32") -> None:
        _check_codec(codec, "StreamEncoder")
        self.codec = codec
        self.model = streaming_model(codec, precision, "encode") if optimize else codec
        self.chunk_size: int = int(codec.chunk_size)
        self.group = self.chunk_size
        self.hop: int = int(codec.encoder.downsample_factor * codec.compressor.downsample_factor)
        self.device = next(codec.parameters()).device
        self.reset()

    @property
    def samples_in(self) -> int:
        return self.steps_in

    @property
    def tokens_out(self) -> int:
        return self.steps_out

    @property
    def num_valid_tokens(self) -> int:
        """Tokens an offline pass over the unpadded samples seen so far gives (``ceil(n/320)``)."""
        return -(-self.samples_in // self.hop)

    def _validate(self, x: Tensor) -> Tensor:
        if not x.dtype.is_floating_point:
            raise InputError(f"audio must be floating point samples, got {x.dtype}")
        x = x.to(device=self.device, dtype=torch.float32)
        if x.numel() and not torch.isfinite(x).all():
            raise InputError("audio contains NaN or infinite samples")
        return x

    def _last(self, rest: Tensor) -> Tensor:
        return F.pad(rest, (0, self.chunk_size - rest.shape[1]))

    def _run(self, ready: Tensor) -> Tensor:
        toks, *self._states = self.model.sig_to_toks(ready, *self._states, return_state=True)
        return toks

    def _run_empty(self, batch: int, device: torch.device) -> Tensor:
        return torch.zeros(batch, 0, dtype=torch.long, device=device)


class StreamDecoder(_GroupedStream):
    """Tokens, any number per call -> audio at ``codec.sample_rate_output`` (24 kHz).

    ``push(toks)``: ``(k,)`` or ``(B, k)`` int -> ``(M,)`` or ``(B, M)`` float32 where
    ``M = 1920 * (4-token groups completed)``: the decompressor's refiner mixes each group of
    4 tokens, so audio for a token comes out once its group is complete. ``flush()`` decodes a
    trailing partial group (as an offline pass does) and restarts the stream.

    ``matching_set (M, C)``: kNN voice conversion of every frame before the decoder
    (SPEC §3.4, see :mod:`focalcodec.vc`), with ``topk`` and ``num_splits``.
    """

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
        _check_codec(codec, "StreamDecoder")
        self.codec = codec
        self.model = streaming_model(codec, precision, "decode") if optimize else codec
        refiner = getattr(codec.decompressor, "refiner", None)
        self.group = int(refiner.chunk) if refiner is not None else 1
        self.samples_per_token: int = int(codec.decompressor.upsample_factor * codec.decoder.upsample_factor)
        self.device = next(codec.parameters()).device
        if matching_set is not None and (matching_set.ndim != 2 or matching_set.shape[0] < topk):
            raise InputError(
                f"matching_set must be (M, C) with M >= topk={topk}, got shape {tuple(matching_set.shape)}"
            )
        self.matching_set = None if matching_set is None else matching_set.to(self.device)
        self.topk = topk
        self.num_splits = num_splits
        self.reset()

    @property
    def tokens_in(self) -> int:
        return self.steps_in

    @property
    def samples_out(self) -> int:
        return self.steps_out

    def _validate(self, t: Tensor) -> Tensor:
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise InputError(f"tokens must be integers, got {t.dtype}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.codec.codebook_size):
            raise InputError(f"tokens must lie in [0, {self.codec.codebook_size}) for this model")
        return t.long().to(self.device)

    def _last(self, rest: Tensor) -> Tensor:
        return rest  # the refiner zero-pads a partial group, as offline

    def _run(self, ready: Tensor) -> Tensor:
        sig, *self._states = self.model.toks_to_sig(
            ready,
            *self._states,
            matching_set=self.matching_set,
            topk=self.topk,
            num_splits=self.num_splits,
            return_state=True,
        )
        return sig.float()

    def _run_empty(self, batch: int, device: torch.device) -> Tensor:
        return torch.zeros(batch, 0, device=device)


class StreamCodec:
    """Encoder and decoder streams chained: 16 kHz audio in, tokens and 24 kHz audio out.

    ``push(sig) -> (toks, audio)`` as :meth:`StreamEncoder.push` then
    :meth:`StreamDecoder.push`; ``flush()`` ends both (audio past the input is not trimmed:
    ``output_length`` tells how many output samples the input corresponds to).

    ``precision`` applies to both streams unless ``decoder_precision`` is given: e.g.
    ``precision="float16", decoder_precision="int8"`` keeps the tokens of the float model
    (float16 weights) and synthesises with int8 weights, the fastest setting whose tokens
    stay exact on real speech (docs/benchmarks.md).
    """

    def __init__(
        self,
        codec: nn.Module,
        matching_set: Tensor | None = None,
        topk: int = 4,
        num_splits: int = 1,
        optimize: bool = True,
        precision: str = "float32",
        decoder_precision: str | None = None,
    ) -> None:
        self.codec = codec
        self.encoder = StreamEncoder(codec, optimize, precision)
        self.decoder = StreamDecoder(
            codec,
            matching_set,
            topk,
            num_splits,
            optimize,
            precision if decoder_precision is None else decoder_precision,
        )

    @property
    def latency_ms(self) -> float:
        """Algorithmic latency: one chunk (80 ms for the official causal models)."""
        return 1000.0 * self.encoder.chunk_size / self.codec.sample_rate_input

    @property
    def output_length(self) -> int:
        """Output samples that correspond to the input pushed so far."""
        return self.encoder.samples_in * self.codec.sample_rate_output // self.codec.sample_rate_input

    def reset(self) -> None:
        self.encoder.reset()
        self.decoder.reset()

    def push(self, sig: Tensor) -> tuple[Tensor, Tensor]:
        toks = self.encoder.push(sig)
        return toks, self.decoder.push(toks)

    def flush(self) -> tuple[Tensor, Tensor]:
        toks = self.encoder.flush()
        audio = self.decoder.push(toks)
        tail = self.decoder.flush()
        return toks, torch.cat([audio, tail], dim=-1)


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
        hop = codec.encoder.downsample_factor * codec.compressor.downsample_factor
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
        x, one = _as_batch(sig, "audio", self.batch_size)
        if self.batch_size is None:
            self.batch_size, self._one = x.shape[0], one
        x = x.to(self.codec.encoder.feature_proj.weight.device, torch.float32)
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
