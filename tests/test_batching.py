"""encode/decode: padded batches give every item exactly what it gets alone; bad input is
rejected with a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FIXTURE_NAMES, fixture_model, speech_files

from focalcodec import InputError
from focalcodec.audio import load_audio


def _batch(sigs):
    n = max(len(s) for s in sigs)
    out = torch.zeros(len(sigs), n)
    for i, s in enumerate(sigs):
        out[i, : len(s)] = s
    return out, torch.tensor([len(s) for s in sigs])


def _signals():
    files = speech_files()[:3]
    sigs = [load_audio(f)[: 16000 + 3217 * i] for i, f in enumerate(files)]
    sigs.append(torch.randn(350) * 0.1)  # shorter than the 400-sample receptive field
    sigs.append(torch.randn(1283) * 0.1)
    return sigs


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_encode_is_batch_invariant(name: str) -> None:
    codec = fixture_model(name)
    sigs = _signals()
    wav, lengths = _batch(sigs)
    toks, tok_lens = codec.encode(wav, lengths)
    assert toks.dtype == torch.long and toks.shape == (len(sigs), int(tok_lens.max()))
    for i, s in enumerate(sigs):
        solo, solo_len = codec.encode(s)
        assert solo.ndim == 1 and int(solo_len[0]) == len(solo) == int(tok_lens[i])
        assert torch.equal(toks[i, : tok_lens[i]], solo), f"item {i} differs from its solo tokens"
        assert torch.all(toks[i, tok_lens[i] :] == 0)
        assert int(codec.num_tokens(len(s))) == len(solo)
    # The solo path is the reference's: same tokens as sig_to_toks.
    with torch.no_grad():
        assert torch.equal(codec.sig_to_toks(sigs[0][None])[0], codec.encode(sigs[0]).tokens)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_decode_is_batch_invariant(name: str) -> None:
    codec = fixture_model(name)
    gen = torch.Generator().manual_seed(0)
    lens = [37, 12, 50, 1]
    toks = torch.randint(0, codec.codebook_size, (len(lens), max(lens)), generator=gen)
    audio, out_lens = codec.decode(toks, lens)
    hop = codec.sample_rate_output // codec.token_rate
    assert out_lens.tolist() == [int(n * hop) for n in lens]
    for i, n in enumerate(lens):
        solo, solo_len = codec.decode(toks[i, :n])
        assert solo.shape == (int(solo_len[0]),)
        torch.testing.assert_close(audio[i, : out_lens[i]], solo, atol=1e-4, rtol=0)
        assert torch.all(audio[i, out_lens[i] :] == 0)
    with torch.no_grad():
        torch.testing.assert_close(
            codec.toks_to_sig(toks[:1, : lens[0]])[0], codec.decode(toks[0, : lens[0]]).audio, atol=1e-5, rtol=0
        )


def test_reference_relative_lengths_are_not_batch_invariant_but_encode_is(tiny50) -> None:
    """Why encode() exists: the reference's length= path changes the shorter item's tokens."""
    sigs = _signals()[:2]
    wav, lengths = _batch(sigs)
    solo = tiny50.encode(sigs[0]).tokens
    with torch.no_grad():
        rel = tiny50.sig_to_toks(wav, length=lengths / wav.shape[1])
    assert not torch.equal(rel[0, : len(solo)], solo)
    assert torch.equal(tiny50.encode(wav, lengths).tokens[0, : len(solo)], solo)


def test_numpy_and_pcm_inputs(tiny50) -> None:
    sig = _signals()[0]
    ref = tiny50.encode(sig).tokens
    assert torch.equal(tiny50.encode(sig.numpy()).tokens, ref)
    pcm = (sig * 32767).round().to(torch.int16)
    assert torch.equal(tiny50.encode(pcm).tokens, tiny50.encode(pcm.float() / 32768).tokens)
    out = tiny50.decode(ref.numpy())
    assert out.audio.ndim == 1 and out.audio.dtype == torch.float32


@pytest.mark.parametrize(
    "wav, lengths, match",
    [
        (torch.zeros(0), None, "empty"),
        (torch.zeros(2, 0), None, "empty"),
        (torch.zeros(1, 1, 100), None, "1-D .* or 2-D"),
        (torch.tensor([0.0, float("nan")] * 300), None, "NaN or infinite"),
        (torch.tensor([0.0, float("inf")] * 300), None, "NaN or infinite"),
        (torch.zeros(2, 800), [800], "2 entries|1 entries"),
        (torch.zeros(2, 800), [800, 0], r"\[1, 800\]"),
        (torch.zeros(2, 800), [800, 900], r"\[1, 800\]"),
        (torch.zeros(2, 800), [1.0, 0.5], "whole numbers"),
        (np.array(["a", "b"]), None, "floating point|tensor or array"),
    ],
)
def test_encode_rejects_bad_input(tiny50, wav, lengths, match: str) -> None:
    with pytest.raises(InputError, match=match):
        tiny50.encode(wav, lengths)


def test_decode_rejects_bad_tokens(tiny50) -> None:
    with pytest.raises(InputError, match=r"\[0, 8192\).*another model"):
        tiny50.decode(torch.tensor([1, 2, 8192]))
    with pytest.raises(InputError, match=r"\[0, 8192\)"):
        tiny50.decode(torch.tensor([-1, 2]))
    with pytest.raises(InputError, match="must be integers"):
        tiny50.decode(torch.tensor([0.5, 1.0]))
    with pytest.raises(InputError, match="empty"):
        tiny50.decode(torch.zeros(0, dtype=torch.long))
    # Out-of-range values in the padding are fine.
    audio, lens = tiny50.decode(torch.tensor([[1, 2, 3], [4, 99999, 99999]]), [3, 1])
    assert lens.tolist() == [960, 320]


def test_all_zero_and_clipped_audio(tiny50) -> None:
    toks, n = tiny50.encode(torch.zeros(16000))
    assert len(toks) == int(n[0]) == 49
    clipped = torch.clamp(torch.randn(16000) * 3, -1, 1)
    assert len(tiny50.encode(clipped).tokens) == 49


@pytest.mark.parametrize("name", ["tiny_50hz", "tiny_causal_4k"])
def test_long_batches_take_the_per_item_feature_path_exactly(name: str) -> None:
    """Batches of > 4 s inputs run the conv feature extractor item by item on CPU."""
    codec = fixture_model(name)
    sigs = [load_audio(f) for f in speech_files()[:2]]
    sigs = [torch.cat([s, s])[: 70000 - 5000 * i] for i, s in enumerate(sigs)]
    wav, lengths = _batch(sigs)
    toks, tok_lens = codec.encode(wav, lengths)
    for i, s in enumerate(sigs):
        assert torch.equal(toks[i, : tok_lens[i]], codec.encode(s).tokens)
    with torch.no_grad():
        torch.testing.assert_close(
            codec.sig_to_feats(wav),
            torch.cat([codec.sig_to_feats(wav[i : i + 1]) for i in range(2)]),
            atol=1e-5,
            rtol=0,
        )
