"""Delay estimation and alignment of a codec's output with its input.

Codecs delay their output: Codec 2 by 18-30 ms, causal neural codecs by their look-ahead.
Every intrusive metric (PESQ, STOI, SI-SDR, mel distances, F0) compares samples or frames at
the same time index, so an uncompensated delay is scored as distortion. The evaluation
harness estimates each output's delay with :func:`estimate_delay` and hands intrusive
metrics the overlapping, delay-compensated pair from :func:`align_pair`.

Estimation works in two steps:

1. *Envelope*: cross-correlation of the mean-removed log-mel trajectories (40 bands, 32 ms
   windows, 1 ms hop), summed over bands, with parabolic interpolation of the peak. Works for
   vocoders (Codec 2, neural codecs) whose waveforms do not match the input's.
2. *Waveform refinement*: the peak of the phase-transform cross-correlation (GCC-PHAT) of
   the waveforms is taken when it stands out (``PHAT_MIN_RATIO`` times its median magnitude)
   and lies within ±2 ms of the envelope delay: waveform-matching codecs such as Opus get a
   sample-exact delay. Vocoders, whose output phase is their own, keep the envelope delay
   (their GCC-PHAT peaks are weak and scattered).

A positive delay means the output lags the input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..audio import fit_length
from ..errors import InputError

__all__ = ["Delay", "align_pair", "compensate", "estimate_delay"]

ENVELOPE_HOP = 16  # samples at 16 kHz = 1 ms
PHAT_MIN_RATIO = 20.0  # GCC-PHAT peak / median magnitude for a waveform match
AGREEMENT_S = 0.002  # the waveform peak must lie this close to the envelope estimate


@dataclass(frozen=True)
class Delay:
    """``samples`` (output lags input when positive) at ``sample_rate``; ``method`` is
    ``"waveform"``, ``"envelope"`` or ``"none"`` (silent input); ``correlation`` is the
    normalised peak (0..1) of the log-mel trajectories' cross-correlation."""

    samples: int
    sample_rate: int
    method: str
    correlation: float

    @property
    def ms(self) -> float:
        return 1000.0 * self.samples / self.sample_rate


def _xcorr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Full cross-correlation ``c[k] = sum_t a[t] b[t + k]`` along the last axis, summed over
    leading axes; index ``k`` for ``k >= 0`` and ``len - |k|`` for negative lags (circular layout)."""
    n = a.shape[-1] + b.shape[-1]
    nfft = 1 << (n - 1).bit_length()
    spec = np.conj(np.fft.rfft(a, nfft, axis=-1)) * np.fft.rfft(b, nfft, axis=-1)
    if spec.ndim > 1:
        spec = spec.reshape(-1, spec.shape[-1]).sum(0)
    return np.fft.irfft(spec, nfft)


def _window(c: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Lags ``lo..hi`` (inclusive) and their values from a circular cross-correlation."""
    lags = np.arange(lo, hi + 1)
    return lags, c[lags % c.shape[0]]


def _log_mel(x: np.ndarray, sample_rate: int, hop: int) -> np.ndarray:
    from .metrics import log_mel_spectrogram

    n_fft = 1 << int(np.ceil(np.log2(0.032 * sample_rate)))
    spec = log_mel_spectrogram(x, sample_rate, n_fft=n_fft, hop=hop, n_mels=40).numpy().astype(np.float64)
    return spec - spec.mean(axis=1, keepdims=True)


def estimate_delay(ref: np.ndarray, hyp: np.ndarray, sample_rate: int = 16000, max_delay_s: float = 0.5) -> Delay:
    """Delay of ``hyp`` (M,) relative to ``ref`` (N,), both at ``sample_rate``, searched in
    ``[-max_delay_s, +max_delay_s]``, and within half the shorter signal's length (so that half of
    it always overlaps). Silent or constant inputs give delay 0 with correlation 0."""
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    hyp = np.asarray(hyp, dtype=np.float64).reshape(-1)
    if ref.size == 0 or hyp.size == 0:
        raise InputError("cannot estimate the delay of an empty signal")
    if max_delay_s < 0:
        raise InputError(f"max_delay_s must be >= 0, got {max_delay_s}")
    # a lag must leave at least half of the shorter signal overlapping: a short clip gets a
    # search range it can hold (a delay past its length would leave nothing to compare)
    max_lag = min(int(round(max_delay_s * sample_rate)), min(ref.shape[0], hyp.shape[0]) // 2)
    hop = max(1, int(round(ENVELOPE_HOP * sample_rate / 16000)))
    a, b = _log_mel(ref, sample_rate, hop), _log_mel(hyp, sample_rate, hop)
    energy = float(np.sqrt((a**2).sum() * (b**2).sum()))
    if energy <= 0 or not np.isfinite(energy):
        return Delay(0, sample_rate, "none", 0.0)
    m = max_lag // hop
    lags, vals = _window(_xcorr(a, b), -m, m)
    i = int(np.argmax(vals))
    frac = 0.0
    if 0 < i < len(vals) - 1:  # parabolic interpolation of the peak
        y0, y1, y2 = vals[i - 1], vals[i], vals[i + 1]
        denom = y0 - 2 * y1 + y2
        frac = 0.5 * (y0 - y2) / denom if denom < 0 else 0.0
    coarse = int(round((lags[i] + frac) * hop))
    env_corr = max(0.0, float(vals[i] / energy))
    # waveform refinement: the phase-transform cross-correlation over the whole search range
    # must peak clearly (PHAT_MIN_RATIO x its median magnitude) and agree with the envelope
    n = ref.shape[0] + hyp.shape[0]
    nfft = 1 << (n - 1).bit_length()
    cross = np.conj(np.fft.rfft(ref - ref.mean(), nfft)) * np.fft.rfft(hyp - hyp.mean(), nfft)
    cross /= np.abs(cross) + 1e-12
    wl, wv = _window(np.fft.irfft(cross, nfft), -max_lag, max_lag)
    wv = np.abs(wv)
    j = int(np.argmax(wv))
    ratio = float(wv[j] / max(float(np.median(wv)), 1e-12))
    if ratio >= PHAT_MIN_RATIO and abs(int(wl[j]) - coarse) <= int(AGREEMENT_S * sample_rate):
        return Delay(int(wl[j]), sample_rate, "waveform", env_corr)
    return Delay(coarse, sample_rate, "envelope", env_corr)


def align_pair(ref: np.ndarray, hyp: np.ndarray, delay: int) -> tuple[np.ndarray, np.ndarray]:
    """The overlapping parts of ``ref`` (N,) and ``hyp`` (M,) once ``hyp`` is advanced by
    ``delay`` samples: ``(ref[s:s+L], hyp[s+delay:s+delay+L])``, equal lengths ``L``."""
    start_r, start_h = (0, delay) if delay >= 0 else (-delay, 0)
    n = min(ref.shape[0] - start_r, hyp.shape[0] - start_h)
    if n <= 0:
        raise InputError(f"a delay of {delay} samples leaves no overlap between the signals")
    return ref[start_r : start_r + n], hyp[start_h : start_h + n]


def compensate(hyp: np.ndarray, delay: int, length: int) -> np.ndarray:
    """``hyp`` advanced by ``delay`` samples, cut or zero-padded to ``length`` samples."""
    y = hyp[delay:] if delay >= 0 else np.concatenate([np.zeros(-delay, hyp.dtype), hyp])
    return fit_length(y, length)
