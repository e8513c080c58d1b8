"""Long inputs are processed window by window everywhere: ``tokenize`` (the same tokens as
``encode``) and voice conversion (``vc``/``vc.convert``), so memory does not grow with the
square of a file's duration. Short inputs are unchanged (one pass)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import FIXTURES, SPEECH, fixture_model

from focalcodec import FocalCodec
from focalcodec.compression import encode_audio
from focalcodec.longform import Windowing
from focalcodec.vc import build_speaker_set, convert, convert_tokens

CLIP = SPEECH / "eval" / "s2i_9944c8ee.flac"
SMALL = Windowing(window=2.0, context=1.0, lookahead=0.5)  # one pass up to 3.5 s
pytestmark = pytest.mark.usefixtures("one_thread")


def spied(name: str) -> tuple[FocalCodec, dict]:
    """A fresh fixture model whose encode/decode record the longest input they get."""
    codec = FocalCodec.from_pretrained(FIXTURES / name)
    seen = {"encode": 0, "decode": 0}
    encode, toks_to_sig = codec.encode, codec.toks_to_sig

    def spy_encode(wav, lengths=None):
        seen["encode"] = max(seen["encode"], torch.as_tensor(wav).shape[-1])
        return encode(wav, lengths)

    def spy_toks_to_sig(toks, *a, **k):
        seen["decode"] = max(seen["decode"], toks.shape[-1])
        return toks_to_sig(toks, *a, **k)

    codec.encode, codec.toks_to_sig = spy_encode, spy_toks_to_sig
    return codec, seen


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory):
    """About 12 s of real speech at 16 kHz."""
    x, rate = sf.read(str(CLIP), dtype="float32")
    path = tmp_path_factory.mktemp("long") / "long.wav"
    sf.write(str(path), np.tile(x, 1 + 12 * rate // len(x))[: 12 * rate], rate)
    return path


def test_tokenize_encodes_long_files_in_windows_like_encode(long_wav, tmp_path) -> None:
    pytest.importorskip("pyarrow")
    from focalcodec.corpus import TokenCorpus, tokenize_corpus

    data = tmp_path / "data"
    data.mkdir()
    (data / "long.wav").write_bytes(long_wav.read_bytes())
    x, rate = sf.read(str(CLIP), dtype="float32")
    sf.write(str(data / "short.wav"), x[: 2 * rate], rate)
    codec, seen = spied("tiny_50hz")
    tokenize_corpus(data, tmp_path / "tok", codec, num_workers=0, progress=False, windowing=SMALL)
    corpus = TokenCorpus(tmp_path / "tok")
    # Before: the 12 s file went to encode whole (memory ~ duration squared).
    assert seen["encode"] <= int(3.5 * 16000) + 80
    plain = fixture_model("tiny_50hz")
    assert torch.equal(corpus["long"].tokens, torch.from_numpy(encode_audio(long_wav, plain, windowing=SMALL).tokens))
    assert torch.equal(corpus["short"].tokens, plain.encode(torch.from_numpy(x[: 2 * rate])).tokens)
    assert corpus.index["plan"] and TokenCorpus(tmp_path / "tok").model["weights_sha256"] == plain.weights_sha256


@pytest.mark.parametrize("name", ["tiny_50hz", "tiny_causal_4k"])
def test_vc_converts_long_sources_in_windows(name: str, long_wav) -> None:
    codec, seen = spied(name)
    target = build_speaker_set(fixture_model("tiny_50hz"), [CLIP])
    out = convert(codec, long_wav, target, windowing=SMALL)
    n = sf.info(str(long_wav)).frames
    assert out.shape == (n * codec.sample_rate_output // 16000,) and torch.isfinite(out).all()
    if not codec.causal:  # before: the whole source in one encode and one decode
        assert seen["encode"] <= int(3.5 * 16000) + 80
    assert seen["decode"] <= int(3.5 * codec.token_rate) + 4


def test_vc_short_sources_are_one_pass_as_before() -> None:
    codec = fixture_model("tiny_50hz")
    target = build_speaker_set(codec, [CLIP])
    x, _ = sf.read(str(CLIP), dtype="float32")
    sig = torch.from_numpy(x)
    one_pass = convert_tokens(codec, codec.sig_to_toks(sig[None]), target, output_length=sig.shape[0])[0]
    assert torch.equal(convert(codec, sig, target), one_pass)
    batch = convert(codec, torch.stack([sig, sig]), target)
    assert torch.equal(batch[1], one_pass)


def test_vc_cli_writes_window_by_window(long_wav, tmp_path, monkeypatch) -> None:
    """``focalcodec vc --window 2`` hands the writer one window of audio at a time, and writes
    what ``vc.convert`` gives with the same windows."""
    from focalcodec.audio import AudioWriter
    from focalcodec.cli import main

    blocks = []
    write = AudioWriter.write

    def spy(self, x):
        blocks.append(len(x))
        return write(self, x)

    monkeypatch.setattr(AudioWriter, "write", spy)
    out = tmp_path / "vc.wav"
    argv = ["vc", str(long_wav), "--reference", str(CLIP), "-o", str(out), "--model", str(FIXTURES / "tiny_50hz")]
    assert main([*argv, "--window", "2"]) == 0
    n = sf.info(str(long_wav)).frames
    assert sf.info(str(out)).frames == n == sum(blocks)
    assert len(blocks) >= 6 and max(blocks) <= 2 * 16000 + 640  # 12 s in windows of about 2 s
    codec = fixture_model("tiny_50hz")
    expected = convert(codec, long_wav, build_speaker_set(codec, [CLIP]), windowing=Windowing(window=2.0))
    written, _ = sf.read(str(out), dtype="float32")
    np.testing.assert_allclose(written, np.clip(expected.numpy(), -1, 1), atol=1 / 32768 + 1e-6)
