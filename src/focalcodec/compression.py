"""Python API mirroring the CLI: audio (file or array) <-> ``.fc`` bitstream.

    >>> import focalcodec
    >>> blob = focalcodec.compress("speech.flac", "lucadellalib/focalcodec_50hz")   # doctest: +SKIP
    >>> audio, rate = focalcodec.decompress(blob, "lucadellalib/focalcodec_50hz")   # doctest: +SKIP

Any length works (see :mod:`focalcodec.longform`); the decoded audio has exactly the
original duration: ``num_samples`` samples at the original rate, or
``floor(num_samples * rate / original_rate)`` at another ``output_rate``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .audio import (
    SEEKABLE_FORMATS,
    AudioFileSamples,
    check_signal,
    fit_blocks,
    fit_length,
    load_audio,
    resample,
    resample_blocks,
    save_audio,
)
from .bitstream import BitstreamError, CompressedAudio
from .errors import InputError, OutputError
from .limits import check_sample_rate
from .longform import DEFAULT, Progress, Windowing, encode_long, iter_decode
from .outputs import check_targets, write_bytes

__all__ = [
    "Decompressed",
    "compress",
    "decode_stream",
    "decompress",
    "decompress_to_file",
    "encode_audio",
    "resolve_model",
    "tokens_to_file",
]

Source = str | Path | np.ndarray | Tensor
# decompress() / decode_stream() keep the whole audio in memory: refuse more than this
# (2 GiB of float32, about 9 hours at 16 kHz); decompress_to_file holds one window at a time.
MAX_MEMORY_BYTES = 2**31
ModelLike = str | Path | Any  # a FocalCodec, or what FocalCodec.from_pretrained accepts


class Decompressed(NamedTuple):
    """``audio``: (M,) float32; ``sample_rate``: its rate in Hz."""

    audio: Tensor
    sample_rate: int


def resolve_model(model: ModelLike | None, stream: CompressedAudio | None = None) -> Any:
    """A FocalCodec from an instance, a preset / hub id / local directory, or (``None``)
    the published model named in ``stream``'s header."""
    from .codec import FocalCodec
    from .config import PRESETS

    if isinstance(model, FocalCodec):
        return model
    if model is None:
        if stream is None:
            raise InputError("no model given: pass a FocalCodec, a preset name, a hub id or a checkpoint directory")
        name = stream.model_name
        parts = name.split("/")
        if name in PRESETS:
            model = f"lucadellalib/{name}"
        elif len(parts) == 2 and all(p and not p.startswith(".") for p in parts) and not Path(name).exists():
            model = name  # a Hub repo id (as checkpoint_name records Hub snapshots)
        else:
            raise InputError(
                f"the stream was made by model {name!r}, which is not a published preset or Hub repo; "
                "pass its checkpoint directory as the model (CLI: --model DIR)"
            )
    return FocalCodec.from_pretrained(str(model))


def _check_output(output: str | Path | None, overwrite: bool, inputs: Sequence[str | Path] = ()) -> Path | None:
    if output is None:
        return None
    path = Path(output)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name")
    check_targets([path], inputs, force=overwrite)
    return path


def _as_signal(source: Source, sample_rate: int | None, model_rate: int) -> tuple[Tensor | AudioFileSamples, int, int]:
    """(signal at model_rate (N,), original rate, original length) from a file or an array.

    A WAV/FLAC (or other exactly seekable) file already at ``model_rate`` comes back as an
    :class:`AudioFileSamples`, read window by window while encoding (memory independent of
    its duration); other files are loaded and resampled in memory."""
    if isinstance(source, (str, Path)):
        import soundfile as sf

        if sample_rate is not None:
            raise InputError("sample_rate is only for arrays; a file carries its own rate")
        try:
            info = sf.info(str(source))
            on_demand = info.samplerate == model_rate and info.format in SEEKABLE_FORMATS and info.frames > 0
        except Exception:  # noqa: BLE001 - load_audio below reports the problem
            on_demand = False
        if on_demand:
            samples = AudioFileSamples(source)
            return samples, samples.sample_rate, len(samples)
        sig = load_audio(source, model_rate)  # validates: missing, empty, unreadable, NaN
        try:
            meta = sf.info(str(source))
            rate, frames = int(meta.samplerate), int(meta.frames)
        except Exception:  # noqa: BLE001 - load_audio has already read the file
            rate, frames = model_rate, sig.shape[0]
        if frames <= 0:
            frames = sig.shape[0] * rate // model_rate
        return sig, rate, frames
    if isinstance(source, (bytes, bytearray)):
        raise InputError("compress takes an audio file path or an array of samples, not bytes")
    x = check_signal(source, "audio", (1, 2), "(N,) or (channels, N)")
    rate = check_sample_rate(sample_rate, "sample_rate") if sample_rate is not None else model_rate
    if x.ndim == 2 and x.shape[0] > x.shape[1]:
        raise InputError(
            f"audio of shape {tuple(x.shape)} has more channels than samples: is it (samples, channels)? "
            "Pass (channels, samples), e.g. x.T"
        )
    if x.ndim == 2:  # (C, N) channels first
        if x.shape[0] > 1:
            warnings.warn(f"{x.shape[0]} channels mixed down to mono", stacklevel=3)
        x = x.mean(dim=0)
    x = x.detach().float().cpu()
    frames = x.shape[0]
    if rate != model_rate:
        x = torch.from_numpy(np.ascontiguousarray(resample(x.numpy(), rate, model_rate)))
    return x, rate, frames


def model_signal(
    source: Source, codec: Any, sample_rate: int | None = None
) -> tuple[Tensor | AudioFileSamples, int, int]:
    """``source`` (a file or samples, see :func:`encode_audio`) as the model's input:
    ``(signal (N16,) at 16 kHz, original rate, original length)`` with
    ``N16 = floor(length * 16000 / original rate)``. A 16 kHz WAV/FLAC file comes back as an
    :class:`~focalcodec.audio.AudioFileSamples` (read window by window)."""
    rate_in = codec.sample_rate_input
    sig, orig_rate, num_samples = _as_signal(source, sample_rate, rate_in)
    n_model = num_samples * rate_in // orig_rate
    if n_model < 1:
        raise InputError(
            f"audio is too short: {num_samples} samples at {orig_rate} Hz is less than one sample at {rate_in} Hz"
        )
    if isinstance(sig, Tensor):
        sig = fit_length(sig, n_model)  # the resampler's rounding
    return sig, orig_rate, num_samples


def encode_audio(
    source: Source,
    model: ModelLike,
    sample_rate: int | None = None,
    windowing: Windowing = DEFAULT,
    progress: Progress | None = None,
) -> CompressedAudio:
    """Audio -> :class:`CompressedAudio`.

    ``source``: a file (any soundfile format, rate and channel count) or samples ``(N,)`` /
    ``(channels, N)`` (float in [-1, 1], int16 or int32) at ``sample_rate`` (default: the
    model's 16 kHz). ``progress(seconds)`` is called as windows are done.
    """
    codec = resolve_model(model)
    sig, orig_rate, num_samples = model_signal(source, codec, sample_rate)
    toks = encode_long(codec, sig, windowing, progress)
    return CompressedAudio.describe(codec, toks.numpy(), orig_rate, num_samples)


def compress(
    source: Source,
    model: ModelLike,
    output: str | Path | None = None,
    *,
    sample_rate: int | None = None,
    overwrite: bool = False,
    windowing: Windowing = DEFAULT,
) -> bytes:
    """Audio -> ``.fc`` bytes; also written (atomically) to ``output`` when given.

    See :func:`encode_audio` for ``source`` and ``sample_rate``. The result takes
    ``header + ceil(T * D / 8)`` bytes (docs/bitstream.md).
    """
    path = _check_output(output, overwrite)
    data = encode_audio(source, model, sample_rate, windowing).to_bytes()
    if path is not None:
        write_bytes(path, data, force=overwrite)
    return data


def _as_stream(source: CompressedAudio | bytes | bytearray | str | Path) -> CompressedAudio:
    if isinstance(source, CompressedAudio):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return CompressedAudio.from_bytes(bytes(source))
    if isinstance(source, (str, Path)):
        return CompressedAudio.load(source)
    raise BitstreamError(f"cannot decode a {type(source).__name__}; pass .fc bytes, a .fc path or a CompressedAudio")


def _output_rate(stream: CompressedAudio, codec: Any, output_rate: int | str | None) -> int:
    if output_rate is None:
        return int(codec.sample_rate_output)
    if isinstance(output_rate, str):
        if output_rate.lower() in ("input", "original", "orig"):
            return stream.original_rate
        if not output_rate.strip().isdigit():
            raise InputError(f"output rate must be a number of Hz or 'input', got {output_rate!r}")
    return check_sample_rate(output_rate, "output rate")


def decode_stream(
    stream: CompressedAudio,
    model: ModelLike | None = None,
    output_rate: int | str | None = None,
    windowing: Windowing = DEFAULT,
    check_weights: bool = True,
    max_bytes: int | None = MAX_MEMORY_BYTES,
) -> Decompressed:
    """:class:`CompressedAudio` -> audio. ``output_rate``: ``None`` (the model's output rate),
    ``"input"`` (the original file's rate) or Hz. Raises :class:`ModelMismatchError` when
    ``model`` did not make the stream (``check_weights=False``: decode with other weights of
    the same architecture anyway). Every header field is checked against the model before
    anything is allocated; audio of more than ``max_bytes`` (float32) is refused: decode it
    with :func:`decompress_to_file`, which holds one window at a time."""
    codec, rate = _prepare_decode(stream, model, output_rate, check_weights)
    target = stream.output_samples(rate)
    if max_bytes is not None and 4 * target > max_bytes:
        raise InputError(
            f"the stream decodes to {stream.duration:.0f} s of audio ({4 * target / 2**30:.1f} GiB in memory, more "
            f"than max_bytes={max_bytes}); decode it to a file (decompress_to_file, or the CLI) instead"
        )
    audio = torch.empty(target, dtype=torch.float32)
    pos = 0
    for block in _audio_blocks(stream, codec, rate, windowing):
        audio[pos : pos + block.shape[0]] = torch.from_numpy(block)
        pos += block.shape[0]
    return Decompressed(audio, rate)


def _prepare_decode(
    stream: CompressedAudio, model: ModelLike | None, output_rate: int | str | None, check_weights: bool
) -> tuple[Any, int]:
    """The model and output rate for ``stream``, every header field checked against the
    model (before any decoding work or allocation)."""
    codec = resolve_model(model, stream)
    stream.check_model(codec, check_weights=check_weights)
    return codec, _output_rate(stream, codec, output_rate)


def _audio_blocks(
    stream: CompressedAudio, codec: Any, rate: int, windowing: Windowing, progress: Progress | None = None
) -> Iterator[np.ndarray]:
    """Decoded audio at ``rate`` in consecutive float32 blocks, exactly
    ``floor(num_samples * rate / original_rate)`` samples in all; one window in memory.
    ``stream`` must have passed :meth:`CompressedAudio.check_model` for ``codec``."""
    model_blocks = (b.numpy() for b in iter_decode(codec, torch.from_numpy(stream.tokens), windowing, progress))
    blocks = fit_blocks(model_blocks, codec.num_output_samples(stream.model_num_samples))
    if rate != codec.sample_rate_output:
        blocks = resample_blocks(blocks, codec.sample_rate_output, rate, stream.output_samples(rate))
    yield from blocks


def decompress_to_file(
    source: CompressedAudio | bytes | str | Path,
    model: ModelLike | None,
    output: str | Path,
    *,
    output_rate: int | str | None = None,
    overwrite: bool = False,
    windowing: Windowing = DEFAULT,
    check_weights: bool = True,
    inputs: Sequence[str | Path] = (),
    progress: Progress | None = None,
) -> tuple[Path, int, int]:
    """Like :func:`decompress` with ``output``, but the audio goes to the file window by
    window and is never held whole (bounded memory for any length). Returns
    ``(path, num_samples, sample_rate)``. ``inputs``: files that ``output`` must not be."""
    path = _check_output(output, overwrite, inputs)
    assert path is not None
    stream = _as_stream(source)
    codec, rate = _prepare_decode(stream, model, output_rate, check_weights)
    blocks = _audio_blocks(stream, codec, rate, windowing, progress)
    save_audio(path, blocks, rate, force=overwrite, inputs=inputs)
    return path, stream.output_samples(rate), rate


def tokens_to_file(
    tokens: np.ndarray | Tensor,
    model: ModelLike,
    output: str | Path,
    *,
    output_rate: int | None = None,
    overwrite: bool = False,
    windowing: Windowing = DEFAULT,
    inputs: Sequence[str | Path] = (),
    progress: Progress | None = None,
    num_samples: int | None = None,
) -> tuple[Path, int, int]:
    """Bare tokens ``(T,)`` -> a WAV/FLAC file, window by window, optionally resampled to
    ``output_rate``. Returns ``(path, num_samples, rate)``.

    ``num_samples``: the length at ``sample_rate_input`` of the audio the tokens were made from,
    where it is known (a tokenize shard's ``num_samples``); the output then has that length
    (``floor(N * sr_out / sr_in)`` samples, as a ``.fc`` file decodes). Without it (a ``.npy``:
    no header), the natural length ``T * hop``."""
    path = _check_output(output, overwrite, inputs)
    assert path is not None
    codec = resolve_model(model)
    toks = torch.as_tensor(np.asarray(tokens)).reshape(-1).long()
    native = int(codec.sample_rate_output)
    rate = native if output_rate is None else check_sample_rate(output_rate, "output rate")
    blocks: Iterable[np.ndarray] = (b.numpy() for b in iter_decode(codec, toks, windowing, progress))
    if num_samples is None:
        num = toks.shape[0] * codec.output_hop_length
    else:
        want = int(codec.num_tokens(int(num_samples)))
        if num_samples < 0 or want != toks.shape[0]:
            raise InputError(
                f"{num_samples} samples take {want} tokens with model {codec.model_id!r}, but {toks.shape[0]} "
                "were given; the stored length does not belong to these tokens (damaged data?)"
            )
        num = codec.num_output_samples(num_samples)
        blocks = fit_blocks(blocks, num)
    if rate != native:
        num = num * rate // native
        blocks = resample_blocks(blocks, native, rate, num)
    save_audio(path, blocks, rate, force=overwrite, inputs=inputs)
    return path, num, rate


def decompress(
    source: CompressedAudio | bytes | str | Path,
    model: ModelLike | None = None,
    output: str | Path | None = None,
    *,
    output_rate: int | str | None = None,
    overwrite: bool = False,
    windowing: Windowing = DEFAULT,
    check_weights: bool = True,
    max_bytes: int | None = MAX_MEMORY_BYTES,
) -> Decompressed:
    """``.fc`` bytes / file / :class:`CompressedAudio` -> :class:`Decompressed` ``(audio (M,), rate)``;
    also written (atomically, WAV or FLAC by suffix) to ``output`` when given.

    ``model=None`` loads the published model named in the header. See
    :func:`decode_stream` for ``output_rate``, ``check_weights`` and ``max_bytes``.
    """
    path = _check_output(output, overwrite)
    result = decode_stream(_as_stream(source), model, output_rate, windowing, check_weights, max_bytes)
    if path is not None:
        save_audio(path, [result.audio.numpy()], result.sample_rate, force=overwrite)
    return result
