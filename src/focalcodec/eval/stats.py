"""Statistics of an evaluation: bootstrap confidence intervals, t intervals, medians, and
what a token histogram of a given size can show.

- :func:`bootstrap_ci`: percentile bootstrap interval of a mean over items, ``(low, high)``.
- :func:`t_interval`: mean and half-width of the Student-t interval (ITU-R BS.1534-3 §9.2
  uses it for MUSHRA scores).
- :func:`uniform_code_usage`: the code usage (%) a perfectly uniform code would show after
  ``num_tokens`` draws from ``codebook_size`` codes: the ceiling a corpus of that size allows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import InputError

__all__ = [
    "bootstrap_ci",
    "bootstrap_indices",
    "finite",
    "percentile_interval",
    "t_interval",
    "uniform_code_usage",
]

N_BOOT = 1000
LEVEL = 0.95


def finite(values: Sequence[object]) -> np.ndarray:
    """The finite numbers among ``values`` (None, NaN, inf and non-numbers dropped), float64."""
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or v is None:
            continue
        try:
            f = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return np.asarray(out, dtype=np.float64)


def bootstrap_indices(n: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """``(n_boot, n)`` int64 indices of ``n_boot`` resamples with replacement of ``n`` items."""
    if n < 1:
        raise InputError("cannot bootstrap an empty sample")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def percentile_interval(stats: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` interval of the finite values of ``stats``."""
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (n,): ``n_boot`` resamples
    with replacement, vectorised. Fewer than two values give ``(nan, nan)``: one item says
    nothing about the spread. (Statistics that are not means, such as a pooled WER, are
    bootstrapped by :meth:`focalcodec.eval.metrics.Metric.intervals`.)"""
    if not 0 < level < 1:
        raise InputError(f"confidence level must lie in (0, 1), got {level}")
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size < 2:
        return float("nan"), float("nan")
    idx = bootstrap_indices(v.size, n_boot, seed)
    return percentile_interval(v[idx].mean(axis=1), level)


def t_interval(values: Sequence[float] | np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """``(mean, half_width)`` of the two-sided Student-t interval; half-width NaN for fewer
    than two values."""
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size < 2:
        return float(v.mean()), float("nan")
    sem = float(v.std(ddof=1)) / math.sqrt(v.size)
    return float(v.mean()), float(t.ppf(0.5 + level / 2.0, v.size - 1)) * sem


def uniform_code_usage(num_tokens: int, codebook_size: int) -> float:
    """Expected code usage (%) of a perfectly uniform code after ``num_tokens`` tokens:
    ``100 * (1 - (1 - 1/K)^N)``."""
    if codebook_size < 1:
        raise InputError(f"codebook_size must be >= 1, got {codebook_size}")
    return 100.0 * (1.0 - math.exp(num_tokens * math.log1p(-1.0 / codebook_size))) if codebook_size > 1 else 100.0
