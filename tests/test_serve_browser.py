"""The page of ``focalcodec serve`` in a real headless browser (Debian's chromium, driven by
playwright) with a fake microphone playing a WAV file of real speech: the audio the page
captured (resampled to 16 kHz in its AudioWorklet) is that speech, and the tokens and audio
it got back equal what the Python client gets for the same samples; two tabs in link mode
hear each other through tokens alone."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import soundfile as sf
from browser import CHROMIUM, FAKE_MIC_ARGS
from conftest import speech_files

from focalcodec.audio import load_audio
from focalcodec.serve.client import health, stream
from focalcodec.serve.server import BackgroundServer

pytestmark = pytest.mark.usefixtures("one_thread")
WAIT_MS = 120_000  # generous: the machine may be shared; every wait is for an event


@pytest.fixture(scope="module")
def speech():
    """Real speech (about 4.6 s), 16 kHz, and as the 48 kHz WAV the fake microphone plays."""
    path = speech_files()[0]
    return path, load_audio(path, 16000).numpy()


@pytest.fixture(scope="module")
def browser(speech, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    wav = tmp_path_factory.mktemp("mic") / "mic.wav"
    sf.write(str(wav), load_audio(speech[0], 48000).numpy(), 48000, subtype="PCM_16")
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, args=[*FAKE_MIC_ARGS, f"--use-file-for-fake-audio-capture={wav}"]
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def server():
    from conftest import fixture_model

    with BackgroundServer(fixture_model("tiny_causal_4k"), max_streams=8) as srv:
        yield srv


def floats(page, name: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(page.evaluate(f"fc.dump('{name}')")), dtype=np.float32)


def open_page(browser, url: str):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("window.fc && window.fc.health", timeout=WAIT_MS)
    return page, errors


def alignment(sent: np.ndarray, ref: np.ndarray) -> float:
    """Best normalised correlation of ``sent`` with a stretch of ``ref`` (any offset)."""
    n = len(sent) + len(ref)
    c = np.fft.irfft(np.fft.rfft(sent, n) * np.conj(np.fft.rfft(ref, n)), n)
    lag = int(np.argmax(np.abs(c)))
    lag = lag if lag < n // 2 else lag - n
    a, b = (sent[lag:], ref) if lag >= 0 else (sent, ref[-lag:])
    m = min(len(a), len(b))
    a, b = a[:m], b[:m]
    return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


def test_page_resynth_matches_the_python_client(browser, server, speech) -> None:
    page, errors = open_page(browser, server.url)
    assert "tiny_causal_4k" in page.inner_text("#model")
    page.click("#start")
    page.wait_for_function("fc.state === 'running' || fc.state === 'error'", timeout=WAIT_MS)
    assert page.evaluate("fc.error") is None
    page.wait_for_function("fc.sent.length >= 30 && fc.audio.length >= 5", timeout=WAIT_MS)
    assert page.inner_text("#streams").startswith("1 /")  # the live figure shows this stream
    page.click("#start")  # stop: flush and wait for "flushed"
    page.wait_for_function("fc.state === 'stopped' || fc.state === 'error'", timeout=WAIT_MS)
    assert page.evaluate("fc.error") is None and errors == []

    sent = floats(page, "sent")
    tokens = np.asarray(page.evaluate("fc.tokens"), dtype=np.int64)
    audio = floats(page, "audio")
    flushed = page.evaluate("fc.flushed")
    # What the page captured is the speech the fake microphone played, resampled to 16 kHz.
    assert sent.size >= 30 * 1280 and sent.size % 1280 == 0
    assert alignment(sent, speech[1]) > 0.98
    # Its output is exactly what the Python client gets for the same samples.
    ref = stream(server.url, sent)
    np.testing.assert_array_equal(tokens, ref.tokens)
    np.testing.assert_allclose(audio, ref.audio, atol=1e-4, rtol=0)
    assert flushed == {"type": "flushed", "tokens": ref.tokens.size, "samples": ref.audio.size}
    lat = page.evaluate("fc.latencies")
    assert len(lat) >= 25 and all(v > 0 for v in lat)
    assert page.inner_text("#bps") not in ("", "–") and int(page.inner_text("#chunks")) == sent.size // 1280
    page.close()


def test_two_tabs_talk_through_tokens_only(browser, server) -> None:
    a, errors_a = open_page(browser, server.url)
    b, errors_b = open_page(browser, server.url)
    for page in (a, b):
        page.select_option("#mode", "link")
        page.fill("#room", "pair")
        page.click("#start")
    for page in (a, b):
        page.wait_for_function("fc.state === 'running' && fc.peers === 2 || fc.state === 'error'", timeout=WAIT_MS)
    relayed_before = health(server.url)["link_bytes"]
    b.wait_for_function("fc.linkReceived.length >= 40 && fc.audio.length >= 5", timeout=WAIT_MS)
    a.wait_for_function("fc.linkReceived.length >= 40", timeout=WAIT_MS)
    for page in (a, b):
        page.click("#start")
        page.wait_for_function("fc.state === 'stopped' || fc.state === 'error'", timeout=WAIT_MS)
        assert page.evaluate("fc.error") is None
    assert errors_a == [] and errors_b == []

    sent_a = np.asarray(a.evaluate("fc.linkSent"), dtype=np.int64)
    got_b = np.asarray(b.evaluate("fc.linkReceived"), dtype=np.int64)
    # Every token A put on the link reached B, in order: the link carried tokens and nothing else.
    assert got_b.size >= 40 and np.array_equal(sent_a[: got_b.size], got_b)
    assert sent_a.size - got_b.size <= 8  # at most the frames in flight when B stopped
    assert a.evaluate("fc.linkBytesSent") == 6 * (sent_a.size // 4)  # 48 bits per 4 tokens: 600 bit/s
    assert health(server.url)["link_bytes"] - relayed_before >= 6 * 10
    # B's audio is the decode of exactly those tokens.
    audio_b = floats(b, "audio")
    ref = stream(server.url, got_b, mode="decode")
    assert audio_b.size >= 5 * 1920
    np.testing.assert_allclose(audio_b, ref.audio[: audio_b.size], atol=1e-4, rtol=0)
    a.close()
    b.close()
