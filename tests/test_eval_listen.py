"""``focalcodec listen``: a MUSHRA test built from a real evaluation run, its stimuli, rater
plans, the SQLite store, BS.1534-3 post-screening, the analysis, and a real headless Chromium
that completes the test (closing and resuming the page) so the ratings land in the database
and the analysis reads them."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from browser import BROWSER_ARGS, CHROMIUM
from conftest import ROOT, SPEECH

from focalcodec.audio import load_audio
from focalcodec.cli import main
from focalcodec.errors import InputError
from focalcodec.eval.align import estimate_delay
from focalcodec.eval.listening import (
    REFERENCE,
    RatingStore,
    analyze,
    load_test,
    low_pass,
    post_screen,
    rater_plan,
)

CODECS = ("codec2-1200", "opus-6")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("listen") / "run"
    args = ["evaluate", "--codec", *CODECS, "--data", str(SPEECH / "eval"), "--where", "subset=en_read"]
    args += ["--max-duration", "3", "--limit", "2", "--metrics", "stoi", "--save-audio", "--no-plots", "--quiet"]
    assert main([*args, "-o", str(out), "--bootstrap", "0"]) == 0
    return out


@pytest.fixture(scope="module")
def test_dir(run_dir: Path) -> Path:
    out = run_dir.parent / "mushra"
    assert main(["listen", "build", str(run_dir), "-o", str(out), "--anchor-7k", "--quiet"]) == 0
    return out


def _stimuli(test_dir: Path, trial: dict) -> dict[str, np.ndarray]:
    return {name: load_audio(test_dir / "audio" / f"{tok}.wav").numpy() for name, tok in trial["stimuli"].items()}


def _band_energy_db(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.shape[0], 1 / 16000)
    return 10 * np.log10(spec[(f >= lo) & (f < hi)].sum() + 1e-20)


def test_build_makes_matched_blind_stimuli(test_dir: Path):
    import pyloudnorm

    test = load_test(test_dir)
    assert len(test["trials"]) == 2
    assert set(test["systems"]) == {REFERENCE, "anchor_3.5k", "anchor_7k", *CODECS}
    assert test["systems"]["codec2-1200"]["bitrate"] == pytest.approx(1200, rel=0.05)
    meter = pyloudnorm.Meter(16000)
    for trial in test["trials"]:
        names = set(trial["stimuli"])
        assert names == set(test["systems"])
        # opaque names: nothing served tells the systems apart
        assert all(re.fullmatch(r"[0-9a-f]{16}", tok) for tok in [trial["reference"], *trial["stimuli"].values()])
        sig = _stimuli(test_dir, trial)
        ref = load_audio(test_dir / "audio" / f"{trial['reference']}.wav").numpy()
        assert np.allclose(sig[REFERENCE], ref)  # the hidden reference is the reference
        for name, x in sig.items():
            assert x.shape == ref.shape, name
            assert meter.integrated_loudness(x.astype(np.float64)) == pytest.approx(
                -26.0 + trial["trim_db"], abs=0.6
            ), name
        # anchors: 3.5 kHz and 7 kHz low-pass versions of the reference (loudness matching
        # turns them up as a whole; the passband keeps its shape, the stopband drops > 40 dB)
        for name, cut in (("anchor_3.5k", 3500), ("anchor_7k", 7000)):
            gain = _band_energy_db(sig[name], 200, cut - 500) - _band_energy_db(ref, 200, cut - 500)
            low = _band_energy_db(sig[name], 200, 1500) - _band_energy_db(ref, 200, 1500)
            assert low == pytest.approx(gain, abs=0.5), name
            stop = _band_energy_db(sig[name], cut + 300, 8000) - _band_energy_db(ref, cut + 300, 8000)
            assert gain - stop > 40, name
        # codec outputs are delay-compensated (Codec 2 lags ~19 ms before compensation)
        for name in CODECS:
            assert abs(estimate_delay(ref, sig[name]).ms) <= 2.0, name


def test_low_pass_anchor_is_zero_phase():
    t = np.arange(16000) / 16000
    x = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    y = low_pass(x, 3500)
    assert np.allclose(y[2000:-2000], x[2000:-2000], atol=1e-3)  # passband untouched, no delay
    hi = np.sin(2 * np.pi * 6000 * t).astype(np.float32)
    assert np.abs(low_pass(hi, 3500)[2000:-2000]).max() < 1e-3


def test_rater_plans_are_random_per_rater_and_stable(test_dir: Path):
    test = load_test(test_dir)
    plans = {r: rater_plan(test, r) for r in (f"rater{i}" for i in range(12))}
    assert rater_plan(test, "rater3") == plans["rater3"]  # resume gets the same plan
    orders = {tuple(s for t in p for s in t["stimuli"]) for p in plans.values()}
    assert len(orders) > 6  # stimulus orders differ between raters
    first = {p[0]["id"] for p in plans.values()}
    assert first == {t["id"] for t in test["trials"]}  # so does the trial order
    for plan in plans.values():  # only trial ids and opaque tokens: no system names
        for t in plan:
            assert set(t) == {"id", "reference", "stimuli"} and re.fullmatch(r"t\d\d", t["id"])
            assert all(re.fullmatch(r"[0-9a-f]{16}", tok) for tok in [t["reference"], *t["stimuli"]])
    with pytest.raises(InputError, match="rater name"):
        rater_plan(test, "no spaces allowed")


def _synthetic_test(n_trials: int) -> dict:
    systems = [REFERENCE, "anchor_3.5k", "codec"]
    return {
        "version": 1,
        "id": "abc",
        "title": "t",
        "source": "-",
        "loudness_lufs": -26,
        "systems": {
            REFERENCE: {"kind": "hidden reference"},
            "anchor_3.5k": {"kind": "anchor"},
            "codec": {"kind": "codec", "bitrate": 650},
        },
        "trials": [
            {"id": f"t{i}", "item": f"i{i}", "reference": f"r{i}", "stimuli": {s: f"{s}{i}" for s in systems}}
            for i in range(n_trials)
        ],
    }


def test_store_keeps_every_rating_as_given(tmp_path: Path):
    test = _synthetic_test(2)
    store = RatingStore(test, tmp_path / "r.sqlite")
    for score in (10, 55, 80):  # a rater moves one slider three times
        store.rate("ann", "t0", "codec0", score)
    with pytest.raises(InputError, match="not rated yet"):
        store.complete("ann", "t0")
    store.rate("ann", "t0", "reference0", 100)
    store.rate("ann", "t0", "anchor_3.5k0", 20)
    store.complete("ann", "t0")
    assert [e[7] for e in store.events()] == [10, 55, 80, 100, 20]
    assert store.latest("ann")[("ann", "t0", "codec")] == 80
    assert store.state("ann") == {
        "done": ["t0"],
        "ratings": {"t0": {"codec0": 80, "reference0": 100, "anchor_3.5k0": 20}},
    }
    for bad in ((101,), (-1,), (50.5,), ("80",), (True,)):
        with pytest.raises(InputError, match="score"):
            store.rate("ann", "t1", "codec1", bad[0])
    with pytest.raises(InputError, match="not part of trial"):
        store.rate("ann", "t1", "codec0", 50)
    with pytest.raises(InputError, match="unknown trial"):
        store.rate("ann", "t9", "codec0", 50)
    store.close()
    other = {**test, "id": "another"}
    with pytest.raises(InputError, match="another test"):
        RatingStore(other, tmp_path / "r.sqlite")


def test_post_screening_excludes_a_planted_bad_rater():
    scores = {}
    for rater, below in (("good", 0), ("careless", 3), ("borderline", 3)):
        n = 10 if rater != "borderline" else 20
        for t in range(n):
            scores[(rater, f"t{t}", REFERENCE)] = 70 if t < below else 100
            scores[(rater, f"t{t}", "codec")] = 60
    screen = post_screen(scores)
    assert screen["careless"]["fraction"] == pytest.approx(0.3) and screen["careless"]["excluded"]
    assert screen["borderline"]["fraction"] == pytest.approx(0.15) and not screen["borderline"]["excluded"]
    assert not screen["good"]["excluded"] and screen["good"]["trials"] == 10


def test_analysis_means_and_intervals(tmp_path: Path):
    from scipy.stats import t as student

    test = _synthetic_test(5)
    (tmp_path / "test.json").write_text(json.dumps(test))
    store = RatingStore(test, tmp_path / "ratings.sqlite")
    codec = {"a": [60, 70, 80, 65, 75], "b": [50, 55, 58, 62, 49], "bad": [90, 90, 90, 90, 90]}
    for rater, values in codec.items():
        for i, v in enumerate(values):
            store.rate(rater, f"t{i}", f"reference{i}", 100 if rater != "bad" else 40)
            store.rate(rater, f"t{i}", f"anchor_3.5k{i}", 20)
            store.rate(rater, f"t{i}", f"codec{i}", v)
            if i < 4 or rater != "b":  # b leaves the last trial unfinished: not counted
                store.complete(rater, f"t{i}")
    store.close()
    result = analyze(tmp_path)
    assert result["excluded_raters"] == ["bad"] and result["kept_raters"] == ["a", "b"]
    values = codec["a"] + codec["b"][:4]
    s = result["systems"]["codec"]
    assert s["n"] == 9 and s["mean"] == pytest.approx(np.mean(values))
    half = student.ppf(0.975, 8) * np.std(values, ddof=1) / math.sqrt(9)
    assert s["ci95"] == pytest.approx([np.mean(values) - half, np.mean(values) + half])
    assert (
        result["systems"][REFERENCE]["mean"] == 100.0 and math.isnan(result["systems"][REFERENCE]["ci95"][0]) is False
    )


def _rate_trial(page, test: dict, rater_scores: dict[str, int]) -> str:
    """Play the reference and every stimulus, then set each slider with the keyboard to the
    score this rater gives its (secret, looked up server-side) system; returns the trial id."""
    rows = page.locator(".stimulus")
    rows.first.wait_for()
    progress = page.locator("#progress").inner_text()
    tokens = [rows.nth(i).get_attribute("data-stimulus") for i in range(rows.count())]
    trial = next(t for t in test["trials"] if set(t["stimuli"].values()) == set(tokens))
    system_of = {tok: name for name, tok in trial["stimuli"].items()}
    page.click("#play-ref")
    for i, tok in enumerate(tokens):
        row = rows.nth(i)
        row.locator("button.play").click()
        slider = row.locator("input.score")
        slider.focus()
        score = rater_scores[system_of[tok]]
        page.keyboard.press("Home")
        for _ in range(score // 10):
            page.keyboard.press("PageUp")
        assert slider.input_value() == str(score - score % 10)
        assert row.locator(".value").inner_text() == str(score - score % 10)
    assert "Trial" in progress
    return trial["id"]


def test_browser_completes_the_test_and_the_analysis_reads_it(test_dir: Path, tmp_path: Path):
    """Two raters in a real headless Chromium: alice closes the page after one trial and
    resumes; bob never recognises the hidden reference (a planted bad rater)."""
    from playwright.sync_api import sync_playwright

    from focalcodec.eval.listen_server import ListeningServer

    test = load_test(test_dir)
    shots = os.environ.get("FOCALCODEC_SCREENSHOTS")
    alice = {REFERENCE: 100, "anchor_7k": 70, "anchor_3.5k": 20, "codec2-1200": 30, "opus-6": 60}
    bob = {REFERENCE: 40, "anchor_7k": 80, "anchor_3.5k": 90, "codec2-1200": 50, "opus-6": 60}
    store = RatingStore(test, test_dir / "ratings.sqlite")
    with ListeningServer(test_dir, test, store) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            context = browser.new_context(viewport={"width": 900, "height": 720})
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url + "?rater=alice")
            if shots:
                page.screenshot(path=f"{shots}/listen_start.png")
            page.click("#start")
            first = _rate_trial(page, test, alice)
            if shots:
                page.screenshot(path=f"{shots}/listen_trial.png")
            page.click("#next")
            page.wait_for_function("document.querySelector('#progress').textContent.startsWith('Trial 2')")
            context.close()  # alice closes the page mid-test ...
            context = browser.new_context(viewport={"width": 900, "height": 720})
            page = context.new_page()
            page.goto(server.url + "?rater=alice")
            page.click("#start")  # ... and resumes at her second trial
            page.wait_for_selector(".stimulus")
            assert page.locator("#progress").inner_text() == "Trial 2 of 2"
            second = _rate_trial(page, test, alice)
            assert second != first
            page.click("#next")
            page.wait_for_selector("#done:not(.hidden)")
            page.goto(server.url + "?rater=bob")
            page.click("#start")
            for k in range(len(test["trials"])):
                _rate_trial(page, test, bob)
                page.click("#next")
                if k + 1 < len(test["trials"]):  # the next trial's rows, not this one's still on the page
                    page.wait_for_function(
                        f"document.querySelector('#progress').textContent.startsWith('Trial {k + 2}')"
                    )
            page.wait_for_selector("#done:not(.hidden)")
            assert errors == []
        finally:
            browser.close()
    store.close()
    # every key press was stored as given; the last one per slider is the final score
    with sqlite3.connect(test_dir / "ratings.sqlite") as db:
        events = db.execute("SELECT rater, trial, system, score FROM ratings ORDER BY id").fetchall()
        done = db.execute("SELECT rater, trial FROM completed").fetchall()
    assert len(done) == 4
    per_slider = {}
    for rater, trial, system, score in events:
        per_slider[(rater, trial, system)] = score
    assert len(events) > len(per_slider) == 2 * 2 * 5
    assert all(per_slider[("alice", t["id"], s)] == v for t in test["trials"] for s, v in alice.items())
    # export and analysis read what the browser stored
    csv_path = tmp_path / "ratings.csv"
    assert main(["listen", "export", str(test_dir), "-o", str(csv_path)]) == 0
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert len(rows) == len(events) and {r["trial_completed"] for r in rows} == {"True"}
    results = tmp_path / "results"
    assert main(["listen", "analyze", str(test_dir), "-o", str(results), "--quiet"]) == 0
    report = json.loads((results / "results.json").read_text())
    assert report["excluded_raters"] == ["bob"] and report["kept_raters"] == ["alice"]
    assert report["systems"][REFERENCE]["mean"] == 100 and report["systems"]["opus-6"]["mean"] == 60
    assert report["systems"]["codec2-1200"]["n"] == 2
    for name in ("mushra_vs_bitrate.png", "mushra_distributions.png"):
        assert (results / name).stat().st_size > 10_000
    assert "| opus-6 | codec |" in (results / "results.md").read_text()
    if shots:
        import shutil

        for name in ("mushra_vs_bitrate.png", "mushra_distributions.png"):
            shutil.copy(results / name, Path(shots) / name)


def test_cli_errors_help_and_serve(run_dir: Path, test_dir: Path, tmp_path: Path, capsys):
    assert main(["listen", "build", str(tmp_path / "nope"), "-o", str(tmp_path / "t")]) == 1
    assert "report.json not found" in capsys.readouterr().err
    assert main(["listen", "build", str(run_dir), "-o", str(test_dir), "--quiet"]) == 1
    assert "exists; use --force" in capsys.readouterr().err
    RatingStore(load_test(test_dir), test_dir / "ratings.sqlite").close()  # the test has (or gets) a database
    assert main(["listen", "build", str(run_dir), "-o", str(test_dir), "--quiet", "--force"]) == 1
    assert "holds ratings" in capsys.readouterr().err  # --force never throws ratings away
    assert main(["listen", "build", str(run_dir), "-o", str(tmp_path / "t"), "--systems", "mp3"]) == 1
    assert "not in" in capsys.readouterr().err
    assert main(["listen", "analyze", str(tmp_path), "-o", str(tmp_path / "r")]) == 1
    assert "test.json not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["listen", "serve", "--help"])
    help_text = capsys.readouterr().out
    assert "127.0.0.1" in help_text and "(default: 8000)" in help_text
    # the real command: serves on a free port until interrupted
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "focalcodec", "listen", "serve", str(test_dir), "--port", "0"]
    cmd += ["--db", str(tmp_path / "serve.sqlite")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        with urllib.request.urlopen(url + "api/plan?rater=carol", timeout=30) as r:
            plan = json.loads(r.read())
        assert len(plan["trials"]) == 2 and plan["done"] == []
        with urllib.request.urlopen(url, timeout=30) as r:
            assert b"<title>Listening test</title>" in r.read()
    finally:
        proc.send_signal(2)  # Ctrl-C
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().endswith("error: interrupted")


def test_listen_help_shows_each_default_once(capsys):
    """The listen steps use the commands' one help formatter: a default written into the help
    text is not repeated as ``(default: None)``."""
    from focalcodec.cli import main

    for step in ("build", "serve", "export", "analyze"):
        with pytest.raises(SystemExit):
            main(["listen", step, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "(default: None)" not in text and text.count("(default:") >= 1, (step, text)


def test_listen_takes_the_commands_shared_output_options(capsys):
    """build / export / analyze take the -o / -f / -q of every command (focalcodec.cli.common),
    with its promise that --force never replaces an input and its old --no-progress name."""
    from focalcodec.cli import build_parser

    parser = build_parser()
    for step in ("build", "export", "analyze"):
        quiet = ["--no-progress"] if step != "export" else []  # export prints only the count
        args = parser.parse_args(["listen", step, "IN", "-o", "OUT", "-f", *quiet])
        assert (args.output, args.force, getattr(args, "quiet", True)) == ("OUT", True, True)
        with pytest.raises(SystemExit):
            parser.parse_args(["listen", step, "--help"])
        assert "inputs are never replaced" in " ".join(capsys.readouterr().out.split()), step
