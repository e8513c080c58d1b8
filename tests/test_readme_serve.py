"""The README's live-serving snippet runs as written, against a server on the tiny causal
fixture (the URL and the audio substituted)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import ROOT, fixture_model, speech_files

from focalcodec.audio import load_audio
from focalcodec.serve.server import BackgroundServer
from focalcodec.streaming import StreamCodec

pytestmark = pytest.mark.usefixtures("one_thread")


def test_serve_snippet_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    block = next(b for b in blocks if "focalcodec.serve.client" in b)
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
