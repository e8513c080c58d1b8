"""The live-serving snippets of the README and docs/serve.md run as written, against a server
on the tiny causal fixture (the URL and the audio substituted)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from conftest import fixture_model, speech_files
from test_readme import snippet

from focalcodec.audio import load_audio
from focalcodec.serve.server import BackgroundServer
from focalcodec.streaming import StreamCodec

pytestmark = pytest.mark.usefixtures("one_thread")


def test_serve_snippet_runs() -> None:
    block = snippet("README.md", "focalcodec.serve.client import health, stream")
    codec = fixture_model("tiny_causal_4k")
    wav = load_audio(speech_files()[0], 16000)[:20000]
    with BackgroundServer(codec) as srv:
        code = block.replace('"http://127.0.0.1:8765"', repr(srv.url))
        scope: dict = {"wav": wav}
        exec(compile(code, "README.md", "exec"), scope)
    toks, _ = StreamCodec(codec).push(wav)
    np.testing.assert_array_equal(scope["result"].tokens[: toks.numel()], toks.numpy())
    assert scope["back"].shape == scope["result"].audio.shape
    np.testing.assert_allclose(scope["back"], scope["result"].audio, atol=1e-4, rtol=0)


def test_serve_page_snippet_runs() -> None:
    """docs/serve.md's client snippet, with a voice named alice on the server, and its async
    example run to the end of a flushed utterance."""
    from focalcodec.vc import build_speaker_set

    block = snippet("docs/serve.md", "async def talk")
    codec = fixture_model("tiny_causal_4k")
    wav = load_audio(speech_files()[0], 16000)[:6400]  # 0.4 s: the realtime call is paced
    alice = build_speaker_set(codec, [speech_files()[1]]).feats
    with BackgroundServer(codec, speaker_sets={"alice": alice}) as srv:
        scope: dict = {"wav": wav}
        exec(compile(block.replace('"http://127.0.0.1:8765"', repr(srv.url)), "docs/serve.md", "exec"), scope)
        assert scope["info"]["streams_open"] == 0
        toks, _ = StreamCodec(codec).push(wav)
        np.testing.assert_array_equal(scope["audio"].shape, (1920 * (toks.numel() // 4),))
        assert scope["result"].audio.shape[0] > 0 and len(scope["result"].latencies_ms) > 0  # the alice voice
        asyncio.run(scope["talk"](srv.url, [wav[:1000], wav[1000:]]))
