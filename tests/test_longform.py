"""Long-form processing: one pass when the input fits, token-aligned windows otherwise,
causal chunking equal to one offline pass, exact output lengths, bounded window sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from focalcodec import FocalCodec, InputError
from focalcodec.longform import Windowing, decode_long, encode_long, iter_decode, output_length

from conftest import FIXTURE_NAMES, FIXTURES, fixture_model

SMALL = Windowing(window=1.0, context=0.25, lookahead=0.125, crossfade=0.05, chunk=0.32)


def noise(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(n, generator=g)


def recording(name: str):
    """A fresh copy of a fixture model whose encode / decode record the lengths they see."""
    codec = FocalCodec.from_pretrained(FIXTURES / name)
    seen = {"encode": [], "decode": []}
    enc, dec = codec.encode, codec.decode

    def encode(wav, *a, **k):
        seen["encode"].append(int(torch.as_tensor(wav).shape[-1]))
        return enc(wav, *a, **k)

    def decode(toks, *a, **k):
        seen["decode"].append(int(torch.as_tensor(toks).shape[-1]))
        return dec(toks, *a, **k)

    codec.encode, codec.decode = encode, decode
    return codec, seen


@pytest.mark.parametrize("name", ["tiny_50hz", "tiny_12_5hz"])
def test_one_window_is_exactly_one_pass(name: str) -> None:
    codec = fixture_model(name)
    sig = noise(8000 + 123)
    toks = encode_long(codec, sig)
    assert torch.equal(toks, codec.encode(sig).tokens)
    audio = decode_long(codec, toks)
    assert torch.equal(audio, codec.decode(toks).audio)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_exact_lengths_for_every_config(name: str) -> None:
    codec = fixture_model(name)
    for n in (1, 399, 16000 + 9000):
        toks = encode_long(codec, noise(n), SMALL)
        assert toks.shape == (int(codec.num_tokens(n)),) and toks.dtype == torch.long
        audio = decode_long(codec, toks, n, SMALL)
        assert audio.shape == (n * codec.sample_rate_output // 16000,) == (output_length(codec, n),)
        assert torch.isfinite(audio).all()


def test_windows_are_token_aligned_with_context() -> None:
    codec, seen = recording("tiny_50hz")
    n = 149 * 320 + 400  # 150 tokens
    sig = noise(n, 1)
    toks = encode_long(codec, sig, SMALL)
    # core 50 tokens, 13 left, 7 right: every window sees at most 70 tokens' worth of samples
    sizes = list(seen["encode"])
    assert len(sizes) == 3 and max(sizes) <= 70 * 320 + 80
    # the first window's tokens are those of its own samples, encoded alone
    first = codec.encode(sig[: sizes[0]]).tokens
    core = 50
    assert torch.equal(toks[:core], first[:core])
    # the last window ends with the input and keeps the input's last tokens
    last = codec.encode(sig[n - sizes[-1] :]).tokens
    assert torch.equal(toks[-core:], last[-core:])


def test_decode_windows_cross_fade_inside_the_context() -> None:
    codec, seen = recording("tiny_50hz")
    toks = torch.randint(0, codec.codebook_size, (150,), generator=torch.Generator().manual_seed(0))
    audio = decode_long(codec, toks, windowing=SMALL)
    assert audio.shape == (150 * 320,)
    assert len(seen["decode"]) == 3 and max(seen["decode"]) <= 50 + 13 + 7
    # away from the cross-fades, each window's audio is its own decode
    mid = codec.decode(toks[50 - 13 : 100 + 7]).audio
    np.testing.assert_allclose(audio[55 * 320 : 95 * 320], mid[(55 - 37) * 320 : (95 - 37) * 320], atol=1e-6)
    # the blocks tile the output exactly
    blocks = list(iter_decode(codec, toks, SMALL))
    assert sum(b.shape[0] for b in blocks) == 150 * 320
    assert torch.equal(torch.cat(blocks), audio)


def test_cross_fade_is_complementary() -> None:
    """Decoding windows that agree everywhere gives back the same audio: the fades sum to 1."""
    codec = fixture_model("tiny_50hz")
    toks = torch.full((120,), 77)
    windowed = decode_long(codec, toks, windowing=SMALL)
    whole = codec.decode(toks).audio
    # constant tokens: every window decodes the same periodic signal away from its edges
    np.testing.assert_allclose(windowed[2000:-2000], whole[2000:-2000], atol=2e-3)


def test_causal_chunks_equal_one_offline_pass() -> None:
    codec = fixture_model("tiny_causal_4k")
    n = 16000 + 3555
    sig = noise(n, 2)
    toks = encode_long(codec, sig, SMALL)
    assert torch.equal(toks, codec.encode(sig).tokens)
    audio = decode_long(codec, toks, n, SMALL)
    offline = codec.decode(toks).audio[: n * 3 // 2]
    np.testing.assert_allclose(audio, offline, atol=1e-5)


def test_windowing_validation() -> None:
    with pytest.raises(InputError, match="at least 1 s"):
        Windowing(window=0.5)
    with pytest.raises(InputError, match="crossfade"):
        Windowing(context=0.01, crossfade=0.1)
    with pytest.raises(InputError):
        Windowing(chunk=0)


def test_bad_signals() -> None:
    codec = fixture_model("tiny_50hz")
    with pytest.raises(InputError, match="no samples"):
        encode_long(codec, torch.zeros(0))
    with pytest.raises(InputError, match="NaN"):
        encode_long(codec, torch.tensor([0.0, float("nan")] * 300))
    with pytest.raises(InputError, match="shape"):
        encode_long(codec, torch.zeros(2, 800))
    with pytest.raises(InputError, match="\\[0, 8192\\)"):
        decode_long(codec, torch.tensor([8192]))
