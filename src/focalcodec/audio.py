"""Audio I/O shared by every command: read any soundfile format at any rate and channel
count, validate, mix down, resample (soxr); write WAV/FLAC.

``load_audio(path, sample_rate) -> (N,) float32 tensor`` at ``sample_rate``;
``AudioFileSamples(path)``: the same samples read on demand (``src[a:b]``), for long files.

The signal helpers every part shares, one of each: :func:`check_signal` (samples given in
memory), :func:`fit_length`, :func:`crossfade` and :func:`mel_filter_bank`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import InputError
from .limits import AUDIO_EXTENSIONS, SAMPLE_RATE_RANGE, check_input_file, check_sample_rate
from .outputs import output_path

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioError",
    "AudioFileSamples",
    "AudioReader",
    "AudioWriter",
    "as_tensor",
    "audio_info",
    "check_mono",
    "check_signal",
    "check_token_ids",
    "crossfade",
    "fit_blocks",
    "fit_length",
    "load_audio",
    "mel_filter_bank",
    "read_audio",
    "resample",
    "resample_blocks",
    "save_audio",
]


class AudioError(InputError):
    """An audio file that cannot be read or written."""


def _unreadable(path: Path, exc: BaseException) -> AudioError:
    text = str(exc).replace(f"Error opening {str(path)!r}: ", "").replace(f"Error opening '{path}': ", "")
    return AudioError(f"cannot read {path} as audio (corrupt, truncated or unsupported format?): {text}")


def audio_info(path: str | Path):
    """soundfile's header facts, after the checks every reader shares: the file exists and is
    not empty, its sample rate lies in :data:`~focalcodec.limits.SAMPLE_RATE_RANGE`, and a
    WAV holds the samples its header promises."""
    import soundfile as sf

    path = Path(path)
    _check_file(path)
    try:
        info = sf.info(str(path))
    except Exception as exc:  # noqa: BLE001 - libsndfile reports all failures alike
        raise _unreadable(path, exc) from None
    lo, hi = SAMPLE_RATE_RANGE
    if not lo <= info.samplerate <= hi:
        raise AudioError(
            f"{path} declares a sample rate of {info.samplerate} Hz, outside [{lo}, {hi}]; the header is damaged"
        )
    if info.format in ("WAV", "WAVEX"):
        _check_wav_data(path)
    return info


def _check_wav_data(path: Path) -> None:
    """:class:`AudioError` when a RIFF WAV's ``data`` chunk declares more bytes than the file
    holds (libsndfile would silently read fewer samples). A size of 0 or 0xFFFFFFFF (what
    streaming writers put when the length is unknown) is accepted."""
    import struct

    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            cid, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                held = size - pos - 8
                if length not in (0, 0xFFFFFFFF) and length > held:
                    raise AudioError(
                        f"{path} is truncated: its header promises {length} bytes of samples but the file holds "
                        f"{held}; copy or download it again"
                    )
                return
            pos += 8 + length + (length & 1)


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a file as float32 ``(N, C)`` samples in [-1, 1] and its sample rate."""
    import soundfile as sf

    path = Path(path)
    audio_info(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - libsndfile reports all failures alike
        raise _unreadable(path, exc) from None
    return data, int(rate)


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample ``(N,)`` or ``(N, C)`` float32 with soxr (high quality)."""
    if rate_in == rate_out:
        return x
    import soxr

    return soxr.resample(x, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


def fit_length(x: Tensor | np.ndarray, length: int, pad: str = "zeros") -> Tensor | np.ndarray:
    """``x (..., N)`` (tensor or array) cut or extended to ``(..., length)`` along its last axis.

    ``pad="zeros"`` extends with zeros; ``pad="edge"`` repeats the last sample (zeros for an
    empty input), the reference's ``output_length`` convention for decoded audio."""
    if pad not in ("zeros", "edge"):
        raise ValueError(f"pad must be 'zeros' or 'edge', got {pad!r}")
    n = x.shape[-1]
    if n >= length:
        return x[..., :length]
    if isinstance(x, Tensor):
        if pad == "edge" and n:
            return torch.cat([x, x[..., -1:].expand(*x.shape[:-1], length - n)], dim=-1)
        return torch.cat([x, x.new_zeros(*x.shape[:-1], length - n)], dim=-1)
    widths = [(0, 0)] * (x.ndim - 1) + [(0, length - n)]
    return np.pad(x, widths, mode="edge" if pad == "edge" and n else "constant")


def crossfade(tail: Tensor, head: Tensor) -> Tensor:
    """The one cross-fade: ``tail (..., n)`` fading out over ``head (..., n)`` fading in, with
    linear weights ``(k + 0.5) / n`` (the two weights sum to 1 at every sample) -> ``(..., n)``."""
    n = head.shape[-1]
    ramp = (torch.arange(n, dtype=head.dtype, device=head.device) + 0.5) / max(1, n)
    return tail * (1.0 - ramp) + head * ramp


def _hz_to_mel(f: Tensor, scale: str) -> Tensor:
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + f / 700.0)
    lin = 3.0 * f / 200.0  # Slaney: linear below 1 kHz, logarithmic above
    log = 15.0 + torch.log(f.clamp(min=1e-10) / 1000.0) * (27.0 / math.log(6.4))
    return torch.where(f >= 1000.0, log, lin)


def _mel_to_hz(m: Tensor, scale: str) -> Tensor:
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    lin = 200.0 * m / 3.0
    log = 1000.0 * torch.exp((m - 15.0) * (math.log(6.4) / 27.0))
    return torch.where(m >= 15.0, log, lin)


def mel_filter_bank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    scale: str = "slaney",
) -> Tensor:
    """The one mel filter bank: triangular filters with Slaney (area) normalisation on the
    ``"slaney"`` mel scale (the training recipe's mel loss) or the ``"htk"`` one (the log-mel
    distance metric), from ``f_min`` to ``f_max`` (default: Nyquist) Hz ->
    ``(n_fft // 2 + 1, n_mels)`` float32 (``power.T @ bank`` gives mel bands)."""
    if scale not in ("slaney", "htk"):
        raise ValueError(f"scale must be 'slaney' or 'htk', got {scale!r}")
    f_max = sample_rate / 2.0 if f_max is None else f_max
    freqs = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    lo, hi = (_hz_to_mel(torch.tensor(float(f), dtype=torch.float64), scale) for f in (f_min, f_max))
    hz = _mel_to_hz(torch.linspace(float(lo), float(hi), n_mels + 2, dtype=torch.float64), scale)
    widths = hz[1:] - hz[:-1]  # (n_mels + 1,)
    slopes = hz[None, :] - freqs[:, None]  # (F, n_mels + 2)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    bank = torch.clamp(torch.minimum(down, up), min=0.0)
    return (bank * (2.0 / (hz[2:] - hz[:-2]))[None, :]).float()


# Float samples beyond this (48 dB over full scale) are integer PCM cast to float, not audio.
MAX_FLOAT_PEAK = 256.0


def as_tensor(x: Tensor | np.ndarray | Sequence, what: str, holding: str = "numbers") -> Tensor:
    """``x`` (tensor, NumPy array or nested sequence) as a tensor holding data: the one
    conversion of arrays given in memory. :class:`InputError` naming ``what`` when ``x`` is not
    numbers or is a tensor on the ``meta`` device (a shape without data)."""
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"{what} must be a tensor or array of {holding}: {exc}") from None
    if x.is_meta:
        raise InputError(f"{what} is a tensor on the meta device, which holds no data: create it on cpu or cuda")
    return x


def check_token_ids(
    x: Tensor | np.ndarray | Sequence[int],
    codebook_size: int,
    what: str = "tokens",
    ndim: tuple[int, ...] | None = (1, 2),
    layout: str = "(T,) or (B, T)",
    allow_empty: bool = False,
) -> Tensor:
    """The one validator of tokens given in memory: ``x`` as an int64 tensor (on its device).
    :class:`InputError` naming ``what`` when ``x`` is not integers (float, bool), its number of
    dimensions is not in ``ndim`` (None: any), it is empty (unless ``allow_empty``) or a token
    lies outside ``[0, codebook_size)``."""
    x = as_tensor(x, what, "integer tokens")
    if ndim is not None and x.ndim not in ndim:
        raise InputError(f"{what} must be {layout}, got shape {tuple(x.shape)}")
    if x.numel() == 0 and not allow_empty:
        raise InputError(f"{what} is empty (shape {tuple(x.shape)})")
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise InputError(f"{what} must be integers (token ids), got {x.dtype}: convert with .long() if they are whole")
    x = x.long()
    bad = (x < 0) | (x >= codebook_size)
    if bad.any():
        raise InputError(
            f"{what} must lie in [0, {codebook_size}) for this model (log2 = {codebook_size.bit_length() - 1} bits); "
            f"found {int(x[bad][0])}: were they made by another model?"
        )
    return x


def check_signal(
    x: Tensor | np.ndarray | Sequence[float],
    what: str = "audio",
    ndim: tuple[int, ...] = (1,),
    layout: str = "(N,)",
    allow_empty: bool = False,
) -> Tensor:
    """The one validator of samples given in memory: ``x`` (tensor, array or sequence) as a
    float tensor. Float samples keep their dtype; int16 / int32 PCM is scaled to [-1, 1)
    (float32). :class:`InputError` naming ``what`` when ``x`` is not numbers, its number of
    dimensions is not in ``ndim`` (``layout`` says which shapes are accepted), it has no samples
    (unless ``allow_empty``), it holds NaN / infinite samples or float samples beyond
    :data:`MAX_FLOAT_PEAK` (integer PCM cast to float)."""
    x = as_tensor(x, what, "samples")
    if x.ndim not in ndim:
        raise InputError(f"{what} must be {layout}, got shape {tuple(x.shape)}")
    if x.numel() == 0 and not allow_empty:
        raise InputError(f"{what} is empty: no samples (shape {tuple(x.shape)})")
    if x.dtype == torch.int16:
        x = x.float() / 32768.0
    elif x.dtype == torch.int32:
        x = x.float() / 2147483648.0
    elif not x.dtype.is_floating_point:
        raise InputError(f"{what} must be floating point samples (or int16 / int32 PCM), got {x.dtype}")
    peak = float(x.detach().abs().max()) if x.numel() else 0.0  # NaN / inf propagate
    if not math.isfinite(peak):
        raise InputError(f"{what} contains NaN or infinite samples; clean the audio first")
    if peak > MAX_FLOAT_PEAK:
        raise InputError(
            f"{what} peaks at {peak:g}, but float samples lie in [-1, 1]: integer PCM stored as floats? "
            "Divide by 32768 (16-bit) or 2147483648 (32-bit), or pass the int16 / int32 array itself"
        )
    return x


def check_mono(x: Tensor | np.ndarray | Sequence[float], what: str = "audio", allow_empty: bool = False) -> Tensor:
    """One mono signal given in memory, ``(N,)`` or ``(1, N)``, as ``(N,)`` (checked by
    :func:`check_signal`); :class:`InputError` for several rows or columns, which flattening
    would join or interleave."""
    x = check_signal(x, what, (1, 2), "(N,) or (1, N) mono samples", allow_empty)
    if x.ndim == 2 and x.shape[0] != 1:
        raise InputError(
            f"{what} must be one mono signal, got shape {tuple(x.shape)}: pass each row (or channel) on its own, "
            "or mix down first (x.mean(0) for (channels, N), x.mean(1) for (N, channels))"
        )
    return x.reshape(-1)


def load_audio(path: str | Path, sample_rate: int = 16000, warn: bool = True) -> Tensor:
    """Read ``path``, mix down to mono (with a warning), resample to ``sample_rate``.

    Returns a ``(N,)`` float32 tensor. Raises :class:`AudioError` on missing, empty or
    unreadable files and :class:`InputError` on NaN/inf samples.
    """
    sample_rate = check_sample_rate(sample_rate)
    data, rate = read_audio(path)
    if data.shape[0] == 0:
        raise AudioError(f"audio file has no samples: {path}")
    if data.shape[1] > 1:
        if warn:
            warnings.warn(f"{path}: {data.shape[1]} channels mixed down to mono", stacklevel=2)
        data = data.mean(axis=1, keepdims=True)
    if not np.isfinite(data).all():
        raise InputError(f"{path} contains NaN or infinite samples")
    mono = resample(np.ascontiguousarray(data[:, 0]), rate, sample_rate)
    return torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))


# Formats libsndfile seeks in exactly, sample for sample.
SEEKABLE_FORMATS = ("WAV", "WAVEX", "FLAC", "AIFF", "W64", "RF64", "CAF", "AU")


class AudioFileSamples:
    """The mono samples of an audio file, read on demand instead of held in memory.

    ``len(src)`` samples at ``src.sample_rate``; ``src[a:b] -> (b - a,) float32`` reads just
    that span (channels mixed down as :func:`load_audio` does, so the values are identical).
    Only for formats libsndfile seeks in exactly (:data:`SEEKABLE_FORMATS`; others raise
    :class:`AudioError`: use :func:`load_audio`). NaN/inf samples raise :class:`InputError`
    naming where they are; a file shorter than its header says raises :class:`AudioError`.
    """

    def __init__(self, path: str | Path, warn: bool = True) -> None:
        self.path = Path(path)
        info = audio_info(self.path)
        if info.format not in SEEKABLE_FORMATS:
            raise AudioError(f"{self.path}: {info.format} files are not read on demand; use load_audio")
        if info.frames <= 0:
            raise AudioError(f"audio file has no samples: {self.path}")
        self.sample_rate, self.channels, self.num_samples = int(info.samplerate), int(info.channels), int(info.frames)
        if self.channels > 1 and warn:
            warnings.warn(f"{self.path}: {self.channels} channels mixed down to mono", stacklevel=2)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, key: slice) -> Tensor:
        import soundfile as sf

        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("AudioFileSamples takes a contiguous slice, e.g. src[a:b]")
        start, stop, _ = key.indices(self.num_samples)
        count = max(0, stop - start)
        try:
            with sf.SoundFile(str(self.path)) as f:
                f.seek(start)
                data = f.read(count, dtype="float32", always_2d=True)
        except Exception as exc:  # noqa: BLE001
            raise AudioError(f"cannot read {self.path} at sample {start} (corrupt or truncated?): {exc}") from None
        if data.shape[0] != count:
            raise AudioError(f"{self.path} is truncated: {data.shape[0]} of {count} samples readable at sample {start}")
        if self.channels > 1:
            data = data.mean(axis=1, keepdims=True)
        if not np.isfinite(data).all():
            where = start + int(np.argmin(np.isfinite(data[:, 0])))
            raise InputError(
                f"{self.path} contains NaN or infinite samples (first at {where / self.sample_rate:.3f} s)"
            )
        return torch.from_numpy(np.ascontiguousarray(data[:, 0], dtype=np.float32))


def _check_file(path: Path) -> None:
    """:class:`AudioError` for a missing or empty file (before libsndfile sees it)."""
    check_input_file(path, "audio file", AudioError)
    if path.stat().st_size == 0:
        raise AudioError(f"audio file is empty (0 bytes): {path}")


def save_audio(
    path: str | Path,
    audio: Tensor | np.ndarray | Iterable[np.ndarray | Tensor],
    sample_rate: int,
    output_rate: int | None = None,
    force: bool = True,
    inputs: Sequence[str | Path] = (),
) -> Path:
    """Write ``(N,)`` or ``(1, N)`` samples (float, or int16 / int32 PCM: scaled), or an iterable
    of ``(n,)`` blocks (written as they come, never held whole), as one 16-bit WAV/FLAC file
    (format from the suffix) through :class:`AudioWriter`: optionally resampled to
    ``output_rate``, atomic (nothing is left if a block fails), ``force=False`` refuses to
    replace an existing file, never replaces one of ``inputs``. :class:`InputError` for NaN/inf,
    a batch of several rows or a sample rate that is not a whole number of Hz."""
    blocks = [audio] if isinstance(audio, (Tensor, np.ndarray)) else audio
    with AudioWriter(path, sample_rate, output_rate, force=force, inputs=inputs) as writer:
        for block in blocks:
            writer.write(block)
    return Path(path)


# -- streaming I/O: audio in and out piece by piece (pipes, live streams) ----------------------
RAW_FORMATS = {"f32": np.dtype("<f4"), "s16": np.dtype("<i2")}


class _StreamResampler:
    """soxr's streaming resampler for ``(n,)`` float32 pieces (identity when the rates match)."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self.stream = None
        if rate_in != rate_out:
            import soxr

            self.stream = soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32", quality="HQ")

    def __call__(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        if self.stream is None:
            return x
        return self.stream.resample_chunk(np.ascontiguousarray(x, dtype=np.float32), last=last)


def fit_blocks(blocks: Iterable[np.ndarray], length: int) -> Iterator[np.ndarray]:
    """:func:`fit_length` (``pad="edge"``) for audio that comes in blocks: the first ``length``
    samples of ``blocks``, extended by repeating the last sample if they run short."""
    pos, last = 0, np.zeros(1, dtype=np.float32)
    for block in blocks:
        block = block[: length - pos]
        if block.size:
            yield block
            pos += block.size
            last = block[-1:]
    if pos < length:
        yield np.repeat(last, length - pos)


def resample_blocks(blocks: Iterable[np.ndarray], rate_in: int, rate_out: int, length: int) -> Iterator[np.ndarray]:
    """Blocks at ``rate_in`` resampled as they come (the same samples as one :func:`resample`
    call over the whole signal), exactly ``length`` samples at ``rate_out`` (:func:`fit_blocks`)."""
    resample = _StreamResampler(rate_in, rate_out)

    def resampled() -> Iterator[np.ndarray]:
        for block in blocks:
            yield resample(block)
        yield resample(np.zeros(0, dtype=np.float32), last=True)

    yield from fit_blocks(resampled(), length)


class AudioReader:
    """Audio read piece by piece, never whole: iterating yields ``(n,)`` float32 pieces at
    ``sample_rate`` (about ``block`` samples each, the last ones shorter).

    ``source``: an audio file (any soundfile format and rate; channels mixed down), or with
    ``raw`` (``"f32"`` little-endian float32 or ``"s16"`` little-endian int16) headerless mono
    PCM at ``raw_rate`` from a path or a binary file object (``sys.stdin.buffer``).
    ``rate`` is the input's own sample rate. NaN or infinite samples raise :class:`InputError`.
    """

    def __init__(
        self,
        source: str | Path | object,
        sample_rate: int,
        block: int,
        raw: str | None = None,
        raw_rate: int | None = None,
    ) -> None:
        self.source, self.sample_rate, self.block, self.raw = source, int(sample_rate), int(block), raw
        self.name = str(source) if isinstance(source, (str, Path)) else "standard input"
        if raw is not None:
            if raw not in RAW_FORMATS:
                raise InputError(f"raw PCM format must be one of {', '.join(RAW_FORMATS)}, got {raw!r}")
            self.rate = check_sample_rate(raw_rate or sample_rate, "the raw input's sample rate")
            if isinstance(source, (str, Path)):
                _check_file(Path(source))
        else:
            if not isinstance(source, (str, Path)):
                raise InputError("audio from standard input must be raw PCM (--raw)")
            meta = audio_info(source)
            self.rate = int(meta.samplerate)
            if meta.channels > 1:
                warnings.warn(f"{source}: {meta.channels} channels mixed down to mono", stacklevel=2)
        self.samples_read = 0  # at the input's own rate

    def _pieces(self) -> Iterator[np.ndarray]:
        """Mono float32 at the input's rate."""
        n = max(1, self.block * self.rate // self.sample_rate)
        if self.raw is None:
            import soundfile as sf

            try:
                with sf.SoundFile(str(self.source)) as f:
                    while True:
                        data = f.read(n, dtype="float32", always_2d=True)
                        if not data.shape[0]:
                            return
                        yield data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
            except RuntimeError as exc:  # libsndfile
                raise AudioError(f"cannot read {self.source} (corrupt or truncated?): {exc}") from None
            return
        dtype = RAW_FORMATS[self.raw]
        size = n * dtype.itemsize
        f = open(self.source, "rb") if isinstance(self.source, (str, Path)) else self.source  # noqa: SIM115
        try:
            pending = b""
            while True:
                data = f.read(size)
                if not data:
                    break
                data = pending + data
                whole = len(data) - len(data) % dtype.itemsize
                pending = data[whole:]
                x = np.frombuffer(data[:whole], dtype=dtype).astype(np.float32)
                yield x / 32768.0 if self.raw == "s16" else x
            if pending:
                warnings.warn(
                    f"{self.name} ended inside a sample: {len(pending)} trailing byte(s) ignored", stacklevel=2
                )
        finally:
            if f is not self.source:
                f.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        resample = _StreamResampler(self.rate, self.sample_rate)
        for x in self._pieces():
            if not np.isfinite(x).all():
                raise InputError(
                    f"{self.name} contains NaN or infinite samples (near {self.samples_read / self.rate:.3f} s)"
                )
            self.samples_read += x.size
            y = resample(x)
            if y.size:
                yield y
        y = resample(np.zeros(0, dtype=np.float32), last=True)
        if y.size:
            yield y


class AudioWriter:
    """Writes ``(n,)`` float32 pieces at ``sample_rate`` as they come: a WAV/FLAC file
    (through :func:`focalcodec.outputs.output_path`: atomic, published on success), or with
    ``raw`` (``"f32"`` / ``"s16"``) headerless PCM to a file or ``"-"`` (standard output,
    flushed after each piece). ``output_rate`` resamples. Use as a context manager."""

    def __init__(
        self,
        path: str | Path,
        sample_rate: int,
        output_rate: int | None = None,
        raw: str | None = None,
        force: bool = False,
        inputs: Sequence[str | Path] = (),
    ) -> None:
        from .outputs import STDOUT, check_targets

        self.path, self.raw = str(path), raw
        sample_rate = check_sample_rate(sample_rate)
        self.rate = check_sample_rate(output_rate, "output rate") if output_rate else sample_rate
        self.resample = _StreamResampler(sample_rate, self.rate)
        self.samples = 0
        if raw is not None and raw not in RAW_FORMATS:
            raise InputError(f"raw PCM format must be one of {', '.join(RAW_FORMATS)}, got {raw!r}")
        if raw is None:
            if self.path == STDOUT:
                raise InputError("audio to standard output must be raw PCM: add --raw (a WAV header needs the length)")
            self.format = {".wav": "WAV", ".flac": "FLAC"}.get(Path(self.path).suffix.lower())
            if self.format is None:
                raise AudioError(f"cannot write {self.path}: use a .wav or .flac file name (or raw PCM)")
        check_targets([self.path], inputs, force)
        self.force, self.inputs = force, inputs

    def __enter__(self) -> AudioWriter:
        import contextlib

        from .outputs import open_output

        self._stack = contextlib.ExitStack()
        try:
            if self.raw is not None:
                self._f = self._stack.enter_context(open_output(self.path, "wb", self.force, self.inputs))
            else:
                import soundfile as sf

                tmp = self._stack.enter_context(output_path(self.path, self.force, self.inputs))
                self._f = self._stack.enter_context(
                    sf.SoundFile(str(tmp), "w", self.rate, 1, subtype="PCM_16", format=self.format)
                )
        except BaseException:
            self._stack.close()
            raise
        return self

    def _put(self, y: np.ndarray) -> None:
        if not y.size:
            return
        self.samples += y.size
        if self.raw is None:
            self._f.write(np.clip(y, -1.0, 1.0))
            return
        if self.raw == "s16":
            data = np.round(np.clip(y, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        else:
            data = np.ascontiguousarray(y, dtype="<f4").tobytes()
        self._f.write(data)
        self._f.flush()

    def write(self, x: np.ndarray | Tensor) -> None:
        """Append ``(n,)`` or ``(1, n)`` samples (float, or int16 / int32 PCM: scaled)."""
        x = check_mono(x, "audio", allow_empty=True)
        self._put(self.resample(x.detach().cpu().float().numpy()))

    def __exit__(self, exc_type, exc, tb) -> bool | None:
        if exc_type is None:
            self._put(self.resample(np.zeros(0, dtype=np.float32), last=True))
        return self._stack.__exit__(exc_type, exc, tb)
