"""Evaluation metrics: identical signals score perfectly, added noise makes every metric worse."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from conftest import SPEECH

from focalcodec.audio import load_audio
from focalcodec.errors import InputError
from focalcodec.eval import baselines as M_codecs
from focalcodec.eval import metrics as M
from focalcodec.eval.asr import (
    DWERMetric,
    basic_normalizer,
    edits,
    english_normalizer,
    find_whisper_model,
    is_repetition_loop,
    longest_repeat,
)
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
        out = m(np.zeros(16000, np.float32), np.zeros(16000, np.float32), 16000)
    assert np.isnan(out["pesq_wb"]) and out["skip"].startswith("PESQ undefined")


@pytest.mark.parametrize("name", ["stoi", "estoi"])
def test_stoi_of_too_little_speech_is_nan_with_a_reason(name, clean):
    """pystoi returns 1e-5 (with a warning) when fewer than 30 frames (384 ms) of speech are
    left after its silence removal, and fails on a few samples: either would enter a corpus
    mean as a real score. Both are NaN with the reason, as is a silent reference."""
    m = build_metric(name)
    short = clean[8000:12800]  # 0.3 s of speech, compared with a scaled copy of itself
    for ref, hyp in ((short, 0.5 * short), (clean[:100], clean[:100])):
        out = m(ref, hyp, 16000)
        assert np.isnan(out[name]) and "too little speech" in out["skip"], out
    silent = m(np.zeros_like(clean), clean, 16000)
    assert np.isnan(silent[name]) and "silent reference" in silent["skip"]
    assert m(clean[:16000], clean[:16000].copy(), 16000)[name] > 0.99  # 1 s is enough


def test_si_sdr_of_silence_is_nan_with_a_reason(clean):
    m = build_metric("si_sdr")
    for ref, hyp, reason in (
        (np.zeros_like(clean), clean, "silent (or constant) reference"),
        (clean, 0 * clean, "reconstruction"),
    ):
        out = m(ref, hyp, 16000)
        assert np.isnan(out["si_sdr"]) and reason in out["skip"], out


def test_undefined_values_never_enter_a_summary_silently(clean):
    """A metric value that comes back NaN without a reason (a user's metric, or a built-in
    one's blind spot) is counted out of the summary with a reason the report lists."""
    from focalcodec.eval.data import Utterance
    from focalcodec.eval.harness import evaluate_resynthesis

    class Flaky(Metric):
        name = "flaky"
        keys = {"flaky": True}
        model = "test"

        def compute(self, ref, hyp, meta):
            return {"flaky": float("nan")}

    class Loud(Metric):  # no reference: sees the whole output, never an aligned overlap
        name = "loud"
        keys = {"loud": True}
        needs_reference = False

        def compute(self, ref, hyp, meta):
            return {"loud": float(np.abs(hyp).max())}

    result = evaluate_resynthesis(
        [M_codecs.build_codec("identity")], [Utterance("a", CLIP)], {"flaky": Flaky(), "loud": Loud()}, n_boot=0
    )
    summary = result.codecs["identity"]["summary"]
    assert summary["flaky_n"] == 0 and summary["flaky_skipped"] == {"flaky undefined (NaN)": 1}
    assert summary["loud_n"] == 1 and "loud_skipped" not in summary
    # the report's "time-aligned" column: only metrics that compare with the reference are aligned
    assert result.models["flaky"]["align"] is True and result.models["loud"]["align"] is False


def test_htk_mel_filter_bank_shape_and_coverage():
    from focalcodec.audio import mel_filter_bank

    fb = mel_filter_bank(16000, 1024, 80, scale="htk")
    assert tuple(fb.shape) == (513, 80)
    assert (fb >= 0).all() and (fb.sum(dim=0) > 0).all()
    assert not torch.allclose(fb, mel_filter_bank(16000, 1024, 80))  # not the Slaney scale


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
def test_whisper_english_normalizer():
    """Whisper's own normaliser (the paper's protocol), not a look-alike: e.g. it keeps
    currency symbols, expands "it's" to "it is" and joins spelled-out digit runs."""
    norm = english_normalizer()
    assert type(norm).__module__.startswith("whisper_normalizer")
    assert norm("Mr. Smith won't pay Twenty-One Dollars, uh, OK?") == "mister smith will not pay $21 ok"
    assert norm("It's 1,000 colours; they're   HERE!").split() == "it is 1000 colors they are here".split()
    assert norm("One hundred and five PEOPLE [noise] came.") == "105 people came"
    assert norm("NINE NINE EIGHT FIVE") == "9985"
    assert basic_normalizer()("¿Dónde   está? (risas) ¡Aquí!").split() == ["dónde", "está", "aquí"]


def test_edits_and_repetition_loops():
    assert edits("a b c".split(), "a b c".split()).errors == 0
    e = edits("a b c".split(), "a x c d".split())
    assert (e.substitutions, e.deletions, e.insertions, e.n, e.errors) == (1, 0, 1, 3, 2)
    assert edits([], ["a"]).errors == 1 and edits(["a", "b"], []).deletions == 2
    loop = edits("the cat sat".split(), ("the cat sat" + " on the mat" * 30).split())
    assert loop.errors == 90 and loop.capped_errors() == 3
    assert longest_repeat("a b a b a b a b a b".split()) == 5
    assert longest_repeat("one two three".split()) == 1 and longest_repeat([]) == 0
    ref = "thank you for calling please hold".split()
    assert is_repetition_loop(ref, ref + "please hold please hold please hold please hold".split())
    assert is_repetition_loop(ref, ref * 3 + ["x"] * 10)
    assert not is_repetition_loop(ref, "thank you for calling please old".split())
    assert not is_repetition_loop("nine nine nine nine".split(), "nine nine nine nine".split())


def test_dwer_aggregate_guards_against_a_loop():
    """One clip holding most errors (a Whisper loop) dominates the pooled dWER; the median and
    the capped figure show what the other clips say."""
    dwer = DWERMetric.__new__(DWERMetric)
    row = {"words": 10, "word_errors": 1, "word_errors_capped": 1, "chars": 40, "char_errors": 2, "dwer": 10.0}
    loop = {"words": 10, "word_errors": 200, "word_errors_capped": 10, "chars": 40, "char_errors": 600}
    rows = [row] * 9 + [{**loop, "dwer": 2000.0, "loop": True}]
    agg = dwer.aggregate(rows)
    assert agg["dwer"] == pytest.approx(209.0)
    assert agg["dwer_capped"] == pytest.approx(19.0)
    assert agg["dwer_median"] == pytest.approx(10.0)
    assert agg["loops"] == 1.0
    assert np.isnan(agg["wer"]) and dwer.count(rows, "dwer") == 10 and dwer.count(rows, "wer") == 0
    truth = [{**row, "gt_errors": 2, "gt_words": 8}, {**row, "gt_errors": 0, "gt_words": 12}]
    assert dwer.aggregate(truth)["wer"] == pytest.approx(10.0) and dwer.count(truth, "wer") == 2


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
    assert same["dwer"] == 0.0 and same["dcer"] == 0.0 and same["loop"] is False
    bad = dwer(clean, _noisy(clean, -5.0), 16000, {"lang": "en"})
    assert bad["dwer"] > 0 and bad["dcer"] > 0
    pooled = dwer.aggregate([same, bad])
    assert 0 < pooled["dwer"] < bad["dwer"] + 1e-9
    assert dwer.model == f"Whisper {dwer.transcriber.name}"
    if dwer.transcriber.name == "tiny.en":
        assert not dwer.comparable and dwer.paper_status.startswith("not comparable")


def test_asr_wer_against_ground_truth_text(dwer):
    """The ASR's own WER on the original audio (where the data set has text), and the
    reconstruction's WER against that text."""
    x = load_audio(SPEECH / "eval" / "ravdess_03-01-08-02-02-02-21.flac").numpy()
    meta = {"lang": "en", "text": "Dogs are sitting by the door"}
    ref = dwer.reference_scores(x, meta)
    assert ref["gt_words"] == 6 and ref["wer"] <= 34.0
    wrong = dwer.reference_scores(x, {**meta, "text": "Kids are talking by the window"})
    assert wrong["wer"] > ref["wer"]
    assert dwer.reference_scores(x, {"lang": "en"}) == {}
    row = dwer(x, x.copy(), 16000, meta)
    assert row["wer"] == ref["wer"] and row["gt_words"] == 6


def test_dwer_language_handling(dwer, clean):
    out = dwer(clean, clean, 16000, {"lang": "fr"})
    if dwer.transcriber.english_only:  # tiny.en: non-English rows are skipped, with the reason
        assert np.isnan(out["dwer"]) and np.isnan(dwer.aggregate([out])["dwer"])
        assert "English-only" in out["skip"]
        assert dwer.reference_scores(clean, {"lang": "fr", "text": "bonjour"}) == {}
    else:  # multilingual model: transcribed in the given language
        assert out["dwer"] == 0.0 and out["words"] > 0


# -- SI-SDR, MCD, F0 ----------------------------------------------------------------------------------------
def test_si_sdr_is_scale_invariant_and_matches_a_known_snr(clean):
    m = build_metric("si_sdr")
    assert m(clean, clean.copy(), 16000)["si_sdr"] == M.SI_SDR_MAX
    assert m(clean, 0.3 * clean, 16000)["si_sdr"] == M.SI_SDR_MAX  # a scaled copy is not distorted
    assert m(clean, -clean, 16000)["si_sdr"] == M.SI_SDR_MAX
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(clean.shape[0]).astype(np.float32)
    x = clean - clean.mean()
    noise *= np.sqrt(np.sum(x**2) / np.sum(noise**2) / 10.0)  # 10 dB below the speech
    assert m(clean, 2.0 * (clean + noise), 16000)["si_sdr"] == pytest.approx(10.0, abs=0.3)
    assert np.isnan(M.si_sdr(np.zeros(100), np.ones(100)))


def _tone(f0: np.ndarray, sr: int = 16000) -> np.ndarray:
    """A harmonic complex tone (10 harmonics, 1/k amplitudes) following ``f0`` (N,) Hz."""
    phase = 2 * np.pi * np.cumsum(f0) / sr
    return (0.1 * sum(np.sin(k * phase) / k for k in range(1, 11))).astype(np.float32)


@pytest.fixture(scope="module")
def mcd_f0():
    return build_metric("mcd_f0")


def test_f0_error_of_a_tone_shifted_by_100_cents(mcd_f0):
    n = 16000
    glide = np.linspace(120.0, 220.0, n)
    a, b = _tone(glide), _tone(glide * 2 ** (100 / 1200))
    out = mcd_f0(a, b, 16000)
    assert out["f0_rmse"] == pytest.approx(100.0, abs=5.0)
    assert out["f0_corr"] > 0.99 and out["vde"] < 3.0
    same = mcd_f0(a, a.copy(), 16000)
    assert same["f0_rmse"] == pytest.approx(0.0, abs=1.0) and same["vde"] == 0.0 and same["mcd"] == 0.0
    half = a.copy()
    half[n // 2 :] = 0.0
    assert mcd_f0(a, half, 16000)["vde"] == pytest.approx(50.0, abs=4.0)


def test_f0_of_unvoiced_or_too_short_input_is_nan_with_a_reason(mcd_f0, clean):
    """Praat cannot track pitch in under 50 ms (it raised PraatError) and F0 needs frames voiced
    in both signals: NaN with the reason, never an unexplained NaN or an exception."""
    short = mcd_f0(clean[:100], clean[:100], 16000)
    assert all(np.isnan(short[k]) for k in mcd_f0.keys) and "too short" in short["skip"]
    silent = mcd_f0(clean, np.zeros_like(clean), 16000)
    assert np.isnan(silent["f0_rmse"]) and np.isnan(silent["f0_corr"]) and "voiced in both" in silent["skip"]
    assert math.isfinite(silent["mcd"]) and math.isfinite(silent["vde"])


def test_mcd_ignores_gain_and_grows_with_noise(mcd_f0, clean):
    assert mcd_f0(clean, 0.5 * clean, 16000)["mcd"] < 0.05  # c0 (energy) is left out
    mild, strong = mcd_f0(clean, _noisy(clean, 30.0), 16000)["mcd"], mcd_f0(clean, _noisy(clean, 5.0), 16000)["mcd"]
    assert 1.0 < mild < strong


# -- speaker similarity and MOS ------------------------------------------------------------------------------
def test_speaker_similarity_identical_is_100_and_noise_lower(clean, noisy):
    sim = build_metric("sim")
    assert sim.backend in ("resemblyzer",) or sim.backend.startswith("wavlm")
    if sim.backend == "resemblyzer":
        assert sim.model.startswith("resemblyzer") and not sim.comparable
    same = sim(clean, clean.copy(), 16000)["sim"]
    assert same == pytest.approx(100.0, abs=0.01)
    assert sim(clean, noisy, 16000)["sim"] < same - 1.0
    other = load_audio(SPEECH / "eval" / "ls_devclean_84-121123-0009.flac").numpy()
    assert sim(clean, other, 16000)["sim"] < same - 1.0
    # no alignment: a shorter reference is fine
    assert sim(clean[:8000], clean, 16000)["sim"] > 50


def test_speaker_similarity_baselines_between_and_within_speakers():
    sim = build_metric("sim")
    files = {
        "a1": ("ls_testother_1688-142285-0007", "ls1688"),
        "a2": ("ls_testother_1688-142285-0001", "ls1688"),
        "b1": ("ls_devclean_84-121123-0009", "ls84"),
        "b2": ("ls_devclean_84-121123-0011", "ls84"),
    }
    items = [
        (k, load_audio(SPEECH / "eval" / f"{f}.flac").numpy()[: 16000 * 4], {"speaker": spk})
        for k, (f, spk) in files.items()
    ]
    base = sim.reference_baseline(items)
    assert base["sim_other_speaker_n"] == 3 and base["sim_same_speaker_n"] == 2  # unordered pairs
    assert 0 < base["sim_other_speaker"] < base["sim_same_speaker"] < 100
    assert sim.reference_baseline([(k, a, {}) for k, a, _ in items]) == {}


def test_distillmos_offline_and_noise_lowers_it(clean, noisy):
    import sys

    m = build_metric("distillmos")
    assert "torchaudio" not in sys.modules or sys.modules["torchaudio"].__spec__ is not None
    a, b = m(None, clean, 16000)["distillmos"], m(None, noisy, 16000)["distillmos"]
    assert 1.0 <= b < a - 0.3 <= 5.0
    assert m.paper is None and m.paper_status == "not in the paper"


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
