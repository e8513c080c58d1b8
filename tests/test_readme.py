"""README snippets are tests: the Quick start runs as written (with a fixture model instead
of the Hub checkpoint, since tests are offline)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT


def python_blocks() -> list:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_quick_start_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = next(b for b in python_blocks() if "from_pretrained" in b and "encode" in b)
    assert '"lucadellalib/focalcodec_50hz"' in block
    code = block.replace('"lucadellalib/focalcodec_50hz"', repr(str(FIXTURES / "tiny_50hz")))
    code = code.replace('"examples/speech.flac"', repr(str(ROOT / "examples" / "speech.flac")))
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert (tmp_path / "speech_rec.wav").is_file()
    import torch

    codec, wav = scope["codec"], scope["wav"]
    assert scope["tokens"].shape[0] == 2 and scope["n_tokens"].tolist() == [len(codec.encode(wav).tokens), 62]
    assert torch.equal(scope["tokens"][1, :62], codec.encode(wav[:20000]).tokens)


def test_reduced_precision_snippet_runs() -> None:
    """The README's autocast snippet (on CPU, with a fixture model) gives float32 audio and
    int64 tokens close to the float32 ones."""
    import torch

    from focalcodec import FocalCodec

    block = next(b for b in python_blocks() if "torch.autocast" in b)
    codec = FocalCodec.from_pretrained(str(FIXTURES / "tiny_50hz"))
    sig = 0.1 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))
    scope: dict = {"torch": torch, "codec": codec, "sig": sig}
    exec(compile(block.replace('"cuda"', '"cpu"'), "README.md", "exec"), scope)
    with torch.inference_mode():
        ref = codec.sig_to_toks(sig)
    assert scope["toks"].dtype == torch.int64 and scope["audio"].dtype == torch.float32
    assert (scope["toks"] == ref).float().mean() > 0.9


@pytest.mark.usefixtures("one_thread")
def test_stream_engine_snippet_runs() -> None:
    """The README's StreamEngine snippet (tiny causal fixture, the example speech): each stream
    gets what it gets alone."""
    import torch

    from focalcodec import FocalCodec
    from focalcodec.streaming import StreamCodec, StreamEncoder

    block = next(b for b in python_blocks() if "StreamEngine(" in b)
    code = block.replace('"examples/speech.flac"', repr(str(ROOT / "examples" / "speech.flac")))
    codec = FocalCodec.from_pretrained(str(FIXTURES / "tiny_causal_4k"))
    scope: dict = {"codec": codec}
    exec(compile(code, "README.md", "exec"), scope)
    speech, got, alice, bob = scope["speech"], scope["got"], scope["alice"], scope["bob"]
    assert got[alice][-1].flushed and not any(out.flushed for out in got[bob])
    solo = StreamCodec(codec)
    (t1, a1), (t2, a2) = solo.push(speech), solo.flush()
    assert torch.equal(torch.cat([out.tokens for out in got[alice]]), torch.cat([t1, t2]))
    torch.testing.assert_close(torch.cat([out.audio for out in got[alice]]), torch.cat([a1, a2]), atol=1e-5, rtol=0)
    pushed = speech[: (len(speech) + 1) // 2]
    bob_toks = torch.cat([out.tokens for out in got[bob]])
    assert torch.equal(bob_toks, StreamEncoder(codec).push(pushed)[: bob_toks.shape[0]])
    assert bob_toks.shape[0] == 4 * (len(pushed) // 1280)
