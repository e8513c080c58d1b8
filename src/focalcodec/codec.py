"""FocalCodec: the five parts of the pipeline composed, with the reference's conversion
methods and an exactly batch-invariant ``encode``/``decode``.

Pipeline and tensor names::

    sig (B, N) @ 16 kHz
      -> encoder (WavLM)                  -> feats  (B, T, 1024)          50 Hz
      -> compressor (FocalCompressor)     -> lats   (B, T', D)  unit norm
      -> quantizer (BSQ)                  -> codes  (B, T', D) in ±1/sqrt(D)  <->  toks (B, T') int64
      -> decompressor (FocalDecompressor) -> qfeats (B, T'', 1024)
      -> decoder (Vocos / WaveNeXt)       -> sig    (B, T'' * hop) @ 16 or 24 kHz

The reference-named methods (``sig_to_toks``, ``toks_to_sig``, ...) keep the reference's
argument order, ``length=`` (relative lengths, encoder only) and streaming-state
conventions: with a state or ``return_state=True`` a causal model runs as a stream
(:mod:`focalcodec.streaming`), each part's state an opaque value that may be passed again
(it is never modified: the same state twice gives the same result).

:meth:`FocalCodec.encode` and :meth:`FocalCodec.decode` take per-item lengths and mask padded
positions in every layer that mixes time, so a padded item gets exactly the tokens and audio
it gets alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .audio import as_tensor, check_signal, check_token_ids, fit_length
from .config import MAX_PARAMS, FocalCodecConfig
from .errors import ConfigError, InputError
from .hub import load_state_dict, load_weights_file, resolve_checkpoint, save_checkpoint, state_dict_sha256

__all__ = ["DecodeOutput", "EncodeOutput", "FocalCodec"]

SAMPLE_RATE = 16000
ArrayLike = Tensor | np.ndarray | Sequence[float]
State = Any  # an opaque part state (focalcodec.streaming.PartState), or () / [] / None: a new stream


class EncodeOutput(NamedTuple):
    """``tokens``: (B, T') int64 (padded positions are 0) or (T',) for 1-D input;
    ``lengths``: (B,) int64 valid tokens per item."""

    tokens: Tensor
    lengths: Tensor


class DecodeOutput(NamedTuple):
    """``audio``: (B, M) float32 at ``sample_rate_output`` (padding is 0) or (M,) for 1-D
    input; ``lengths``: (B,) int64 valid samples per item."""

    audio: Tensor
    lengths: Tensor


def _state(state: State) -> State | None:
    """The reference passes ``()`` or ``[]`` for "no state yet"."""
    if state is None or (isinstance(state, (tuple, list)) and len(state) == 0):
        return None
    return state


_PART_INPUT = {"encoder": "sig", "compressor": "feats", "decompressor": "codes", "decoder": "qfeats"}


def _tracing() -> bool:
    """Whether a graph is being traced or compiled (data-dependent checks are skipped there)."""
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling())


class FocalCodec(nn.Module):
    """FocalCodec neural speech codec. Build with :meth:`from_config` (random weights) or
    :meth:`from_pretrained` (official or saved checkpoints)."""

    def __init__(self, config: str | Path | FocalCodecConfig | Mapping[str, Any] = "focalcodec_50hz") -> None:
        super().__init__()
        self.config = FocalCodecConfig.load(config)
        params = self.config.num_parameters()  # no memory taken: refuse absurd sizes first
        if params > MAX_PARAMS:
            raise ConfigError(
                f"config {self.config.name or ''} builds {params / 1e9:.1f} G parameters, more than the "
                f"{MAX_PARAMS / 1e9:.0f} G allowed; check its widths and layer counts"
            )
        self.encoder = self.config.build("encoder")
        self.compressor = self.config.build("compressor")
        self.quantizer = self.config.build("quantizer")
        self.decompressor = self.config.build("decompressor")
        self.decoder = self.config.build("decoder")
        self.model_id = self.config.name or "focalcodec"
        self._weights_digest: tuple[tuple, str] | None = None
        self.eval()

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        config: str | Path | FocalCodecConfig | Mapping[str, Any],
        overrides: Mapping[str, Any] | None = None,
    ) -> FocalCodec:
        """Random weights from a preset name, a config .json / directory, or a dict."""
        cfg = FocalCodecConfig.load(config).with_overrides(overrides)
        return cls(cfg)

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path = "lucadellalib/focalcodec_50hz",
        overrides: Mapping[str, Any] | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        map_location: str | torch.device = "cpu",
        **hub_kwargs: Any,
    ) -> FocalCodec:
        """Config and weights from a local directory / config file or a Hugging Face repo.

        Both the current and the legacy v0.0.1 key layouts load; loading is strict.
        ``revision``, ``cache_dir`` and other keyword arguments go to ``hf_hub_download``.
        """
        from .runtime import check_device

        map_location = check_device(map_location, "map_location")  # before anything is downloaded or read
        if revision is not None:
            hub_kwargs["revision"] = revision
        if cache_dir is not None:
            hub_kwargs["cache_dir"] = str(cache_dir)
        config, weights_path = resolve_checkpoint(str(source), **hub_kwargs)
        model = cls(config.with_overrides(overrides))
        load_state_dict(model, load_weights_file(weights_path), source=str(weights_path))
        return model.to(map_location).eval()

    def save_pretrained(self, directory: str | Path, safetensors: bool = True, force: bool = True) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (official format); returns the weights
        path. ``force=False`` refuses to replace an existing checkpoint."""
        return save_checkpoint(self, self.config, Path(directory), safetensors, force)

    # -- properties --------------------------------------------------------------------------
    @property
    def sample_rate_input(self) -> int:
        """Rate of the audio ``encode`` and ``sig_to_*`` take: 16000 Hz."""
        return SAMPLE_RATE

    @property
    def sample_rate_output(self) -> int:
        """Rate of the audio ``decode`` and ``*_to_sig`` give: 16000 Hz (Vocos) or 24000 Hz (WaveNeXt)."""
        return SAMPLE_RATE * self.decoder.upsample_factor // self.encoder.downsample_factor

    @property
    def sample_rate(self) -> int:
        """The one sample rate of a model whose input and output rates agree (the reference's
        name); AttributeError for the 24 kHz models, which have two."""
        if self.sample_rate_input != self.sample_rate_output:
            raise AttributeError(
                f"input and output sample rates differ ({self.sample_rate_input} vs {self.sample_rate_output}); "
                "use sample_rate_input / sample_rate_output"
            )
        return self.sample_rate_input

    @property
    def token_rate(self) -> float:
        """Tokens per second (50, 25 or 12.5 for the official models)."""
        return self.sample_rate_input / (self.encoder.downsample_factor * self.compressor.downsample_factor)

    @property
    def codebook_size(self) -> int:
        """Codes in the codebook, ``2^D`` (8192 for the official non-causal models)."""
        return self.quantizer.codebook_size

    @property
    def code_dim(self) -> int:
        """Bits per token, D = log2(codebook_size)."""
        return self.quantizer.dim

    @property
    def bitrate(self) -> float:
        """Bits per second: ``D * token_rate``."""
        return self.code_dim * self.token_rate

    @property
    def causal(self) -> bool:
        """Whether every part is causal (the model streams in ``chunk_size`` chunks)."""
        return all(
            bool(getattr(m, "causal", False)) for m in (self.encoder, self.compressor, self.decompressor, self.decoder)
        )

    @property
    def chunk_size(self) -> int:
        """Samples per streaming chunk (1280 = 80 ms for the official configs)."""
        return self.encoder.chunk_size

    @property
    def hop_length(self) -> int:
        """Input samples per token (320 / 640 / 1280 for 50 / 25 / 12.5 Hz)."""
        return self.encoder.downsample_factor * self.compressor.downsample_factor

    @property
    def output_hop_length(self) -> int:
        """Output samples per token at ``sample_rate_output`` (320 at 16 kHz, 480 at 24 kHz for 50 Hz)."""
        return self.decompressor.upsample_factor * self.decoder.upsample_factor

    @property
    def frames_per_token(self) -> int:
        """``qfeats`` frames per token (the decompressor's upsampling: 1 / 2 / 4 for 50 / 25 / 12.5 Hz)."""
        return self.decompressor.upsample_factor

    @property
    def feature_dim(self) -> int:
        """Width ``C`` of the continuous features ``feats`` / ``qfeats`` (1024): what a kNN-VC
        matching set must have."""
        return self.decoder.backbone.embedding.in_channels

    @property
    def feature_hop_length(self) -> int:
        """Input samples per feature frame (320: ``feats`` are 50 Hz)."""
        return self.encoder.downsample_factor

    @property
    def receptive_field(self) -> int:
        """Input samples the first feature frame needs (400); non-causal inputs shorter than
        this are zero-padded to it."""
        return self.encoder.receptive_field

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return self.encoder.feature_proj.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point dtype of the weights (``torch.float32`` unless converted)."""
        return self.encoder.feature_proj.weight.dtype

    @property
    def latency(self) -> float | None:
        """Theoretical latency in ms for causal models, else None."""
        return 1000.0 * self.chunk_size / self.sample_rate_input if self.causal else None

    @property
    def codebook(self) -> Tensor:
        """All codes, ``(2^D, D)``; row index = token."""
        return self.quantizer.codebook.clone()

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the architecture's canonical config (identifies the model in files)."""
        return self.config.fingerprint

    @property
    def weights_sha256(self) -> str:
        """SHA-256 of the weights (:func:`focalcodec.hub.state_dict_sha256`): the model's
        identity in ``.fc`` files and token corpora. Computed once and cached; recomputed only
        when a tensor is replaced or changed in place (its version counter moves)."""
        state = self.state_dict(keep_vars=True)
        try:
            key = tuple((k, v.data_ptr(), v._version, v.dtype, v.device) for k, v in state.items())
        except RuntimeError:  # inference tensors have no version counter: do not cache
            key = None
        if key is not None and self._weights_digest is not None and self._weights_digest[0] == key:
            return self._weights_digest[1]
        digest = state_dict_sha256(state)
        if key is not None:
            self._weights_digest = (key, digest)
        return digest

    def info(self) -> dict:
        """The model's identity and rates as a JSON-ready dict (what ``focalcodec info --model`` prints)."""
        return {
            "model_id": self.model_id,
            "weights_sha256": self.weights_sha256,
            "sample_rate_input": self.sample_rate_input,
            "sample_rate_output": self.sample_rate_output,
            "token_rate": self.token_rate,
            "codebook_size": self.codebook_size,
            "bitrate": self.bitrate,
            "causal": self.causal,
            "chunk_size": self.chunk_size,
            "latency": self.latency,
            "num_params": sum(p.numel() for p in self.parameters()),
        }

    # -- reference-named conversions ---------------------------------------------------------
    # Each method runs offline, or, given a state or return_state=True, as a stream (causal
    # models; see the module doc). The parts: _encoder, _compressor, _decompressor, _decoder.
    def _out(self, output: Any, states: list[State], return_state: bool) -> Any:
        if not return_state:
            return output
        if isinstance(output, tuple):
            return (*output, *states)
        return (output, *states)

    @staticmethod
    def _streams(return_state: bool, *states: State) -> bool:
        return return_state or any(_state(s) is not None for s in states)

    def _part(self, name: str, x: Tensor, state: State, stream: bool, **offline: Any) -> tuple[Tensor, State]:
        """Part ``name`` over ``x``: offline, or a stream step of a causal model (whole
        1280-sample chunks on the encoder; any length elsewhere)."""
        state = _state(state)
        if x.shape[1] == 0 and not (stream and self.causal):
            raise InputError(f"{_PART_INPUT[name]} is empty (shape {tuple(x.shape)}): there is nothing to code")
        if not stream:
            return getattr(self, name)(x, **offline), None
        if not self.causal:
            if state is not None:
                raise InputError(f"a streaming state was given, but {self.model_id} is not a causal model")
            return getattr(self, name)(x, **offline), None
        from .streaming.streams import run_part

        return run_part(self, name, x, state)

    def _checked(self, x: Any, what: str) -> Tensor:
        """The reference-named methods' input check: ``x`` (tensor or array) as a tensor on the
        model's device (floats in its dtype), or :class:`InputError` naming the problem.
        ``what``: ``sig`` (B, N) samples (int16 / int32 PCM scaled), ``feats`` (B, T, C),
        ``lats`` / ``codes`` (..., D), ``toks`` (...) integers in ``[0, codebook_size)``; a name
        ending in ``3`` (``codes3``, ``lats3``, ``toks2``) also requires that many dimensions."""
        if _tracing():
            return x
        rank = int(what[-1]) if what[-1].isdigit() else None
        what = what.rstrip("23")
        if what == "sig":
            layout = "(B, N) samples (add a batch axis with sig[None]; codec.encode takes (N,))"
            return check_signal(x, "sig", (2,), layout, allow_empty=True).to(self.device, self.dtype)
        if what == "toks":
            layout = "(B, T') integers (add a batch axis with toks[None]; codec.decode takes (T',))"
            ndim = (rank,) if rank else None
            return check_token_ids(x, self.codebook_size, "toks", ndim, layout, allow_empty=True).to(self.device)
        width = self.feature_dim if what == "feats" else self.code_dim
        x = as_tensor(x, what)
        if (rank and x.ndim != rank) or x.ndim < 1 or x.shape[-1] != width:
            shape = f"(B, T, {width})" if rank == 3 else f"(..., {width})"
            raise InputError(f"{what} must be {shape} for this model, got shape {tuple(x.shape)}")
        if not x.dtype.is_floating_point:
            raise InputError(f"{what} must be floating point, got {x.dtype}")
        if not torch.isfinite(x).all():
            raise InputError(f"{what} contains NaN or infinite values")
        return x.to(self.device, self.dtype if what == "feats" else x.dtype)

    def _relative_length(self, length: Any, batch: int) -> Tensor | None:
        """The reference's ``length=``: (B,) relative lengths in [0, 1], or None."""
        if length is None or _tracing():
            return length
        lens = as_tensor(length, "length")
        if not lens.dtype.is_floating_point or lens.shape != (batch,) or not ((lens >= 0) & (lens <= 1)).all():
            raise InputError(
                f"length must be ({batch},) relative lengths in [0, 1] (valid samples / N), got {lens.dtype} "
                f"{tuple(lens.shape)}{'' if lens.numel() > 8 else ' ' + str(lens.tolist())}; "
                "for absolute lengths in samples use codec.encode(sig, lengths=...)"
            )
        return lens.to(self.device)

    def _encoder(self, sig: Tensor, es: State, length: Tensor | None, stream: bool) -> tuple[Tensor, State]:
        sig = self._checked(sig, "sig")
        return self._part("encoder", sig, es, stream, length=self._relative_length(length, sig.shape[0]))

    def _compressor(self, feats: Tensor, cs: State, stream: bool) -> tuple[Tensor, State]:
        lats, cs = self._part("compressor", feats, cs, stream)
        return F.normalize(lats, dim=-1), cs

    def _decompressor(self, codes: Tensor, ds: State, stream: bool) -> tuple[Tensor, State]:
        return self._part("decompressor", codes.to(self.decompressor.in_proj.weight.dtype), ds, stream)

    def _decoder(
        self, qfeats: Tensor, gs: State, matching_set: Tensor | None, topk: int, num_splits: int,
        output_length: int | None, stream: bool,
    ) -> tuple[Tensor, State]:  # fmt: skip
        if output_length is not None and int(output_length) < 0:
            raise InputError(f"output_length must be a number of samples >= 0, got {output_length}")
        if matching_set is not None:
            qfeats = self.knn(qfeats, matching_set.to(qfeats), topk, num_splits).mean(dim=-2)
        sig, gs = self._part("decoder", qfeats, gs, stream)
        return (sig if output_length is None else fit_length(sig, int(output_length), "edge")), gs

    def sig_to_feats(
        self, sig: Tensor, encoder_state: State = (), length: Tensor | None = None, return_state: bool = False
    ) -> Any:
        """``sig (B, N)`` float at 16 kHz ``-> feats (B, T, C)`` at 50 Hz."""
        feats, es = self._encoder(sig, encoder_state, length, self._streams(return_state, encoder_state))
        return self._out(feats, [es], return_state)

    def feats_to_lats(self, feats: Tensor, compressor_state: State = (), return_state: bool = False) -> Any:
        """``(B, T, C) -> (B, T', D)`` unit-norm latents."""
        feats = self._checked(feats, "feats3")
        lats, cs = self._compressor(feats, compressor_state, self._streams(return_state, compressor_state))
        return self._out(lats, [cs], return_state)

    def feats_to_toks(self, feats: Tensor, compressor_state: State = (), return_state: bool = False) -> Any:
        """``feats (B, T, C) -> toks (B, T') int64``. With ``return_state=True`` (or a state given) a causal model
        streams and the new states follow the output, in argument order."""
        feats = self._checked(feats, "feats3")
        lats, cs = self._compressor(feats, compressor_state, self._streams(return_state, compressor_state))
        return self._out(self.quantizer.lats_to_toks(lats), [cs], return_state)

    def feats_to_codes(self, feats: Tensor, compressor_state: State = (), return_state: bool = False) -> Any:
        """``feats (B, T, C) -> codes (B, T', D)`` float, entries ``±1/sqrt(D)``. With ``return_state=True`` (or a state
        given) a causal model streams and the new states follow the output, in argument order."""
        feats = self._checked(feats, "feats3")
        lats, cs = self._compressor(feats, compressor_state, self._streams(return_state, compressor_state))
        return self._out(self.quantizer.lats_to_codes(lats), [cs], return_state)

    def feats_to_qfeats(
        self, feats: Tensor, compressor_state: State = (), decompressor_state: State = (), return_state: bool = False
    ) -> Any:
        """``feats (B, T, C) -> qfeats (B, T'', C)``, ``T'' = T' * frames_per_token``. With ``return_state=True`` (or a
        state given) a causal model streams and the new states follow the output, in argument order."""
        feats = self._checked(feats, "feats3")
        stream = self._streams(return_state, compressor_state, decompressor_state)
        lats, cs = self._compressor(feats, compressor_state, stream)
        qfeats, ds = self._decompressor(self.quantizer.lats_to_codes(lats), decompressor_state, stream)
        return self._out(qfeats, [cs, ds], return_state)

    def feats_to_sig(
        self,
        feats: Tensor,
        decoder_state: State = (),
        matching_set: Tensor | None = None,
        topk: int = 4,
        num_splits: int = 1,
        output_length: int | None = None,
        return_state: bool = False,
    ) -> Any:
        """``feats (B, T, C) -> sig (B, T * output_hop_length // frames_per_token)`` at
        ``sample_rate_output`` (320 samples per frame at 16 kHz, 480 at 24 kHz); with
        ``matching_set (M, C)`` every frame is first replaced by the mean of its ``topk`` nearest
        (cosine) matching frames (kNN-VC)."""
        feats = self._checked(feats, "feats3")
        stream = self._streams(return_state, decoder_state)
        sig, gs = self._decoder(feats, decoder_state, matching_set, topk, num_splits, output_length, stream)
        return self._out(sig, [gs], return_state)

    def lats_to_toks(self, lats: Tensor) -> Tensor:
        """``lats (B, T', D) -> toks (B, T') int64``: the signs as bits, latent dim 0 the most significant."""
        lats = self._checked(lats, "lats")
        return self.quantizer.lats_to_toks(lats)

    def lats_to_codes(self, lats: Tensor) -> Tensor:
        """``lats (B, T', D) -> codes (B, T', D)``: the signs scaled to ``±1/sqrt(D)``."""
        lats = self._checked(lats, "lats")
        return self.quantizer.lats_to_codes(lats)

    def lats_to_qfeats(self, lats: Tensor, decompressor_state: State = (), return_state: bool = False) -> Any:
        """``lats (B, T', D) -> qfeats (B, T'', C)`` (quantized first). With ``return_state=True`` (or a state given) a
        causal model streams and the new states follow the output, in argument order."""
        lats = self._checked(lats, "lats3")
        return self.codes_to_qfeats(self.quantizer.lats_to_codes(lats), decompressor_state, return_state)

    def toks_to_codes(self, toks: Tensor) -> Tensor:
        """``toks (B, T')`` integer in ``[0, 2^D)`` ``-> codes (B, T', D)`` float, entries ``±1/sqrt(D)``."""
        toks = self._checked(toks, "toks")
        return self.quantizer.toks_to_codes(toks)

    def toks_to_qfeats(self, toks: Tensor, decompressor_state: State = (), return_state: bool = False) -> Any:
        """``toks (B, T') -> qfeats (B, T'', C)``. With ``return_state=True`` (or a state given) a causal model streams
        and the new states follow the output, in argument order."""
        toks = self._checked(toks, "toks2")
        return self.codes_to_qfeats(self.quantizer.toks_to_codes(toks), decompressor_state, return_state)

    def toks_to_sig(
        self,
        toks: Tensor,
        decompressor_state: State = (),
        decoder_state: State = (),
        matching_set: Tensor | None = None,
        topk: int = 4,
        num_splits: int = 1,
        output_length: int | None = None,
        return_state: bool = False,
    ) -> Any:
        """``toks (B, T') -> sig (B, T' * output_hop_length)`` float at ``sample_rate_output`` (``output_length=M``: cut
        or edge-padded to M samples); ``matching_set`` and ``topk`` as in :meth:`feats_to_sig` (kNN-VC). With
        ``return_state=True`` (or a state given) a causal model streams and the new states follow the output, in
        argument order."""
        toks = self._checked(toks, "toks2")
        return self.codes_to_sig(
            self.quantizer.toks_to_codes(toks),
            decompressor_state,
            decoder_state,
            matching_set,
            topk,
            num_splits,
            output_length,
            return_state,
        )

    def codes_to_toks(self, codes: Tensor) -> Tensor:
        """``codes (B, T', D) -> toks (B, T') int64`` (the signs as bits)."""
        codes = self._checked(codes, "codes")
        return self.quantizer.codes_to_toks(codes)

    def codes_to_qfeats(self, codes: Tensor, decompressor_state: State = (), return_state: bool = False) -> Any:
        """``codes (B, T', D) -> qfeats (B, T'', C)``. With ``return_state=True`` (or a state given) a causal model
        streams and the new states follow the output, in argument order."""
        codes = self._checked(codes, "codes3")
        qfeats, ds = self._decompressor(codes, decompressor_state, self._streams(return_state, decompressor_state))
        return self._out(qfeats, [ds], return_state)

    def codes_to_sig(
        self,
        codes: Tensor,
        decompressor_state: State = (),
        decoder_state: State = (),
        matching_set: Tensor | None = None,
        topk: int = 4,
        num_splits: int = 1,
        output_length: int | None = None,
        return_state: bool = False,
    ) -> Any:
        """``codes (B, T', D) -> sig (B, T' * output_hop_length)``, as :meth:`toks_to_sig`. With ``return_state=True``
        (or a state given) a causal model streams and the new states follow the output, in argument order."""
        codes = self._checked(codes, "codes3")
        stream = self._streams(return_state, decompressor_state, decoder_state)
        qfeats, ds = self._decompressor(codes, decompressor_state, stream)
        sig, gs = self._decoder(qfeats, decoder_state, matching_set, topk, num_splits, output_length, stream)
        return self._out(sig, [ds, gs], return_state)

    def _lats(self, sig: Tensor, es: State, cs: State, length: Tensor | None, stream: bool) -> tuple[Tensor, ...]:
        """``(lats, compressor state, encoder state)``."""
        feats, es = self._encoder(sig, es, length, stream)
        lats, cs = self._compressor(feats, cs, stream)
        return lats, cs, es

    def sig_to_lats(
        self,
        sig: Tensor,
        encoder_state: State = (),
        compressor_state: State = (),
        length: Tensor | None = None,
        return_state: bool = False,
    ) -> Any:
        """``sig (B, N)`` float at 16 kHz ``-> lats (B, T', D)`` unit-norm. ``length``: (B,) relative lengths in [0, 1]
        (encoder only; not batch-invariant, :meth:`encode` is). With ``return_state=True`` (or a state given) a causal
        model streams and the new states follow the output, in argument order."""
        stream = self._streams(return_state, encoder_state, compressor_state)
        lats, cs, es = self._lats(sig, encoder_state, compressor_state, length, stream)
        return self._out(lats, [es, cs], return_state)

    def sig_to_toks(
        self,
        sig: Tensor,
        encoder_state: State = (),
        compressor_state: State = (),
        length: Tensor | None = None,
        return_state: bool = False,
    ) -> Any:
        """``sig (B, N)`` float at 16 kHz ``-> toks (B, T') int64``.
        ``length``: (B,) relative lengths in [0, 1] (encoder
        only; not batch-invariant, :meth:`encode` is). With ``return_state=True`` (or a state given) a causal model
        streams and the new states follow the output, in argument order."""
        stream = self._streams(return_state, encoder_state, compressor_state)
        lats, cs, es = self._lats(sig, encoder_state, compressor_state, length, stream)
        return self._out(self.quantizer.lats_to_toks(lats), [es, cs], return_state)

    def sig_to_codes(
        self,
        sig: Tensor,
        encoder_state: State = (),
        compressor_state: State = (),
        length: Tensor | None = None,
        return_state: bool = False,
    ) -> Any:
        """``sig (B, N)`` float at 16 kHz ``-> codes (B, T', D)``. ``length``: (B,) relative lengths in [0, 1] (encoder
        only; not batch-invariant, :meth:`encode` is). With ``return_state=True`` (or a state given) a causal model
        streams and the new states follow the output, in argument order."""
        stream = self._streams(return_state, encoder_state, compressor_state)
        lats, cs, es = self._lats(sig, encoder_state, compressor_state, length, stream)
        return self._out(self.quantizer.lats_to_codes(lats), [es, cs], return_state)

    def sig_to_qfeats(
        self,
        sig: Tensor,
        encoder_state: State = (),
        compressor_state: State = (),
        decompressor_state: State = (),
        length: Tensor | None = None,
        return_state: bool = False,
    ) -> Any:
        """``sig (B, N)`` float at 16 kHz ``-> qfeats (B, T'', C)``.
        ``length``: (B,) relative lengths in [0, 1] (encoder
        only; not batch-invariant, :meth:`encode` is). With ``return_state=True`` (or a state given) a causal model
        streams and the new states follow the output, in argument order."""
        stream = self._streams(return_state, encoder_state, compressor_state, decompressor_state)
        lats, cs, es = self._lats(sig, encoder_state, compressor_state, length, stream)
        qfeats, ds = self._decompressor(self.quantizer.lats_to_codes(lats), decompressor_state, stream)
        return self._out(qfeats, [es, cs, ds], return_state)

    def forward(
        self,
        sig: Tensor,
        encoder_state: State = (),
        compressor_state: State = (),
        decompressor_state: State = (),
        decoder_state: State = (),
        length: Tensor | None = None,
        return_state: bool = False,
    ) -> Any:
        """``(B, N) -> toks (B, T'), codes (B, T', D), rec_sig (B, floor(N * sr_out / sr_in))``."""
        stream = self._streams(return_state, encoder_state, compressor_state, decompressor_state, decoder_state)
        lats, cs, es = self._lats(sig, encoder_state, compressor_state, length, stream)
        codes = self.quantizer.lats_to_codes(lats)
        qfeats, ds = self._decompressor(codes, decompressor_state, stream)
        output_length = self.num_output_samples(sig.shape[-1])
        rec, gs = self._decoder(qfeats, decoder_state, None, 4, 1, output_length, stream)
        return self._out((self.quantizer.codes_to_toks(codes), codes, rec), [es, cs, ds, gs], return_state)

    def sig_to_sig(
        self,
        sig: Tensor,
        encoder_state: State = (),
        compressor_state: State = (),
        decompressor_state: State = (),
        decoder_state: State = (),
        length: Tensor | None = None,
        return_state: bool = False,
    ) -> Any:
        """``(B, N) -> (B, floor(N * sr_out / sr_in))``."""
        out = self.forward(
            sig, encoder_state, compressor_state, decompressor_state, decoder_state, length, return_state
        )
        if not return_state:
            return out[2]
        return (out[2], *out[3:])

    @staticmethod
    def knn(input: Tensor, matching_set: Tensor, topk: int = 4, num_splits: int = 1) -> Tensor:
        """The ``topk`` nearest rows of ``matching_set (M, H)`` under cosine distance for every
        vector of ``input (..., H)`` -> ``(..., topk, H)``, nearest first. ``num_splits`` splits
        the matching set to bound memory."""
        if matching_set.ndim != 2 or matching_set.shape[-1] != input.shape[-1]:
            raise InputError(f"matching_set must be (M, {input.shape[-1]}), got {tuple(matching_set.shape)}")
        if int(topk) < 1:
            raise InputError(f"topk must be at least 1 (the nearest matching frames averaged), got {topk}")
        if matching_set.shape[0] < topk:
            raise InputError(
                f"the matching set (target voice) has {matching_set.shape[0]} frames, fewer than topk={topk}: "
                "lower topk (CLI: --topk) or give more reference audio"
            )
        query = F.normalize(input.reshape(-1, input.shape[-1]), dim=-1)
        best_sim: Tensor | None = None
        best_idx: Tensor | None = None
        offset = 0
        for part in torch.tensor_split(matching_set, max(1, int(num_splits))):
            if part.shape[0] == 0:
                continue
            sim = query @ F.normalize(part, dim=-1).T
            k = min(topk, part.shape[0])
            s, i = sim.topk(k, dim=-1)
            i = i + offset
            offset += part.shape[0]
            if best_sim is None:
                best_sim, best_idx = s, i
            else:
                s = torch.cat([best_sim, s], dim=-1)
                i = torch.cat([best_idx, i], dim=-1)
                best_sim, order = s.topk(topk, dim=-1)
                best_idx = i.gather(-1, order)
        assert best_idx is not None
        return matching_set[best_idx].reshape(*input.shape[:-1], topk, input.shape[-1])

    # -- batch-invariant interface -----------------------------------------------------------
    def _as_batch(self, x: ArrayLike, what: str, integer: bool = False) -> tuple[Tensor, bool]:
        layout = "1-D (one item) or 2-D (batch, time)"
        if not integer:
            x = check_signal(x, what, (1, 2), layout)
            if x.ndim == 2 and x.shape[1] < self.encoder.downsample_factor and x.shape[0] > 8 * x.shape[1]:
                # e.g. soundfile's (N, channels) layout: N "items" of 2 samples would run for minutes
                raise InputError(
                    f"{what} of shape {tuple(x.shape)} reads as a batch of {x.shape[0]} items of {x.shape[1]} "
                    f"samples, each shorter than one frame ({self.encoder.downsample_factor} samples): is it "
                    "(samples, channels)? Pass (batch, samples): mix down with x.mean(axis=1) or transpose with x.T"
                )
        else:
            x = as_tensor(x, what, "integer tokens")
            if x.ndim not in (1, 2):
                raise InputError(f"{what} must be {layout}, got shape {tuple(x.shape)}")
            if x.numel() == 0:
                raise InputError(f"{what} is empty (shape {tuple(x.shape)})")
            if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
                raise InputError(f"{what} must be integers, got {x.dtype}")
        one = x.ndim == 1
        return (x[None] if one else x), one

    @staticmethod
    def _lengths(lengths: ArrayLike | None, batch: int, size: int, what: str) -> Tensor:
        if lengths is None:
            return torch.full((batch,), size, dtype=torch.long)
        lens = as_tensor(lengths, what, "whole numbers").reshape(-1).cpu()
        if lens.dtype == torch.bool or lens.dtype.is_complex:
            raise InputError(f"{what} must be whole numbers (valid samples or tokens per item), got {lens.dtype}")
        if lens.dtype.is_floating_point:
            if not torch.equal(lens, lens.round()):
                raise InputError(f"{what} must be whole numbers (absolute lengths, not relative ones)")
            lens = lens.long()
        lens = lens.long()
        if lens.numel() != batch:
            raise InputError(f"{what} has {lens.numel()} entries for a batch of {batch}")
        if (lens < 1).any() or (lens > size).any():
            raise InputError(f"{what} must lie in [1, {size}], got {lens.tolist()}")
        return lens

    def check_tokens(self, toks: Tensor) -> None:
        """:class:`InputError` unless every token lies in ``[0, codebook_size)``."""
        check_token_ids(toks, self.codebook_size, ndim=None, allow_empty=True)

    def num_output_samples(self, num_samples: int) -> int:
        """Samples at ``sample_rate_output`` for ``num_samples`` input samples: ``floor(N * out / in)``
        (the length ``forward`` and the file API give back)."""
        return int(num_samples) * self.sample_rate_output // self.sample_rate_input

    def num_tokens(self, num_samples: int | Tensor) -> Tensor:
        """Tokens that ``encode`` produces for inputs of ``num_samples`` samples: an int64 tensor
        of the shape of ``num_samples`` (0-d for an int)."""
        n = torch.as_tensor(num_samples, dtype=torch.long)
        return self.compressor.num_frames(self.encoder.num_frames(n))

    @torch.inference_mode()
    def encode(self, wav: ArrayLike, lengths: ArrayLike | None = None) -> EncodeOutput:
        """Audio at 16 kHz -> tokens, exactly batch-invariant.

        ``wav``: (N,) or (B, N) float (int16/int32 PCM is scaled to [-1, 1]);
        ``lengths``: (B,) valid samples per item (default: all N).
        Returns :class:`EncodeOutput` ``(tokens (B, T') int64, lengths (B,))``; 1-D input gives
        1-D tokens. Each item's tokens equal those it gets when encoded alone.
        """
        sig, one = self._as_batch(wav, "audio")
        B, N = sig.shape
        lens = self._lengths(lengths, B, N, "lengths")
        sig = sig.to(self.device, self.dtype)
        sig = sig * (torch.arange(N, device=sig.device)[None] < lens.to(sig.device)[:, None])
        frames = self.encoder.num_frames(lens)
        tok_lens = self.compressor.num_frames(frames)
        T = int(tok_lens.max())
        toks = torch.zeros(B, T, dtype=torch.long, device=sig.device)
        # Items shorter than the conv receptive field are zero-padded inside the feature
        # extractor when run alone; run them alone so that they match exactly.
        short = (lens < self.encoder.receptive_field) & (not self.encoder.causal)
        batch_items = [i for i in range(B) if not bool(short[i])]
        if batch_items:
            idx = torch.tensor(batch_items)
            sub = sig[idx.to(sig.device), : int(lens[idx].max())]
            t = self._encode_batch(sub, frames[idx].to(sig.device))
            for row, i in enumerate(batch_items):
                toks[i, : int(tok_lens[i])] = t[row, : int(tok_lens[i])]
        for i in range(B):
            if bool(short[i]):
                t = self._encode_batch(sig[i : i + 1, : int(lens[i])], None)
                toks[i, : int(tok_lens[i])] = t[0, : int(tok_lens[i])]
        if one:
            return EncodeOutput(toks[0], tok_lens)
        return EncodeOutput(toks, tok_lens)

    def _encode_batch(self, sig: Tensor, frame_lengths: Tensor | None) -> Tensor:
        feats = self.encoder(sig, frame_lengths=frame_lengths)
        lats = self.compressor(feats, lengths=frame_lengths)
        return self.quantizer.lats_to_toks(F.normalize(lats, dim=-1))

    @torch.inference_mode()
    def decode(self, tokens: ArrayLike, token_lengths: ArrayLike | None = None) -> DecodeOutput:
        """Tokens -> audio at ``sample_rate_output``, exactly batch-invariant.

        ``tokens``: (T',) or (B, T') integers in ``[0, codebook_size)``;
        ``token_lengths``: (B,) valid tokens per item (default: all T').
        Returns :class:`DecodeOutput` ``(audio (B, M) float32, lengths (B,))`` with
        ``M = T' * upsampling * hop``; 1-D input gives 1-D audio.
        """
        toks, one = self._as_batch(tokens, "tokens", integer=True)
        B, T = toks.shape
        lens = self._lengths(token_lengths, B, T, "token_lengths")
        toks = toks.long()
        self.check_tokens(toks.cpu()[torch.arange(T)[None] < lens[:, None]])  # padding may hold anything
        toks = toks.clamp(0, self.codebook_size - 1).to(self.device)
        lens_d = lens.to(self.device)
        codes = self.quantizer.toks_to_codes(toks).to(self.dtype)
        qfeats = self.decompressor(codes, lengths=lens_d)
        audio = self.decoder(qfeats, lengths=lens_d * self.frames_per_token)
        out_lens = (lens_d * self.output_hop_length).cpu()
        audio = audio.float() * (
            torch.arange(audio.shape[1], device=audio.device)[None] < out_lens.to(audio.device)[:, None]
        )
        if one:
            return DecodeOutput(audio[0], out_lens)
        return DecodeOutput(audio, out_lens)
