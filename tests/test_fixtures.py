"""Equivalence with the reference implementation: every stored output of every fixture.

Tokens must be identical; floats within 1e-4 absolute (a float64 rerun of the reference
moves them by at most 3e-6)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import fixture_io, fixture_model

ATOL = 1e-4
ALL = ("tiny_50hz", "tiny_50hz_legacy", "tiny_25hz", "tiny_12_5hz", "tiny_causal_4k")


def assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    if expected.dtype == torch.long:
        assert actual.dtype == torch.long
        assert torch.equal(actual, expected), f"{int((actual != expected).sum())} tokens differ"
    else:
        torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ALL)
@torch.no_grad()
def test_stage_outputs(name: str) -> None:
    codec, io = fixture_model(name), fixture_io(name)
    sig = io["sig"]
    assert_same(codec.sig_to_feats(sig), io["feats"])
    assert_same(codec.sig_to_lats(sig), io["lats"])
    assert_same(codec.sig_to_toks(sig), io["toks"])
    assert_same(codec.sig_to_codes(sig), io["codes"])
    assert_same(codec.sig_to_qfeats(sig), io["qfeats"])
    assert_same(codec.toks_to_sig(io["toks"]), io["toks_sig"])
    toks, codes, rec = codec(sig)
    assert_same(toks, io["toks"])
    assert_same(codes, io["codes"])
    assert_same(rec, io["rec_sig"])
    assert_same(codec.sig_to_sig(sig), io["rec_sig"])


@pytest.mark.parametrize("name", ALL)
@torch.no_grad()
def test_chained_conversions_agree(name: str) -> None:
    """feats -> lats/toks/codes/qfeats/sig and codes/lats entry points give the same outputs."""
    codec, io = fixture_model(name), fixture_io(name)
    feats = codec.sig_to_feats(io["sig"])
    assert_same(codec.feats_to_toks(feats), io["toks"])
    assert_same(codec.feats_to_codes(feats), io["codes"])
    assert_same(codec.feats_to_lats(feats), io["lats"])
    assert_same(codec.feats_to_qfeats(feats), io["qfeats"])
    assert_same(codec.lats_to_toks(io["lats"]), io["toks"])
    assert_same(codec.lats_to_codes(io["lats"]), io["codes"])
    assert_same(codec.lats_to_qfeats(io["lats"]), io["qfeats"])
    assert_same(codec.toks_to_codes(io["toks"]), io["codes"])
    assert_same(codec.codes_to_toks(io["codes"]), io["toks"])
    assert_same(codec.codes_to_qfeats(io["codes"]), io["qfeats"])
    assert_same(codec.toks_to_qfeats(io["toks"]), io["qfeats"])
    assert_same(codec.codes_to_sig(io["codes"]), io["toks_sig"])
    assert_same(codec.feats_to_sig(io["qfeats"]), io["toks_sig"])
    n = io["rec_sig"].shape[1]
    assert_same(codec.toks_to_sig(io["toks"], output_length=n), io["rec_sig"])


@pytest.mark.parametrize("name", ALL)
@torch.no_grad()
def test_batch_with_relative_lengths(name: str) -> None:
    codec, io = fixture_model(name), fixture_io(name)
    assert_same(codec.sig_to_feats(io["batch_sig"], length=io["batch_length"]), io["batch_feats"])
    assert_same(codec.sig_to_toks(io["batch_sig"], length=io["batch_length"]), io["batch_toks"])


@pytest.mark.parametrize("name", ALL)
@torch.no_grad()
def test_voice_conversion(name: str) -> None:
    codec, io = fixture_model(name), fixture_io(name)
    out = codec.toks_to_sig(io["toks"], matching_set=io["matching_set"], topk=4)
    assert_same(out, io["vc_sig"])
    # Splitting the matching set bounds memory and must not change the result.
    split = codec.toks_to_sig(io["toks"], matching_set=io["matching_set"], topk=4, num_splits=3)
    assert_same(split, io["vc_sig"])


def _stream(codec, sig: torch.Tensor, decode: bool = True):
    chunk = codec.chunk_size
    padded = F.pad(sig, (0, (-sig.shape[1]) % chunk))
    es = cs = ds = gs = ()
    toks, outs = [], []
    for start in range(0, padded.shape[1], chunk):
        t, es, cs = codec.sig_to_toks(padded[:, start : start + chunk], es, cs, return_state=True)
        toks.append(t)
        if decode:
            o, ds, gs = codec.toks_to_sig(t, ds, gs, return_state=True)
            outs.append(o)
    return torch.cat(toks, 1), (torch.cat(outs, 1) if decode else None)


@torch.no_grad()
def test_streaming_state_api() -> None:
    codec, io = fixture_model("tiny_causal_4k"), fixture_io("tiny_causal_4k")
    assert codec.causal and codec.chunk_size == 1280 and codec.latency == 80.0
    toks, sig = _stream(codec, io["sig"])
    assert_same(toks, io["stream_toks"])
    assert_same(sig, io["stream_sig"])


@torch.no_grad()
def test_long_inputs_past_the_attention_window() -> None:
    codec, io = fixture_model("tiny_causal_4k"), fixture_io("tiny_causal_4k")
    long_sig = io["sig"].repeat(1, 5)
    assert_same(codec.sig_to_lats(long_sig), io["long_lats"])
    assert_same(codec.sig_to_toks(long_sig), io["long_toks"])
    assert_same(codec.toks_to_qfeats(io["long_toks"]), io["long_qfeats"])
    toks, _ = _stream(codec, long_sig, decode=False)
    assert_same(toks, io["long_stream_toks"])


@torch.no_grad()
def test_forward_returns_states_for_causal_models() -> None:
    codec, io = fixture_model("tiny_causal_4k"), fixture_io("tiny_causal_4k")
    chunk = io["sig"][:, :1280]
    toks, codes, rec, *states = codec(chunk, return_state=True)
    assert len(states) == 4
    assert toks.shape == (1, 4) and codes.shape == (1, 4, codec.code_dim) and rec.shape == (1, 1920)
    # A second chunk continues the stream.
    toks2, _, rec2, *_ = codec(io["sig"][:, 1280:2560], *states, return_state=True)
    both, _ = _stream(codec, io["sig"][:, :2560], decode=False)
    assert torch.equal(torch.cat([toks, toks2], 1), both)
