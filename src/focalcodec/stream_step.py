"""One streaming step of a causal model with explicit, fixed-shape state tensors.

:class:`StreamEncoder` / :class:`StreamDecoder` (:mod:`focalcodec.streaming`) carry the
model's own streaming state: nested lists whose shapes change over the first chunks (the
attention cache grows to ``window_size - chunk_frames`` frames, causal convolutions start
from a replicated first frame or zeros). Exported graphs need inputs of fixed shapes, so the
steps here keep

- every causal-conv context at its full ``kernel - 1`` frames from the start, and a counter
  (``encoder_frames`` / ``decoder_started``) that is 0 at stream start: while it is 0 the
  contexts are ignored and replaced by the replicate / zero padding of a fresh stream;
- the encoder's key/value caches at their full ``P = window_size - chunk_frames`` frames,
  newest last, with ``encoder_frames`` (saturating at ``P``) telling how many of them are
  real: older slots are masked as keys.

So a row restarts when its counter is set to 0, whatever its other state tensors hold.

- :class:`EncodeStep`: ``(chunk (B, codec.chunk_size) float32, *state) -> (toks (B, chunk_frames) int64, *new_state)``
- :class:`DecodeStep`: ``(toks (B, group) int64, *state) -> (audio (B, group * samples_per_token) float32, *new_state)``
  (``group`` = the refiner's 4 tokens)

Every state tensor is ``(B, ...)`` with the rest of its shape fixed by the config
(``step.state_names`` / ``step.state_shapes``; :func:`initial_state` gives the zero state).
Looping a step over chunks gives exactly what the stream classes give for the same input
(tokens identical, audio within float rounding). :mod:`focalcodec.export` exports both.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .errors import InputError
from .nn.layers import CausalPad

__all__ = ["DecodeStep", "EncodeStep", "initial_state", "stream_step"]

SIDES = ("encode", "decode")


class _Started:
    """Holds the ``(B,)`` bool "stream already started" flag of the step being run, read by
    every :class:`_StepPad` of the step's model."""

    value: Tensor | None = None


class _StepPad(CausalPad):
    """A :class:`CausalPad` whose context is always given (full ``k - 1`` frames) and is
    replaced, in the rows that have not started, by the fresh-stream padding."""

    started: _Started

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        flag = self.started.value
        if self.size == 0 or context is None or flag is None:
            return super().forward(x, context)
        if self.mode == "replicate":
            fresh = x[:, :1].expand(-1, self.size, -1)
        else:
            fresh = torch.zeros_like(context, dtype=x.dtype)
        return super().forward(x, torch.where(flag[:, None, None], context.to(x.dtype), fresh))


def _step_model(codec: nn.Module, started: _Started) -> nn.Module:
    """A copy of ``codec`` sharing its weights, with :class:`_StepPad` padding and the
    exportable inverse DFT of an ISTFT head."""
    memo = {id(t): t for t in list(codec.parameters()) + list(codec.buffers())}
    model = copy.deepcopy(codec, memo).eval()
    for module in model.modules():
        if type(module) is CausalPad:
            module.__class__ = _StepPad
            module.started = started
        if hasattr(module, "real_idft"):
            module.real_idft = True
    return model


# A state template: the model's nested lists with every tensor replaced by its shape without
# the batch axis (a tuple; shapes with a 0 are the empty contexts of kernel-1 convs, kept out
# of the step's inputs and outputs).
Template = Any


def _template(state: Any) -> Template:
    if isinstance(state, (list, tuple)):
        return [_template(s) for s in state]
    return tuple(state.shape[1:])


def _leaves(template: Template, path: tuple[int, ...] = ()) -> list[tuple[tuple[int, ...], tuple]]:
    """``(path, shape)`` of every non-empty tensor, depth first."""
    if isinstance(template, list):
        return [leaf for i, t in enumerate(template) for leaf in _leaves(t, path + (i,))]
    return [] if 0 in template else [(path, template)]


def _flatten(state: Any, template: Template) -> list[Tensor]:
    if isinstance(template, list):
        return [leaf for s, t in zip(state, template, strict=False) for leaf in _flatten(s, t)]
    return [] if 0 in template else [state]


def _unflatten(template: Template, leaves: list[Tensor], like: Tensor) -> Any:
    """Inverse of :func:`_flatten` (consumes ``leaves`` from the front); empty tensors are
    rebuilt with ``like``'s batch size."""
    if isinstance(template, list):
        return [_unflatten(t, leaves, like) for t in template]
    if 0 in template:
        return like.new_zeros((like.shape[0],) + template)
    return leaves.pop(0)


def _names(prefix: str, template: Template) -> list[str]:
    return ["_".join([prefix] + [str(i) for i in path]) for path, _ in _leaves(template)]


class _Step(nn.Module):
    """Shared parts: the model copy, the state names / shapes / dtypes and the zero state."""

    side: str = ""

    def __init__(self, codec: nn.Module) -> None:
        super().__init__()
        if not getattr(codec, "causal", False):
            raise InputError(
                f"a stream step needs a causal model (e.g. focalcodec_50hz_4k_causal); "
                f"{getattr(codec, 'model_id', 'this model')} is not causal"
            )
        self._started = _Started()
        self.model = _step_model(codec, self._started)
        self.state_names: list[str] = []
        self.state_shapes: list[tuple[int, ...]] = []
        self.state_dtypes: list[torch.dtype] = []

    def _add_state(self, names: Sequence[str], shapes: Sequence[tuple[int, ...]], dtype: torch.dtype) -> None:
        self.state_names += list(names)
        self.state_shapes += [tuple(int(d) for d in s) for s in shapes]
        self.state_dtypes += [dtype] * len(names)

    @property
    def _float(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def initial_state(self, batch_size: int = 1) -> list[Tensor]:
        """The state of ``batch_size`` fresh streams: zeros, in :attr:`state_names` order."""
        return [
            torch.zeros((batch_size,) + shape, dtype=dtype, device=self._device)
            for shape, dtype in zip(self.state_shapes, self.state_dtypes, strict=False)
        ]

    def _check(self, x: Tensor, states: Sequence[Tensor], size: int, what: str) -> None:
        if x.ndim != 2 or x.shape[1] != size:
            raise InputError(f"{what} must be (B, {size}), got shape {tuple(x.shape)}")
        if len(states) != len(self.state_names):
            raise InputError(f"{type(self).__name__} takes {len(self.state_names)} state tensors, got {len(states)}")

    def _run(self, flag: Tensor, fn: Any) -> Any:
        self._started.value = flag
        try:
            return fn()
        finally:
            self._started.value = None


class EncodeStep(_Step):
    """``(chunk (B, chunk_size) float32, *state) -> (toks (B, chunk_frames) int64, *new_state)``.

    State (``B`` first): ``encoder_frames (B,) int64`` (real frames in the key/value caches,
    0 = stream start, saturates at ``P``), ``encoder_conv_{i}`` the feature-extractor conv
    contexts ``(B, k_i - 1, C_i)``, ``encoder_pos_conv (B, conv_pos - 1, dim)``,
    ``encoder_kv_{l} (B, 2, heads, P, dim / heads)`` per transformer layer (keys, values),
    ``compressor_{layer}_{j} (B, k - 1, C)`` the compressor's conv contexts.
    """

    side = "encode"

    def __init__(self, codec: nn.Module) -> None:
        super().__init__(codec)
        wavlm = self.model.encoder
        self.chunk_size = int(self.model.chunk_size)
        self.cache_frames = int(wavlm.window_size - wavlm.chunk_frames)
        if self.cache_frames < 1:
            raise InputError("a stream step needs an encoder window_size larger than its chunk of 1 + lookahead frames")
        with torch.no_grad():
            chunk = torch.zeros(1, self.chunk_size, dtype=self._float, device=self._device)
            feats, es = wavlm(chunk)
            _, cs = self.model.feats_to_toks(feats, return_state=True)
        convs, caches = es[1], es[2]
        self.num_convs, self.num_layers = len(convs), len(caches)
        self.chunk_frames = int(feats.shape[1])
        self.compressor_template = _template(cs)
        self._add_state(["encoder_frames"], [()], torch.long)
        names = [f"encoder_conv_{i}" for i in range(self.num_convs - 1)] + ["encoder_pos_conv"]
        self._add_state(names, [c.shape[1:] for c in convs], self._float)
        kv_shapes = [(2, c.shape[2], self.cache_frames, c.shape[4]) for c in caches]
        self._add_state([f"encoder_kv_{i}" for i in range(self.num_layers)], kv_shapes, self._float)
        leaves = _leaves(self.compressor_template)
        self._add_state(_names("compressor", self.compressor_template), [s for _, s in leaves], self._float)

    def forward(self, chunk: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        self._check(chunk, states, self.chunk_size, "chunk")
        frames = states[0]
        convs = list(states[1 : 1 + self.num_convs])
        kvs = states[1 + self.num_convs : 1 + self.num_convs + self.num_layers]
        comp = list(states[1 + self.num_convs + self.num_layers :])

        def run() -> tuple[Tensor, ...]:
            # The frame index of the encoder's own state only aligns attention chunks within
            # a call of several chunks; one chunk per call needs none.
            state = [torch.zeros((), dtype=torch.long), convs, [kv.transpose(0, 1) for kv in kvs]]
            feats, es = self.model.encoder(chunk, state, past_lengths=frames)
            cs = _unflatten(self.compressor_template, comp, feats)
            toks, new_cs = self.model.feats_to_toks(feats, cs, return_state=True)
            new_frames = (frames + feats.shape[1]).clamp(max=self.cache_frames)
            new_kvs = [kv.transpose(0, 1) for kv in es[2]]
            return (toks, new_frames, *es[1], *new_kvs, *_flatten(new_cs, self.compressor_template))

        return self._run(frames > 0, run)


class DecodeStep(_Step):
    """``(toks (B, group) int64, *state) -> (audio (B, group * samples_per_token) float32, *new_state)``.

    State (``B`` first): ``decoder_started (B,) int64`` (0 = stream start, then 1),
    ``decompressor_{layer}_{level} (B, k - 1, C)`` the focal blocks' conv contexts and
    ``decoder_{j} (B, kernel - 1, C)`` the decoder backbone's (``j = 0``: embedding conv).
    """

    side = "decode"

    def __init__(self, codec: nn.Module) -> None:
        super().__init__(codec)
        refiner = getattr(self.model.decompressor, "refiner", None)
        self.group = int(refiner.chunk) if refiner is not None else 1
        with torch.no_grad():
            toks = torch.zeros(1, self.group, dtype=torch.long, device=self._device)
            sig, ds, gs = self.model.toks_to_sig(toks, return_state=True)
        self.samples = int(sig.shape[1])
        self.decompressor_template = _template(ds)
        self.decoder_template = _template(gs)
        self.num_decompressor = len(_leaves(self.decompressor_template))
        self._add_state(["decoder_started"], [()], torch.long)
        for prefix, template in (("decompressor", self.decompressor_template), ("decoder", self.decoder_template)):
            self._add_state(_names(prefix, template), [s for _, s in _leaves(template)], self._float)

    def forward(self, toks: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        self._check(toks, states, self.group, "toks")
        started = states[0]
        rest = list(states[1:])

        def run() -> tuple[Tensor, ...]:
            like = toks.to(self._float)
            ds = _unflatten(self.decompressor_template, rest[: self.num_decompressor], like)
            gs = _unflatten(self.decoder_template, rest[self.num_decompressor :], like)
            sig, new_ds, new_gs = self.model.toks_to_sig(toks, ds, gs, return_state=True)
            flat = _flatten(new_ds, self.decompressor_template) + _flatten(new_gs, self.decoder_template)
            return (sig.float(), torch.ones_like(started), *flat)

        return self._run(started > 0, run)


def stream_step(codec: nn.Module, side: str) -> EncodeStep | DecodeStep:
    """:class:`EncodeStep` (``side="encode"``) or :class:`DecodeStep` (``"decode"``) of ``codec``."""
    if side not in SIDES:
        raise InputError(f"side must be one of {SIDES}, got {side!r}")
    return EncodeStep(codec) if side == "encode" else DecodeStep(codec)


def initial_state(
    codec_or_step: nn.Module | EncodeStep | DecodeStep, side: str = "encode", batch_size: int = 1
) -> OrderedDict[str, Tensor]:
    """Names and zero tensors of the state of ``batch_size`` fresh streams of a step
    (``side`` is used when a codec is given)."""
    step = codec_or_step if isinstance(codec_or_step, _Step) else stream_step(codec_or_step, side)
    return OrderedDict(zip(step.state_names, step.initial_state(batch_size), strict=False))
