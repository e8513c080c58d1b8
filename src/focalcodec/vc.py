"""kNN voice conversion (SPEC §3.4, kNN-VC of Baas et al. 2023) and saved speaker sets.

1. A target speaker is a *matching set*: the continuous encoder features (``sig_to_feats``,
   WavLM layer 6, not quantised) of the non-causal ``focalcodec_50hz`` model over one or more
   reference recordings, concatenated along time into ``(M, C)``.
2. The source is encoded to tokens and decompressed to ``qfeats (B, T, C)``.
3. Every frame is replaced by the mean of its ``k = 4`` nearest matching-set frames under
   cosine distance; ``num_splits`` splits the matching set to bound memory.
4. The decoder turns the converted frames into audio. The replacement is frame by frame, so
   it works in streaming too (:class:`focalcodec.streaming.StreamDecoder` /
   :class:`~focalcodec.streaming.StreamCodec` with ``matching_set=speaker.feats``).

A :class:`SpeakerSet` is saved as safetensors (tensor ``feats``) with metadata naming the
feature model (``model_id``, its architecture ``model_fingerprint`` and its weights
``model_weights_sha256``) and the source files, so a voice is computed once; loading it with the
feature model checks that this model built it (as ``.fc`` files are checked)::

    feat_model = FocalCodec.from_pretrained("lucadellalib/focalcodec_50hz")
    speaker = build_speaker_set(feat_model, ["ref1.wav", "ref2.wav"])
    speaker.save("alice.safetensors")
    out = convert(codec, source_wav, SpeakerSet.load("alice.safetensors", model=feat_model))
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .audio import (
    as_tensor,
    check_mono,
    check_signal,
    check_token_ids,
    fit_blocks,
    load_audio,
    resample_blocks,
    save_audio,
)
from .errors import InputError
from .inputs import expand_inputs
from .longform import Progress, encode_long, iter_decode
from .windowing import DEFAULT, Windowing

__all__ = [
    "FORMAT",
    "SpeakerSet",
    "auto_splits",
    "build_speaker_set",
    "convert",
    "convert_to_file",
    "convert_tokens",
    "describe_speaker_set",
    "iter_convert",
    "matching_features",
]

FORMAT = "focalcodec-speaker-set"
FORMAT_VERSION = "1"
# Reference audio is encoded in windows of at most this many seconds (bounded attention
# memory for long references; each window is an independent utterance for the encoder).
MAX_REFERENCE_SECONDS = 30.0
# Default memory budget of one cosine-similarity block in the kNN search.
KNN_BUDGET_BYTES = 256 * 2**20

PathLike = str | Path
SOURCE_LAYOUT = "(N,) or (B, N) with N > 0"


@dataclass
class SpeakerSet:
    """A target voice: ``feats (M, C)`` float32 continuous features plus provenance."""

    feats: Tensor
    model_id: str = ""
    model_fingerprint: str = ""
    model_weights: str = ""  # the feature model's weights_sha256
    sources: list[str] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.feats.ndim != 2 or self.feats.shape[0] == 0:
            raise InputError(f"a speaker set needs (M, C) features with M > 0, got shape {tuple(self.feats.shape)}")

    @property
    def num_frames(self) -> int:
        return int(self.feats.shape[0])

    @property
    def dim(self) -> int:
        return int(self.feats.shape[1])

    @property
    def seconds(self) -> float:
        """Reference audio covered, at 50 frames per second."""
        return self.num_frames / 50.0

    def save(self, path: PathLike, force: bool = False, inputs: Sequence[PathLike] = ()) -> Path:
        """Write ``path`` (safetensors: tensor ``feats`` + metadata) through
        :func:`focalcodec.outputs.output_path`: atomic, refuses to replace an existing file
        without ``force`` and never replaces one of ``inputs``."""
        from safetensors.torch import save_file

        from .outputs import output_path

        path = Path(path)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_id": self.model_id,
            "model_fingerprint": self.model_fingerprint,
            "model_weights_sha256": self.model_weights,
            "sources": json.dumps(self.sources),
            "frames": json.dumps(self.frames),
            "dim": str(self.dim),
        }
        with output_path(path, force, inputs) as tmp:
            save_file({"feats": self.feats.detach().to("cpu", torch.float32).contiguous()}, str(tmp), metadata=meta)
        return path

    def check_model(self, model: nn.Module, check_weights: bool = True, name: str = "the speaker set") -> None:
        """Check, before any conversion, that ``model`` (a FocalCodec) is the feature model
        that built this set, as ``.fc`` files are checked against their decoder
        (:func:`focalcodec.bitstream.check_architecture` / ``check_weights_digest``):

        - another architecture (config fingerprint): :class:`InputError`;
        - other weights (``weights_sha256``): :class:`InputError`, unless ``check_weights=False``
          (CLI ``--allow-other-weights``), which uses the set anyway;
        - a set saved without this identity (older files): one warning, then it is used.
        """
        mine = str(getattr(model, "model_id", "?"))
        fix = (
            "pass the model that built it with --features-model (or --model), or rebuild the set from the "
            "reference audio with `focalcodec vc --reference REF... --save-speaker-set FILE`"
        )
        if not self.model_fingerprint or not self.model_weights:
            missing = "model" if not self.model_fingerprint else "weights"
            warnings.warn(
                f"{name} does not record the {missing} that built it (an older speaker set), so it cannot be "
                f"checked against features model {mine!r}; rebuild it with `focalcodec vc --reference REF... "
                "--save-speaker-set FILE` to make it checkable",
                stacklevel=2,
            )
        if self.model_fingerprint and self.model_fingerprint != model.fingerprint:
            raise InputError(
                f"{name} was built from the features of model {self.model_id!r} (architecture "
                f"{self.model_fingerprint[:16]}) but the features model is {mine!r} (architecture "
                f"{model.fingerprint[:16]}); {fix}"
            )
        if check_weights and self.model_weights and self.model_weights != model.weights_sha256:
            raise InputError(
                f"{name} was built by other weights ({self.model_id!r}, weights {self.model_weights[:16]}) than "
                f"features model {mine!r} (weights {model.weights_sha256[:16]}); {fix}, or pass "
                "--allow-other-weights (Python: check_weights=False) to use it with these weights anyway"
            )

    @classmethod
    def load(cls, path: PathLike, model: nn.Module | None = None, check_weights: bool = True) -> SpeakerSet:
        """Read a file written by :meth:`save`. With ``model`` (the feature model the set is
        to match), :meth:`check_model` checks that it built the set: another architecture, or
        other weights unless ``check_weights=False``, raises :class:`InputError`."""
        path = Path(path)
        meta, feats = _read(path, tensor=True)
        if not feats.dtype.is_floating_point or not torch.isfinite(feats).all():
            raise InputError(f"{path}: the features are not finite floating-point numbers; rebuild the speaker set")
        sources, frames = _provenance(path, meta)
        speaker = cls(
            feats=feats.float(),
            model_id=meta.get("model_id", ""),
            model_fingerprint=meta.get("model_fingerprint", ""),
            model_weights=meta.get("model_weights_sha256", ""),
            sources=sources,
            frames=frames,
        )
        if model is not None:
            speaker.check_model(model, check_weights, f"speaker set {path}")
        return speaker


def _read(path: Path, tensor: bool) -> tuple[dict[str, str], Tensor | list[int]]:
    """A speaker set's metadata and its ``feats`` tensor (``tensor=True``) or only its shape."""
    from safetensors import safe_open

    if not path.is_file():
        raise InputError(f"speaker set not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if "feats" not in f.keys():
                raise InputError(f"{path} has no 'feats' tensor: not a speaker set")
            feats = f.get_tensor("feats") if tensor else list(f.get_slice("feats").get_shape())
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read speaker set {path} (not a safetensors file?): {exc}") from None
    if meta.get("format") != FORMAT:
        raise InputError(f"{path} is not a FocalCodec speaker set (format {meta.get('format')!r})")
    return meta, feats


def _provenance(path: Path, meta: dict[str, str]) -> tuple[list, list]:
    try:
        return json.loads(meta.get("sources", "[]")), json.loads(meta.get("frames", "[]"))
    except ValueError:
        raise InputError(f"{path}: damaged metadata (sources/frames are not JSON); rebuild the speaker set") from None


def describe_speaker_set(path: PathLike) -> dict:
    """Facts about a saved speaker set (``focalcodec info``), read from its header without
    loading the features: frames, feature width, the feature model's identity, the sources."""
    path = Path(path)
    meta, shape = _read(path, tensor=False)
    sources, frames = _provenance(path, meta)
    num = int(shape[0]) if shape else 0
    return {
        "file": str(path),
        "type": "speaker set",
        "format_version": meta.get("format_version", ""),
        "num_frames": num,
        "feature_dim": int(shape[1]) if len(shape) == 2 else None,
        "seconds": round(num / 50.0, 2),
        "model_id": meta.get("model_id", ""),
        "model_fingerprint": meta.get("model_fingerprint", ""),
        "model_weights_sha256": meta.get("model_weights_sha256", ""),
        "sources": sources,
        "frames_per_source": frames,
    }


@torch.inference_mode()
def _features(model: nn.Module, sig: Tensor) -> Tensor:
    """``(N,) -> (T, C)`` continuous features, long signals in independent windows."""
    window = int(MAX_REFERENCE_SECONDS * model.sample_rate_input)
    device = model.device
    parts = []
    for start in range(0, sig.shape[0], window):
        piece = sig[start : start + window]
        if parts and piece.shape[0] < model.receptive_field:
            break  # a few trailing samples make no frame of their own
        parts.append(model.sig_to_feats(piece[None].to(device))[0].float().cpu())
    return torch.cat(parts, dim=0)


def build_speaker_set(
    model: nn.Module,
    references: Sequence[PathLike | Tensor | np.ndarray],
) -> SpeakerSet:
    """Matching set of a target voice from reference audio.

    ``model``: the feature model, the non-causal ``focalcodec_50hz`` for the published recipe
    (any FocalCodec works; the features must have the converting model's width).
    ``references``: files, directories (all audio files below) or ``(N,)`` 16 kHz tensors / arrays.
    Returns a :class:`SpeakerSet` with ``feats (M, C)``, M = total frames.
    """
    items: list[Path | Tensor] = []
    for ref in references:
        if isinstance(ref, (Tensor, np.ndarray)):
            items.append(as_tensor(ref, "reference"))
        else:
            items.extend(expand_inputs([ref]))
    if not items:
        raise InputError("no reference audio given")
    feats, sources, frames = [], [], []
    for i, item in enumerate(items):
        if isinstance(item, Tensor):
            name = f"<tensor {i}>"
            sig = check_mono(item.detach(), f"reference {name}").float()
        else:
            sig, name = load_audio(item, model.sample_rate_input), str(item)
        if sig.shape[0] < model.receptive_field:
            raise InputError(f"reference {name} is too short ({sig.shape[0]} samples) to give a feature frame")
        f = _features(model, sig)
        feats.append(f)
        sources.append(name)
        frames.append(int(f.shape[0]))
    return SpeakerSet(
        feats=torch.cat(feats, dim=0),
        model_id=str(getattr(model, "model_id", "")),
        model_fingerprint=str(getattr(model, "fingerprint", "")),
        model_weights=str(getattr(model, "weights_sha256", "")),
        sources=sources,
        frames=frames,
    )


def auto_splits(num_queries: int, num_frames: int, budget_bytes: int = KNN_BUDGET_BYTES) -> int:
    """Splits of the matching set that keep one ``(queries, frames / splits)`` float32
    similarity block under ``budget_bytes``."""
    return max(1, math.ceil(num_queries * num_frames * 4 / budget_bytes))


def matching_features(codec: nn.Module, target: SpeakerSet | Tensor) -> Tensor:
    """The one check of a kNN-VC target: ``target``'s features ``(M, codec.feature_dim)``, else
    :class:`InputError` saying what is wrong."""
    feats = target.feats if isinstance(target, SpeakerSet) else as_tensor(target, "the matching set")
    if feats.ndim != 2:
        raise InputError(f"matching set must be (M, C), got shape {tuple(feats.shape)}")
    if not feats.dtype.is_floating_point or not torch.isfinite(feats).all():
        raise InputError("the matching set's features must be finite floating-point numbers")
    width = codec.feature_dim
    if feats.shape[1] != width:
        raise InputError(
            f"the speaker set has {feats.shape[1]}-dim features but this model's decoder takes {width}; "
            "build the set with a feature model of the same width"
        )
    return feats


@torch.inference_mode()
def convert_tokens(
    codec: nn.Module,
    toks: Tensor,
    target: SpeakerSet | Tensor,
    topk: int = 4,
    num_splits: int | None = None,
    output_length: int | None = None,
) -> Tensor:
    """Tokens ``(B, T')`` of any speaker -> audio ``(B, M)`` in the target voice.

    ``num_splits=None`` picks enough splits to bound the similarity block (see
    :func:`auto_splits`). ``output_length`` truncates/pads as ``toks_to_sig`` does.
    """
    feats = matching_features(codec, target)
    toks = check_token_ids(toks, codec.codebook_size, "tokens", (1, 2), "(T',) or (B, T')")
    if toks.ndim == 1:
        toks = toks[None]
    if num_splits is None:
        frames = toks.shape[0] * toks.shape[1] * codec.frames_per_token
        num_splits = auto_splits(frames, feats.shape[0])
    device = codec.device
    return codec.toks_to_sig(
        toks.to(device),
        matching_set=feats.to(device),
        topk=topk,
        num_splits=num_splits,
        output_length=output_length,
    ).float()


def _source_tokens(
    codec: nn.Module, source: Tensor | PathLike, windowing: Windowing, progress: Progress | None
) -> tuple[Tensor, int]:
    """``(tokens (T,), length at 16 kHz)`` of one source, encoded window by window."""
    from .compression import model_signal

    if isinstance(source, Tensor):
        sig = check_signal(source.detach(), "source", layout=SOURCE_LAYOUT).float().cpu()
        n = sig.shape[0]
    else:
        sig, orig, num = model_signal(source, codec)
        n = num * codec.sample_rate_input // orig
    return encode_long(codec, sig, windowing, progress), n


class _Conversion:
    """A source encoded (window by window) and ready to be decoded in the target voice."""

    def __init__(self, codec, source, target, topk, num_splits, windowing, progress) -> None:
        self.feats = matching_features(codec, target)
        if topk < 1:
            raise InputError("topk must be at least 1")
        self.codec, self.topk, self.windowing, self.progress = codec, topk, windowing, progress
        self.toks, n = _source_tokens(codec, source, windowing, progress)
        self.num_samples = codec.num_output_samples(n)
        if num_splits is None:
            frames = min(self.toks.shape[0], windowing.tokens_per_call(codec)) * codec.frames_per_token
            num_splits = auto_splits(frames, self.feats.shape[0])
        self.num_splits = num_splits

    def blocks(self) -> Iterator:
        """float32 numpy blocks, exactly ``num_samples`` in all."""
        with torch.inference_mode():
            decoded = iter_decode(
                self.codec,
                self.toks,
                self.windowing,
                self.progress,
                matching_set=self.feats,
                topk=self.topk,
                num_splits=self.num_splits,
            )
            yield from fit_blocks((b.numpy() for b in decoded), self.num_samples)


@torch.inference_mode()
def iter_convert(
    codec: nn.Module,
    source: Tensor | PathLike,
    target: SpeakerSet | Tensor,
    topk: int = 4,
    num_splits: int | None = None,
    windowing: Windowing = DEFAULT,
    progress: Progress | None = None,
) -> Iterator[Tensor]:
    """One source ``(N,)`` at 16 kHz or a file -> consecutive float32 blocks of the converted
    audio at ``codec.sample_rate_output``, ``floor(N * sr_out / sr_in)`` samples in all.

    Bounded memory for any length: the source is encoded and decoded window by window as in
    :mod:`focalcodec.longform` (a 16 kHz WAV/FLAC is even read window by window), and the kNN
    search holds one window's frames against the matching set (``num_splits=None`` picks the
    splits for one window, see :func:`auto_splits`). Sources up to one window
    (64 s by default) are converted in one pass, exactly as without windowing; see
    docs/vc.md for the effect of windows on longer ones. ``progress(seconds)`` is called for
    encoding and then for decoding.
    """
    for block in _Conversion(codec, source, target, topk, num_splits, windowing, progress).blocks():
        yield torch.from_numpy(block)


@torch.inference_mode()
def convert(
    codec: nn.Module,
    source: Tensor | PathLike,
    target: SpeakerSet | Tensor,
    topk: int = 4,
    num_splits: int | None = None,
    windowing: Windowing = DEFAULT,
) -> Tensor:
    """Source speech -> the same speech in the target voice (offline).

    ``source``: ``(N,)`` / ``(B, N)`` at 16 kHz, or a file. Returns ``(M,)`` / ``(B, M)`` at
    ``codec.sample_rate_output`` with ``M = floor(N * sr_out / sr_in)``. Long sources are
    processed window by window (see :func:`iter_convert`); to write a long conversion without
    holding it, use :func:`convert_to_file`.
    """
    if isinstance(source, Tensor) and check_signal(source, "source", (1, 2), SOURCE_LAYOUT).ndim == 2:
        return torch.stack([convert(codec, row, target, topk, num_splits, windowing) for row in source])
    return torch.cat(list(iter_convert(codec, source, target, topk, num_splits, windowing)))


def convert_to_file(
    codec: nn.Module,
    source: Tensor | PathLike,
    target: SpeakerSet | Tensor,
    output: PathLike,
    *,
    topk: int = 4,
    num_splits: int | None = None,
    windowing: Windowing = DEFAULT,
    output_rate: int | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> tuple[Path, int, int]:
    """:func:`convert` written to a WAV/FLAC file window by window (never held whole), through
    :func:`focalcodec.outputs.output_path` (refuses an existing file without ``overwrite``,
    and the source itself always). Returns ``(path, num_samples, sample_rate)``."""
    from .limits import check_sample_rate
    from .outputs import check_targets

    inputs = [] if isinstance(source, Tensor) else [source]
    check_targets([output], inputs, overwrite)
    native = int(codec.sample_rate_output)
    rate = native if output_rate is None else check_sample_rate(output_rate, "output rate")
    job = _Conversion(codec, source, target, topk, num_splits, windowing, progress)
    blocks, num = job.blocks(), job.num_samples
    if rate != native:
        num = num * rate // native
        blocks = resample_blocks(blocks, native, rate, num)
    return save_audio(output, blocks, rate, force=overwrite, inputs=inputs), num, rate
