"""Statistics behind the reports: bootstrap intervals cover the truth about 95 % of the time,
pooled rates are bootstrapped as pooled rates, t intervals match the closed form, and code
usage is read against what the corpus size allows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from focalcodec.errors import InputError
from focalcodec.eval.asr import DWERMetric
from focalcodec.eval.metrics import Metric, TokenStatistics
from focalcodec.eval.stats import bootstrap_ci, t_interval, uniform_code_usage


def test_bootstrap_interval_covers_the_true_mean_about_95_percent():
    rng = np.random.default_rng(0)
    trials, hits, widths = 300, 0, []
    for i in range(trials):
        sample = rng.normal(3.0, 2.0, size=50)
        lo, hi = bootstrap_ci(sample, seed=i)
        hits += lo <= 3.0 <= hi
        widths.append(hi - lo)
    coverage = hits / trials
    assert 0.89 <= coverage <= 0.98, coverage
    # the width matches 2 x 1.96 x sigma / sqrt(n)
    assert np.mean(widths) == pytest.approx(2 * 1.96 * 2.0 / math.sqrt(50), rel=0.1)


def test_bootstrap_edge_cases():
    assert all(math.isnan(v) for v in bootstrap_ci([1.0]))
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    with pytest.raises(InputError):
        bootstrap_ci([1.0, 2.0], level=1.5)


class _Mean(Metric):
    name = "m"
    keys = {"m": True}

    def compute(self, ref, hyp, meta):
        return {"m": 0.0}


def test_metric_intervals_for_means_and_pooled_rates():
    rng = np.random.default_rng(1)
    rows = [{"m": float(v)} for v in rng.normal(10, 1, 200)] + [{"m": float("nan")}, {"x": 1}]
    m = _Mean()
    lo, hi = m.intervals(rows)["m"]
    assert lo < m.aggregate(rows)["m"] < hi and hi - lo < 0.5
    assert m.count(rows, "m") == 200
    # pooled WER: 19 short clean items and one long bad one; the pooled interval must reflect
    # that the bad item carries most of the words, which a mean of per-item rates would not
    dwer = DWERMetric.__new__(DWERMetric)  # aggregate and intervals need no ASR model
    items = [{"words": 5, "word_errors": 0, "word_errors_capped": 0, "chars": 20, "char_errors": 0, "dwer": 0.0}]
    items = items * 19 + [
        {"words": 100, "word_errors": 50, "word_errors_capped": 50, "chars": 400, "char_errors": 200, "dwer": 50.0}
    ]
    pooled = dwer.aggregate(items)
    assert pooled["dwer"] == pytest.approx(100 * 50 / 195)
    cis = dwer.intervals(items, n_boot=500)
    lo, hi = cis["dwer"]
    assert all(math.isnan(v) for v in cis["wer"])  # no item has a ground-truth text
    # the bad item is drawn k ~ Binomial(20, 1/20) times: P(k = 0) = 36 % puts the low end at 0;
    # P(k >= 3) = 7.5 % and P(k >= 4) = 1.6 % put the high end at the pooled rate with k = 3
    assert lo == 0.0
    assert hi == pytest.approx(100 * 150 / (300 + 5 * 17))
    one = items[:1] + [{**items[1], "gt_words": 5, "gt_errors": 1}]  # a single item with a text
    assert all(math.isnan(v) for v in dwer.intervals(one, n_boot=50)["wer"])


def test_t_interval_matches_closed_form():
    mean, half = t_interval(np.arange(1.0, 11.0))
    assert mean == 5.5
    assert half == pytest.approx(2.2621571628 * np.std(np.arange(1.0, 11.0), ddof=1) / math.sqrt(10), rel=1e-6)
    assert math.isnan(t_interval([4.0])[1]) and math.isnan(t_interval([])[0])


def test_code_usage_is_read_against_the_corpus_size():
    assert uniform_code_usage(8192, 8192) == pytest.approx(100 * (1 - math.exp(-1)), rel=1e-3)
    assert uniform_code_usage(10**7, 8192) == pytest.approx(100.0)
    small = TokenStatistics(8192)
    small.update(np.arange(1000) % 8192)
    s = small.summary()
    assert s["num_tokens"] == 1000 and s["codebook_size"] == 8192
    assert s["code_usage"] == pytest.approx(100 * 1000 / 8192)
    assert s["code_usage_ceiling"] == pytest.approx(100 * (1 - (1 - 1 / 8192) ** 1000))
    assert "token_warning" in s and "1000 tokens" in s["token_warning"]
    big = TokenStatistics(16)
    big.update(np.tile(np.arange(16), 20))
    assert "token_warning" not in big.summary()
