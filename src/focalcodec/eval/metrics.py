"""Pluggable evaluation metrics and the signal-level ones (PESQ, STOI/ESTOI, log-mel distance,
SI-SDR), plus token statistics (code usage, normalised entropy), measured bitrate, RTF and peak memory.

A metric compares a reference signal with a reconstruction (or scores a reconstruction alone)::

    metric = build_metric("stoi")
    values = metric(ref, hyp, sample_rate=16000)     # ref, hyp: (N,) float -> {"stoi": 0.93}
    summary = metric.aggregate([values, ...])        # {"stoi": mean over utterances}

Every metric declares the values it returns in ``keys`` (name -> higher is better), the rate
it works at (inputs are resampled to it), whether it needs a reference, the model that
computes it (``model``) and the paper's model for it (``paper``: ``None`` when the paper does
not report it), so a report can say which figures compare with the paper. Metrics whose
backend lives in an optional package are registered by name and imported on first use, so
``available_metrics()`` lists what this installation can compute and ``build_metric`` raises
:class:`MetricUnavailable` with the install command for the others. Add a metric with
:func:`register_metric`.
"""

from __future__ import annotations

import abc
import importlib
import importlib.util
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..audio import check_mono, mel_filter_bank, resample
from ..errors import FocalCodecError, InputError
from ..timing import real_time_factor  # the one RTF definition (processing / audio time)
from .stats import bootstrap_ci, bootstrap_indices, finite, percentile_interval

__all__ = [
    "EstoiMetric",
    "LogMelDistance",
    "SISDRMetric",
    "si_sdr",
    "Metric",
    "MetricUnavailable",
    "PesqMetric",
    "ResourceMeter",
    "StoiMetric",
    "TokenStatistics",
    "available_metrics",
    "build_metric",
    "measured_bitrate",
    "metric_names",
    "register_metric",
    "real_time_factor",
]

Signal = Tensor | np.ndarray


class MetricUnavailable(FocalCodecError, RuntimeError):
    """A metric whose backend (package or model weights) is not installed here."""


def as_mono(x: Signal, what: str) -> np.ndarray:
    """``(N,)`` or ``(1, N)`` tensor/array -> contiguous ``(N,)`` float32 array (finite, non-empty)."""
    x = check_mono(x.detach().cpu() if isinstance(x, Tensor) else x, what)
    return np.ascontiguousarray(x.float().numpy())


class Metric(abc.ABC):
    """Base class of every metric.

    Subclasses set ``name``, ``keys`` ({value name: higher is better}), ``sample_rate`` (the
    rate ``compute`` receives) and ``needs_reference``, and implement :meth:`compute`.
    """

    name: str = ""
    keys: Mapping[str, bool] = {}
    sample_rate: int = 16000
    needs_reference: bool = True
    align: bool = True  # compares samples in time: gets the delay-compensated overlap
    model: str = ""  # what computes the values (library, model and variant)
    paper: str | None = None  # the paper's model for this metric; None: not in the paper

    @property
    def paper_status(self) -> str:
        """``"same as the paper"``, ``"not comparable with the paper (paper: ...)"`` or
        ``"not in the paper"``."""
        if self.paper is None:
            return "not in the paper"
        return "same as the paper" if self.comparable else f"not comparable with the paper (paper: {self.paper})"

    @property
    def comparable(self) -> bool:
        """Whether the values come from the paper's own model (only then may they be set beside
        the paper's numbers)."""
        return self.paper is not None and self.model == self.paper

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """``None`` when this metric can run here, else why not and how to fix it."""
        return None

    def __call__(
        self, ref: Signal | None, hyp: Signal, sample_rate: int = 16000, meta: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Score ``hyp`` (N,) against ``ref`` (M,), both at ``sample_rate``; the longer one is
        cut to the shorter. Returns ``{key: value}`` (plus metric-specific extras such as
        transcripts). Metrics with ``align = False`` (speaker similarity) keep both whole.
        ``meta`` carries the utterance's manifest fields (e.g. ``lang``)."""
        h = as_mono(hyp, "reconstruction")
        h = resample(h, sample_rate, self.sample_rate)
        r: np.ndarray | None = None
        if self.needs_reference:
            if ref is None:
                raise InputError(f"metric {self.name!r} needs a reference signal")
            r = resample(as_mono(ref, "reference"), sample_rate, self.sample_rate)
            if self.align:
                n = min(r.shape[0], h.shape[0])
                r, h = r[:n], h[:n]
        return self.compute(r, h, dict(meta or {}))

    @abc.abstractmethod
    def compute(self, ref: np.ndarray | None, hyp: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
        """``ref``, ``hyp``: (N,) float32 at ``self.sample_rate`` (same length when both given)."""

    def aggregate(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """Corpus-level values from per-utterance ones: the mean of each key over the
        utterances where it is finite (NaN when none is)."""
        out: dict[str, float] = {}
        for key in self.keys:
            vals = finite([r.get(key) for r in rows])
            out[key] = float(vals.mean()) if vals.size else float("nan")
        return out

    def count(self, rows: Sequence[Mapping[str, Any]], key: str) -> int:
        """How many utterances ``aggregate`` used for ``key``."""
        return int(finite([r.get(key) for r in rows]).size)

    def intervals(
        self, rows: Sequence[Mapping[str, Any]], n_boot: int = 1000, level: float = 0.95, seed: int = 0
    ) -> dict[str, tuple[float, float]]:
        """Bootstrap ``level`` confidence interval of each key's corpus value, resampling
        utterances. Means are bootstrapped directly; a metric with its own ``aggregate``
        (pooled rates, medians) has it recomputed on every resample."""
        if type(self).aggregate is Metric.aggregate:
            return {k: bootstrap_ci(finite([r.get(k) for r in rows]), n_boot, level, seed) for k in self.keys}
        if len(rows) < 2:
            return {k: (float("nan"), float("nan")) for k in self.keys}
        collected: dict[str, list[float]] = {k: [] for k in self.keys}
        for idx in bootstrap_indices(len(rows), n_boot, seed):
            agg = self.aggregate([rows[i] for i in idx])
            for k in self.keys:
                collected[k].append(agg.get(k, float("nan")))
        nan = (float("nan"), float("nan"))  # one item says nothing about the spread
        return {
            k: percentile_interval(np.asarray(v, dtype=np.float64), level) if self.count(rows, k) >= 2 else nan
            for k, v in collected.items()
        }

    def reference_scores(self, ref: np.ndarray, meta: Mapping[str, Any]) -> dict[str, Any]:
        """Per-utterance values of the original audio (16 kHz): a no-reference metric scores
        it (the paper's RefUTMOS); others may say something about the reference itself (the
        ASR's own WER against the ground-truth text)."""
        return {} if self.needs_reference else self(None, ref, 16000, meta)

    def reference_baseline(self, items: Sequence[tuple[str, np.ndarray, Mapping[str, Any]]]) -> dict[str, Any]:
        """Corpus-level context computed on the original audio ``[(id, audio (N,) @ 16 kHz,
        fields)]`` (e.g. speaker similarity between different speakers); empty by default."""
        return {}


# -- registry -----------------------------------------------------------------------------------
_REGISTRY: dict[str, str | Callable[..., Metric]] = {
    "pesq_wb": "focalcodec.eval.metrics:PesqMetric",
    "pesq_nb": "focalcodec.eval.metrics:PesqNarrowMetric",
    "stoi": "focalcodec.eval.metrics:StoiMetric",
    "estoi": "focalcodec.eval.metrics:EstoiMetric",
    "mel_distance": "focalcodec.eval.metrics:LogMelDistance",
    "si_sdr": "focalcodec.eval.metrics:SISDRMetric",
    "mcd_f0": "focalcodec.eval.mcd_f0:McdF0Metric",
    "dwer": "focalcodec.eval.asr:DWERMetric",
    "sim": "focalcodec.eval.speaker:SpeakerSimilarity",
    "utmos": "focalcodec.eval.mos:UTMOSMetric",
    "dnsmos": "focalcodec.eval.mos:DNSMOSMetric",
    "distillmos": "focalcodec.eval.mos:DistillMOSMetric",
}


def register_metric(name: str, factory: str | Callable[..., Metric]) -> None:
    """Make ``build_metric(name)`` call ``factory(**options)``; ``factory`` may be a class, a
    function or a ``"module:attribute"`` string imported on first use."""
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise InputError(f"metric names are letters, digits, '_' and '-': {name!r}")
    _REGISTRY[name] = factory


def metric_names() -> list[str]:
    """Every registered metric name (available here or not)."""
    return list(_REGISTRY)


def _factory(name: str) -> Callable[..., Metric]:
    if name not in _REGISTRY:
        raise InputError(f"unknown metric {name!r}; known: {', '.join(_REGISTRY)}")
    entry = _REGISTRY[name]
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        try:
            entry = getattr(importlib.import_module(module), attr)
        except ImportError as exc:
            raise MetricUnavailable(f"metric {name!r} cannot be imported: {exc}") from None
    return entry


def metric_unavailable_reason(name: str) -> str | None:
    """``None`` when ``build_metric(name)`` can work here, else the reason."""
    try:
        factory = _factory(name)
    except MetricUnavailable as exc:
        return str(exc)
    check = getattr(factory, "unavailable_reason", None)
    return check() if callable(check) else None


def available_metrics(names: Iterable[str] | None = None) -> list[str]:
    """The registered metrics (or those of ``names``) that can run on this installation."""
    return [n for n in (names if names is not None else _REGISTRY) if metric_unavailable_reason(n) is None]


def build_metric(name: str, **options: Any) -> Metric:
    """Instantiate the metric registered as ``name`` (raises :class:`MetricUnavailable`
    with an install hint when its backend is missing)."""
    factory = _factory(name)
    check = getattr(factory, "unavailable_reason", None)
    reason = check() if callable(check) else None
    if reason:
        raise MetricUnavailable(f"metric {name!r} is unavailable: {reason}")
    return factory(**options)


def _missing(module: str, hint: str) -> str | None:
    return None if importlib.util.find_spec(module) is not None else f"package {module!r} is not installed ({hint})"


# -- PESQ -----------------------------------------------------------------------------------------
class PesqMetric(Metric):
    """PESQ (ITU-T P.862.2 wide band at 16 kHz); 1.04 (bad) .. 4.64 (identical)."""

    name = "pesq_wb"
    keys = {"pesq_wb": True}
    sample_rate = 16000
    mode = "wb"
    model = "pesq (ITU-T P.862 reference code)"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return _missing("pesq", "pip install pesq")

    def compute(self, ref: np.ndarray | None, hyp: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
        from pesq import pesq

        assert ref is not None
        try:
            value = float(pesq(self.sample_rate, ref.astype(np.float64), hyp.astype(np.float64), self.mode))
        except Exception as exc:  # noqa: BLE001 - silent or too-short signals
            warnings.warn(
                f"PESQ undefined for this utterance ({type(exc).__name__}: {exc}); recorded as NaN", stacklevel=2
            )
            return {self.name: float("nan"), "skip": f"PESQ undefined ({type(exc).__name__})"}
        return {self.name: value}


class PesqNarrowMetric(PesqMetric):
    """PESQ (P.862 narrow band, 8 kHz); up to 4.55 for identical signals."""

    name = "pesq_nb"
    keys = {"pesq_nb": True}
    sample_rate = 8000
    mode = "nb"


# -- STOI -----------------------------------------------------------------------------------------
STOI_MIN_SPEECH_MS = 384  # pystoi's 30 frames of 128 samples at 10 kHz


class StoiMetric(Metric):
    """Short-time objective intelligibility, 0..1 (1 for identical signals)."""

    name = "stoi"
    keys = {"stoi": True}
    sample_rate = 16000
    extended = False
    model = "pystoi"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return _missing("pystoi", "pip install pystoi")

    def compute(self, ref: np.ndarray | None, hyp: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
        from pystoi import stoi

        assert ref is not None
        if not np.any(ref):
            return {self.name: float("nan"), "skip": f"silent reference: {self.name.upper()} undefined"}
        too_short = {
            self.name: float("nan"),
            "skip": f"too little speech for {self.name.upper()} (under {STOI_MIN_SPEECH_MS} ms above the "
            "reference's silence threshold)",
        }
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                value = float(
                    stoi(ref.astype(np.float64), hyp.astype(np.float64), self.sample_rate, extended=self.extended)
                )
            except (ValueError, IndexError):  # a few samples: pystoi's framing fails
                return too_short
        # pystoi returns 1e-5 with this warning when fewer than 30 frames of speech are left:
        # a stand-in, not a score, that would drag a corpus mean down
        if any("Not enough STFT frames" in str(w.message) for w in caught):
            return too_short
        return {self.name: value}


class EstoiMetric(StoiMetric):
    """Extended STOI (Jensen & Taal 2016), robust to modulated noise; 1 for identical signals."""

    name = "estoi"
    keys = {"estoi": True}
    extended = True


# -- log-mel distance -------------------------------------------------------------------------------
def log_mel_spectrogram(
    sig: Signal, sample_rate: int = 16000, n_fft: int = 1024, hop: int = 256, n_mels: int = 80
) -> Tensor:
    """``(N,)`` -> ``(n_mels, frames)`` natural-log mel power (floored at 1e-5), via torch.stft."""
    x = torch.as_tensor(as_mono(sig, "signal"))
    if x.shape[0] < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - x.shape[0]))
    spec = torch.stft(x, n_fft, hop_length=hop, window=torch.hann_window(n_fft), center=True, return_complex=True)
    power = spec.abs() ** 2
    mel = mel_filter_bank(sample_rate, n_fft, n_mels, scale="htk").T @ power
    return torch.log(mel.clamp_min(1e-5))


class LogMelDistance(Metric):
    """Mean absolute difference of log-mel spectrograms (80 bins, 64 ms windows, 16 ms hop);
    0 for identical signals, lower is better."""

    name = "mel_distance"
    keys = {"mel_distance": False}
    sample_rate = 16000
    model = "log-mel L1 (80 bands, 1024/256, torch.stft)"

    def __init__(self, n_fft: int = 1024, hop: int = 256, n_mels: int = 80) -> None:
        self.n_fft, self.hop, self.n_mels = n_fft, hop, n_mels

    def compute(self, ref: np.ndarray | None, hyp: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
        assert ref is not None
        a = log_mel_spectrogram(ref, self.sample_rate, self.n_fft, self.hop, self.n_mels)
        b = log_mel_spectrogram(hyp, self.sample_rate, self.n_fft, self.hop, self.n_mels)
        return {self.name: float((a - b).abs().mean())}


# -- SI-SDR ---------------------------------------------------------------------------------------------
SI_SDR_MAX = 100.0


def si_sdr(ref: np.ndarray, hyp: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019): both signals
    made zero-mean, ``target = (<hyp, ref> / ||ref||^2) ref``, ``10 log10(||target||^2 /
    ||hyp - target||^2)``. NaN for a silent (or constant) reference or reconstruction, capped at
    ``SI_SDR_MAX`` (100 dB) for an exact (scaled) copy."""
    r = np.asarray(ref, dtype=np.float64) - float(np.mean(ref))
    h = np.asarray(hyp, dtype=np.float64) - float(np.mean(hyp))
    power = float(r @ r)
    if power <= 0:
        return float("nan")
    target = (float(h @ r) / power) * r
    noise = h - target
    signal = float(target @ target)
    if signal <= 0:
        return float("nan")
    return float(
        min(SI_SDR_MAX, 10.0 * np.log10(signal / max(float(noise @ noise), signal * 10 ** (-SI_SDR_MAX / 10))))
    )


class SISDRMetric(Metric):
    """SI-SDR (dB, higher is better) of the delay-compensated reconstruction. Waveform
    codecs score high; vocoders, whose phase is their own, score low whatever their quality."""

    name = "si_sdr"
    keys = {"si_sdr": True}
    sample_rate = 16000
    model = "SI-SDR (Le Roux et al. 2019)"

    def compute(self, ref: np.ndarray | None, hyp: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
        assert ref is not None
        value = si_sdr(ref, hyp)
        if math.isnan(value):
            what = "reference" if not np.any(ref - ref.mean()) else "reconstruction"
            what = f"silent (or constant) {what}"
            return {"si_sdr": value, "skip": f"{what}: SI-SDR undefined"}
        return {"si_sdr": value}


# -- tokens, bitrate, speed, memory --------------------------------------------------------------------
MIN_TOKENS_PER_CODE = 10


class TokenStatistics:
    """Accumulates token counts over a corpus.

    ``update(tokens)`` with ``(T,)`` or ``(B, T)`` integer tokens in ``[0, codebook_size)``;
    ``code_usage`` = distinct tokens seen / codebook size and ``normalized_entropy`` = entropy of
    the token histogram / log2(codebook size), both in percent as in the paper.
    """

    def __init__(self, codebook_size: int) -> None:
        if codebook_size < 2:
            raise InputError(f"codebook_size must be >= 2, got {codebook_size}")
        self.codebook_size = int(codebook_size)
        self.counts = torch.zeros(self.codebook_size, dtype=torch.float64)

    def update(self, tokens: Tensor | np.ndarray | Sequence[int]) -> None:
        t = torch.as_tensor(np.asarray(tokens) if not isinstance(tokens, Tensor) else tokens).reshape(-1).long().cpu()
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.codebook_size):
            raise InputError(
                f"tokens must lie in [0, {self.codebook_size}), got range [{int(t.min())}, {int(t.max())}]"
            )
        self.counts += torch.bincount(t, minlength=self.codebook_size).double()

    @property
    def num_tokens(self) -> int:
        return int(self.counts.sum())

    @property
    def code_usage(self) -> float:
        return 100.0 * float((self.counts > 0).sum()) / self.codebook_size

    @property
    def normalized_entropy(self) -> float:
        total = self.counts.sum()
        if total == 0:
            return float("nan")
        p = self.counts[self.counts > 0] / total
        return 100.0 * float(-(p * torch.log2(p)).sum()) / math.log2(self.codebook_size)

    def summary(self) -> dict[str, Any]:
        """Code usage and normalised entropy with the token count behind them, the code usage a
        perfectly uniform code would reach with that many tokens, and a warning when the
        corpus is too small (fewer than ``MIN_TOKENS_PER_CODE`` tokens per code) for either
        figure to describe the codec rather than the corpus size."""
        from .stats import uniform_code_usage

        n, k = self.num_tokens, self.codebook_size
        out: dict[str, Any] = {
            "code_usage": self.code_usage,
            "norm_entropy": self.normalized_entropy,
            "num_tokens": n,
            "codebook_size": k,
            "code_usage_ceiling": uniform_code_usage(n, k),
        }
        if n < MIN_TOKENS_PER_CODE * k:
            out["token_warning"] = (
                f"only {n} tokens for {k} codes ({n / k:.2f} per code): even a perfectly uniform code would "
                f"show {out['code_usage_ceiling']:.1f} % usage and an entropy well below 100 %; these figures "
                f"describe the corpus size, not the codec (use at least {MIN_TOKENS_PER_CODE * k} tokens)"
            )
        return out


def measured_bitrate(num_bits: float, duration_s: float) -> float:
    """Bits per second actually spent: ``num_bits / duration_s``."""
    if duration_s <= 0:
        raise InputError(f"duration must be positive, got {duration_s}")
    return float(num_bits) / float(duration_s)


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class ResourceMeter:
    """Context manager measuring wall time and peak memory of the code it wraps.

    On CUDA devices the peak is ``torch.cuda.max_memory_allocated`` during the block; on the CPU
    it is the peak resident set size above the one at entry, sampled every ``interval`` s
    from ``/proc/self/statm`` (0 where that file does not exist)."""

    device: str | torch.device = "cpu"
    interval: float = 0.002
    seconds: float = 0.0
    peak_bytes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _base: int = 0
    _peak: int = 0

    def _cuda(self) -> bool:
        return torch.device(self.device).type == "cuda" and torch.cuda.is_available()

    def _poll(self) -> None:
        while not self._stop.is_set():
            rss = _rss_bytes() or 0
            self._peak = max(self._peak, rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> ResourceMeter:
        if self._cuda():
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self._peak = _rss_bytes() or 0
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._cuda():
            torch.cuda.synchronize(self.device)
            self.seconds = time.perf_counter() - self._t0
            self.peak_bytes = max(0, torch.cuda.max_memory_allocated(self.device) - self._base)
            return
        self.seconds = time.perf_counter() - self._t0
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._peak = max(self._peak, _rss_bytes() or 0)
        self.peak_bytes = max(0, self._peak - self._base)
