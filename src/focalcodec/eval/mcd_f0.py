"""Mel-cepstral distortion (WORLD + SPTK) and F0 accuracy (Praat), as codec toolkits report
them (VERSA's ``mcd_f0``).

Both signals (the delay-compensated overlap, 16 kHz) are analysed in 5 ms frames:

- ``mcd``: WORLD CheapTrick spectral envelopes (pyworld, F0 from DIO + StoneMask) turned into
  mel-cepstra with SPTK (``pysptk.sp2mc``, order 24, all-pass constant 0.41 at 16 kHz);
  ``10 / ln 10 * sqrt(2 * sum_{d=1..24} (c_d - c'_d)^2)`` in dB averaged over all frames
  (``c_0``, the frame energy, is left out, so a gain change costs nothing; frames are matched
  in time without DTW, since the delay is already compensated);
- F0 from Praat's autocorrelation pitch tracker (praat-parselmouth, 60-500 Hz), which is far
  more robust than DIO (on speech with 30 dB white noise: 7 vs 264 cents RMS error):
  ``f0_rmse`` = RMS error in cents over the frames voiced in both signals, ``f0_corr`` =
  Pearson correlation of F0 over those frames, ``vde`` = voicing decision error, the
  percentage of frames voiced in one signal only.

Undefined values are NaN with the reason in ``skip`` (the report counts them out and lists
why): every value for inputs under 50 ms, ``f0_rmse`` / ``f0_corr`` when fewer than 3 frames
are voiced in both signals, ``f0_corr`` when F0 is constant over them.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from .metrics import Metric

__all__ = ["McdF0Metric", "mel_cepstrum", "pitch"]

FRAME_MS = 5.0
F0_FLOOR, F0_CEIL = 60.0, 500.0
MCEP_ORDER = 24
MIN_VOICED_FRAMES = 3
MIN_SECONDS = 3 / F0_FLOOR  # the shortest input Praat's pitch tracker accepts at the 60 Hz floor


def mel_cepstrum(x: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """``x`` (N,) -> mel-cepstrum ``(T, MCEP_ORDER + 1)`` of WORLD envelopes, 5 ms frames."""
    import warnings

    with warnings.catch_warnings():  # both import the deprecated pkg_resources
        warnings.simplefilter("ignore", UserWarning)
        import pysptk
        import pyworld

    x64 = np.ascontiguousarray(x, dtype=np.float64)
    f0, t = pyworld.dio(x64, sample_rate, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=FRAME_MS)
    f0 = pyworld.stonemask(x64, f0, t, sample_rate)
    sp = pyworld.cheaptrick(x64, f0, t, sample_rate)
    return pysptk.sp2mc(sp, order=MCEP_ORDER, alpha=pysptk.util.mcepalpha(sample_rate))


def pitch(x: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """``x`` (N,) -> F0 ``(T,)`` in Hz (0 = unvoiced) from Praat's autocorrelation method, 5 ms steps."""
    import parselmouth

    snd = parselmouth.Sound(np.ascontiguousarray(x, dtype=np.float64), sampling_frequency=sample_rate)
    track = snd.to_pitch_ac(time_step=FRAME_MS / 1000, pitch_floor=F0_FLOOR, pitch_ceiling=F0_CEIL)
    return np.asarray(track.selected_array["frequency"], dtype=np.float64)


class McdF0Metric(Metric):
    """MCD (dB), F0 RMSE (cents), F0 correlation and voicing decision error (%)."""

    name = "mcd_f0"
    keys = {"mcd": False, "f0_rmse": False, "f0_corr": True, "vde": False}
    sample_rate = 16000
    model = f"MCD: WORLD + SPTK mcep order {MCEP_ORDER}; F0: Praat autocorrelation"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        for mod, pkg in (("pyworld", "pyworld"), ("pysptk", "pysptk"), ("parselmouth", "praat-parselmouth")):
            if importlib.util.find_spec(mod) is None:
                return f"package {pkg!r} is not installed (pip install pyworld pysptk praat-parselmouth)"
        return None

    def compute(self, ref: np.ndarray | None, hyp: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
        assert ref is not None
        if ref.shape[0] < MIN_SECONDS * self.sample_rate:  # Praat needs 3 periods of the lowest F0
            nan = float("nan")
            reason = f"too short for MCD and F0 analysis (under {1000 * MIN_SECONDS:.0f} ms)"
            return {"mcd": nan, "f0_rmse": nan, "f0_corr": nan, "vde": nan, "voiced_frames": 0, "skip": reason}
        mc_r, mc_h = mel_cepstrum(ref, self.sample_rate), mel_cepstrum(hyp, self.sample_rate)
        n = min(mc_r.shape[0], mc_h.shape[0])
        diff = mc_r[:n, 1:] - mc_h[:n, 1:]
        mcd = float(np.mean(10.0 / np.log(10.0) * np.sqrt(2.0 * np.sum(diff**2, axis=1))))
        f0_r, f0_h = pitch(ref, self.sample_rate), pitch(hyp, self.sample_rate)
        n = min(f0_r.shape[0], f0_h.shape[0])
        f0_r, f0_h = f0_r[:n], f0_h[:n]
        v_r, v_h = f0_r > 0, f0_h > 0
        vde = 100.0 * float(np.mean(v_r != v_h)) if n else float("nan")
        both = v_r & v_h
        rmse = corr = float("nan")
        out: dict[str, Any] = {"voiced_frames": int(both.sum())}
        if int(both.sum()) >= MIN_VOICED_FRAMES:
            cents = 1200.0 * np.log2(f0_h[both] / f0_r[both])
            rmse = float(np.sqrt(np.mean(cents**2)))
            a, b = f0_r[both], f0_h[both]
            if a.std() > 0 and b.std() > 0:
                corr = float(np.corrcoef(a, b)[0, 1])
            else:
                out["skip"] = "F0 constant over the frames voiced in both signals: f0_corr undefined"
        else:
            out["skip"] = f"fewer than {MIN_VOICED_FRAMES} frames voiced in both signals: f0_rmse and f0_corr undefined"
        return {"mcd": mcd, "f0_rmse": rmse, "f0_corr": corr, "vde": vde, **out}
