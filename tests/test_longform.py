"""Long-form processing: one pass when the input fits, token-aligned windows otherwise,
causal chunking equal to one offline pass, exact output lengths, bounded window sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FIXTURE_NAMES, FIXTURES, fixture_model

from focalcodec import FocalCodec, InputError
from focalcodec.longform import Windowing, decode_long, encode_long, iter_decode

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
        assert audio.shape == (n * codec.sample_rate_output // 16000,) == (codec.num_output_samples(n),)
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


def test_fit_length_cuts_or_pads_as_asked() -> None:
    """The one fit-to-length helper: zeros or the last sample repeated, tensors and arrays alike."""
    from focalcodec.audio import fit_length

    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert torch.equal(fit_length(x, 2), x[:, :2])
    assert torch.equal(fit_length(x, 5), torch.tensor([[1.0, 2, 3, 0, 0], [4, 5, 6, 0, 0]]))
    assert torch.equal(fit_length(x, 5, "edge"), torch.tensor([[1.0, 2, 3, 3, 3], [4, 5, 6, 6, 6]]))
    assert torch.equal(fit_length(torch.zeros(0), 3, "edge"), torch.zeros(3))
    np.testing.assert_array_equal(fit_length(np.arange(3.0), 5, "edge"), [0, 1, 2, 2, 2])
    np.testing.assert_array_equal(fit_length(np.arange(3.0), 4), [0, 1, 2, 0])
    np.testing.assert_array_equal(fit_length(np.zeros(0), 2, "edge"), [0, 0])
    with pytest.raises(ValueError, match="pad"):
        fit_length(x, 4, "reflect")


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


# -- files read on demand -----------------------------------------------------------------------
def _speech_16k(seconds: float) -> np.ndarray:
    from conftest import speech_files

    from focalcodec.audio import load_audio

    clips = [load_audio(p).numpy() for p in speech_files("eval")[:6]]
    return np.concatenate(clips)[: int(16000 * seconds)]


@pytest.mark.parametrize("name", ["tiny_50hz", "tiny_causal_4k"])
def test_file_read_on_demand_equals_loaded_file(name: str, tmp_path) -> None:
    """A 16 kHz stereo FLAC read window by window gives the tokens of the loaded file, and no
    read covers the whole file."""
    import soundfile as sf

    from focalcodec.audio import AudioFileSamples, load_audio

    mono = _speech_16k(6.0)
    path = tmp_path / "long.flac"
    sf.write(path, np.stack([mono, 0.5 * mono], axis=1), 16000)
    with pytest.warns(UserWarning, match="mixed down"):
        src = AudioFileSamples(path)
    reads = []
    original = AudioFileSamples.__getitem__

    def spy(self, key):
        out = original(self, key)
        reads.append(out.shape[0])
        return out

    codec = fixture_model(name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(AudioFileSamples, "__getitem__", spy)
        toks = encode_long(codec, src, SMALL)
    with pytest.warns(UserWarning):
        loaded = load_audio(path)
    assert len(src) == loaded.shape[0] and torch.equal(src[100:5000], loaded[100:5000])
    assert torch.equal(toks, encode_long(codec, loaded, SMALL))
    assert len(reads) > 2 and max(reads) < len(src) // 2


def test_compress_reads_16k_wav_on_demand_with_same_bytes(tmp_path) -> None:
    import soundfile as sf

    from focalcodec import compress

    mono = _speech_16k(4.0)
    path = tmp_path / "a.wav"
    sf.write(path, mono, 16000, subtype="FLOAT")
    codec = fixture_model("tiny_50hz")
    assert compress(path, codec, windowing=SMALL) == compress(
        torch.from_numpy(sf.read(path, dtype="float32")[0]), codec, windowing=SMALL
    )


def test_file_on_demand_errors(tmp_path) -> None:
    import soundfile as sf

    from focalcodec.audio import AudioError, AudioFileSamples

    mono = _speech_16k(3.0).copy()
    mono[40000] = np.nan
    bad = tmp_path / "nan.wav"
    sf.write(bad, mono, 16000, subtype="FLOAT")
    with pytest.raises(InputError, match=r"NaN or infinite samples \(first at 2.500 s\)"):
        encode_long(fixture_model("tiny_50hz"), AudioFileSamples(bad), SMALL)
    other = tmp_path / "a8k.wav"
    sf.write(other, _speech_16k(1.0)[::2], 8000)
    with pytest.raises(InputError, match="8000 Hz"):
        encode_long(fixture_model("tiny_50hz"), AudioFileSamples(other), SMALL)
    ogg = tmp_path / "a.ogg"
    sf.write(ogg, _speech_16k(1.0), 16000)
    with pytest.raises(AudioError, match="not read on demand"):
        AudioFileSamples(ogg)
    with pytest.raises(AudioError, match="not found"):
        AudioFileSamples(tmp_path / "missing.wav")
    cut = tmp_path / "cut.flac"
    sf.write(cut, _speech_16k(3.0), 16000)
    with open(cut, "r+b") as f:
        f.truncate(cut.stat().st_size // 2)
    with pytest.raises(AudioError, match="corrupt or truncated"):
        encode_long(fixture_model("tiny_50hz"), AudioFileSamples(cut), SMALL)
