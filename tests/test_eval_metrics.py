"""Evaluation metrics: identical signals score perfectly, added noise makes every metric worse."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from conftest import SPEECH

from focalcodec.audio import load_audio
from focalcodec.errors import InputError
from focalcodec.eval import metrics as M
from focalcodec.eval.asr import BasicTextNormalizer, EnglishTextNormalizer, edit_counts, find_whisper_model
from focalcodec.eval.metrics import (
    Metric,
    MetricUnavailable,
    ResourceMeter,
    TokenStatistics,
    build_metric,
    measured_bitrate,
    real_time_factor,
)

CLIP = SPEECH / "eval" / "ls_testother_2414-128291-0009.flac"  # 2.5 s of read English


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    return load_audio(CLIP).numpy()


def _noisy(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(x.shape[0]).astype(np.float32)
    noise *= np.sqrt(np.mean(x**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return np.clip(x + noise, -1, 1).astype(np.float32)


@pytest.fixture(scope="module")
def noisy(clean: np.ndarray) -> np.ndarray:
    return _noisy(clean, 0.0)


# -- signal metrics --------------------------------------------------------------------------------
PERFECT = {"pesq_wb": 4.64, "pesq_nb": 4.55, "stoi": 1.0, "estoi": 1.0, "mel_distance": 0.0}


@pytest.mark.parametrize("name", sorted(PERFECT))
def test_signal_metric_identical_is_perfect_and_noise_is_worse(name, clean, noisy):
    metric = build_metric(name)
    key = name
    same = metric(clean, clean.copy(), 16000)[key]
    bad = metric(clean, noisy, 16000)[key]
    assert same == pytest.approx(PERFECT[name], abs=0.01)
    if metric.keys[key]:
        assert bad < same - 0.1
    else:
        assert bad > same + 0.1


def test_signal_metrics_degrade_monotonically_with_noise(clean):
    mild, strong = _noisy(clean, 20.0), _noisy(clean, 0.0)
    for name in ("pesq_wb", "stoi", "mel_distance"):
        m = build_metric(name)
        a, b = m(clean, mild, 16000)[name], m(clean, strong, 16000)[name]
        assert (a > b) if m.keys[name] else (a < b), name


def test_metric_resamples_and_aligns_lengths(clean):
    from focalcodec.audio import resample

    m = build_metric("stoi")
    up = resample(clean, 16000, 24000)
    # a 24 kHz copy of the same audio with a few extra samples still scores ~1
    assert m(up, np.concatenate([up, np.zeros(100, np.float32)]), 24000)["stoi"] > 0.99


def test_metric_rejects_bad_input(clean):
    m = build_metric("mel_distance")
    with pytest.raises(InputError):
        m(clean, np.zeros(0, np.float32), 16000)
    with pytest.raises(InputError):
        m(clean, np.full(100, np.nan, np.float32), 16000)
    with pytest.raises(InputError):
        m(None, clean, 16000)
    with pytest.raises(InputError):
        m(clean, np.stack([clean, clean]), 16000)


def test_pesq_of_silence_is_nan_with_warning(clean):
    m = build_metric("pesq_wb")
    with pytest.warns(UserWarning, match="PESQ undefined"):
        assert np.isnan(m(np.zeros(16000, np.float32), np.zeros(16000, np.float32), 16000)["pesq_wb"])


def test_mel_filterbank_shape_and_coverage():
    fb = M.mel_filterbank(16000, 1024, 80)
    assert tuple(fb.shape) == (80, 513)
    assert (fb >= 0).all() and (fb.sum(dim=1) > 0).all()


# -- registry ----------------------------------------------------------------------------------------
def test_registry_lists_and_builds_custom_metric(clean):
    class Peak(Metric):
        name = "peak"
        keys = {"peak": True}
        needs_reference = False

        def compute(self, ref, hyp, meta):
            return {"peak": float(np.abs(hyp).max())}

    M.register_metric("peak_test", Peak)
    assert "peak_test" in M.metric_names() and "peak_test" in M.available_metrics()
    m = build_metric("peak_test")
    assert m(None, clean, 16000)["peak"] == pytest.approx(float(np.abs(clean).max()), rel=1e-3)
    assert m.aggregate([{"peak": 1.0}, {"peak": 3.0}, {"peak": float("nan")}]) == {"peak": 2.0}
    with pytest.raises(InputError, match="unknown metric"):
        build_metric("no_such_metric")
    with pytest.raises(InputError):
        M.register_metric("bad name!", Peak)


def test_unavailable_metrics_explain_how_to_fix(monkeypatch, tmp_path):
    import torch

    from focalcodec.eval import mos

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.delenv("FOCALCODEC_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(MetricUnavailable, match="torch hub cache"):
        build_metric("utmos")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        mos.importlib.util, "find_spec", lambda name, *a: None if name == "xls_r_sqa" else real(name, *a)
    )
    with pytest.raises(MetricUnavailable, match="distillmos|xls_r_sqa|torchaudio"):
        build_metric("distillmos")
    assert "utmos" not in M.available_metrics()


# -- tokens, bitrate, speed, memory -------------------------------------------------------------------------
def test_token_statistics_uniform_and_collapsed():
    uniform = TokenStatistics(16)
    uniform.update(np.tile(np.arange(16), 4))
    assert uniform.code_usage == pytest.approx(100.0)
    assert uniform.normalized_entropy == pytest.approx(100.0)
    collapsed = TokenStatistics(16)
    collapsed.update(np.full(64, 3))
    assert collapsed.code_usage == pytest.approx(100.0 / 16)
    assert collapsed.normalized_entropy == pytest.approx(0.0)
    half = TokenStatistics(16)
    half.update(np.arange(8)[None].repeat(2, 0))  # (B, T) input
    assert half.code_usage == pytest.approx(50.0) and half.normalized_entropy == pytest.approx(75.0)
    assert half.num_tokens == 16
    with pytest.raises(InputError):
        half.update([16])
    with pytest.raises(InputError):
        TokenStatistics(1)
    assert np.isnan(TokenStatistics(4).normalized_entropy)


def test_bitrate_and_rtf():
    assert measured_bitrate(1300, 2.0) == 650.0
    assert real_time_factor(processing_seconds=0.5, audio_seconds=10.0) == 0.05  # processing / audio
    assert math.isnan(real_time_factor(processing_seconds=1.0, audio_seconds=0.0))
    with pytest.raises(InputError):
        measured_bitrate(10, 0)


def test_resource_meter_sees_allocations():
    with ResourceMeter("cpu") as small:
        pass
    with ResourceMeter("cpu") as big:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, alive until the block ends
        block[::512] += 1
    assert big.seconds > 0 and small.seconds >= 0
    assert big.peak_bytes >= 40 * 2**20
    assert big.peak_bytes > small.peak_bytes


# -- ASR ------------------------------------------------------------------------------------------------
def test_english_normalizer():
    norm = EnglishTextNormalizer()
    assert norm("Mr. Smith won't pay Twenty-One Dollars, uh, OK?") == "mister smith will not pay 21 dollars ok"
    assert norm("One hundred and five PEOPLE [noise] came.") == "105 people came"
    assert norm("the twenty first of May, ten percent") == "the 21st of may 10%"
    assert norm("It's 1,000 colours; they're   HERE!") == "it 1000 colors they are here"
    assert norm("two three") == "2 3"
    assert norm("Café naïve") == "cafe naive"
    assert norm("a thousand and one nights") == "1001 nights"
    assert BasicTextNormalizer()("¿Dónde   está? (risas) ¡Aquí!") == "dónde está aquí"


def test_edit_counts():
    assert edit_counts("a b c".split(), "a b c".split()) == (0, 3)
    assert edit_counts("a b c".split(), "a x c d".split()) == (2, 3)
    assert edit_counts([], ["a"]) == (1, 0)
    assert edit_counts(["a", "b"], []) == (2, 2)


def test_whisper_model_lookup(tmp_path, monkeypatch):
    monkeypatch.delenv("FOCALCODEC_WHISPER_MODEL", raising=False)
    found = find_whisper_model(None)
    assert (found / "model.bin").is_file()
    with pytest.raises(MetricUnavailable, match="CTranslate2"):
        find_whisper_model(str(tmp_path))


@pytest.fixture(scope="module")
def dwer():
    return build_metric("dwer")


def test_dwer_identical_is_zero_and_noise_adds_errors(dwer, clean):
    same = dwer(clean, clean.copy(), 16000, {"lang": "en"})
    assert same["ref_text"], "Whisper heard nothing in clean speech"
    assert same["dwer"] == 0.0 and same["dcer"] == 0.0
    bad = dwer(clean, _noisy(clean, -5.0), 16000, {"lang": "en"})
    assert bad["dwer"] > 0 and bad["dcer"] > 0
    pooled = dwer.aggregate([same, bad])
    assert 0 < pooled["dwer"] < bad["dwer"] + 1e-9


def test_dwer_language_handling(dwer, clean):
    out = dwer(clean, clean, 16000, {"lang": "fr"})
    if dwer.transcriber.english_only:  # tiny.en: non-English rows are skipped
        assert np.isnan(out["dwer"]) and np.isnan(dwer.aggregate([out])["dwer"])
    else:  # multilingual model: transcribed in the given language
        assert out["dwer"] == 0.0 and out["words"] > 0


# -- speaker similarity and MOS ------------------------------------------------------------------------------
def test_speaker_similarity_identical_is_100_and_noise_lower(clean, noisy):
    sim = build_metric("sim")
    assert sim.backend in ("resemblyzer",) or sim.backend.startswith("wavlm")
    same = sim(clean, clean.copy(), 16000)["sim"]
    assert same == pytest.approx(100.0, abs=0.01)
    assert sim(clean, noisy, 16000)["sim"] < same - 1.0
    other = load_audio(SPEECH / "eval" / "ls_devclean_84-121123-0009.flac").numpy()
    assert sim(clean, other, 16000)["sim"] < same - 1.0
    # no alignment: a shorter reference is fine
    assert sim(clean[:8000], clean, 16000)["sim"] > 50


def test_dnsmos_noise_lowers_quality(clean, noisy):
    m = build_metric("dnsmos")
    assert m.needs_reference is False
    a = m(None, clean, 16000)
    b = m(None, noisy, 16000)
    assert set(a) == set(m.keys)
    assert all(1.0 <= v <= 5.0 for v in a.values())
    for key in ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak"):
        assert b[key] < a[key] - 0.2, key
    assert m(None, clean.copy(), 16000) == a
